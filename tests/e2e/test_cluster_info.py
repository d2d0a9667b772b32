"""Several hub servers and the ClusterInfo that updates them, with real processes.

One real ``edgefleet cloud`` reached through two fault proxies, A and B
(two ways in, as two replicas behind their own addresses would be), and a
real agent:

- ``edge join`` with two ``--server`` URLs, the first a dead port: the join
  and the agent both get through the live one, and node.yaml records both;
- an admin applies the ClusterInfo ``default`` listing only B: the agent
  learns it through its view and keeps its connection through A;
- A is cut: the agent reconnects through B, a server it never joined with;
- the agent restarts with A still cut and nothing from node.yaml reachable:
  it dials the list it kept in its local view, and connects through B.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, AgentProcess, Fleet, site_doc
from tests.waiting import wait_until


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Fleet, FaultProxy]]:
    cloud = CloudProcess(f"sqlite:///{tmp_path}/store.db", tmp_path).start()
    proxy_a = FaultProxy("127.0.0.1", cloud.port).start()
    proxy_b = FaultProxy("127.0.0.1", cloud.port).start()
    fleet = Fleet(tmp_path, cloud, proxy_a)
    try:
        yield fleet, proxy_b
    finally:
        fleet.close()
        proxy_b.close()


def test_joined_servers_then_the_cluster_info_list(fleet: tuple[Fleet, FaultProxy], tmp_path: Path) -> None:
    fleet_, proxy_b = fleet
    dead = f"http://127.0.0.1:{free_port()}"
    via_a, via_b = fleet_.agent_server, f"http://127.0.0.1:{proxy_b.port}"
    with fleet_.api() as api:
        assert api.post(f"{API}/sites", json=site_doc("par-edge")).status_code == 201

    token = fleet_.cli("token", "create", "--ttl", "1h").stdout.strip().split()[-1]
    data_dir = tmp_path / "edge-1"
    joined = fleet_.cli(
        "edge",
        "join",
        "--server",
        dead,
        "--server",
        via_a + "/",
        "--token",
        token,
        "--site",
        "par-edge",
        "--name",
        "edge-1",
        "--data-dir",
        str(data_dir),
        "--insecure",
    )
    assert "joined as node/edge-1" in joined.stdout
    assert dead in joined.stderr, "the unreachable server is reported, then skipped"
    config = yaml.safe_load((data_dir / "node.yaml").read_text())
    assert config["servers"] == [dead, via_a] and config["server"] == dead

    agent = AgentProcess("edge-1", "par-edge", data_dir).start()
    fleet_.agents["edge-1"] = agent
    wait_until(lambda: agent.status()["connected"], 15, what="the agent connected")
    status = agent.status()
    assert status["servers"] == [dead, via_a] and status["server"] == via_a

    cluster_info = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "ClusterInfo",
        "metadata": {"name": "default"},
        "spec": {"servers": [via_b + "/"]},
    }
    with fleet_.api() as api:
        created = api.post(f"{API}/clusterinfos", json=cluster_info)
        assert created.status_code == 201, created.text
    assert via_b in fleet_.cli("get", "clusterinfos").stdout
    wait_until(lambda: agent.status()["servers"] == [via_b], 10, what="the new list to reach the agent")
    status = agent.status()
    assert status["connected"] and status["server"] == via_a, "a new list does not drop the connection"
    assert proxy_b.counters.connections == 0

    fleet_.proxy.set_mode("cut")
    wait_until(lambda: agent.status()["server"] == via_b, 10, what="the agent to reconnect through B")
    assert agent.status()["connected"] and proxy_b.counters.connections >= 1
    assert "hub servers changed to" in agent.log()

    agent.stop()
    restarted = AgentProcess("edge-1", "par-edge", data_dir).start()
    fleet_.agents["edge-1"] = restarted
    assert restarted.status()["servers"] == [via_b], "the list kept in the local view, before any connection"
    wait_until(lambda: restarted.status()["server"] == via_b, 10, what="the restarted agent to connect through B")
