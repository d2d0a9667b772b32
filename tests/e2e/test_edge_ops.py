"""Operating edge nodes with real processes: logs, node phases, revocation, bad sync input, a corrupt local store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from edgefleet.sync.agent import AgentSession, LocalState
from tests.cloudproc import CloudProcess
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, RequestLoop, site_doc
from tests.waiting import hold, wait_until

CLOUD_FLAGS = [
    "--node-not-ready-after",
    "2",
    "--node-unknown-after",
    "5",
    "--heartbeat",
    "1",
    "--node-monitor-period",
    "0.5",
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("ops")
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_FLAGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    try:
        with fleet.api() as api:
            assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
        for node in ("n1", "n2", "n3"):
            fleet.join(node, "lab").start()
            fleet.add_http_workload(node)
        for node in ("n1", "n2", "n3"):
            wait_until(partial(fleet.ready, node), 30, what=f"{node} Ready")
        yield fleet
    finally:
        fleet.close()


def sync_url(fleet: Fleet) -> str:
    return f"ws://127.0.0.1:{fleet.cloud.port}/edge/v1/sync"


def credential(fleet: Fleet, node: str) -> str:
    return (fleet.agents[node].data_dir / "credential").read_text().strip()


def live_sessions(fleet: Fleet) -> set[str]:
    """Nodes the cloud's Hub object lists as connected (node liveness)."""
    with fleet.api() as api:
        hubs = api.get(f"{API}/hubs").json()["items"]
    return {node for hub in hubs for node in hub["status"]["nodes"]}


def test_get_nodes_shows_phase_site_heartbeat_and_workloads(fleet: Fleet) -> None:
    wait_until(
        lambda: all(
            (fleet.node(n)["status"].get("workloads") or {}).get(f"web-{n}", {}).get("ready")
            for n in ("n1", "n2", "n3")
        ),
        30,
        what="workloads reported ready",
    )
    table = fleet.cli("get", "nodes").stdout
    header = table.splitlines()[0].split()
    for column in ("NAME", "STATUS", "SITE", "HEARTBEAT", "HUB", "SYNCED", "WORKLOADS"):
        assert column in header, table
    row = next(line for line in table.splitlines() if line.startswith("n1 "))
    assert "Ready" in row and "lab" in row and "1/1" in row, table


def test_logs_are_readable_through_the_cloud(fleet: Fleet) -> None:
    httpx.get(fleet.workload_url("web-n1"), timeout=2)  # http.server logs each request on stderr
    result = wait_until(
        lambda: (
            (r := fleet.cli("logs", "n1", "web-n1", "--tail", "20", check=False))
            and "GET /index.html" in r.stdout
            and r
        ),
        20,
        what="the request in the workload's log",
    )
    assert result.returncode == 0
    missing = fleet.cli("logs", "n1", "nope", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_stopped_agent_goes_not_ready_then_unknown_and_back(fleet: Fleet) -> None:
    agent = fleet.agents["n3"]
    agent.kill()
    try:
        wait_until(lambda: fleet.phase("n3") == "NotReady", 15, what="n3 NotReady")
        wait_until(lambda: fleet.phase("n3") == "Unknown", 15, what="n3 Unknown")
        with fleet.api() as api:
            workload = api.get(f"{API}/workloads/web-n3")
            assert workload.status_code == 200, "the cloud never deletes a quiet node's workloads"
        assert httpx.get(fleet.workload_url("web-n3"), timeout=2).status_code == 200
    finally:
        agent.start()
    wait_until(lambda: fleet.phase("n3") == "Ready", 20, what="n3 Ready again")


def test_malformed_and_oversized_sync_messages_close_only_that_session(fleet: Fleet) -> None:
    payload: str | bytes
    wait_until(lambda: "n1" in live_sessions(fleet), 10, what="n1 listed as connected")
    connects = fleet.agents["n1"].metric("edgefleet_agent_hub_connects")
    headers = {"Authorization": f"Bearer {credential(fleet, 'n2')}"}
    for payload in ("not json", json.dumps({"type": "hello", "protocol": 1}), "{" * 10, b"\x00binary"):
        with connect(sync_url(fleet), additional_headers=headers, max_size=None) as ws:
            ws.send(payload)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
    # An oversized frame: the server fails the connection with 1009 as soon as the frame header says its
    # size, and closes; a client still sending the rest may see a TCP reset before that close frame.
    with (
        connect(sync_url(fleet), additional_headers=headers, max_size=None) as ws,
        pytest.raises((ConnectionClosed, OSError)) as failed,
    ):
        ws.send("x" * (2 * 1024 * 1024))
        ws.recv(timeout=10)
    rcvd = getattr(failed.value, "rcvd", None)
    assert rcvd is None or rcvd.code == 1009, failed.value
    with pytest.raises(InvalidStatus), connect(sync_url(fleet), additional_headers={"Authorization": "Bearer x.y"}):
        pass
    assert "n1" in live_sessions(fleet) and fleet.agents["n1"].status()["connected"], "other sessions stay up"
    assert fleet.agents["n1"].metric("edgefleet_agent_hub_connects") == connects, "n1 never had to reconnect"
    assert "closing session" in fleet.cloud.log()
    wait_until(lambda: fleet.agents["n2"].status()["connected"], 20, what="n2's own agent reconnected")


def test_node_credential_cannot_touch_another_node(fleet: Fleet) -> None:
    headers = {"Authorization": f"Bearer {credential(fleet, 'n1')}", "Content-Type": "application/merge-patch+json"}
    with httpx.Client(base_url=fleet.cloud.url, headers=headers) as client:
        other = client.patch(f"{API}/nodes/n2/status", content=json.dumps({"status": {"message": "x"}}))
        assert other.status_code == 403
        own = client.patch(f"{API}/nodes/n1/status", content=json.dumps({"status": {"message": "hello"}}))
        assert own.status_code == 403, "a node's status goes over its hub session only (issue 12, item 2)"


def test_corrupt_local_store_is_moved_aside_and_rebuilt(fleet: Fleet) -> None:
    agent = fleet.agents["n2"]
    pids = agent.workload_pids()
    agent.kill()
    view = agent.data_dir / "view.db"
    for suffix in ("-wal", "-shm"):
        Path(str(view) + suffix).unlink(missing_ok=True)
    view.write_bytes(b"garbage" * 1000)
    agent.start()
    wait_until(lambda: agent.status()["connected"] and agent.status()["objects"] > 0, 20, what="view rebuilt")
    assert list(agent.data_dir.glob("view.db.corrupt-*")), "the corrupt file is kept for inspection"
    assert "corrupt" in agent.log()
    assert agent.workload_pids() == pids, "workloads were not restarted"


def test_revoked_node_is_disconnected_and_keeps_serving(fleet: Fleet) -> None:
    agent = fleet.agents["n1"]
    fleet.cli("node", "revoke", "n1")
    wait_until(lambda: not agent.status()["connected"], 20, what="n1 disconnected")
    with RequestLoop([fleet.workload_url("web-n1")], max_seconds=10) as loop:
        hold(3)  # serving while revoked
    assert loop.ok > 0 and not loop.failures
    assert not agent.status()["connected"], "a revoked credential cannot reconnect"
    assert "HTTP 403" in agent.log() or "refused" in agent.log()


def cloud_metric(fleet: Fleet, name: str) -> float:
    for line in httpx.get(fleet.cloud.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not in the cloud's /metrics")


def test_idle_nodes_report_without_store_writes(fleet: Fleet) -> None:
    """Liveness is the hub's session list: reports that say nothing new are not written (issue 10)."""
    nodes = [
        name
        for name, agent in fleet.agents.items()
        if agent.proc is not None and agent.proc.poll() is None and agent.status()["connected"]
    ]
    assert len(nodes) >= 2, "earlier tests left at least two agents connected"
    wait_until(lambda: live_sessions(fleet) >= set(nodes), 10, what="every connected node listed")
    received = cloud_metric(fleet, "edgefleet_hub_messages_received_total")
    # The hub's own Node.status writes: the store's revision also moves with other writers (the workload
    # controller counts the nodes earlier tests stopped).
    written = cloud_metric(fleet, "edgefleet_hub_status_writes_total")
    # The agents report every second (--heartbeat 1): wait for 10 more messages each, not for a fixed time.
    wait_until(
        lambda: cloud_metric(fleet, "edgefleet_hub_messages_received_total") >= received + 10 * len(nodes),
        40,
        what="more status reports",
    )
    # One write per report before; now a node writes only what changed (a late counter may still land once).
    assert cloud_metric(fleet, "edgefleet_hub_status_writes_total") - written <= len(nodes), (
        "idle reports cost no store writes (and no watch events)"
    )
    assert all(fleet.phase(node) == "Ready" for node in nodes), "liveness keeps them Ready"


def test_a_silent_session_is_closed_after_three_heartbeats(fleet: Fleet) -> None:
    """The hub does not ping; a session that sends nothing for 3 heartbeats (3 s here) is closed."""
    fleet.join("quiet", "lab")  # joined, but its agent never runs: this test speaks for it
    headers = {"Authorization": f"Bearer {(fleet.root / 'quiet' / 'credential').read_text().strip()}"}
    session = AgentSession("quiet", local=LocalState("", 0, {}, "test"))
    with connect(sync_url(fleet), additional_headers=headers, ping_interval=None) as ws:
        ws.send(session.hello())
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - started < 15:
                ws.recv(timeout=15)  # welcome, the first batch, then nothing: the test never answers
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, closed.value
        assert 2.5 <= time.monotonic() - started < 8
