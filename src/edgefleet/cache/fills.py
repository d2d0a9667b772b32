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

A head that is not shareable (``private``, ``Set-Cookie``, ...) is for the
request that started the fill only; the other waiters send their own
request, as RFC 9111 §4 requires of a cache that collapses requests.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.cache.errors import UpstreamError

SPOOL_READ = 256 * 1024


@dataclass(slots=True)
class FillHead:
    """What a fill learned from upstream, enough for each waiter to answer.

    ``entry`` is set when the answer is a stored entry (revalidated by a 304,
    or stale served because upstream failed); otherwise the waiter answers
    ``status``/``headers`` and streams the body.
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
        self._chunks: list[bytes] = []
        self._spool: int | None = None
        self._changed = asyncio.Event()

    # --- the fill task's side ----------------------------------------------

    def publish(self, head: FillHead) -> None:
        if not self.head.done():
            self.head.set_result(head)

    def append(self, data: bytes) -> None:
        if self._spool is None and self.size + len(data) > self._memory_limit:
            self._start_spool()
        if self._spool is None:
            self._chunks.append(data)
        else:
            _write_all(self._spool, data, self.size)
        self.size += len(data)
        self._wake()

    def finish(self, error: UpstreamError | None = None) -> None:
        self.error = error
        self.done = True
        if not self.head.done():
            self.head.set_exception(error or UpstreamError(502, "upstream gave no response"))
            self.head.exception()  # retrieved: waiters may all be gone
        self._wake()

    def body(self) -> bytes | None:
        """The whole body if it stayed in memory."""
        return b"".join(self._chunks) if self._spool is None else None

    def _start_spool(self) -> None:
        directory = str(self._spool_dir) if self._spool_dir is not None else None
        fd, path = tempfile.mkstemp(prefix="fill-", suffix=".spool", dir=directory)
        os.unlink(path)  # lives as long as the fd: nothing to clean up after a crash
        weakref.finalize(self, os.close, fd)  # closed with the last reference (module docstring)
        offset = 0
        for data in self._chunks:
            _write_all(fd, data, offset)
            offset += len(data)
        self._chunks = []
        self._spool = fd

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the waiters' side ---------------------------------------------------

    async def stream(self) -> AsyncIterator[bytes]:
        """The body from the start, as it arrives; UpstreamError if the fill broke off."""
        offset = 0
        index = 0
        self.waiters += 1
        try:
            while True:
                if self._spool is None and index < len(self._chunks):
                    data = self._chunks[index]
                    index += 1
                    offset += len(data)
                    yield data
                elif self._spool is not None and offset < self.size:
                    data = os.pread(self._spool, min(SPOOL_READ, self.size - offset), offset)
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


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Fills:
    """Fills in flight in this worker, by key."""

    def __init__(self) -> None:
        self._fills: dict[str, Fill] = {}

    def get(self, key: str) -> Fill | None:
        return self._fills.get(key)

    def add(self, fill: Fill) -> None:
        self._fills[fill.key] = fill

    def remove(self, fill: Fill) -> None:
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]

    def __len__(self) -> int:
        return len(self._fills)
