"""Peer health votes end to end: real agents probe each other's real caches and report in Node.status.

One cloud, three agents in one site on their own loopback addresses
(127.0.0.2-4, same ports), each running the real built-in cache from a
``builtin: cache`` Workload. Each node votes its two peers healthy. Then
node v3 goes down hard (its agent SIGKILLed, then its cache), and stays
down: the other two vote it unhealthy in their Node.status within two probe
periods and the report latency, far sooner than the heartbeat (10 s). Its
agent restarts, brings the cache back, and the votes turn healthy again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, site_doc
from tests.waiting import wait_until

PROBE_PERIOD = 0.5
HEARTBEAT = 10  # the cloud's: votes must not wait for it
ADDRESSES = {"v1": "127.0.0.2", "v2": "127.0.0.3", "v3": "127.0.0.4"}
REPORT_LATENCY = 1.0 + 1.0  # the hub client's rate limit between two reports, and slack for the store write


PROBE_ARGS = ["--peer-probe-period", str(PROBE_PERIOD)]
"""``edge run`` arguments of an agent that probes its peers twice a second."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("peervotes")
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=["--heartbeat", str(HEARTBEAT)]).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    http_port, admin_port = free_port(), free_port()  # free on 127.0.0.1, so almost surely on .2-.4
    try:
        with fleet.api() as api:
            assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
            assert api.post(f"{API}/workloads", json=cache_workload(http_port, admin_port)).status_code == 201
        for name, address in ADDRESSES.items():
            fleet.join(name, "lab", address=address, agent_args=PROBE_ARGS).start()
        fleet.wait_ready(list(ADDRESSES))
        yield fleet
    finally:
        fleet.close()


def others(node: str) -> list[str]:
    return [name for name in ADDRESSES if name != node]


def votes_peers_healthy(fleet: Fleet, node: str) -> bool:
    return fleet.peer_votes(node) == dict.fromkeys(others(node), True)


def votes(fleet: Fleet, voter: str, peer: str, healthy: bool) -> bool:
    """Whether ``voter`` has voted ``peer`` healthy (or unhealthy): no vote yet is neither."""
    return fleet.peer_votes(voter).get(peer) is healthy


def test_each_node_votes_its_peers_healthy(fleet: Fleet) -> None:
    for node in ADDRESSES:
        wait_until(partial(votes_peers_healthy, fleet, node), 20, what=f"{node} voting its peers healthy")
    stamp = fleet.node("v1")["status"]["peerVotes"]["v2"]["at"]
    assert stamp.endswith("Z")


def test_a_node_that_goes_down_is_voted_unhealthy_within_two_probe_periods_then_healthy_again(
    fleet: Fleet,
) -> None:
    for node in ADDRESSES:
        wait_until(partial(votes_peers_healthy, fleet, node), 20, what="healthy votes")
    down = fleet.agents["v3"]
    down.kill()  # SIGKILL: the agent cannot restart its cache...
    down.kill_workloads()  # ...which now dies hard too, and stays down
    killed = time.monotonic()
    bound = 2 * PROBE_PERIOD + PROBE_PERIOD + REPORT_LATENCY  # two failed probes, each within a period
    for voter in others("v3"):
        wait_until(
            partial(votes, fleet, voter, "v3", False), bound + 4, interval=0.05, what=f"{voter} voting v3 unhealthy"
        )
    elapsed = time.monotonic() - killed
    assert elapsed < HEARTBEAT, f"votes waited for a heartbeat ({elapsed:.1f}s): the report-now path is broken"
    healthy = fleet.peer_votes("v1")["v2"], fleet.peer_votes("v2")["v1"]
    assert healthy == (True, True), "the healthy ones stay healthy"

    down.start()  # the agent brings its cache back from its local state
    for voter in others("v3"):
        wait_until(partial(votes, fleet, voter, "v3", True), 60, what=f"{voter} voting v3 healthy again")
    wait_until(lambda: fleet.peer_votes("v3") == {"v1": True, "v2": True}, 20, what="v3 voting again")
