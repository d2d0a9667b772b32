"""The cache's admin figures as they are now: ``/status`` and ``/metrics`` asked with ``Cache-Control: no-cache``.

Why: the master answers from a snapshot of its workers' counters kept for 0.2 s
(``edgefleet.cache.front.master.SNAPSHOT_SECONDS``); a test that counts what it
just sent used to sleep past it. With ``no-cache`` the master asks its workers
now. Waiting for something a worker does on its own schedule (a disk store in
its thread, a log flush) is still a condition to poll: ``tests.waiting.wait_until``.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.cacheproc import CacheProcess

FRESH = {"Cache-Control": "no-cache"}


def fresh_status(cache: CacheProcess) -> dict[str, Any]:
    """``/status`` with the workers' counters as they are now."""
    data: dict[str, Any] = httpx.get(f"{cache.admin_url}/status", headers=FRESH, timeout=5).json()
    return data


def fresh_metric(cache: CacheProcess, name: str) -> float:
    """One sample of ``/metrics`` with the workers' counters as they are now (KeyError if absent)."""
    text = httpx.get(f"{cache.admin_url}/metrics", headers=FRESH, timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)
