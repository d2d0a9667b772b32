"""Range requests (RFC 9110 §14): parsing ``Range``, ``If-Range`` and multipart answers.

How: :func:`parse_range` turns ``Range: bytes=...`` into sorted, disjoint,
inclusive ``(first, last)`` byte positions within a representation of
``size`` bytes. It answers ``None`` when the header must be ignored (a full
200 is sent): another unit, a syntax error, ``last < first``, or more than
``max_ranges`` ranges. It raises :class:`Unsatisfiable` (answer 416 with
``Content-Range: bytes */size``, see :func:`unsatisfied_range`) when no range
overlaps the representation. Overlapping and adjacent ranges are coalesced,
as RFC 9110 §14.1.2 allows.

Security limits: ``max_ranges`` (default 16) bounds the work a single
request may ask for; a client asking for hundreds of small or overlapping
ranges (the "range amplification" attack, CVE-2011-3192) gets the plain
response instead. Numbers longer than 18 digits are treated as "larger than
any representation" rather than converted, so a huge number cannot cost time.

:func:`multipart_byteranges` plans a ``multipart/byteranges`` body (RFC 9110
§14.6) as part heads plus byte ranges to copy from the stored body and a
closing delimiter, with the total length for ``Content-Length``; the server
writes slices of a body in memory or in a file without assembling the whole
response. :func:`slices_for` cuts a byte range into aligned slices for
fetching large objects piece by piece; :func:`slice_anchor` says where a
Range request's bytes start before the representation's size is known, and
:func:`parse_content_range` reads the ``Content-Range`` of an upstream 206.
:func:`same_representation` says whether two stored parts may be combined
into one answer (RFC 9111 §3.4).
"""

from __future__ import annotations

from edgefleet.cache.errors import CacheError
from edgefleet.cache.wire.headers import Headers, get, parse_http_date

MAX_RANGES = 16
"""Security limit: a Range header with more ranges than this is ignored (full response)."""

_HUGE = 10**18
_INVALID = (-1, -1)
_BOUNDARY_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'+_.-")
_MAX_DIGITS = 18
_OWS = " \t"
_BOUNDARY_MAX_LENGTH = 70


class Unsatisfiable(CacheError):
    """No range of the request overlaps the representation: answer 416 with ``unsatisfied_range(size)``."""

    def __init__(self, size: int) -> None:
        super().__init__(f"no satisfiable range in a representation of {size} bytes")
        self.size = size


def parse_range(value: str, size: int, max_ranges: int = MAX_RANGES) -> list[tuple[int, int]] | None:
    """Sorted, coalesced inclusive byte ranges of a ``Range`` value, ``None`` to ignore it, or raise Unsatisfiable."""
    unit, has_equals, specs = value.partition("=")
    if not has_equals or unit.strip(_OWS).lower() != "bytes":
        return None
    pieces = [stripped for stripped in (piece.strip(_OWS) for piece in specs.split(",")) if stripped]
    if not pieces or len(pieces) > max_ranges:
        return None
    ranges = []
    for piece in pieces:
        satisfiable = _range_of(piece, size)
        if satisfiable is _INVALID:
            return None
        if satisfiable is not None:
            ranges.append(satisfiable)
    if not ranges:
        raise Unsatisfiable(size)
    return _coalesced(ranges)


def _range_of(spec: str, size: int) -> tuple[int, int] | None:
    """The satisfiable part of one range-spec; ``None`` if unsatisfiable, ``_INVALID`` if malformed."""
    first_text, has_dash, last_text = spec.partition("-")
    if not has_dash:
        return _INVALID
    if not first_text:  # suffix range: the last N bytes
        length = _position(last_text)
        if length < 0:
            return _INVALID
        return (max(0, size - length), size - 1) if length and size else None
    first = _position(first_text)
    last = _position(last_text) if last_text else _HUGE
    if first < 0 or last < first:  # an invalid last is -1, hence < first too
        return _INVALID
    if first >= size:
        return None
    return first, min(last, size - 1)


def _position(text: str) -> int:
    """A byte position or length; -1 when not digits; _HUGE when too long to matter."""
    if not text.isascii() or not text.isdigit():
        return -1
    return _HUGE if len(text) > _MAX_DIGITS else int(text)


def _coalesced(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ranges.sort()
    merged = [ranges[0]]
    for first, last in ranges[1:]:
        previous_first, previous_last = merged[-1]
        if first <= previous_last + 1:
            merged[-1] = (previous_first, max(previous_last, last))
        else:
            merged.append((first, last))
    return merged


def if_range_matches(if_range: str | None, etag: str | None, last_modified: str | None) -> bool:
    """RFC 9110 §13.1.5: may the Range be honoured? Strong ETag match, or a date equal to Last-Modified.

    An absent ``If-Range`` is a match; a weak entity-tag never matches.
    """
    if if_range is None:
        return True
    validator = if_range.strip(_OWS)
    if validator.startswith('"'):  # a weak W/"..." tag is neither a strong tag nor a date: no match
        return etag is not None and not etag.startswith("W/") and etag.strip(_OWS) == validator
    date = parse_http_date(validator)
    return date is not None and date == parse_http_date(last_modified)


def content_range(first: int, last: int, size: int) -> str:
    """``Content-Range`` value of a satisfied range: ``bytes first-last/size``."""
    return f"bytes {first}-{last}/{size}"


def unsatisfied_range(size: int) -> str:
    """``Content-Range`` value of a 416 answer: ``bytes */size``."""
    return f"bytes */{size}"


def multipart_content_type(boundary: str) -> str:
    """``Content-Type`` of a multipart range answer."""
    return f"multipart/byteranges; boundary={boundary}"


def multipart_byteranges(
    ranges: list[tuple[int, int]], size: int, content_type: str | None, boundary: str
) -> tuple[list[tuple[bytes, int, int]], bytes, int]:
    """Plan a ``multipart/byteranges`` body: ``([(part_head, first, last), ...], closing, total_length)``.

    The body is, in order, each part head followed by bytes ``first..last``
    (inclusive) of the representation, then ``closing``. ``boundary`` must be
    1-70 letters, digits or ``'+_.-`` (we generate it; a bad one is a bug).
    """
    _check_boundary(boundary)
    delimiter = f"--{boundary}\r\n".encode("latin-1")
    type_line = b"" if content_type is None else f"Content-Type: {content_type}\r\n".encode("latin-1")
    parts: list[tuple[bytes, int, int]] = []
    total = 0
    for index, (first, last) in enumerate(ranges):
        range_line = f"Content-Range: {content_range(first, last, size)}\r\n\r\n".encode("latin-1")
        head = (b"\r\n" if index else b"") + delimiter + type_line + range_line
        parts.append((head, first, last))
        total += len(head) + last - first + 1
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return parts, closing, total + len(closing)


def _check_boundary(boundary: str) -> None:
    if not 1 <= len(boundary) <= _BOUNDARY_MAX_LENGTH or not _BOUNDARY_CHARS.issuperset(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")


def slices_for(first: int, last: int, slice_size: int) -> list[tuple[int, int]]:
    """Inclusive, ``slice_size``-aligned slices covering ``first..last``.

    The last slice always ends at an alignment boundary minus one, possibly
    past the end of the object; the upstream clamps it (a Range past the end is
    answered with the bytes that exist).
    """
    if slice_size <= 0 or first < 0 or last < first:
        raise ValueError(f"invalid slice request {first}-{last} with slice size {slice_size}")
    start = first - first % slice_size
    return [(offset, offset + slice_size - 1) for offset in range(start, last + 1, slice_size)]


def slice_anchor(value: str, max_ranges: int = MAX_RANGES) -> int | None:
    """A byte position the ranges of ``value`` need, to fetch first (size unknown); None: ignore the header.

    The lowest first-byte-pos of the ``first-last``/``first-`` specs; 0 when
    there are only suffix ranges (their position depends on the size, which
    any slice tells). ``None`` when :func:`parse_range` would ignore the header.
    """
    try:
        if parse_range(value, _HUGE, max_ranges) is None:
            return None
    except Unsatisfiable:  # only "-0" suffixes: unsatisfiable at any size, which a slice will tell
        return 0
    specs = (piece.strip(_OWS) for piece in value.partition("=")[2].split(","))
    firsts = [_position(spec.partition("-")[0]) for spec in specs if spec and not spec.startswith("-")]
    return min(firsts) if firsts else 0


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``(first, last, complete_length)`` of ``Content-Range: bytes first-last/length``; None otherwise.

    An unknown length (``*``), a range outside the length or any other form is None.
    """
    if value is None:
        return None
    unit, _, rest = value.strip(_OWS).partition(" ")
    span, slash, length_text = rest.strip(_OWS).partition("/")
    first_text, dash, last_text = span.partition("-")
    if unit.lower() != "bytes" or not slash or not dash:
        return None
    first, last, length = _position(first_text), _position(last_text), _position(length_text)
    if min(first, last, length) < 0 or max(first, last, length) >= _HUGE or not first <= last < length:
        return None
    return first, last, length


def same_representation(first: Headers, first_length: int, second: Headers, second_length: int) -> bool:
    """RFC 9111 §3.4: may parts of two responses be combined? Same complete length, ETag and Last-Modified.

    The RFC asks for the same strong validator: an equal strong ETag suffices. Like nginx's slice module we
    also combine parts that agree on a weak ETag or carry none, but then their Last-Modified dates must
    agree too, so that two versions of one size without a strong ETag are told apart when their dates differ.
    """
    etag = get(first, "etag")
    if first_length != second_length or etag != get(second, "etag"):
        return False
    if etag is not None and etag.startswith('"'):
        return True
    return parse_http_date(get(first, "last-modified")) == parse_http_date(get(second, "last-modified"))
