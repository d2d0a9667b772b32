"""The cache process serves a miss, then a hit, from a real origin."""

from __future__ import annotations

from tests.cacheproc import CacheProcess, OriginProcess


def test_miss_then_hit(cache: CacheProcess, origin: OriginProcess) -> None:
    first = cache.get("/bytes/1024/smoke")
    second = cache.get("/bytes/1024/smoke")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS from t1"
    assert second.headers["x-cache"] == "HIT from t1"
    assert first.content == second.content and len(first.content) == 1024
    assert origin.count("/bytes/1024/smoke") == 1
