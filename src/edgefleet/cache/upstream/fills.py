"""Collapsed forwarding: one upstream fetch per key, its body streamed to every waiter.

How: the first request that misses (or must revalidate) a key creates a
:class:`Fill` and a task that runs the upstream fetch; later requests for
the same key find the fill in :class:`Fills` and wait on it instead of
sending their own request. The fill publishes its :class:`FillHead` as soon
as the response head arrives, then appends body chunks; each waiter reads
them from its own offset with :meth:`Fill.stream` at its own pace, so a
waiter gets the first bytes while the origin is still sending the rest
(nginx's ``proxy_cache_lock`` makes waiters poll until the fill completes).

Memory stays bounded: the first ``memory_limit`` bytes are kept as a list of
chunks; past that, the body goes to a spool file (in the disk tier's
directory, or the system temp dir) and waiters read it back with ``pread``.
The fill task does not depend on any client: if every waiter leaves, it
still completes and stores the object.

The spool's descriptor lives exactly as long as the :class:`Fill` object
(``weakref.finalize``), not as long as the fetch: a waiter may start reading
only after the fill task has read the whole body and finished (an upstream
answer that arrived in one piece is consumed without the task ever
yielding), so "no reader right now" does not mean "no reader to come".
Every waiter holds a reference to the fill; when the last one lets go, the
descriptor is closed. The spool file itself is unlinked at creation.

A spool that cannot be written (disk full, I/O error) costs the object its
place in the cache, never the response: what was spooled stays readable and
the rest of the body is kept in memory. The body is thus a spooled prefix
followed by in-memory chunks, and waiters read it by offset.

A head that is not shareable (``private``, ``Set-Cookie``, ...) is for the
request that started the fill only; the other waiters send their own
request, as RFC 9111 §4 requires of a cache that collapses requests.

Interim heads (103 Early Hints): the fill's task relays each 1xx head from
upstream to :meth:`Fill.hint` (:mod:`edgefleet.cache.upstream.client`,
``INTERIM``), which keeps it and passes it to every listening sink: the
leader's client, and each request that joined before the final head
(:meth:`Fill.listen` replays the heads kept so far to a late joiner). RFC
8297: hints are safe to send to any HTTP/1.1 client, so a joiner gets what
the leader got. Once the head is published, hints stop and sinks are let go.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import tempfile
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.upstream.client import InterimSink

SPOOL_READ = 256 * 1024

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FillHead:
    """What a fill learned from upstream, enough for each waiter to answer.

    ``entry`` is set when the answer is a stored entry (revalidated by a 304,
    or stale served because upstream failed); otherwise the waiter answers
    ``status``/``headers`` and streams the body. ``vary`` (``None`` for
    ``Vary: *``) and ``variant`` say which requests the answer is for: a
    waiter whose own secondary key differs must not take it. ``meta`` is the
    entry the response is (or would be) stored as.
    """

    status: int
    headers: list[tuple[str, str]]
    shareable: bool
    content_length: int | None = None
    entry: Any = None
    cache_status: str = "MISS"
    upstream: str = ""
    upstream_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    vary: tuple[str, ...] | None = ()
    variant: str = ""
    meta: EntryMeta | None = None
    source: str = "origin"
    """The kind of upstream the body came from (peer, parent, origin): a waiter's X-Cache word and accounting."""
    upstream_cache: str | None = None
    """The upstream's own ``X-Cache`` value, which this node's entry is appended to."""


class Fill:
    """One fetch in flight: its head, body so far and completion."""

    def __init__(self, key: str, memory_limit: int, spool_dir: Path | None) -> None:
        self.key = key
        self.head: asyncio.Future[FillHead] = asyncio.get_running_loop().create_future()
        self.size = 0
        self.done = False
        self.error: UpstreamError | None = None
        self.waiters = 0
        self._memory_limit = memory_limit
        self._spool_dir = spool_dir
        self._spool: int | None = None
        self._spooled = 0  # body bytes [0, _spooled) are in the spool ...
        self._spool_broken = False
        self._chunks: list[bytes] = []  # ... and the rest in these chunks,
        self._starts: list[int] = []  # which begin at these body offsets
        self._changed = asyncio.Event()
        self.hints: list[tuple[int, list[tuple[str, str]]]] = []
        """The interim (1xx) heads relayed so far (at most MAX_INTERIM_RESPONSES per upstream request)."""
        self._listeners: list[InterimSink] = []

    # --- interim heads (see the module docstring) ---------------------------

    def hint(self, status: int, fields: list[tuple[str, str]]) -> None:
        """An interim head from upstream: kept, and passed to every listener, until the final head is in."""
        if self.head.done():
            return
        self.hints.append((status, fields))
        for sink in self._listeners:
            sink(status, fields)

    def listen(self, sink: InterimSink) -> None:
        """``sink`` gets the interim heads kept so far now, and those still to come before the final head."""
        if self.head.done():
            return
        for status, fields in self.hints:
            sink(status, fields)
        self._listeners.append(sink)

    # --- the fill task's side ----------------------------------------------

    def publish(self, head: FillHead) -> None:
        self._listeners.clear()
        if not self.head.done():
            self.head.set_result(head)

    def append(self, data: bytes) -> None:
        if self._spool is None and not self._spool_broken and self.size + len(data) > self._memory_limit:
            self._start_spool()
        if self._spool is not None and not self._spool_broken and self._spool_write(data):
            self._spooled += len(data)
        else:
            self._keep(data)
        self.size += len(data)
        self._wake()

    def finish(self, error: UpstreamError | None = None) -> None:
        self._listeners.clear()
        self.error = error
        self.done = True
        if not self.head.done():
            self.head.set_exception(error or UpstreamError(502, "upstream gave no response"))
            self.head.exception()  # retrieved: waiters may all be gone
        self._wake()

    def body(self) -> bytes | None:
        """The whole body if it stayed in memory."""
        return b"".join(self._chunks) if self._spooled == 0 else None

    def read(self, first: int, last: int) -> bytes:
        """Body bytes ``first..last`` (inclusive) of a finished fill, from the spool and memory.

        For answering a range out of a response that was not stored (a peer's,
        or one that may not be stored); the caller holds the fill, so the spool
        is still open.
        """
        if not self.done or self.error is not None or not 0 <= first <= last < self.size:
            raise ValueError(f"bytes {first}-{last} of a fill of {self.size} bytes (done: {self.done})")
        pieces = []
        while first <= last:
            data = self._read_at(first, last - first + 1)
            pieces.append(data)
            first += len(data)
        return b"".join(pieces)

    def _read_at(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` body bytes from ``offset`` (< size): from the spool, or the chunk holding it."""
        if offset < self._spooled:
            assert self._spool is not None
            data = os.pread(self._spool, min(limit, self._spooled - offset), offset)
            if not data:
                raise OSError(f"fill spool of {self.key} shorter than written")
            return data
        index = bisect.bisect_right(self._starts, offset) - 1
        data = self._chunks[index]
        skip = offset - self._starts[index]
        return data if skip == 0 and len(data) <= limit else data[skip : skip + limit]

    def _keep(self, data: bytes) -> None:
        self._starts.append(self.size)
        self._chunks.append(data)

    def _start_spool(self) -> None:
        directory = str(self._spool_dir) if self._spool_dir is not None else None
        try:
            fd, path = tempfile.mkstemp(prefix="fill-", suffix=".spool", dir=directory)
        except OSError as exc:
            self._spool_failed(exc)
            return
        os.unlink(path)  # lives as long as the fd: nothing to clean up after a crash
        weakref.finalize(self, os.close, fd)  # closed with the last reference (module docstring)
        self._spool = fd
        for data in self._chunks:
            if not self._spool_write(data):
                return  # the chunks stay where they are
            self._spooled += len(data)
        self._chunks, self._starts = [], []

    def _spool_write(self, data: bytes) -> bool:
        assert self._spool is not None
        try:
            _write_all(self._spool, data, self._spooled)
        except OSError as exc:
            self._spool_failed(exc)
            return False
        return True

    def _spool_failed(self, error: OSError) -> None:
        log.warning("fill of %s: cannot spool (%s); keeping the rest of the body in memory", self.key, error)
        self._spool_broken = True
        if self._chunks and self._spooled:  # a spool that failed while taking over the chunks
            self._spooled = 0

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the waiters' side ---------------------------------------------------

    async def stream(self) -> AsyncIterator[bytes]:
        """The body from the start, as it arrives; UpstreamError if the fill broke off."""
        offset = 0
        self.waiters += 1
        try:
            while True:
                if offset < self.size:
                    data = self._read_at(offset, SPOOL_READ if offset < self._spooled else self.size)
                    offset += len(data)
                    yield data
                elif self.done:
                    if self.error is not None:
                        raise self.error
                    return
                else:
                    await self._changed.wait()
        finally:
            self.waiters -= 1


class FillEntry:
    """A finished fill's response, answered like a stored entry (ranges, 304) without being stored.

    For responses a node relays but does not keep (a site peer's) or could
    not keep, so that a Range request still gets its range.
    """

    __slots__ = ("fill", "meta")

    def __init__(self, meta: EntryMeta, fill: Fill) -> None:
        self.meta = meta
        self.fill = fill

    def __repr__(self) -> str:
        return f"FillEntry({self.meta.key!r}, {self.fill.size} bytes)"


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Fills:
    """Fills in flight in this worker, by key; and finished fills whose response is still being stored."""

    def __init__(self) -> None:
        self._fills: dict[str, Fill] = {}
        self._storing: dict[str, Fill] = {}

    def get(self, key: str) -> Fill | None:
        return self._fills.get(key)

    def storing(self, fill: Fill) -> None:
        """``fill`` is finished and its store runs (the disk half in a thread): no longer joinable (a later
        request must see storage: a stale entry revalidates, another variant fetches), but a miss of the
        same variant may answer from it (:meth:`being_stored`) instead of fetching the object again."""
        self.remove(fill)
        self._storing[fill.key] = fill

    def stored(self, fill: Fill) -> None:
        if self._storing.get(fill.key) is fill:
            del self._storing[fill.key]

    def being_stored(self, key: str) -> Fill | None:
        return self._storing.get(key)

    def add(self, fill: Fill) -> None:
        self._fills[fill.key] = fill

    def remove(self, fill: Fill) -> None:
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]

    def __len__(self) -> int:
        return len(self._fills)
