"""A worker's access log: a tuple a request on the hot path, lines written in batches off it.

How: :meth:`AccessLog.record` appends one tuple (:data:`~edgefleet.cache.front.logformat.Record`:
the time, the request's and connection's strings, status, bytes, cache
status, seconds, upstream ms) to a list: no formatting, no lookup, no dict. The
batch is formatted by :class:`~edgefleet.cache.front.logformat.Formatter`
and written with ONE ``write()`` to a file opened with ``O_APPEND`` when
``flushMs`` has passed (:meth:`AccessLog.run`, on the worker's loop), as soon
as the loop is free once the batch holds about ``flushBytes`` of lines (the
record count is estimated from the last batch's line size), on reopen and
on shutdown (:meth:`AccessLog.close`). With ``O_APPEND`` the kernel appends
each ``write()`` whole at the end of the file under the inode's lock, so
several workers sharing one file never interleave partial lines (a write is
only cut short by a full disk; the rest follows at once).

What a crash costs: the records of the current flush window, at most
``flushMs`` (or ``flushBytes``) worth of requests; everything flushed before
is in the kernel's page cache, so a SIGKILL of the worker loses nothing
more (a power cut loses what the kernel had not written back; no fsync).

Rotation: :meth:`AccessLog.reopen` flushes to the file it has (which may have
been renamed: the ``mv`` then SIGUSR1 of logrotate, or the master's
size-based rotation, :mod:`edgefleet.cache.front.logrotate`) and opens the
path again, so every line lands in exactly one file.

Shipping: each batch written also goes to the optional
:class:`~edgefleet.cache.front.logship.Shipper` (``accessLog.sink``), which
POSTs batches from the loop with a bounded queue.

Why a tuple and a batch: ``json.dumps`` of a dict and a buffered file write
per request held 1 KB hits to a third of nginx's rate. Measured on the
2-core VM (``valgrind --tool=callgrind`` instruction counts, and
timings): the tuple costs about 0.4 µs (3.3k instructions), formatting and
writing a JSON line with every field about 1.3 µs (12.5k instructions; 13k
for ``cdn``, 8k for ``combined``), 16k in all a request (19k before the
batch was formatted by one generated comprehension). The ``write()`` is about
0.1 µs a line (a page-cache copy), so a writer thread would save at most that
and still hold the GIL to format: the loop writes itself. Strings only in the
tuple: keeping the request object (and so its header list) alive until the
flush cost the garbage collector about 0.25 µs more a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgefleet.cache.config import AccessLogConfig, CacheConfig
from edgefleet.cache.errors import CacheError
from edgefleet.cache.front.logformat import Formatter, Record
from edgefleet.cache.stats import Stats

if TYPE_CHECKING:
    from edgefleet.cache.front.logship import Shipper
    from edgefleet.cache.wire.http1 import Request

log = logging.getLogger("edgefleet.cache")

STDERR = 2
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
LINE_GUESS = 256
"""Bytes a line is assumed to take before the first batch tells."""
ERROR_LOG_SECONDS = 60.0
"""A failing write is logged at most this often (a full disk must not flood the log)."""


def open_access_log(
    config: CacheConfig, base: Path, stats: Stats, domain_of: Callable[[str], str | None]
) -> AccessLog | None:
    """The worker's access log as ``config`` says (None when off); CacheError when the file cannot be opened.

    ``base``: the config file's directory (relative paths); ``domain_of``: a host's Domain name.
    """
    settings = config.access_log
    if not settings.active:
        return None
    shipper = None
    if settings.sink is not None:
        from edgefleet.cache.front.logship import Shipper  # aiohttp's client: loaded only with a sink

        content_type = "application/x-ndjson" if settings.format == "json" else "text/plain; charset=us-ascii"
        shipper = Shipper(settings.sink, stats, content_type)
    path = settings.file(base)
    try:
        return AccessLog(settings, config.node, path, stats, domain_of, shipper)
    except OSError as exc:
        raise CacheError(f"accessLog.path: cannot open {path}: {exc.strerror}") from None


class Peer(Protocol):
    """What a line needs of the client connection."""

    peer_ip: str
    tls_version: str | None


class AccessLog:
    """One worker's access log (see the module docstring)."""

    def __init__(
        self,
        settings: AccessLogConfig,
        node: str,
        path: Path | None,
        stats: Stats,
        domain_of: Callable[[str], str | None],
        shipper: Shipper | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self.stats = stats
        self.shipper = shipper
        self.sample = settings.sample
        self.flush_seconds = settings.flush_ms / 1000
        self.flush_bytes = settings.flush_bytes
        self.formatter = Formatter(settings.format, settings.fields, node, domain_of)
        self._records: list[Record] = []
        self._batch = max(1, self.flush_bytes // LINE_GUESS)
        self._clock = clock
        self._random = random.random
        self._fd = self._open()
        self._flush_due = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error = -ERROR_LOG_SECONDS
        self._flusher: asyncio.Task[None] | None = None
        self._shipping: asyncio.Task[None] | None = None

    def _open(self) -> int:
        if self.path is None:
            return STDERR
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, OPEN_FLAGS, 0o644)

    # --- the hot path -------------------------------------------------------------

    def record(
        self,
        request: Request,
        client: Peer,
        status: int,
        sent: int,
        cache: str,
        seconds: float,
        upstream_ms: float | None = None,
    ) -> None:
        """Keep one request's record: strings and numbers only, so that nothing else stays alive until the flush."""
        if self.sample < 1.0 and self._random() >= self.sample:
            return
        records = self._records
        records.append(
            (
                self._clock(),
                request.method,
                request.host,
                request.target,
                request.version,
                request.agent,
                request.referer,
                client.peer_ip,
                client.tls_version,
                status,
                sent,
                cache,
                seconds,
                upstream_ms,
            )
        )
        if len(records) >= self._batch and not self._flush_due:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush once the loop is free (not inside the request that filled the batch); at once without a loop."""
        if self._loop is None:
            self.flush()
            return
        self._flush_due = True
        self._loop.call_soon(self.flush)

    # --- off the hot path ---------------------------------------------------------

    def start(self) -> None:
        """Start flushing every ``flushMs`` (and shipping, with a sink) on the running loop."""
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self.run())
        if self.shipper is not None:
            self._shipping = loop.create_task(self.shipper.run())

    async def stop(self) -> None:
        """Shutdown: stop the flushing task, write what is left, give the sink a short grace, close."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.close()
        if self.shipper is not None:
            await self.shipper.close(self._shipping)

    async def run(self) -> None:
        """Flush every ``flushMs`` until cancelled (the worker runs it as a task)."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.flush_seconds)
                self.flush()
        finally:
            self._loop = None

    def flush(self) -> None:
        """Format the records kept so far and write them with one ``write()``."""
        self._flush_due = False
        records, self._records = self._records, []
        if not records:
            return
        data = self.formatter.lines(records)
        self._batch = max(16, self.flush_bytes * len(records) // len(data))
        if self._write(data):
            self.stats.access_log_lines += len(records)
            self.stats.access_log_bytes += len(data)
        if self.shipper is not None:
            self.shipper.offer(data, len(records))

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.stats.access_log_flush_errors += 1
            now = time.monotonic()
            if now - self._last_error >= ERROR_LOG_SECONDS:
                self._last_error = now
                log.error("access log %s: cannot write: %s (lines are dropped)", self.path or "stderr", exc.strerror)
            return False
        return True

    def reopen(self) -> None:
        """Flush to the file open now, then open the path again (after a rename: logrotate, maxBytes)."""
        self.flush()
        if self.path is None:
            return
        try:
            fd = self._open()
        except OSError as exc:
            log.error("access log %s: cannot reopen, still writing the old file: %s", self.path, exc.strerror)
            return
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        """Flush and close (shutdown); later records are dropped."""
        self.flush()
        self.sample = 0.0
        if self._fd != STDERR:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = STDERR
