"""Collapsing across worker processes: one fill per key on the whole node.

How: inside a worker, :mod:`edgefleet.cache.upstream.fills` collapses concurrent
misses and streams the body to every waiter. Across workers (which share the
disk tier but not memory) the worker that starts a fill also takes an
exclusive ``flock`` on ``<disk>/locks/<id[:2]>/<id>`` without blocking. A
worker that finds the lock taken waits until it is released (polling every
few milliseconds, up to ``wait_limit`` seconds) and then looks in the disk
tier, where the other worker has just stored the object; only if it is not
there (not storable, or the fill failed) does it fetch for itself.

The lock is advisory and dies with its holder: a worker that crashes
mid-fill releases it, and the waiters go on. Lock files are left in place
(an empty file per recently filled key, reused by the next fill); they are
tiny, and the disk tier removes them with the objects directory.

Why not stream across workers too: it would need the spool in shared
memory or a file both can follow; nginx's ``proxy_cache_lock`` also makes
other workers wait for completion. Waiters in the filling worker, usually
the most, are streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

from edgefleet.cache.storage.entries import entry_id

POLL_SECONDS = 0.005


class NodeLocks:
    """Per-key fill locks shared by the workers of one node (through the disk tier's directory)."""

    def __init__(self, directory: Path, wait_limit: float = 30.0) -> None:
        self.directory = directory
        self.wait_limit = wait_limit

    def _path(self, key: str) -> Path:
        digest = entry_id(key, "")
        return self.directory / digest[:2] / digest

    def try_acquire(self, key: str) -> int | None:
        """The held lock's fd, or None when another worker holds it."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def release(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    async def wait_released(self, key: str) -> bool:
        """Wait until no worker holds ``key``'s lock; False if that took longer than ``wait_limit``."""
        deadline = time.monotonic() + self.wait_limit
        while time.monotonic() < deadline:
            fd = self.try_acquire(key)
            if fd is not None:
                self.release(fd)
                return True
            await asyncio.sleep(POLL_SECONDS)
        return False
