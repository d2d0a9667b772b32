"""Shipping access log batches to a collector (``accessLog.sink``): POSTs from the worker's loop, bounded.

How: every batch the access log writes is also offered here
(:meth:`Shipper.offer`), cut at line ends into pieces of at most
``maxBatchBytes``, and queued. :meth:`Shipper.run` (a task of the worker)
POSTs the oldest queued lines, up to ``maxBatchBytes`` a request, with the
aiohttp client the cache already uses; a 2xx answer ships them. Any other
answer, a connection error or a timeout keeps them queued and waits before
the next try (exponential backoff with jitter, 0.5 s doubling up to 30 s), so
a collector that is down costs one failed request per backoff step, not one
per batch.

Bounded: the queue holds at most ``maxQueueBytes`` (lines in flight count);
when a new batch does not fit, the oldest queued batches are dropped and
counted (``access_log_batches_dropped``, ``access_log_lines_dropped``): the
file keeps every line, the sink is best effort. On shutdown the worker gives
the queue a short grace (:meth:`Shipper.close`) and drops the rest.

Why from the worker's loop and not a thread: a POST is a few syscalls per
batch (hundreds of lines), far off the per-request path, and the loop
already runs the upstream client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque

import aiohttp

from edgefleet.cache.config import LogSinkConfig
from edgefleet.cache.stats import Stats

log = logging.getLogger("edgefleet.cache")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
CLOSE_GRACE = 2.0
"""Seconds a stopping worker waits for the queue to ship."""


def pieces(data: bytes, limit: int) -> list[bytes]:
    """``data`` (whole lines) cut at line ends into pieces of at most ``limit`` bytes (a longer line stays whole)."""
    out = []
    start = 0
    while len(data) - start > limit:
        end = data.rfind(b"\n", start, start + limit)
        if end < 0:  # one line longer than the limit: sent alone
            end = data.find(b"\n", start + limit)
            if end < 0:
                break
        out.append(data[start : end + 1])
        start = end + 1
    if start < len(data):
        out.append(data[start:])
    return out


def backoff(failures: int, draw: float) -> float:
    """Seconds to wait after ``failures`` failed POSTs in a row; ``draw`` in [0, 1) spreads workers apart."""
    delay: float = BACKOFF_FIRST * 2.0 ** max(0, failures - 1)
    return min(BACKOFF_MAX, delay) * (0.5 + draw / 2)


class Shipper:
    """The sink of one worker (see the module docstring)."""

    def __init__(self, settings: LogSinkConfig, stats: Stats, content_type: str) -> None:
        self.settings = settings
        self.stats = stats
        self.content_type = content_type
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0  # queued and in flight
        self._in_flight: list[bytes] = []
        self._wake = asyncio.Event()
        self._failures = 0

    def offer(self, data: bytes, lines: int) -> None:
        """Queue a written batch; drop the oldest queued batches when it does not fit."""
        for piece in pieces(data, self.settings.max_batch_bytes):
            self.queue.append(piece)
            self.queued_bytes += len(piece)
        self._bound()
        self._wake.set()

    def _bound(self) -> None:
        while self.queued_bytes > self.settings.max_queue_bytes and self.queue:
            dropped = self.queue.popleft()
            self.queued_bytes -= len(dropped)
            self.stats.access_log_batches_dropped += 1
            self.stats.access_log_lines_dropped += dropped.count(b"\n")

    def _take(self) -> bytes:
        """The oldest queued lines, up to ``maxBatchBytes``, moved to in flight."""
        size = 0
        while self.queue and (not self._in_flight or size + len(self.queue[0]) <= self.settings.max_batch_bytes):
            piece = self.queue.popleft()
            self._in_flight.append(piece)
            size += len(piece)
        return b"".join(self._in_flight)

    def _settle(self, shipped: bool) -> None:
        if shipped:
            self.queued_bytes -= sum(map(len, self._in_flight))
            self.stats.access_log_batches_shipped += 1
        else:
            self.queue.extendleft(reversed(self._in_flight))
            self._bound()
        self._in_flight = []

    async def run(self) -> None:
        """POST queued lines until cancelled (see the module docstring)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self.queue:
                    if not await self._ship(session):
                        await asyncio.sleep(backoff(self._failures, random.random()))

    async def _ship(self, session: aiohttp.ClientSession) -> bool:
        body = self._take()
        shipped = False
        try:
            async with session.post(
                self.settings.url, data=body, headers={"Content-Type": self.content_type}
            ) as response:
                await response.read()
                shipped = 200 <= response.status < 300
                problem = f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
        finally:
            self._settle(shipped)
        if shipped:
            self._failures = 0
            return True
        self._failures += 1
        self.stats.access_log_ship_errors += 1
        if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
            log.warning("access log sink %s: %s (failure %d in a row)", self.settings.url, problem, self._failures)
        return False

    async def close(self, task: asyncio.Task[None] | None) -> None:
        """Give the queue :data:`CLOSE_GRACE` seconds to ship, then stop the task."""
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                while (self.queue or self._in_flight) and not task.done():
                    self._wake.set()
                    await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
