"""Several hub replicas on one etcd, with real processes: balancing, liveness across replicas, logs and metrics
through any replica.

Two ``edgefleet cloud`` processes share a real etcd. Six real agents join
with both replicas' URLs while only the first runs, so all six connect to
it. When the second starts, the first finds itself over its share, releases
the excess with close code 4000 and the other's URL as a hint, and the
agents land there: three and three. Changes made while sessions move are
not lost (every agent ends on the store's latest revision and holds every
object of its view), a log request for a node held by one replica is
answered through the other, and when a replica is killed its nodes stay
Ready because they reconnect to the survivor.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloudproc import CloudProcess, free_port
from tests.etcd_cluster import EtcdCluster, running_etcd
from tests.faultproxy import FaultProxy
from tests.fleet import API, AgentProcess, Fleet, site_doc
from tests.waiting import wait_until

pytestmark = pytest.mark.etcd

NODES = [f"r{i}" for i in range(1, 7)]
FLAGS = [
    "--heartbeat",
    "1",
    "--rebalance-observe",
    "6",
    "--node-not-ready-after",
    "20",
    "--node-monitor-period",
    "0.5",
    "--dns-listen",
    "off",
]


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with running_etcd(tmp_path / "etcd") as cluster:
        yield cluster


def replica(etcd: EtcdCluster, root: Path, name: str, port: int) -> CloudProcess:
    data = root / name
    data.mkdir(exist_ok=True)
    return CloudProcess(etcd.url, data, port=port, extra_args=["--hub-id", name, *FLAGS])


def hubs(cloud: CloudProcess, token: str) -> dict[str, dict[str, Any]]:
    with cloud.client(token) as api:
        return {hub["spec"]["hubId"]: hub for hub in api.get(f"{API}/hubs").json()["items"]}


def sessions(cloud: CloudProcess, token: str) -> dict[str, set[str]]:
    return {hub_id: set(hub["status"]["nodes"]) for hub_id, hub in hubs(cloud, token).items()}


def synced(agent: AgentProcess, revision: int) -> bool:
    """Whether ``agent`` holds ``revision`` or a later one."""
    return bool(agent.status()["syncedRevision"] >= revision)


def metric(cloud: CloudProcess, name: str) -> float:
    for line in httpx.get(cloud.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_replicas_balance_sessions_and_answer_for_each_other(etcd: EtcdCluster, tmp_path: Path) -> None:
    a = replica(etcd, tmp_path, "hub-a", free_port()).start()
    b = replica(etcd, tmp_path, "hub-b", free_port())
    token = a.token
    fleet = Fleet(tmp_path, a, FaultProxy("127.0.0.1", a.port).start())
    try:
        with fleet.api() as api:
            assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
        for node in NODES:
            fleet.join(node, "lab", server=f"{a.url},{b.url}").start()
            fleet.add_http_workload(node)
        wait_until(lambda: sessions(a, token).get("hub-a") == set(NODES), 40, what="all six on hub-a (b is down)")

        b.start()
        b.token = token  # tokens live in the store: one admin token for every replica
        domains_before = 3
        with fleet.api() as api:  # changes while sessions move between replicas
            for i in range(domains_before):
                doc = {
                    "apiVersion": "edgefleet.io/v1",
                    "kind": "Domain",
                    "metadata": {"name": f"d{i}"},
                    "spec": {"hostnames": [f"d{i}.example.com"], "origins": [{"url": "http://127.0.0.1:9/"}]},
                }
                assert api.post(f"{API}/domains", json=doc).status_code == 201

        def balanced() -> dict[str, set[str]] | None:
            held = sessions(b, token)
            return held if sorted(len(nodes) for nodes in held.values()) == [3, 3] else None

        held = wait_until(balanced, 40, interval=0.5, what="three sessions on each replica")
        assert held["hub-a"] | held["hub-b"] == set(NODES)
        assert metric(a, "edgefleet_hub_released_total") >= 3, "hub-a released its excess"
        assert metric(b, "edgefleet_hub_released_total") == 0, "the under-loaded replica releases nothing"

        with fleet.api() as api:
            revision = int(
                api.post(
                    f"{API}/domains",
                    json={
                        "apiVersion": "edgefleet.io/v1",
                        "kind": "Domain",
                        "metadata": {"name": "after"},
                        "spec": {"hostnames": ["after.example.com"], "origins": [{"url": "http://127.0.0.1:9/"}]},
                    },
                ).json()["metadata"]["resourceVersion"]
            )
        for node in NODES:  # no change lost: every agent holds every domain and the latest revision
            wait_until(partial(synced, fleet.agents[node], revision), 20, what=f"{node} synced")
        counts = {fleet.agents[node].status()["objects"] for node in NODES}
        assert len(counts) == 1, f"every node of the site holds the same view: {counts}"

        on_b = sorted(held["hub-b"])[0]
        fleet.agents[on_b].status()
        httpx.get(fleet.workload_url(f"web-{on_b}"), timeout=2)  # http.server logs each request
        with a.client(token) as api:
            logs = wait_until(
                lambda: (
                    (r := api.get(f"/edge/v1/nodes/{on_b}/logs/web-{on_b}"))
                    and r.status_code == 200
                    and "GET /index.html" in r.text
                    and r
                ),
                20,
                what="logs of a hub-b node read through hub-a",
            )
            assert logs.status_code == 200
            relayed = api.get(f"/edge/v1/nodes/{on_b}/metrics", params={"target": "agent"})  # forwarded to hub-b
            assert relayed.status_code == 200 and "edgefleet_agent_connected 1.0" in relayed.text, relayed.text
        table = fleet.cli("get", "hubs").stdout
        assert "hub-a" in table and "hub-b" in table

        b.kill()  # the replica dies: its nodes reconnect to hub-a and stay Ready
        wait_until(lambda: sessions(a, token).get("hub-a") == set(NODES), 40, what="all six back on hub-a")
        wait_until(lambda: set(sessions(a, token)) == {"hub-a"}, 30, what="hub-b's object gone with its lease")
        assert all(fleet.phase(node) == "Ready" for node in NODES)
    finally:
        fleet.close()
        b.stop()
