"""Answering a client from a stored entry: full body, 304, one range or several.

How: :func:`plan` looks at the request (conditionals, Range, If-Range, HEAD)
and the stored entry and returns a :class:`Reply`: the status, the header
fields to add to the stored ones, and the body as a list of pieces, each
either literal bytes (multipart part heads) or a ``(first, last)`` slice of
the stored body. The server writes the pieces from memory or, for disk
entries, reads each slice from the file in bounded chunks, so an entry is
never held whole in memory to serve a range of it.

The precomputed head of a plain hit (:func:`hit_head`) is built once per
entry and reused; only ``Age`` is added per request (one integer format).

:func:`plan_slices` is :func:`plan` for a large object stored as slices:
the pieces are positions in the whole object, which the proxy maps to the
slices that hold them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgefleet.cache.policy import conditionals, ranges
from edgefleet.cache.policy.ranges import Unsatisfiable
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.wire.headers import get
from edgefleet.cache.wire.http1 import header_block, status_line

Piece = bytes | tuple[int, int]


@dataclass(slots=True)
class Reply:
    """What to send for one request answered from a stored entry."""

    status: int
    headers: list[tuple[str, str]]
    pieces: list[Piece] = field(default_factory=list)
    length: int = 0


def plan(method: str, request_headers: Sequence[tuple[str, str]], meta: EntryMeta) -> Reply:
    """The reply to ``method`` + ``request_headers`` from the entry ``meta``."""
    stored = meta.headers
    if meta.status == 200 and conditionals.not_modified(list(request_headers), stored):
        return Reply(304, conditionals.headers_for_304(stored))
    whole = Reply(meta.status, [*stored, ("Content-Length", str(meta.size))], [(0, meta.size - 1)], meta.size)
    if meta.size == 0:
        whole.pieces = []
    range_value = get(list(request_headers), "range") if meta.status == 200 else None
    if range_value is not None and ranges.if_range_matches(
        get(list(request_headers), "if-range"), get(stored, "etag"), get(stored, "last-modified")
    ):
        whole = _ranged(range_value, stored, meta.size) or whole
    if method == "HEAD":
        whole.pieces = []
    return whole


def plan_slices(
    request_headers: Sequence[tuple[str, str]], stored: list[tuple[str, str]], range_value: str, size: int
) -> Reply | None:
    """The reply to a GET with ``range_value`` from slices of a ``size``-byte object; None: send it whole.

    ``stored`` are the fields of a slice (its own Content-Range is dropped).
    The pieces are positions in the object. If-Range is the caller's to check.
    """
    if conditionals.not_modified(list(request_headers), stored):
        return Reply(304, conditionals.headers_for_304(stored))
    return _ranged(range_value, stored, size)


def _ranged(value: str, stored: list[tuple[str, str]], size: int) -> Reply | None:
    try:
        chosen = ranges.parse_range(value, size)
    except Unsatisfiable:
        headers = [*_without_length(stored), ("Content-Range", ranges.unsatisfied_range(size))]
        return Reply(416, [*headers, ("Content-Length", "0")])
    if not chosen:
        return None
    base = _without_length(stored)
    if len(chosen) == 1:
        first, last = chosen[0]
        length = last - first + 1
        headers = [*base, ("Content-Range", ranges.content_range(first, last, size))]
        return Reply(206, [*headers, ("Content-Length", str(length))], [(first, last)], length)
    boundary = secrets.token_hex(12)
    parts, closing, total = ranges.multipart_byteranges(chosen, size, get(base, "content-type"), boundary)
    pieces: list[Piece] = []
    for part_head, first, last in parts:
        pieces.extend((part_head, (first, last)))
    pieces.append(closing)
    headers = [(name, value) for name, value in base if name.lower() != "content-type"]
    headers += [("Content-Type", ranges.multipart_content_type(boundary)), ("Content-Length", str(total))]
    return Reply(206, headers, pieces, total)


def _without_length(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields minus the framing of the stored body (its length, a stored slice's Content-Range)."""
    return [(name, value) for name, value in headers if name.lower() not in ("content-length", "content-range")]


def hit_head(meta: EntryMeta, node: str) -> bytes:
    """Status line and fields of a plain 200 hit, without Age and the final blank line."""
    fields = [
        *meta.headers,
        ("Content-Length", str(meta.size)),
        ("X-Cache", f"HIT from {node}"),
        ("Server-Timing", 'cache;desc="HIT"'),
    ]
    return status_line(meta.status) + header_block(fields)
