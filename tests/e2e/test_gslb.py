"""The GSLB end to end: real DNS queries to the cloud's DNS, answers driven by real agents' data-plane votes.

One cloud (its embedded DNS on a free port, the example geo table), a
Paris site with two nodes (p1, p2) and a New York site with one (n1), each
node a real agent running the real built-in cache; a Domain served by both
sites. p1 reaches the cloud through its own fault proxy, so its cloud link
can be cut alone.

- A client placed in Paris (EDNS Client Subnet) gets the Paris nodes; one
  placed in New York gets n1; the ECS scope is the geo prefix (/24).
- p2's cache dies hard: p1 votes it down and it leaves the answers within
  two probe periods (plus the report and watch latency); when it comes back
  it returns.
- p1's cloud link is cut: the cloud marks it NotReady, but p2 still sees
  it serve, so it stays in the answers.
- p2 set draining: it leaves the answers at once (no vote involved).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, site_doc
from tests.waiting import hold, wait_until

pytestmark = pytest.mark.slow

PROBE_PERIOD = 0.5
PROBE_ARGS = ["--peer-probe-period", str(PROBE_PERIOD)]
ADDRESSES = {"p1": "127.0.0.2", "p2": "127.0.0.3", "n1": "127.0.0.4"}
SITES = {"p1": "par", "p2": "par", "n1": "nyc"}
GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
PARIS, NEW_YORK = "127.0.1.0", "198.51.100.0"
NAME = "demo.cdn.edgefleet.test"


def site(name: str, country: str, lat: float, lon: float) -> dict[str, Any]:
    return site_doc(name, country, at=(lat, lon), region="eu-west" if country == "FR" else "us-east")


DOMAIN = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Domain",
    "metadata": {"name": "demo"},
    "spec": {"hostnames": ["demo.test"], "origins": [{"url": "http://127.0.0.1:9"}], "routing": {"answers": 2}},
}


def answer(fleet: Fleet, subnet: str) -> tuple[set[str], int | None]:
    """The A records for NAME and the ECS scope, for a client in ``subnet``/24."""
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=fleet.cloud.dns_port, timeout=2)
    records = {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}
    scopes = [option.scopelen for option in reply.options if isinstance(option, dns.edns.ECSOption)]
    return records, scopes[0] if scopes else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("gslb")
    cloud = CloudProcess(
        f"sqlite:///{root}/store.db",
        root,
        extra_args=["--geo", str(GEO), "--node-not-ready-after", "3", "--node-monitor-period", "0.5"],
    ).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    own_link = FaultProxy("127.0.0.1", cloud.port).start()
    http_port, admin_port = free_port(), free_port()
    try:
        with fleet.api() as api:
            for document in (site("par", "FR", 48.86, 2.35), site("nyc", "US", 40.71, -74.0)):
                assert api.post(f"{API}/sites", json=document).status_code == 201
            workload = cache_workload(http_port, admin_port, node_selector="")
            assert api.post(f"{API}/workloads", json=workload).status_code == 201
            assert api.post(f"{API}/domains", json=DOMAIN).status_code == 201
        for name, address in ADDRESSES.items():
            server = f"http://127.0.0.1:{own_link.port}" if name == "p1" else fleet.agent_server
            fleet.join(name, SITES[name], address=address, server=server, agent_args=PROBE_ARGS).start()
        fleet.wait_ready(list(ADDRESSES))
        fleet.ports["p1-link"] = own_link.port
        fleet.p1_link = own_link  # type: ignore[attr-defined]
        yield fleet
    finally:
        own_link.close()
        fleet.close()


def paris_nodes(fleet: Fleet) -> set[str]:
    return answer(fleet, PARIS)[0]


def test_clients_get_the_nearest_site_with_the_geo_scope(fleet: Fleet) -> None:
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"], ADDRESSES["p2"]}, 20, what="both Paris nodes")
    assert answer(fleet, PARIS)[1] == 24
    assert answer(fleet, NEW_YORK) == ({ADDRESSES["n1"]}, 24)


def test_a_node_its_peers_see_failing_leaves_the_answers_then_returns(fleet: Fleet) -> None:
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"], ADDRESSES["p2"]}, 20, what="both Paris nodes")
    down = fleet.agents["p2"]
    down.kill()
    down.kill_workloads()
    killed = time.monotonic()
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"]}, 10, interval=0.05, what="p2 out of the answers")
    elapsed = time.monotonic() - killed
    # Two probe periods, the hub client's report spacing (up to 1 s) and the store write + watch.
    assert elapsed < 2 * PROBE_PERIOD + 2.0, f"p2 left the answers after {elapsed:.2f}s"
    down.start()
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"], ADDRESSES["p2"]}, 60, what="p2 back in the answers")


def test_a_node_with_a_cut_cloud_link_that_serves_stays_in_the_answers(fleet: Fleet) -> None:
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"], ADDRESSES["p2"]}, 30, what="both Paris nodes")
    link: FaultProxy = fleet.p1_link  # type: ignore[attr-defined]
    link.set_mode("cut")
    try:
        wait_until(lambda: fleet.phase("p1") == "NotReady", 20, what="p1 NotReady")
        assert fleet.peer_votes("p2").get("p1") is True
        for _ in range(10):  # over a few seconds, p1 is answered throughout
            assert ADDRESSES["p1"] in paris_nodes(fleet)
            hold(0.3)
    finally:
        link.set_mode("pass")
    wait_until(lambda: fleet.phase("p1") == "Ready", 30, what="p1 Ready again")


def test_a_draining_node_leaves_the_answers_at_once(fleet: Fleet) -> None:
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"], ADDRESSES["p2"]}, 30, what="both Paris nodes")
    with fleet.api() as api:
        patched = api.patch(
            f"{API}/nodes/p2",
            json={"spec": {"draining": True}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
    started = time.monotonic()
    wait_until(lambda: paris_nodes(fleet) == {ADDRESSES["p1"]}, 5, interval=0.02, what="p2 drained")
    assert time.monotonic() - started < 1.0
