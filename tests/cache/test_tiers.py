"""Cache tiers, end to end: a site of three edge nodes under a parent site of two, in front of one origin.

Every node is a real ``edgefleet cache`` process on 127.0.0.1 with its own
port. The edge nodes share one ``site.peers`` list (each its own
``site.self``) and name the parent site's nodes; the parent nodes form a
site of their own. Rendezvous hashing must make each URL fetched once per
site (and, through the parent, once from the origin) and stored on exactly
one node of each site, whichever edge node the client asks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefleet.cache.config import parse_config
from edgefleet.cache.errors import ConfigError
from edgefleet.cache.policy import keys
from edgefleet.cache.upstream import tiers
from edgefleet.cache.upstream.forwarding import fleet_addresses
from edgefleet.demo.origin import Body
from tests.cacheproc import CacheProcess, OriginProcess, all_started, cache_config, keepalive_client
from tests.cloudproc import free_port

EDGES = ("edge-a", "edge-b", "edge-c")
PARENTS = ("parent-a", "parent-b")


def peer(proc: CacheProcess) -> dict[str, str]:
    return {"name": proc.config["node"], "url": proc.url}


def node(origin: OriginProcess, data_dir: Path, name: str) -> CacheProcess:
    return CacheProcess(cache_config(origin.url, data_dir, node=name, port=free_port()), data_dir)


@pytest.fixture(scope="module")
def site(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CacheProcess]]:
    """Three edge nodes (one site) under a parent site of two nodes."""
    data_dir = tmp_path_factory.mktemp("site")
    procs = {name: node(origin, data_dir, name) for name in EDGES + PARENTS}
    parents = [procs[name] for name in PARENTS]
    for name in PARENTS:
        procs[name].config["site"] = {"self": name, "peers": [peer(proc) for proc in parents]}
    for name in EDGES:
        procs[name].config["site"] = {
            "self": name,
            "peers": [peer(procs[edge]) for edge in EDGES],
            "parents": [{"site": "parent", "nodes": [peer(proc) for proc in parents]}],
        }
    with all_started(list(procs.values())):
        yield procs


def fetch(proc: CacheProcess, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return keepalive_client(proc.url).get(target, headers={"Host": "demo.test", **(headers or {})})


def expected(path: str, size: int) -> bytes:
    return Body(size=size, seed=f"{path}|0").read(0, size)


def owner_of(target: str, names: tuple[str, ...]) -> str:
    return tiers.rank(names, keys.cache_key("http", "demo.test", target, "keep", ()))[0]


def objects(procs: dict[str, CacheProcess], names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(procs[name].status()["objects"]) for name in names}


def test_tier_fields_are_trusted_only_from_fleet_addresses() -> None:
    config = parse_config(
        {
            "node": "edge-a",
            "site": {
                "self": "edge-a",
                "peers": [{"name": "edge-b", "url": "http://10.0.0.2:8081"}],
                "parents": [{"site": "p", "nodes": [{"name": "p1", "url": "http://[2001:db8::1]:8081"}]}],
                "trusted": ["192.0.2.0/24"],
            },
        }
    )
    trust = tiers.TierTrust(fleet_addresses(config))
    assert [trust.trusts(ip) for ip in ("10.0.0.2", "2001:db8::1", "192.0.2.77", "::ffff:10.0.0.2")] == [True] * 4
    assert [trust.trusts(ip) for ip in ("10.0.0.3", "203.0.113.9", "", "not-an-ip")] == [False] * 4


def test_site_trusted_takes_only_addresses_and_networks() -> None:
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_config({"site": {"self": "a", "trusted": ["edge.example"]}})


def test_the_fleet_fields_of_a_client_are_stripped() -> None:
    headers = [("Host", "a"), ("X-Edgefleet-Hops", "3"), ("x-edgefleet-tier", "peer"), ("Via", "1.1 edge-a")]
    assert tiers.strip_fleet_fields(headers) == [("Host", "a"), ("Via", "1.1 edge-a")]


def test_each_url_is_fetched_once_per_site_and_stored_on_its_owner(
    site: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    targets = [f"/bytes/{1000 + index}/spread-{index}" for index in range(30)]
    for _ in range(2):
        for target in targets:
            for name in EDGES:
                response = fetch(site[name], target)
                assert response.status_code == 200, (name, target, response.text)
                assert response.content == expected(target, 1000 + int(target.rsplit("-", 1)[1])), (name, target)
    assert all(origin.count(target) == 1 for target in targets), "once per site, and the parent site in between"
    edge_objects, parent_objects = objects(site, EDGES), objects(site, PARENTS)
    assert sum(edge_objects.values()) == 30, edge_objects
    assert sum(parent_objects.values()) == 30, parent_objects
    owners = [owner_of(target, EDGES) for target in targets]
    assert edge_objects == {name: owners.count(name) for name in EDGES}, "each object lives on its owner"
    for target in targets:  # the owner answers from its own store; the others relay it (or a hot copy of it)
        owner = owner_of(target, EDGES)
        for name in EDGES:
            chain = fetch(site[name], target).headers["x-cache"]
            relayed = (f"HIT from {owner}, PEER from {name}", f"HIT from {name}")
            assert chain == f"HIT from {owner}" if name == owner else chain in relayed, (name, chain)


def test_slices_of_a_large_object_are_fetched_once_through_the_tiers(
    site: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    size = 12 * 2**20  # three slices of the default 4 MiB
    path = f"/bytes/{size}/tiered-slices"
    body = Body(size=size, seed=f"{path}|0")
    ranges_before = origin.stats()["ranges"]
    for first in (9_000_000, 9_000_100, 12_000_000, 100):
        for name in EDGES:
            response = fetch(site[name], path, {"Range": f"bytes={first}-{first + 99}"})
            assert response.status_code == 206, (name, first, response.text)
            assert response.headers["content-range"] == f"bytes {first}-{first + 99}/{size}"
            assert response.content == body.read(first, first + 100), (name, first)
    assert origin.count(path) == 2, "slices 2 and 0, each fetched once for the whole hierarchy"
    assert origin.stats()["ranges"] - ranges_before == 2


def test_the_site_survives_the_loss_of_an_owner(site: dict[str, CacheProcess], origin: OriginProcess) -> None:
    targets = [f"/bytes/2000/failover-{index}" for index in range(12)]
    for target in targets:
        assert fetch(site[EDGES[0]], target).status_code == 200
    lost = EDGES[1]
    site[lost].stop()
    try:
        others = [name for name in EDGES if name != lost]
        fresh = [f"/bytes/2000/failover-new-{index}" for index in range(12)]  # some owned by the lost node
        assert any(owner_of(target, EDGES) == lost for target in targets)
        assert any(owner_of(target, EDGES) == lost for target in fresh)
        started = time.monotonic()
        for target in targets + fresh:
            for name in others:
                response = fetch(site[name], target)
                assert response.status_code == 200 and response.content == expected(target, 2000), (name, target)
        assert time.monotonic() - started < 15
        assert all(origin.count(target) == 1 for target in targets + fresh), "the parent site still shields it"
    finally:
        site[lost].start()


def test_nodes_that_disagree_about_their_peers_do_not_loop(
    origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """x and y each think the other is a peer (under another name) and a parent: hops stay bounded."""
    data_dir = tmp_path_factory.mktemp("loop")
    x, y = node(origin, data_dir, "x"), node(origin, data_dir, "y")
    x.config["site"] = {"self": "x", "peers": [peer(x), peer(y)], "parents": [{"site": "py", "nodes": [peer(y)]}]}
    y.config["site"] = {
        "self": "y",
        "peers": [peer(y), {"name": "x-elsewhere", "url": x.url}],
        "parents": [{"site": "px", "nodes": [peer(x)]}],
    }
    with all_started([x, y]):
        for index in range(12):
            target = f"/echo?cc=public,%20max-age=60&loop={index}"
            for proc in (x, y):
                started = time.monotonic()
                response = fetch(proc, target)
                assert response.status_code == 200 and time.monotonic() - started < 5, (proc.config["node"], target)
                via = json.loads(response.content)["headers"]["via"]
                assert 1 <= len(via.split(",")) <= tiers.MAX_HOPS + 1, via
            assert origin.count(target) <= 2
