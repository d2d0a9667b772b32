"""The cache process serves a miss, then a hit, from a real origin."""

from __future__ import annotations

from pathlib import Path

from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started


def test_miss_then_hit(cache: CacheProcess, origin: OriginProcess) -> None:
    first = cache.get("/bytes/1024/smoke")
    second = cache.get("/bytes/1024/smoke")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS from t1"
    assert second.headers["x-cache"] == "HIT from t1"
    assert first.content == second.content and len(first.content) == 1024
    assert origin.count("/bytes/1024/smoke") == 1


def test_zone_aliases_share_the_canonical_hostname_entry(origin: OriginProcess, tmp_path: Path) -> None:
    config = cache_config(origin.url, tmp_path, node="alias")
    config["domains"][0]["aliases"] = ["demo.cdn.edgefleet.test", "*.demo.cdn.edgefleet.test"]
    with started(CacheProcess(config, tmp_path)) as cache:
        miss = cache.get("/bytes/512/aliased", host="par-edge-1.demo.cdn.edgefleet.test")
        hit = cache.get("/bytes/512/aliased", host="demo.test")
        also = cache.get("/bytes/512/aliased", host="demo.cdn.edgefleet.test:8081")
        assert miss.headers["x-cache"].startswith("MISS") and hit.headers["x-cache"].startswith("HIT")
        assert also.headers["x-cache"].startswith("HIT")
        assert origin.count("/bytes/512/aliased") == 1
        echoed = cache.get("/echo", host="n2.demo.cdn.edgefleet.test").json()
        assert echoed["headers"]["host"] == "demo.test", "the origin is asked for the Domain's own hostname"
