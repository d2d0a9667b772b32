"""The cache server as the agents' built-in workload, end to end, with real processes only.

One cloud, two agents in one site on their own loopback addresses (127.0.0.2
and 127.0.0.3, same ports, as on a laptop fleet), the real cache server
started by each agent from a ``builtin: cache`` Workload, and a real origin
(``python -m edgefleet.demo.origin``). A request through node 1 misses then hits;
a Domain edit reaches both caches by SIGHUP (same pids, new hostname
served); a Purge made in the cloud makes the next request a miss and its
status reaches completedNodes == 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from tests.cacheproc import OriginProcess
from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, site_doc
from tests.waiting import hold, wait_until

CLOUD_FLAGS = ["--heartbeat", "1", "--node-monitor-period", "0.5", "--domain-status-interval", "1"]
ADDRESSES = {"c1": "127.0.0.2", "c2": "127.0.0.3"}
HOST = "www.shop.test"
PATH = "/bytes/1024/x"


def domain_doc(origin: str, *hostnames: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {"hostnames": list(hostnames), "origins": [{"url": origin}]},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, OriginProcess, int]]:
    root = tmp_path_factory.mktemp("cachewl")
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_FLAGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    origin = OriginProcess(root).start()
    http_port, admin_port = free_port(), free_port()  # free on 127.0.0.1, so almost surely on .2 and .3
    try:
        with fleet.api() as api:
            assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
            assert api.post(f"{API}/domains", json=domain_doc(origin.url, HOST)).status_code == 201
            assert api.post(f"{API}/workloads", json=cache_workload(http_port, admin_port)).status_code == 201
        for name, address in ADDRESSES.items():
            fleet.join(name, "lab", address=address).start()
        fleet.wait_ready(list(ADDRESSES))
        yield fleet, origin, http_port
    finally:
        fleet.close()
        origin.stop()


def get(http_port: int, node: str = "c1", host: str = HOST, path: str = PATH) -> httpx.Response:
    return httpx.get(f"http://{ADDRESSES[node]}:{http_port}{path}", headers={"Host": host}, timeout=10)


def serves(http_port: int, node: str, host: str) -> bool:
    """Whether ``node`` answers 200 for ``host``."""
    return get(http_port, node, host=host, path="/bytes/16/img").status_code == 200


def test_a_request_through_node_1_misses_then_hits(world: tuple[Fleet, OriginProcess, int]) -> None:
    fleet, origin, http_port = world
    first = get(http_port)
    assert first.status_code == 200 and len(first.content) == 1024, first.text[:200]
    assert first.headers["X-Cache"].startswith("MISS"), first.headers
    second = get(http_port)
    assert second.headers["X-Cache"].startswith("HIT"), second.headers
    assert second.content == first.content
    assert origin.count(PATH) == 1, "one origin fetch for the site"
    wait_until(
        lambda: (fleet.node("c1")["status"].get("cache") or {}).get("requests", 0) >= 2,
        20,
        what="cache stats in Node.status.cache",
    )


def test_a_domain_change_reaches_the_caches_without_a_restart(world: tuple[Fleet, OriginProcess, int]) -> None:
    fleet, _, http_port = world
    pids = {name: agent.workload_pids()["cache"] for name, agent in fleet.agents.items()}
    assert get(http_port, host="img.shop.test").status_code in (404, 421), "not served yet"
    with fleet.api() as api:
        current = api.get(f"{API}/domains/shop").json()
        current["spec"]["hostnames"].append("img.shop.test")
        assert api.put(f"{API}/domains/shop", json=current).status_code == 200
    for node in ADDRESSES:
        wait_until(partial(serves, http_port, node, "img.shop.test"), 30, what=f"{node} serving the new hostname")
    assert {name: agent.workload_pids()["cache"] for name, agent in fleet.agents.items()} == pids
    assert all("SIGHUP" in agent.log() for agent in fleet.agents.values())
    for node in ADDRESSES:
        assert fleet.node(node)["status"]["workloads"]["cache"]["restarts"] == 0


def test_a_purge_from_the_cloud_empties_the_caches_and_completes(world: tuple[Fleet, OriginProcess, int]) -> None:
    fleet, origin, http_port = world
    get(http_port)
    assert get(http_port).headers["X-Cache"].startswith("HIT")
    fetched = origin.count(PATH)
    result = fleet.cli("purge", "shop", PATH, "--wait", "--timeout", "60")
    name = result.stdout.split()[0].removeprefix("purge/")
    assert "completed" in result.stdout
    with fleet.api() as api:
        status = api.get(f"{API}/purges/{name}").json()["status"]
    assert status["targetNodes"] == 2 and status["completedNodes"] == 2 and status["completedAt"], status
    after = get(http_port)
    assert after.headers["X-Cache"].startswith("MISS"), after.headers
    assert origin.count(PATH) == fetched + 1
    wait_until(
        lambda: not any(r["name"] == name for r in fleet.node("c2")["status"].get("purges") or []),
        20,
        what="the completed purge to leave the node's view and report",
    )
    # Done once: restarting an agent does not purge again.
    agent = fleet.agents["c1"]
    agent.stop()
    agent.start()
    wait_until(lambda: agent.status()["connected"], 20, what="c1 reconnected")
    hold(2)  # a purge on reconnect would land here
    assert get(http_port).headers["X-Cache"].startswith("HIT")


def test_edgefleet_prefetch_warms_every_cache_once(world: tuple[Fleet, OriginProcess, int]) -> None:
    fleet, origin, http_port = world
    path = "/bytes/2048/prefetched"
    result = fleet.cli("prefetch", "shop", path, "--wait", "--timeout", "60")
    assert "completed: 2/2 nodes done" in result.stdout, result.stdout
    assert origin.count(path) == 1, "the site's owner collapsed both nodes' prefetches"
    for node in ADDRESSES:
        assert get(http_port, node, path=path).headers["X-Cache"].split(",")[0].startswith("HIT")
    assert origin.count(path) == 1


def domain_status(fleet: Fleet) -> dict[str, Any]:
    with fleet.api() as api:
        status: dict[str, Any] = api.get(f"{API}/domains/shop").json().get("status") or {}
    return status


def offloaded(status: dict[str, Any]) -> int:
    """User requests the origin did not see, in the Domain's window figures."""
    return int(status.get("requests") or 0) - int(status.get("originRequests") or 0)


def test_get_domains_shows_the_origin_offload(world: tuple[Fleet, OriginProcess, int]) -> None:
    fleet, origin, http_port = world
    before = offloaded(domain_status(fleet))
    paths = [f"/bytes/512/offload-{index}" for index in range(4)]
    for path in paths:
        for node in ("c1", "c2", "c1", "c2"):  # the non-owner relays the owner's copy: not an origin request
            assert get(http_port, node, path=path).status_code == 200
    assert [origin.count(path) for path in paths] == [1] * 4
    status = wait_until(
        lambda: offloaded(s := domain_status(fleet)) >= before + 12 and s, 60, what="offload in Domain.status"
    )
    assert status["offload"] == round(1 - status["originRequests"] / status["requests"], 4)
    assert status["servingSites"] == ["lab"] and status["windowSeconds"] == 300
    table = fleet.cli("get", "domains").stdout
    assert "OFFLOAD" in table.splitlines()[0] and "BYTE-OFFLOAD" in table.splitlines()[0]
    row = next(line for line in table.splitlines() if line.startswith("shop"))
    assert f"{status['offload'] * 100:.1f}%" in row
    nodes = fleet.cli("get", "nodes", "-o", "wide").stdout
    assert all(name in nodes for name in ("OFFLOAD", "LOCAL", "REQUESTS")), nodes
