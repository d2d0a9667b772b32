"""Honest accounting between site peers, end to end: two real caches, one site, the demo origin.

Node ``acc-a`` keeps hot objects for 60 s, ``acc-b`` for 1 s, so one pair
shows a hot copy serving within its window (objects ``acc-b`` owns, asked at
``acc-a``) and one going back to the owner after it (objects ``acc-a`` owns,
asked at ``acc-b``). Each test uses its own paths; the origin's per-path
counters and the caches' ``/status`` window figures tell what happened.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cache.policy import keys
from edgefleet.cache.upstream import tiers
from tests.cacheproc import CacheProcess, OriginProcess, all_started, cache_config, keepalive_client
from tests.cloudproc import free_port
from tests.waiting import wait_until

NAMES = ("acc-a", "acc-b")
HOT_SECONDS = {"acc-a": 60, "acc-b": 1}


@pytest.fixture(scope="module")
def pair(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CacheProcess]]:
    data_dir = tmp_path_factory.mktemp("pair")
    procs = {
        name: CacheProcess(cache_config(origin.url, data_dir, node=name, port=free_port()), data_dir) for name in NAMES
    }
    peers = [{"name": name, "url": proc.url} for name, proc in procs.items()]
    for name, proc in procs.items():
        proc.config["site"] = {"self": name, "peers": peers}
        proc.config["storage"]["hotObjects"] = {"seconds": HOT_SECONDS[name]}
    with all_started(list(procs.values())):
        yield procs


_paths = itertools.count()


def path_owned_by(owner: str, tag: str) -> str:
    """A new path of ``/bytes/...`` whose key the rendezvous hash gives to ``owner``."""
    while True:
        path = f"/bytes/2000/{tag}-{next(_paths)}"
        if tiers.rank(NAMES, keys.cache_key("http", "demo.test", path, "keep", ()))[0] == owner:
            return path


def get(proc: CacheProcess, path: str) -> httpx.Response:
    response = keepalive_client(proc.url).get(path, headers={"Host": "demo.test"})
    assert response.status_code == 200, response.text
    return response


def status(proc: CacheProcess) -> dict[str, Any]:
    """A fresh /status (no-cache: not the master's 0.2 s snapshot)."""
    data: dict[str, Any] = httpx.get(f"{proc.admin_url}/status", headers={"Cache-Control": "no-cache"}).json()
    return data


def demo(proc: CacheProcess) -> dict[str, int]:
    figures: dict[str, int] = status(proc)["domains"].get("demo", {})
    return figures


def test_a_non_owner_relaying_the_owners_hit_says_so_and_counts_no_origin_fetch(
    pair: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    a, b = pair["acc-a"], pair["acc-b"]
    path = path_owned_by("acc-b", "owner-hit")
    before_a, before_b = demo(a), demo(b)
    assert get(b, path).headers["x-cache"] == "MISS from acc-b"  # the owner fetches and stores it
    relayed = get(a, path)
    assert relayed.headers["x-cache"] == "HIT from acc-b, PEER from acc-a"
    assert origin.count(path) == 1
    after_a, after_b = demo(a), demo(b)
    moved_a = {name: after_a.get(name, 0) - before_a.get(name, 0) for name in after_a}
    moved_b = {name: after_b.get(name, 0) - before_b.get(name, 0) for name in after_b}
    assert moved_a["requests"] == 1 and moved_a["peer"] == 1 and moved_a["originRequests"] == 0
    assert moved_a["bytes"] == 2000 and moved_a["local"] == 0
    assert moved_b["requests"] == 1 and moved_b["tierRequests"] == 1 and moved_b["originRequests"] == 1
    assert moved_b["local"] == 1 and moved_b["origin"] == 1
    user_requests = moved_a["requests"] + moved_b["requests"]
    assert (user_requests, moved_a["originRequests"] + moved_b["originRequests"]) == (2, 1), "50% offload"


def test_origin_offload_is_full_when_the_origin_was_asked_once(
    pair: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    a, b = pair["acc-a"], pair["acc-b"]
    paths = [path_owned_by("acc-b", "offload") for _ in range(3)]
    for path in paths:
        for proc in (b, a, a, b):
            get(proc, path)
    assert [origin.count(path) for path in paths] == [1, 1, 1]
    figures = status(a)
    assert figures["servedOrigin"] == 0 and figures["originRequests"] == 0 and figures["offload"] == 1.0
    assert figures["windowSeconds"] == 300
    metrics = httpx.get(f"{a.admin_url}/metrics", headers={"Cache-Control": "no-cache"}).text
    assert 'edgefleet_cache_domain_requests_total{domain="demo",source="peer"}' in metrics
    assert 'edgefleet_cache_domain_origin_requests_total{domain="demo"} 0.0' in metrics


def test_a_hot_copy_serves_within_its_window_and_a_purge_clears_it(
    pair: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    a, b = pair["acc-a"], pair["acc-b"]
    path = path_owned_by("acc-b", "hot")
    assert get(a, path).headers["x-cache"] == "MISS from acc-b, PEER from acc-a"
    tier_before = demo(b)["tierRequests"]
    for _ in range(3):
        hot = get(a, path)
        assert hot.headers["x-cache"] == "HIT from acc-a", "served from acc-a's memory (60 s window)"
        assert int(hot.headers["age"]) >= 0
    assert demo(b)["tierRequests"] == tier_before, "the owner was not asked again"
    assert status(a)["servedLocal"] >= 3
    purged = a.admin("POST", "/purge", json={"domain": "demo", "urls": [path]})
    assert purged.status_code == 200, purged.text
    assert get(a, path).headers["x-cache"] == "HIT from acc-b, PEER from acc-a", "back to the owner after the purge"
    assert demo(b)["tierRequests"] == tier_before + 1
    assert origin.count(path) == 1


def test_a_hot_copy_keeps_the_owners_age_and_never_outlives_its_freshness(
    pair: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    a = pair["acc-a"]
    aged = path_owned_by("acc-b", "aged") + "?age=30"
    get(a, aged)
    hot = get(a, aged)
    assert hot.headers["x-cache"] == "HIT from acc-a"
    assert int(hot.headers["age"]) >= 30, "the hot copy's Age is the owner's plus the time since"
    short = path_owned_by("acc-b", "short") + "?cc=max-age=1"
    assert get(a, short).headers["x-cache"] == "MISS from acc-b, PEER from acc-a"
    # acc-a's window is 60 s, the owner's copy is fresh for 1 s: acc-a goes back to the owner once it is stale
    wait_until(lambda: get(a, short).headers["x-cache"].endswith("PEER from acc-a"), timeout=10)


def test_a_hot_copy_goes_back_to_the_owner_after_its_window(
    pair: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    a, b = pair["acc-a"], pair["acc-b"]
    path = path_owned_by("acc-a", "expiry")
    assert get(b, path).headers["x-cache"] == "MISS from acc-a, PEER from acc-b"
    # acc-b keeps hot copies 1 s: within it, it answers itself; after it, it asks the owner again
    wait_until(lambda: get(b, path).headers["x-cache"] == "HIT from acc-a, PEER from acc-b", timeout=10)
    assert origin.count(path) == 1
    assert demo(a)["tierRequests"] >= 2


def test_hot_objects_can_be_turned_off(origin: OriginProcess, tmp_path: Path) -> None:
    """hotObjects with seconds 0: a non-owner relays every request."""
    procs = {name: CacheProcess(cache_config(origin.url, tmp_path, node=name), tmp_path) for name in NAMES}
    peers = [{"name": name, "url": proc.url} for name, proc in procs.items()]
    for name, proc in procs.items():
        proc.config["site"] = {"self": name, "peers": peers}
        proc.config["storage"]["hotObjects"] = {"seconds": 0}
    path = path_owned_by("acc-b", "off")
    with all_started(list(procs.values())):
        chains = [get(procs["acc-a"], path).headers["x-cache"] for _ in range(3)]
    assert chains == ["MISS from acc-b, PEER from acc-a"] + ["HIT from acc-b, PEER from acc-a"] * 2


def test_a_child_sites_request_counts_as_a_tier_request_though_its_address_is_not_trusted(
    cache: CacheProcess,
) -> None:
    """A parent does not know its child sites' nodes: the tier field alone makes the request a cache's."""
    get(cache, "/bytes/100/child")
    for _ in range(2):  # a miss and then a fast-path hit, both asked by a child
        response = keepalive_client(cache.url).get(
            "/bytes/100/child-asked", headers={"Host": "demo.test", "X-Edgefleet-Tier": "parent"}
        )
        assert response.status_code == 200
    figures = status(cache)
    assert (figures["clientRequests"], figures["tierRequests"]) == (1, 2)
    stripped = cache.metric("edgefleet_cache_tier_fields_stripped_total")
    assert stripped == 1, "still not trusted for routing (stripped from the miss; a hit forwards nothing)"
