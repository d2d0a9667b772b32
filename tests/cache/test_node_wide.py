"""Behaviour that spans the worker processes of one node: collapsing across workers, sendfile from disk."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx

from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started
from tests.waiting import wait_until


async def _burst(url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers={"Host": "demo.test"}) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(count)))


def test_concurrent_misses_over_two_workers_reach_the_origin_once(origin: OriginProcess, tmp_path: Path) -> None:
    with started(CacheProcess(cache_config(origin.url, tmp_path, workers=2), tmp_path)) as cache:
        path = "/bytes/65536/two-workers?delay=400"
        responses = asyncio.run(_burst(cache.url + path, 120))
        assert all(r.status_code == 200 and len(r.content) == 65536 for r in responses)
        assert len({r.content for r in responses}) == 1
        assert origin.count(path) == 1
        assert cache.status()["workers"] == 2


def test_large_disk_object_is_sent_whole_and_in_ranges(origin: OriginProcess, tmp_path: Path) -> None:
    config = cache_config(origin.url, tmp_path)
    config["storage"]["memoryObjectBytes"] = 1 << 20  # 6 MiB bodies are served from disk only
    with started(CacheProcess(config, tmp_path)) as cache:
        path = "/bytes/6291456/big"
        expected = httpx.get(origin.url + path).content
        miss = cache.get(path)
        assert miss.headers["x-cache"] == "MISS from t1"
        # The disk commit runs in a thread after the response; a request meanwhile joins the finished fill
        # (a MISS without a second origin fetch), so wait for the HIT rather than expect it at once.
        hit = wait_until(lambda: (found := cache.get(path)).headers["x-cache"] == "HIT from t1" and found, 15)
        assert hashlib.sha256(hit.content).digest() == hashlib.sha256(expected).digest()
        ranged = cache.get(path, range="bytes=4000000-4999999")
        assert ranged.status_code == 206 and ranged.content == expected[4000000:5000000]
        assert origin.count(path) == 2  # the full fetch above and the test's own reference fetch
