"""A hostile node against a real cloud: votes, timestamps, floods and oversized fields.

One ``edgefleet cloud`` process, a Paris site of three nodes and a New York
site of one, all joined with real bootstrap tokens and holding real hub
sessions over raw WebSockets (:class:`Attacker`, a
:class:`tests.rawagents.RawAgent`: the protocol as an attacker speaks it,
no agent code to keep it honest). The Paris nodes' addresses are
put in the DNS answers of one Domain; each check asks the cloud's own DNS
server. Node ``p1`` is the attacker: it holds a valid node credential and
tries to take its peers out of the answers (REST and hub session), to flood
the store with status reports, and to send oversized status fields.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from tests.cloudproc import CloudProcess
from tests.fleet import API, site_doc
from tests.rawagents import EDGE, HubCloud, RawAgent
from tests.waiting import hold, wait_until

PARIS = {"p1": "127.0.0.2", "p2": "127.0.0.3", "p3": "127.0.0.4"}
NEW_YORK = {"n1": "127.0.0.5"}
NAME = "demo.cdn.edgefleet.test"
MERGE = {"Content-Type": "application/merge-patch+json"}
FUTURE = "2099-01-01T00:00:00Z"
MAX_WATCHES = 4
CLOUD_FLAGS = ["--node-monitor-period", "0.5", "--max-watches-per-principal", str(MAX_WATCHES)]

DOMAIN = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Domain",
    "metadata": {"name": "demo"},
    "spec": {
        "hostnames": ["demo.test"],
        "origins": [{"url": "http://127.0.0.1:9"}],
        "sites": "",
        "routing": {"answers": 4, "policy": "failover", "failoverOrder": ["par", "nyc"]},
    },
}


class Attacker(RawAgent):
    """A raw hub session (:mod:`tests.rawagents`) that sends status reports as written."""

    def report(self, status: dict[str, Any]) -> None:
        """Send a status report as written (no client-side checks: the cloud must do them)."""
        self.send(json.dumps({"type": "status", "status": status}, separators=(",", ":")))


def vote(healthy: bool, at: str | None = None) -> dict[str, Any]:
    return {"healthy": healthy} | ({"at": at} if at else {})


def answers(cloud: CloudProcess) -> set[str]:
    query = dns.message.make_query(NAME, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=cloud.dns_port, timeout=2)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def stays(predicate: Any, seconds: float, what: str) -> None:
    """``predicate`` holds throughout ``seconds`` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        hold(0.1)


class Cloud(HubCloud[Attacker]):
    def __init__(self, root: Path) -> None:
        super().__init__(root, CLOUD_FLAGS, Attacker)

    def node(self, name: str) -> dict[str, Any]:
        with self.api() as api:
            document: dict[str, Any] = api.get(f"{API}/nodes/{name}").json()
            return document


def honest_votes(node: str) -> dict[str, Any]:
    return {"peerVotes": {peer: vote(True) for peer in PARIS if peer != node}}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cloud = Cloud(tmp_path_factory.mktemp("malicious"))
    try:
        with cloud.api() as api:
            for name, country in (("par", "FR"), ("nyc", "US")):
                assert api.post(f"{API}/sites", json=site_doc(name, country)).status_code == 201
            assert api.post(f"{API}/domains", json=DOMAIN).status_code == 201
        for site, nodes in (("par", PARIS), ("nyc", NEW_YORK)):
            for name, address in nodes.items():
                cloud.join(name, site, [address])
                cloud.connect(name)
        wait_until(
            lambda: all(cloud.node(n)["status"].get("phase") == "Ready" for n in (*PARIS, *NEW_YORK)),
            20,
            what="every node Ready",
        )
        yield cloud
    finally:
        cloud.close()


@pytest.fixture
def honest(cloud: Cloud) -> Iterator[Cloud]:
    """Every Paris node connected and voting its peers healthy; all of Paris in the answers."""
    for name in PARIS:
        if cloud.agents[name].ws.close_code is not None:
            cloud.connect(name)
        cloud.agents[name].report(honest_votes(name))
    wait_until(lambda: answers(cloud.process) == set(PARIS.values()), 20, what="all of Paris in the answers")
    yield cloud


def test_a_node_cannot_write_votes_or_times_through_rest(honest: Cloud) -> None:
    patch = {
        "status": {
            "peerVotes": {"p2": vote(False, FUTURE), "p3": vote(False, FUTURE)},
            "lastHeartbeat": FUTURE,
            "phase": "Ready",
        }
    }
    with honest.api(honest.credentials["p1"]) as attacker:
        response = attacker.patch(f"{API}/nodes/p1/status", json=patch, headers=MERGE)
        replaced = attacker.put(f"{API}/nodes/p1/status", json={**honest.node("p1"), "status": patch["status"]})
    assert response.status_code == 403, response.text
    assert "hub session" in response.json()["message"]
    assert replaced.status_code == 403, replaced.text
    status = honest.node("p1")["status"]
    assert status.get("lastHeartbeat") != FUTURE
    assert all(v.get("at") != FUTURE for v in (status.get("peerVotes") or {}).values())
    stays(lambda: answers(honest.process) == set(PARIS.values()), 1.5, "Paris stays whole in the answers")


def test_one_voter_cannot_decide_a_tie_nor_date_its_votes(honest: Cloud) -> None:
    """p1 votes both peers down (dated 2099) while p2 and p3 vote each other up: a tie, so both stay."""
    honest.agents["p1"].report(
        {
            "peerVotes": {
                "p2": vote(False, FUTURE),
                "p3": vote(False, FUTURE),
                "n1": vote(False, FUTURE),
                "nobody": vote(False, FUTURE),
            }
        }
    )
    wait_until(
        lambda: honest.node("p1")["status"].get("peerVotes", {}).get("p2", {}).get("healthy") is False,
        10,
        what="p1's votes recorded",
    )
    stored = honest.node("p1")["status"]["peerVotes"]
    assert set(stored) == {"p2", "p3"}, "votes about another site's node or an unknown name are dropped"
    assert all(entry["at"] < "2099" for entry in stored.values()), "the cloud stamps vote times"
    stays(lambda: answers(honest.process) == set(PARIS.values()), 2.0, "a tie leaves p2 and p3 in the answers")
    with honest.api() as api:  # n1 (New York) is answered only as a failover: its health is what counts
        assert api.get(f"{API}/nodes/n1").json()["status"]["phase"] == "Ready"


def test_a_disconnected_or_revoked_voter_stops_counting(honest: Cloud) -> None:
    """p1 and p2 vote p3 down (a majority): p3 leaves; once p1's votes go, p2 alone is no majority."""
    down = {"p3": vote(False)}
    honest.agents["p2"].report({"peerVotes": {"p1": vote(True), **down}})
    honest.agents["p1"].report({"peerVotes": {"p2": vote(True), **down}})
    wait_until(lambda: "127.0.0.4" not in answers(honest.process), 10, what="p3 voted out by a majority")
    honest.agents["p1"].close()
    wait_until(lambda: "127.0.0.4" in answers(honest.process), 10, what="p3 back once p1 disconnected")

    honest.connect("p1").report({"peerVotes": {"p2": vote(True), **down}})
    wait_until(lambda: "127.0.0.4" not in answers(honest.process), 10, what="p3 voted out again")
    with honest.api() as api:
        assert api.delete(f"{EDGE}/nodes/p1/credentials").status_code == 200
    wait_until(lambda: "127.0.0.4" in answers(honest.process), 10, what="p3 back once p1 was revoked")
    assert not honest.node("p1")["status"].get("peerVotes")
    honest.join("p1", "par", [PARIS["p1"]])  # no credential left: a join may take the name again


FLOOD_RATE, FLOOD_SECONDS = 1000, 2.0


def test_a_flood_of_reports_costs_a_bounded_number_of_store_writes(honest: Cloud) -> None:
    """1,000 distinct reports a second from one node: coalesced to about one store write a second."""
    writes, taken = (
        honest.metric("edgefleet_hub_status_writes_total"),
        honest.metric("edgefleet_hub_messages_received_total"),
    )
    attacker, sent, slowest = honest.agents["p2"], 0, 0.0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < FLOOD_SECONDS:
        attacker.report(
            {
                "agentVersion": f"flood-{sent}",
                **honest_votes("p2"),
                "workloads": {"cache": {"ready": sent % 2 == 0, "revision": str(sent)}},
            }
        )
        sent += 1
        if sent % 100 == 0:
            probe = time.monotonic()
            assert httpx.get(f"{honest.process.url}/healthz", timeout=5).status_code == 200
            slowest = max(slowest, time.monotonic() - probe)
        time.sleep(max(0.0, sent / FLOOD_RATE - elapsed))
    elapsed = time.monotonic() - started
    decoded = honest.metric("edgefleet_hub_messages_received_total") - taken  # the rest waits in TCP buffers
    time.sleep(1.5)  # what was taken is written
    written = honest.metric("edgefleet_hub_status_writes_total") - writes
    print(
        f"flood: {sent} reports in {elapsed:.1f}s ({sent / elapsed:.0f}/s), {decoded:.0f} taken by the hub, "
        f"{written:.0f} status writes ({written / elapsed:.1f}/s), slowest /healthz {slowest * 1000:.0f} ms"
    )
    assert written <= 2 * elapsed + 6, f"{written} status writes for {sent} reports in {elapsed:.1f}s"
    assert decoded <= 150 * elapsed + 250, f"the hub read {decoded} messages in {elapsed:.1f}s from one session"
    assert slowest < 2.0
    assert attacker.ws.close_code is None, "a flood is slowed down, not a reason to drop the session"


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"workloads": {f"w{i}": {"ready": True} for i in range(1000)}}, "workloads"),
        ({"peerVotes": {f"n{i}": {"healthy": True} for i in range(5000)}}, "peerVotes"),
        ({"agentVersion": "v" * 10_000}, "agentVersion"),
        ({"workloads": {"cache": {"ready": True, "message": "m" * 100_000}}}, "message"),
        ({"cache": {"requests": 10**30}}, "requests"),
    ],
    ids=["workloads", "peerVotes", "agentVersion", "instance-message", "cache-figure"],
)
def test_an_oversized_status_field_is_refused_and_changes_nothing(
    honest: Cloud, status: dict[str, Any], field: str
) -> None:
    before = honest.node("p3")["status"]
    attacker = honest.agents["p3"]
    attacker.report(status)
    wait_until(lambda: attacker.ws.close_code is not None, 10, what="the session closed")
    assert attacker.ws.close_code in (1008, 1009), attacker.ws.close_code
    assert field in (attacker.ws.close_reason or ""), attacker.ws.close_reason
    hold(0.5)  # a write it should not have made would land here
    after = honest.node("p3")["status"]
    assert (
        after.get("workloads") == before.get("workloads")
        and after.get("agentVersion") == before.get("agentVersion")
        and after.get("cache") == before.get("cache")
    )


def test_watches_per_token_are_capped(honest: Cloud) -> None:
    """Issue 12 (Low): one token cannot hold unbounded watches open; 429 names the limit, others unaffected."""
    with honest.api() as admin:
        viewer_token = admin.post(f"{EDGE}/bootstrap-tokens", json={"role": "viewer"}).json()["token"]
    with contextlib.ExitStack() as open_watches, honest.api() as admin, honest.api(viewer_token) as viewer:
        watches = [
            open_watches.enter_context(admin.stream("GET", f"{API}/sites?watch=true")) for _ in range(MAX_WATCHES)
        ]
        assert all(watch.status_code == 200 for watch in watches)
        refused = admin.get(f"{API}/nodes?watch=true")
        assert refused.status_code == 429, refused.text
        assert f"holds {MAX_WATCHES} open watches" in refused.json()["message"]
        with viewer.stream("GET", f"{API}/sites?watch=true") as other:
            assert other.status_code == 200, "another token has its own allowance"
        watches[0].close()
        wait_until(
            lambda: admin.get(f"{API}/sites?watch=true&timeoutSeconds=1").status_code == 200,
            5,
            what="a slot freed by a closed watch",
        )
