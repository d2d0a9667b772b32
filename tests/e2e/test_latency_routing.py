"""Latency routing on measured delays, end to end: agents' probes through a delaying proxy steer DNS answers.

One cloud with its embedded DNS (the example geo table, where all of
127.0.0.0/8 is Paris), two sites each with one real agent: ``par`` (Paris)
and ``ams`` (Amsterdam). A Domain routes with the ``latency`` policy. An
operator's ProbeTargets object says the client network 127.100.0.0/16 is
probed with ``HEAD /`` at a small HTTP server, reached through a userspace
proxy (:class:`~tests.faultproxy.FaultProxy`) that delays what one source
address sends: each agent probes from its node's own address
(``--probe-source``), so the path from one site is 80 ms slower than the
other. Nothing is mocked: the agents measure, the hub writes
``Node.status.latency``, the latency controller writes
``Site.status.latency``, the GSLB builds its matrix from the Sites.

- With ``par``'s path slow, clients of 127.100.0.0/16 are answered with the
  ``ams`` node, although geo alone would pick Paris (the same country, and
  nearer); ``edgefleet route`` shows the measured figures.
- Swapping the delays moves the answers to ``par``.
- Meanwhile a background resolver at 127.0.0.1 asks 20 times a second (over
  TCP): the cloud publishes its network (127.0.0.0/24) as a probe target
  (``gslb-resolvers``), and ``get probetargets`` lists the three objects.

Short intervals through flags, no sleeps: probes every 0.3 s, the cloud's
latency writes every 0.5 s; what remains is the hub's spacing of lazy status
writes (5 s, jittered).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.cloudproc import CloudProcess
from tests.faultproxy import FaultProxy
from tests.fleet import API, BackgroundLoop, Fleet, site_doc
from tests.waiting import pace, wait_until

pytestmark = pytest.mark.slow

GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
NAME = "demo.cdn.edgefleet.test"
NETWORK = "127.100.0.0/16"
CLIENTS = [f"127.100.{index}.0" for index in range(0, 200, 20)]  # Paris, by the geo table's 127.0.0.0/8
ADDRESSES = {"p1": "127.0.0.51", "a1": "127.0.0.52"}
SITES = {"p1": "par", "a1": "ams"}
DELAY = 0.08
CLOUD_ARGS = ["--geo", str(GEO), "--heartbeat", "1", "--latency-interval", "0.5"]


class _Head(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Resolver(BackgroundLoop):
    """A resolver at 127.0.0.1 asking about the Domain over TCP (no response rate limiting), 20 times a second
    (the demand allowance of one sender network), for 60 s at most: the GSLB should publish its network."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def _run(self) -> None:
        started = time.monotonic()
        for sent in range(1200):
            if self._stop.is_set():
                return
            client = CLIENTS[sent % len(CLIENTS)]
            query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(client, 24)])
            with contextlib.suppress(OSError, dns.exception.DNSException):
                dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=2)
            pace(sent + 1, 20.0, started)


def domain() -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "demo"},
        "spec": {
            "hostnames": ["demo.test"],
            "origins": [{"url": "http://127.0.0.1:9"}],
            "routing": {"policy": "latency"},
        },
    }


def probe_targets(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "ProbeTargets",
        "metadata": {"name": "clients"},
        "spec": {"targets": [{"network": NETWORK, "address": "127.0.0.1", "port": port, "method": "http"}]},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, FaultProxy]]:
    root: Path = tmp_path_factory.mktemp("latency")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = FaultProxy("127.0.0.1", server.server_address[1]).start()
    path.source_delays = {ADDRESSES["p1"]: DELAY}
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_ARGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    try:
        with fleet.api() as api:
            for document in (
                site_doc("par", "FR", at=(48.86, 2.35), region="eu-west"),
                site_doc("ams", "NL", at=(52.37, 4.90), region="eu-west"),
                domain(),
                probe_targets(path.port),
            ):
                plural = {"Site": "sites", "Domain": "domains", "ProbeTargets": "probetargets"}[document["kind"]]
                response = api.post(f"{API}/{plural}", json=document)
                assert response.status_code == 201, response.text
        for name, address in ADDRESSES.items():
            args = ["--latency-probe-period", "0.3", "--probe-source", address]
            fleet.join(name, SITES[name], address=address, agent_args=args).start()
        with Resolver(cloud.dns_port):
            yield fleet, path
    finally:
        fleet.close()
        path.close()
        server.shutdown()
        server.server_close()


def answered(fleet: Fleet, client: str) -> set[str]:
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(client, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=fleet.cloud.dns_port, timeout=2)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def everyone_on(fleet: Fleet, node: str) -> bool:
    return all(answered(fleet, client) == {ADDRESSES[node]} for client in CLIENTS)


def measured(fleet: Fleet, site: str) -> float | None:
    with fleet.api() as api:
        status = api.get(f"{API}/sites/{site}").json().get("status") or {}
    value = (status.get("latency") or {}).get(NETWORK)
    return float(value) if value is not None else None


def faster(fleet: Fleet, fast: str, slow: str) -> bool:
    """Whether the Sites' status shows the slow site's path DELAY slower than the fast one's."""
    quick, late = measured(fleet, fast), measured(fleet, slow)
    return quick is not None and late is not None and late - quick > DELAY * 1000 * 0.6


def test_clients_go_to_the_site_with_the_lower_measured_rtt(world: tuple[Fleet, FaultProxy]) -> None:
    fleet, _ = world
    wait_until(lambda: faster(fleet, "ams", "par"), 30, 0.2, "par's measured RTT 80 ms above ams's")
    # Geo alone picks Paris (same country as the clients, and nearer): the measurement wins.
    wait_until(lambda: everyone_on(fleet, "a1"), 15, 0.2, "every client of the measured network on ams")
    # A client outside every measured network is routed by geo: Paris.
    assert answered(fleet, "127.0.1.0") == {ADDRESSES["p1"]}
    node = fleet.node("p1")["status"].get("latency") or {}
    assert node.get(NETWORK, 0) >= DELAY * 1000 * 0.8, node
    explain = ("route", "demo", "--client", f"{CLIENTS[1]}/24", "--geo", str(GEO))
    route = json.loads(fleet.cli(*explain, "-o", "json").stdout)
    assert route["site"] == "ams" and route["client"]["measuredNetwork"] == NETWORK, route
    scores = {row["site"]: row["score"] for row in route["candidates"]}
    assert scores["par"] - scores["ams"] > DELAY * 1000 * 0.6, scores
    assert "lowest measured RTT to network 127.100.0.0/16" in route["reason"], route["reason"]
    text = fleet.cli(*explain).stdout
    assert f"Measured: network {NETWORK}" in text and "ms to 127.100.0.0/16" in text, text


def test_swapping_the_delays_moves_the_answers(world: tuple[Fleet, FaultProxy]) -> None:
    fleet, path = world
    wait_until(lambda: everyone_on(fleet, "a1"), 30, 0.2, "every client of the measured network on ams")
    path.source_delays = {ADDRESSES["a1"]: DELAY}
    wait_until(lambda: faster(fleet, "par", "ams"), 30, 0.2, "ams's measured RTT 80 ms above par's")
    wait_until(lambda: everyone_on(fleet, "p1"), 15, 0.2, "every client of the measured network on par")

    def resolvers() -> list[dict[str, Any]]:
        with fleet.api() as api:
            found = api.get(f"{API}/probetargets/gslb-resolvers")
        return list(found.json()["spec"]["targets"]) if found.status_code == 200 else []

    # The module's Resolver (127.0.0.1) asked often enough: the cloud publishes its network.
    published = wait_until(resolvers, 20, 0.5, "the test's resolver network published as a probe target")
    assert [(target["network"], target["address"]) for target in published] == [("127.0.0.0/24", "127.0.0.1")]
    table = fleet.cli("get", "probetargets").stdout
    assert all(name in table for name in ("clients", "fleet-sites", "gslb-resolvers")), table
