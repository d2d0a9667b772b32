"""The figures rollout analysis reads from a real cache: 5xx sent, failed upstream fetches, p99 response time.

Real processes: the programmable origin and ``edgefleet cache`` with two
workers (so every figure is a sum over workers) in front of it, with paths
the origin answers 500, a Domain whose origin is a port nobody listens on,
and a slow path; then a cache whose site peer and parent site are dead
ports. ``/status`` is polled with a deadline (the master keeps the workers'
stats for 0.2 s), and what the agent keeps of it for ``Node.status.cache``
is checked against it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cache.latency import GROWTH
from edgefleet.cache.upstream import tiers
from edgefleet.edge.cachetasks import cache_stats
from tests.cache.figures import fresh_status
from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started
from tests.cloudproc import free_port
from tests.waiting import wait_until

FIGURES = ("serverErrors", "upstreamErrors", "latencyP99Ms")
SLOW_MS = 300


def refused_url() -> str:
    """An http:// URL of a loopback port nobody listens on: connections to it are refused."""
    return f"http://127.0.0.1:{free_port()}"


def status_when(
    cache: CacheProcess, done: Callable[[dict[str, Any]], bool], time_limit: float = 10.0
) -> dict[str, Any]:
    """The cache's ``/status`` once ``done`` holds for it (polled until ``time_limit`` seconds)."""

    def reached() -> dict[str, Any] | None:
        status = fresh_status(cache)
        return status if done(status) else None

    return wait_until(reached, timeout=time_limit, what="/status to get there")


def path_owned_by(peer: str, peers: list[str]) -> str:
    """A path of Host ``demo.test`` whose cache key ``peer`` owns among ``peers`` (rendezvous hashing)."""
    paths = (f"/bytes/100/owned-{index}" for index in itertools.count())
    return next(path for path in paths if tiers.rank(peers, f"http://demo.test{path}")[0] == peer)


@pytest.fixture
def cache(origin: OriginProcess, tmp_path: Path) -> Iterator[CacheProcess]:
    """Two workers; Domain ``demo`` from the origin, Domain ``dead`` (Host ``dead.test``) from a refused port."""
    config = cache_config(origin.url, tmp_path, node="figures", workers=2)
    config["domains"].append({"name": "dead", "hostnames": ["dead.test"], "origins": [{"url": refused_url()}]})
    with started(CacheProcess(config, tmp_path)) as proc:
        yield proc


def test_status_counts_5xx_sent_failed_fetches_and_the_p99(cache: CacheProcess, origin: OriginProcess) -> None:
    fresh = cache.status()
    assert (fresh["serverErrors"], fresh["upstreamErrors"], fresh["latencyP99Ms"]) == (0, 0, None)

    for index in range(3):  # the origin's 500, relayed: a 5xx sent and a failed fetch each
        assert cache.get(f"/bytes/100/boom-{index}?status=500").status_code == 500
    for index in range(2):  # no connection to the origin: the cache's own 502, and a failed fetch each
        assert cache.get(f"/bytes/100/gone-{index}", host="dead.test").status_code == 502
    assert cache.get(f"/bytes/100/slow?delay={SLOW_MS}").status_code == 200
    for _ in range(5):
        assert cache.get("/bytes/100/fine").status_code == 200

    status = status_when(cache, lambda s: s["requests"] == 11)
    assert (status["serverErrors"], status["upstreamErrors"]) == (5, 5)
    assert origin.count("/bytes/100/boom-0?status=500") == 1
    # The slowest of 11 is the p99: in the slow response's bucket (19 % wide), at most a busy machine later.
    assert SLOW_MS / GROWTH <= status["latencyP99Ms"] < 5000
    kept = cache_stats(status)
    assert kept is not None and {name: kept[name] for name in FIGURES} == {name: status[name] for name in FIGURES}


def test_a_failed_parent_counts_a_failed_site_peer_does_not(origin: OriginProcess, tmp_path: Path) -> None:
    config = cache_config(origin.url, tmp_path, node="edge-1")
    config["site"] = {
        "self": "edge-1",
        "peers": [{"name": "edge-1", "url": f"http://{config['listen']}"}, {"name": "edge-2", "url": refused_url()}],
        "parents": [{"site": "parent", "nodes": [{"name": "parent-1", "url": refused_url()}]}],
    }
    with started(CacheProcess(config, tmp_path)) as cache:
        response = cache.get(path_owned_by("edge-2", ["edge-1", "edge-2"]))  # edge-2, parent-1, then the origin
        assert (response.status_code, response.headers["x-cache"]) == (200, "MISS from edge-1")
        status = status_when(cache, lambda s: s["requests"] == 1)
        assert (status["serverErrors"], status["upstreamErrors"]) == (0, 1)
        assert cache.metric("edgefleet_cache_peer_failures_total") == 1
        assert cache.metric("edgefleet_cache_upstream_failures_total") == 1
