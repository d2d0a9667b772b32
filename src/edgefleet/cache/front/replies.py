"""Writing answers to clients: from a stored entry, from a fill as it arrives, or relayed from upstream.

How: :meth:`Replies.send_entry` plans the reply with the pure
:mod:`edgefleet.cache.front.responses` (200, 304 to a matching conditional,
206/416 to a Range) and writes its pieces from where the body is: a memory
entry's bytes, a disk entry's file (``sendfile``, through
:mod:`edgefleet.cache.front.sendfile`) or a finished fill's memory and spool.
:meth:`Replies.send_fill` answers a miss while the fill is still
receiving: the head goes out at once and the body streams from the fill at
the client's pace. :meth:`Replies.relay` writes a head and a streamed body
with the framing this client can take: ``Content-Length`` when it is known,
chunked to an HTTP/1.1 client, else the body ends when the connection
closes.

Every answer says how the cache answered (``X-Cache: HIT from <node>``,
``Server-Timing``) and ends in :meth:`Replies.done`, which counts it (a 5xx
in ``server_errors`` too) and writes the access log. Once the head is out,
an upstream failure can only end the connection (``keep_alive`` off): the
status is already sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from edgefleet.cache import accounting
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.front import responses
from edgefleet.cache.front.sendfile import send_file
from edgefleet.cache.policy import conditionals, decisions, freshness
from edgefleet.cache.policy.domains import DomainTable
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.memory import MemoryEntry
from edgefleet.cache.storage.store import Storage
from edgefleet.cache.upstream import ruled
from edgefleet.cache.upstream.fetches import Stored, fill_done, find
from edgefleet.cache.upstream.fills import Fill, FillEntry, FillHead
from edgefleet.cache.upstream.forwarding import Fields
from edgefleet.cache.wire.headers import get
from edgefleet.cache.wire.http1 import LAST_CHUNK, Request, chunk, error_body, response_head

if TYPE_CHECKING:
    from edgefleet.cache.front.accesslog import AccessLog

log = logging.getLogger("edgefleet.cache")

FILL_READ = 256 * 1024
"""Bytes read from a fill per write: a range of a spooled fill is not read into memory at once."""

WriteRange = Callable[[int, int], Awaitable[int]]
"""Writes the body bytes ``first..last`` (inclusive) to the client; how many it wrote."""


class Client(Protocol):
    """What the proxy needs of a client connection (the server's Connection)."""

    peer_ip: str
    tls_version: str | None  # "TLSv1.3" on the TLS listener, None in cleartext
    transport: Any

    def write(self, data: bytes) -> None: ...
    def writelines(self, data: list[bytes]) -> None: ...
    async def drain(self) -> None: ...


class Replies:
    """Writes one worker's replies (see the module docstring)."""

    def __init__(
        self,
        node: str,
        storage: Storage,
        stats: Stats,
        access_log: AccessLog | None,
        clock: decisions.Clock = time.time,
        domains: DomainTable | None = None,
    ) -> None:
        self.clock = clock
        self.domains = domains  # whose per-Domain counters done() updates
        self.node = node
        self.storage = storage
        self.stats = stats
        self.access_log = access_log

    async def send_entry(
        self,
        client: Client,
        request: Request,
        entry: Stored,
        cache_status: str,
        started: float,
        head: FillHead | None = None,
    ) -> None:
        """Answer from ``entry``; ``head``: the fill it came from, for the upstream timing."""
        reply = responses.plan(request.method, request.headers, entry.meta)
        if reply.status == 304:
            self.stats.not_modified += 1
        self.write_head(client, request, reply, entry.meta, cache_status, head)
        sent = await write_pieces(client, entry, reply.pieces)
        upstream_ms = head.upstream_ms if head is not None and head.upstream else None
        self.done(request, client, reply.status, sent, cache_status, started, upstream_ms=upstream_ms)

    def write_head(
        self,
        client: Client,
        request: Request,
        reply: responses.Reply,
        meta: EntryMeta,
        cache_status: str,
        head: FillHead | None = None,
    ) -> None:
        """The head of a reply from a stored entry: its age now and how the cache answered."""
        timing = f'cache;desc="{cache_status}"'
        if head is not None and head.upstream:
            timing += f", upstream;dur={head.upstream_ms:.1f}"
        extra = [
            ("Age", str(freshness.current_age(meta.initial_age, meta.response_time, self.clock()))),
            ("X-Cache", accounting.x_cache(head.upstream_cache if head is not None else None, cache_status, self.node)),
            ("Server-Timing", timing),
        ]
        if not request.keep_alive:
            extra.append(("Connection", "close"))
        fields = reply.headers if request.rules is None else ruled.client_headers(request, reply.status, reply.headers)
        client.write(response_head(reply.status, fields + extra))

    async def send_fill(self, client: Client, request: Request, fill: Fill, head: FillHead, started: float) -> None:
        """Answer a miss from the fill that fetches it: 304, a range once it is in, or the body as it arrives."""
        fetched = accounting.fetched_status(head.source)  # MISS (origin), PEER or PARENT
        relayed, upstream_cache = accounting.split_x_cache(head.headers)
        x_cache = ("X-Cache", accounting.x_cache(upstream_cache, fetched, self.node))
        if head.shareable and conditionals.not_modified(request.headers, head.headers) and head.status == 200:
            await fill_done(fill)
            self.stats.not_modified += 1
            fields = [*conditionals.headers_for_304(relayed), x_cache]
            client.write(response_head(304, ruled.client_headers(request, 304, fields) if request.rules else fields))
            self.done(request, client, 304, 0, fetched, started, upstream_ms=head.upstream_ms)
            return
        if request.method == "GET" and get(request.headers, "range") is not None and head.status == 200:
            try:
                stored = await self._ranged_after_fill(fill, head, request)
            except UpstreamError as exc:
                await self.send_error(client, request, exc.status, exc.message)
                return
            if stored is not None:
                await self.send_entry(client, request, stored, fetched, started, head)
                return
        headers = relayed
        now = self.clock()
        age = int(head.extra.get("age", 0) + now - head.extra.get("response_time", now))
        headers += [
            ("Age", str(max(age, 0))),
            x_cache,
            ("Server-Timing", f'cache;desc="{fetched}", upstream;dur={head.upstream_ms:.1f}'),
        ]
        body: AsyncIterator[bytes] | None = fill.stream() if request.method != "HEAD" else None
        length, upstream_ms = head.content_length, head.upstream_ms
        await self.relay(client, request, head.status, headers, length, body, fetched, started, upstream_ms=upstream_ms)

    async def _ranged_after_fill(self, fill: Fill, head: FillHead, request: Request) -> Stored | None:
        """A Range request that missed: wait for the fill, then answer the range from what it got."""
        await fill_done(fill)
        meta = head.meta
        if meta is None:
            return None
        stored = find(self.storage, meta.key, request)
        if stored is not None and stored.meta.response_time == meta.response_time:
            return stored
        return FillEntry(meta, fill) if meta.size == fill.size else None  # not stored (a peer's, or refused)

    async def relay(
        self,
        client: Client,
        request: Request,
        status: int,
        headers: Fields,
        length: int | None,
        body: AsyncIterator[bytes] | None,
        cache_status: str,
        started: float,
        source: str | None = None,
        upstream_ms: float | None = None,
    ) -> None:
        """Write a head and a streamed body, framed for this client (see the module docstring).

        ``source``: where the body comes from (accounting), when ``cache_status`` does not say (a pass).
        """
        if request.rules is not None:  # the edge rules' response header ops (module edgefleet.cache.upstream.ruled)
            headers = ruled.client_headers(request, status, headers)
        chunked = length is None and body is not None and request.version == "1.1" and _has_body(status)
        if length is not None:
            headers = [*headers, ("Content-Length", str(length))]
        elif chunked:
            headers = [*headers, ("Transfer-Encoding", "chunked")]
        elif body is not None and _has_body(status):
            request.keep_alive = False  # HTTP/1.0 client: the body ends when we close
        if not request.keep_alive:
            headers = [*headers, ("Connection", "close")]
        client.write(response_head(status, headers))
        sent = 0
        if body is not None and request.method != "HEAD":
            try:
                sent = await _write_body(client, body, chunked)
            except UpstreamError as exc:  # the head is out: all we can do is end the connection
                log.warning("%s %s: %s", request.method, request.target, exc.message)
                request.keep_alive = False
        self.done(request, client, status, sent, cache_status, started, source, upstream_ms)

    async def send_error(self, client: Client, request: Request, status: int, message: str) -> None:
        self.stats.errors += 1
        headers, body = error_body(status, message, self.node)
        headers.append(("X-Cache", f"ERROR from {self.node}"))
        if request.rules is not None:  # the edge rules' response header ops (CORS on a 502 too)
            headers = ruled.client_headers(request, status, headers)
        if not request.keep_alive:
            headers.append(("Connection", "close"))
        client.write(response_head(status, headers) + (body if request.method != "HEAD" else b""))
        self.done(request, client, status, len(body), "ERROR", time.perf_counter())

    def done(
        self,
        request: Request,
        client: Client,
        status: int,
        sent: int,
        cache: str,
        started: float,
        source: str | None = None,
        upstream_ms: float | None = None,
    ) -> None:
        """Count an answered request (in its Domain's counters too, by ``source``: the status word's) and log it."""
        stats = self.stats
        stats.requests += 1
        stats.bytes_served += sent
        if status >= 500:
            stats.server_errors += 1
        domain = self.domains.lookup(request.host) if self.domains is not None and request.host else None
        if domain is not None:
            stats.accounts.slot(domain.name).count(source or accounting.source_of(cache), sent, request.tier)
        if self.access_log is not None:
            seconds = time.perf_counter() - started
            self.access_log.record(request, client, status, sent, cache, seconds, upstream_ms)


async def write_pieces(client: Client, entry: Stored, pieces: list[responses.Piece]) -> int:
    """Write a planned body (literal bytes and ranges of the entry's body); the body bytes written."""
    if isinstance(entry, FillEntry):
        return await write_ranges(client, pieces, partial(_write_fill_range, client, entry.fill))
    if isinstance(entry, MemoryEntry):
        sent = await write_ranges(client, pieces, partial(_write_memory_range, client, memoryview(entry.body)))
        await client.drain()
        return sent
    fd = entry.open()
    try:
        return await write_ranges(client, pieces, partial(_write_file_range, client, fd, entry.body_offset))
    finally:
        os.close(fd)


async def write_ranges(client: Client, pieces: list[responses.Piece], write_range: WriteRange) -> int:
    """Write literal pieces as they are and ``(first, last)`` pieces with ``write_range``; the bytes written."""
    sent = 0
    for piece in pieces:
        if isinstance(piece, bytes):
            client.write(piece)
            sent += len(piece)
        else:
            sent += await write_range(piece[0], piece[1])
    return sent


async def _write_memory_range(client: Client, body: memoryview, first: int, last: int) -> int:
    data = bytes(body[first : last + 1])
    client.write(data)
    return len(data)


async def _write_file_range(client: Client, fd: int, body_offset: int, first: int, last: int) -> int:
    return await send_file(client, fd, body_offset + first, last - first + 1)


async def _write_fill_range(client: Client, fill: Fill, first: int, last: int) -> int:
    sent = 0
    for offset in range(first, last + 1, FILL_READ):
        data = fill.read(offset, min(offset + FILL_READ - 1, last))
        client.write(data)
        sent += len(data)
        await client.drain()
    return sent


async def _write_body(client: Client, body: AsyncIterator[bytes], chunked: bool) -> int:
    sent = 0
    async for data in body:
        if not data:
            continue
        client.write(chunk(data) if chunked else data)
        sent += len(data)
        await client.drain()
    if chunked:
        client.write(LAST_CHUNK)
    return sent


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)
