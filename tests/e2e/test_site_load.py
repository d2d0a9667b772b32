"""Load shedding on measured load, end to end: real traffic through a site pushes DNS answers to the next one.

One cloud with its embedded DNS (the example geo table, where all of
127.0.0.0/8 is Paris), two sites each with one real agent running the real
built-in cache, and a real origin. ``par`` (Paris) has a tiny capacity,
0.0001 Gbit/s (100 kbit/s); ``nyc`` (New York) has plenty. The Domain sheds
above 80 % load, up to half of the answers.

The settings that make it take seconds instead of minutes, none of them a
sleep: the caches' load window is 3 s (``edgefleet cache --load-window 3``,
through the Workload's ``args``), the agents report every second (the
cloud's ``--heartbeat``), and the site status controller may write a site's
load every 0.5 s (``--site-status-interval``). What remains is the hub's
write spacing of counter changes (5 s, jittered).

- An idle fleet: ``get sites`` shows each site's healthy nodes (1/1) and its
  load (0.0 %), no ``<none>``; clients from 100 distinct Paris /24s (EDNS
  Client Subnet) all get the Paris node.
- A bounded loop of 100 KB requests through the Paris cache (20 a second,
  about 16 Mbit/s) puts ``par`` far over its capacity: its status shows the
  load, and about half of those clients are now answered with the New York
  node, the others still with Paris.
- The loop stops: once the window has passed, the load falls and every
  client is answered with Paris again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from tests.cacheproc import OriginProcess
from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, BackgroundLoop, Fleet, cache_workload, site_doc
from tests.waiting import pace, wait_until

pytestmark = pytest.mark.slow

GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
NAME = "demo.cdn.edgefleet.test"
HOST = "demo.test"
ADDRESSES = {"p1": "127.0.0.41", "n1": "127.0.0.42"}
SITES = {"p1": "par", "n1": "nyc"}
CLIENTS = [f"127.100.{index}.0" for index in range(100)]  # Paris, by the geo table's 127.0.0.0/8
OBJECT_BYTES = 100_000
RATE = 20.0  # requests per second: 16 Mbit/s, 160 times par's capacity
CLOUD_ARGS = ["--geo", str(GEO), "--heartbeat", "1", "--site-status-interval", "0.5"]


def site(name: str, country: str, lat: float, lon: float, capacity: float) -> dict[str, Any]:
    region = "eu-west" if country == "FR" else "us-east"
    return site_doc(name, country, at=(lat, lon), region=region, capacity=capacity)


def domain(origin: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "demo"},
        "spec": {
            "hostnames": [HOST],
            "origins": [{"url": origin}],
            "routing": {"shedThreshold": 0.8, "shedShare": 0.5},
        },
    }


class Traffic(BackgroundLoop):
    """GETs of 100 KB objects through one cache at ``RATE`` a second, at most 600 and 40 s."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.ok = 0
        self.failures: list[str] = []

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=5.0, headers={"Host": HOST}) as client:
            for sent in range(600):
                if self._stop.is_set() or time.monotonic() - started > 40:
                    return
                try:
                    response = client.get(f"{self.url}/bytes/{OBJECT_BYTES}/object-{sent % 5}")
                    self.ok += response.status_code == 200 and len(response.content) == OBJECT_BYTES
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                pace(sent + 1, RATE, started)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, int]]:
    root: Path = tmp_path_factory.mktemp("site-load")
    origin = OriginProcess(root).start()
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_ARGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    http_port, admin_port = free_port(), free_port()
    try:
        workload = cache_workload(http_port, admin_port, node_selector="")
        workload["spec"]["template"]["args"] = ["--load-window", "3"]
        with fleet.api() as api:
            for document in (site("par", "FR", 48.86, 2.35, 0.0001), site("nyc", "US", 40.71, -74.0, 10)):
                assert api.post(f"{API}/sites", json=document).status_code == 201
            assert api.post(f"{API}/workloads", json=workload).status_code == 201
            assert api.post(f"{API}/domains", json=domain(origin.url)).status_code == 201
        for name, address in ADDRESSES.items():
            fleet.join(name, SITES[name], address=address).start()
        fleet.wait_ready(list(ADDRESSES))
        yield fleet, http_port
    finally:
        fleet.close()
        origin.stop()


def answered(fleet: Fleet, subnet: str) -> set[str]:
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=fleet.cloud.dns_port, timeout=2)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def shed(fleet: Fleet) -> int:
    """How many of the Paris clients are answered with the New York node."""
    answers = [answered(fleet, subnet) for subnet in CLIENTS]
    assert all(found in ({ADDRESSES["p1"]}, {ADDRESSES["n1"]}) for found in answers), answers
    return sum(found == {ADDRESSES["n1"]} for found in answers)


def site_status(fleet: Fleet, name: str) -> dict[str, Any]:
    with fleet.api() as api:
        status: dict[str, Any] = api.get(f"{API}/sites/{name}").json().get("status") or {}
        return status


def sites_table(fleet: Fleet) -> dict[str, dict[str, str]]:
    """``edgefleet get sites`` as {site: {column: cell}}, cut at the header's column starts."""
    header, *lines = fleet.cli("get", "sites").stdout.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    cut = [*starts[1:], None]
    rows = [[line[a:b].strip() for a, b in zip(starts, cut, strict=True)] for line in lines if line[:1].isalnum()]
    return {cells[0]: dict(zip(names, cells, strict=True)) for cells in rows}


def test_an_idle_fleet_shows_healthy_nodes_and_load(world: tuple[Fleet, int]) -> None:
    fleet, _ = world

    def health_and_load() -> dict[str, tuple[str, str]]:
        return {name: (row["HEALTHY"], row["LOAD"]) for name, row in sites_table(fleet).items()}

    # Polled on the table itself: a load of 0.0 also holds before a node counts (no counted node, no
    # load), and turns to "-" (no figure yet) for the moment between its Ready and its cache's first report.
    idle = {"nyc": ("1/1", "0.0% (0bps)"), "par": ("1/1", "0.0% (0bps)")}
    wait_until(lambda: health_and_load() == idle, 30, what=f"get sites showing {idle}")
    assert shed(fleet) == 0


def test_traffic_past_capacity_moves_a_share_of_clients_and_back(world: tuple[Fleet, int]) -> None:
    fleet, http_port = world
    wait_until(lambda: shed(fleet) == 0, 30, what="every Paris client on the Paris node")
    with Traffic(f"http://{ADDRESSES['p1']}:{http_port}") as traffic:
        # The share shed grows from 0 at shedThreshold to shedShare at load 1: wait for the full share.
        status = wait_until(
            lambda: (found := site_status(fleet, "par")).get("load", 0) > 1.0 and found, 30, 0.2, "par past capacity"
        )
        moved = wait_until(lambda: (count := shed(fleet)) >= 20 and count, 30, 0.2, "about half the clients shed")
    assert traffic.ok > 0 and not traffic.failures, traffic.failures
    assert status["loadGbps"] > 0.0001, status
    assert moved <= 80, f"{moved} of {len(CLIENTS)} clients shed: about half expected (shedShare 0.5)"
    wait_until(lambda: shed(fleet) == 0, 30, interval=0.2, what="every Paris client back on Paris")
    assert site_status(fleet, "par")["load"] < 0.8
