"""The master's side of the access log: reopen on SIGUSR1, rotation by size, a start-up check.

How: the workers append to one file (:mod:`edgefleet.cache.front.accesslog`).
Rotation is done by ONE process, the master, and never copies or truncates:

- the logrotate way: an operator (or logrotate) renames ``access.log`` and
  sends SIGUSR1 to the master, which tells every worker to ``reopen`` over
  its control channel;
- by size (``accessLog.maxBytes``): once a second the master compares the
  file's size with ``maxBytes``; when it is larger it renames
  ``access.log.(keep-1)`` to ``access.log.keep`` (the oldest is replaced), ...,
  ``access.log`` to ``access.log.1``, and tells the workers to reopen.

Why no line is lost or duplicated: a rename keeps the inode, so a worker
writing between the rename and its reopen still appends to the renamed file;
a worker's reopen first writes what it holds to the file it has, then opens
the path anew (created by the first worker that opens it). Every batch is
one ``write()`` to exactly one file. The next size check waits until every
worker has answered, so two renames never race one reopen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from edgefleet.cache.config import CacheConfig
from edgefleet.cache.errors import CacheError

log = logging.getLogger("edgefleet.cache")

CHECK_SECONDS = 1.0
"""How often the master compares the file's size with ``maxBytes``."""


def renames(path: Path, keep: int) -> list[tuple[Path, Path]]:
    """The renames of one rotation, in order: the oldest kept file first, ``path`` to ``path.1`` last."""
    numbered = [path.with_name(f"{path.name}.{index}") for index in range(1, keep + 1)]
    steps = [(numbered[index - 1], numbered[index]) for index in range(keep - 1, 0, -1)]
    return [*steps, (path, numbered[0])]


def rotate(path: Path, keep: int) -> bool:
    """Rename the files as :func:`renames` says (missing ones skipped); whether ``path`` itself was renamed."""
    moved = False
    for source, target in renames(path, keep):
        try:
            os.rename(source, target)
        except FileNotFoundError:
            continue
        moved = source == path
    return moved


def check_file(config: CacheConfig, base: Path) -> None:
    """Before the workers start: the access log file can be opened for appending (else CacheError, by field)."""
    settings = config.access_log
    path = settings.file(base)
    if not settings.active or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise CacheError(f"accessLog.path: cannot open {path} for appending: {exc.strerror}") from None


class LogFiles:
    """What the master does for the access log: reopen on request, rotate by size (see the module docstring)."""

    def __init__(self, config: CacheConfig, base: Path, reopen: Callable[[], Awaitable[object]]) -> None:
        settings = config.access_log
        self.path = settings.file(base) if settings.active else None
        self.max_bytes = settings.max_bytes
        self.keep = settings.keep
        self._reopen = reopen
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Check the size every second (with ``maxBytes``)."""
        if self.path is not None and self.max_bytes is not None:
            self._spawn(self._watch_size())

    def reopen_soon(self) -> None:
        """SIGUSR1: the workers reopen the file (it was renamed by someone else)."""
        self._spawn(self.reopen())

    async def reopen(self) -> None:
        async with self._lock:
            await self._tell_workers()

    async def rotate_if_large(self) -> bool:
        """Rotate when the file is larger than ``maxBytes``; whether it did."""
        if self.path is None or self.max_bytes is None:
            return False
        async with self._lock:
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                return False
            if size <= self.max_bytes or not rotate(self.path, self.keep):
                return False
            log.info("access log %s: %d bytes, rotated (keeping %d)", self.path, size, self.keep)
            await self._tell_workers()
            return True

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_size(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.rotate_if_large()
            except OSError as exc:
                log.error("access log %s: rotation failed: %s", self.path, exc)

    async def _tell_workers(self) -> None:
        try:
            await self._reopen()
        except (CacheError, TimeoutError) as exc:  # a worker restarting opens the file anew anyway
            log.warning("access log: not every worker reopened the file: %s", exc)

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
