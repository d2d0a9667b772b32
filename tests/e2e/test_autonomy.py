"""Edge autonomy with real processes: a cloud, three agents in two sites, HTTP workloads.

Every outage runs a bounded request loop against the workloads and requires
zero failures: the cloud killed, the link cut, blackholed and slowed; a
workload crash while the cloud is down; a simulated host reboot with the
cloud down. On reconnect only differences flow, and nothing restarts unless
its spec changed meanwhile.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.cloudproc import CloudProcess
from tests.faultproxy import FaultProxy
from tests.fleet import API, AgentProcess, Fleet, RequestLoop, replace_object, site_doc
from tests.waiting import hold, wait_until

NODES = {"par-1": "par-edge", "par-2": "par-edge", "ams-1": "ams-edge"}
CLOUD_FLAGS = ("--node-not-ready-after", "3", "--node-unknown-after", "8", "--heartbeat", "1")


def start_cloud(root: Path, port: int | None = None) -> CloudProcess:
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=list(CLOUD_FLAGS))
    if port is not None:
        cloud.port = port
    return cloud.start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    cloud = start_cloud(root)
    proxy = FaultProxy("127.0.0.1", cloud.port).start()
    fleet = Fleet(root, cloud, proxy)
    try:
        with fleet.api() as api:
            for site, country in (("par-edge", "FR"), ("ams-edge", "NL")):
                assert api.post(f"{API}/sites", json=site_doc(site, country)).status_code == 201
        for node, site in NODES.items():
            fleet.join(node, site).start()
            fleet.add_http_workload(node)
        for node in NODES:
            wait_until(partial(fleet.ready, node), 30, what=f"{node} Ready")
        wait_until(lambda: all_serving(fleet), 30, what="every workload serving")
        yield fleet
    finally:
        fleet.close()


def urls(fleet: Fleet) -> list[str]:
    return [fleet.workload_url(f"web-{node}") for node in NODES]


def all_serving(fleet: Fleet) -> bool:
    return all(httpx.get(url, timeout=2).status_code == 200 for url in urls(fleet))


def pids(fleet: Fleet) -> dict[str, dict[str, int]]:
    found = {name: agent.workload_pids() for name, agent in fleet.agents.items()}
    assert all(found.values()), f"every node runs a workload: {found}"
    return found


def assert_no_failures(loop: RequestLoop) -> None:
    assert loop.ok > 0, "the request loop made no request"
    assert not loop.failures, f"{len(loop.failures)} failed requests, e.g. {loop.failures[:3]}"


def connected(agent: AgentProcess) -> bool:
    return bool(agent.status()["connected"])


def reconnected(fleet: Fleet) -> None:
    for name, agent in fleet.agents.items():
        wait_until(partial(connected, agent), 30, what=f"{name} reconnected")


@pytest.mark.parametrize("mode", ["cut", "blackhole", "slow"])
def test_link_faults_do_not_interrupt_serving(fleet: Fleet, mode: str) -> None:
    before = pids(fleet)
    with RequestLoop(urls(fleet), max_seconds=30) as loop:
        fleet.proxy.set_mode(mode, delay=0.3, rate=8192)
        hold(4)  # serving through the fault
        fleet.proxy.set_mode("pass")
        reconnected(fleet)
    assert_no_failures(loop)
    assert pids(fleet) == before, "a link fault must not restart workloads"


def test_cloud_killed_workloads_keep_running_and_crashes_restart(fleet: Fleet) -> None:
    before = pids(fleet)
    fleet.cloud.kill()
    try:
        with RequestLoop(urls(fleet), max_seconds=30) as loop:
            hold(3)  # serving with the cloud gone
        assert_no_failures(loop)
        # a workload crash with the cloud down: the agent restarts it from local state
        crashed = fleet.agents["par-1"]
        os.killpg(before["par-1"]["web-par-1"], signal.SIGKILL)
        wait_until(
            lambda: crashed.workload_pids().get("web-par-1") not in (None, before["par-1"]["web-par-1"]),
            20,
            what="the crashed workload restarted",
        )
        wait_until(lambda: all_serving(fleet), 20, what="serving again after the crash")
    finally:
        fleet.cloud.start()
    reconnected(fleet)
    for node in NODES:
        wait_until(partial(fleet.ready, node), 20, what=f"{node} Ready again")
    after = pids(fleet)
    assert after["par-2"] == before["par-2"] and after["ams-1"] == before["ams-1"]


def test_host_reboot_with_cloud_down_brings_workloads_back(fleet: Fleet) -> None:
    agent = fleet.agents["ams-1"]
    fleet.cloud.kill()
    try:
        agent.kill()
        agent.kill_workloads()  # every process of the "host" is gone
        with pytest.raises(httpx.HTTPError):
            httpx.get(fleet.workload_url("web-ams-1"), timeout=1)
        agent.start()
        wait_until(
            lambda: httpx.get(fleet.workload_url("web-ams-1"), timeout=2).status_code == 200,
            30,
            what="the workload back from local state alone",
        )
        with RequestLoop(urls(fleet), max_seconds=10) as loop:
            hold(2)  # serving from local state alone
        assert_no_failures(loop)
    finally:
        fleet.cloud.start()
    reconnected(fleet)


def test_agent_restart_adopts_workloads(fleet: Fleet) -> None:
    agent = fleet.agents["par-2"]
    before = agent.workload_pids()
    with RequestLoop(urls(fleet), max_seconds=30) as loop:
        agent.kill()
        agent.start()
        wait_until(lambda: agent.status()["connected"], 20, what="agent reconnected")
    assert_no_failures(loop)
    assert agent.workload_pids() == before


def test_changes_while_disconnected_arrive_and_only_changed_workloads_restart(fleet: Fleet) -> None:
    before = pids(fleet)
    fleet.proxy.set_mode("cut")
    try:
        fleet.add_http_workload("par-1", marker="v2")  # changed spec: must restart
        with fleet.api() as api:
            extra = {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Workload",
                "metadata": {"name": "temp"},
                "spec": {"nodeSelector": "edgefleet.io/node=par-2", "template": {"command": ["sleep", "600"]}},
            }
            assert api.post(f"{API}/workloads", json=extra).status_code == 201
            replace_object(
                api,
                f"{API}/workloads/temp",
                lambda current: current["spec"]["template"].update(command=["sleep", "700"]),
            )
            assert api.delete(f"{API}/workloads/temp").status_code == 200
    finally:
        fleet.proxy.set_mode("pass")
    reconnected(fleet)
    wait_until(
        lambda: httpx.get(fleet.workload_url("web-par-1"), timeout=2).text.strip() == "web-par-1 v2",
        30,
        what="the changed workload to serve v2",
    )
    after = pids(fleet)
    assert after["par-1"]["web-par-1"] != before["par-1"]["web-par-1"]
    assert after["par-2"] == before["par-2"], "created-updated-deleted while away: nothing to run"
    assert after["ams-1"] == before["ams-1"]
    assert "temp" not in fleet.agents["par-2"].status()["workloads"]


def test_reconnect_after_changes_to_other_nodes_receives_nothing(fleet: Fleet) -> None:
    agent = fleet.agents["ams-1"]
    received = agent.metric("edgefleet_agent_sync_objects_received_total")
    fleet.proxy.set_mode("cut")
    try:
        with fleet.api() as api:
            for i in range(1000):
                # Merge patches, not read-modify-write PUTs: the workload controller writes the status meanwhile
                # (nodes go NotReady while the link is cut), which moves the resourceVersion.
                response = api.patch(
                    f"{API}/workloads/web-par-2",
                    json={"metadata": {"annotations": {"bump": str(i)}}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                assert response.status_code == 200, response.text
    finally:
        fleet.proxy.set_mode("pass")
    reconnected(fleet)
    hold(1)  # nothing arrives after the handshake
    assert agent.metric("edgefleet_agent_sync_objects_received_total") == received


def test_reconnect_with_nothing_changed_is_small_on_the_wire(fleet: Fleet) -> None:
    with fleet.api() as api:
        for i in range(200):
            doc = {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Domain",
                "metadata": {"name": f"d{i}"},
                "spec": {"hostnames": [f"d{i}.example.com"], "origins": [{"url": "http://127.0.0.1:9/"}]},
            }
            assert api.post(f"{API}/domains", json=doc).status_code == 201
    agent = fleet.agents["ams-1"]
    wait_until(lambda: agent.status()["objects"] >= 200, 30, what="200 domains in the node's view")
    # keep only this agent connected while measuring
    others = [a for n, a in fleet.agents.items() if n != "ams-1"]
    for other in others:
        other.kill()
    try:
        fleet.proxy.set_mode("cut")
        wait_until(lambda: not agent.status()["connected"], 10, what="the agent saw the cut")
        fleet.proxy.reset_counters()
        fleet.proxy.set_mode("pass")
        wait_until(lambda: agent.status()["connected"], 30, what="reconnected")
        hold(0.5)  # whatever the handshake sends has crossed the proxy
        counters = fleet.proxy.reset_counters()
    finally:
        for other in others:
            other.start()
    total = counters.to_upstream + counters.to_client
    print(
        f"reconnect with nothing changed, 200+ objects held: {total} bytes "
        f"({counters.to_upstream} up, {counters.to_client} down, {counters.connections} connection(s))"
    )
    assert total <= 2048, f"{total} bytes"
