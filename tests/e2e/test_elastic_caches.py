"""Elastic sites for real: an Inactive site's caches scale to zero, and come back before DNS announces it.

One cloud with its embedded DNS (the example geo table, a 2 s demand window,
a site activation round every 0.2 s), one Site ``nyc`` (region us-east) and
one always-on Site ``sfo`` (us-west), each with one real agent running the
built-in cache from a ``builtin: cache`` Workload, and a real origin; the
Domain's DNS answers live 2 s. The site starts ``alwaysOn`` so its cache
runs and stores an object (a miss, then a hit); then it is made elastic with
short timings (deactivated below 1 qps held 1 s, drained 2 s, activated
above 5 qps held 1 s).

All along, a client in New York that follows DNS (:mod:`tests.dnsfollower`:
it resolves with its Client Subnet, keeps the answer for its TTL, and GETs
from the address it holds every 0.1 s) sees no failed request, and really
uses ``nyc`` before, ``sfo`` while ``nyc`` is away, and ``nyc`` again after.
The site is made elastic right after the client got a fresh answer naming
``nyc``, so it holds that answer for a whole TTL into the drain: without the
drain time (caches stopped as DNS stops naming them) or without the
readiness gate (DNS naming a cache that does not listen yet), the client
fails. Its DNS queries (one per TTL, 0.5 qps) stay below the 1 qps that
keeps the site active.

- no demand: Draining (DNS stops answering with the node, the cache still
  runs), then Inactive: the agent stops the cache process (pid gone, port
  closed), reports it ``ScaledDown`` and keeps the disk tier directory;
  ``edgefleet get sites`` shows the phase;
- a burst of New York queries: Activating (the cache starts again), and the
  DNS answers carry the node only once the cache answers; the site is Active
  with a ``SiteActivated`` event that counts the ready nodes;
- the object stored before is a hit after the restart (memory is empty, so
  from the disk tier) with no new origin fetch.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from tests.dnsfollower import DnsFollower, Target
from tests.faultproxy import FaultProxy
from tests.fleet import API, AgentProcess, Fleet, cache_workload, replace_object
from tests.waiting import pace, wait_until

pytestmark = pytest.mark.slow

GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
NAME = "demo.cdn.edgefleet.test"
HOST = "demo.test"
PATH = "/bytes/2048/elastic"
NEW_YORK = "198.51.100.0"  # us-east in the example geo table
ADDRESS = "127.0.5.41"
OTHER = "127.0.6.41"  # the node of site sfo (San Francisco in the example geo table)
LOOP_PATH = "/bytes/1024/follower"  # the DNS-following client's object (PATH stays nyc's alone)
DNS_TTL = 2  # the Domain's answer TTL: at most the drain time, as an operator must set it
QUERIES_PER_SECOND = 40
ACTIVATION = {"activateAbove": 5, "deactivateBelow": 1, "forSeconds": 1, "drainSeconds": 2, "readySeconds": 20}
CLOUD_FLAGS = [
    "--geo",
    str(GEO),
    "--demand-window",
    "2",
    "--site-activation-period",
    "0.2",
    "--heartbeat",
    "1",
    "--node-monitor-period",
    "0.5",
]


@dataclass
class World:
    fleet: Fleet
    origin: OriginProcess
    agent: AgentProcess
    http_port: int
    other: AgentProcess


def sfo_site() -> dict[str, Any]:
    """The always-on site New York users get while ``nyc`` is away."""
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": "sfo", "labels": {"tier": "edge"}},
        "spec": {"region": "us-west", "location": {"lat": 37.77, "lon": -122.42, "country": "US"}, "capacityGbps": 10},
    }


def nyc_site() -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": "nyc", "labels": {"tier": "edge"}},
        "spec": {
            "region": "us-east",
            "location": {"lat": 40.71, "lon": -74.0, "country": "US"},
            "capacityGbps": 10,
            "activation": ACTIVATION,
        },
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("elastic")
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_FLAGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    origin = OriginProcess(root).start()
    http_port, admin_port = free_port(), free_port()
    domain = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "demo"},
        "spec": {"hostnames": [HOST], "origins": [{"url": origin.url}], "routing": {"ttl": DNS_TTL}},
    }
    try:
        with fleet.api() as api:
            for plural, document in (
                ("sites", nyc_site()),
                ("sites", sfo_site()),
                ("domains", domain),
                ("workloads", cache_workload(http_port, admin_port, "edgefleet.io/site in (nyc,sfo)")),
            ):
                assert api.post(f"{API}/{plural}", json=document).status_code == 201
        agent = fleet.join("nyc-1", "nyc", address=ADDRESS).start()
        other = fleet.join("sfo-1", "sfo", address=OTHER).start()
        fleet.wait_ready(["nyc-1", "sfo-1"])
        yield World(fleet, origin, agent, http_port, other)
    finally:
        fleet.close()
        origin.stop()


def answers(world: World) -> set[str]:
    """The A records for NAME given to a client in New York (EDNS Client Subnet /24)."""
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(NEW_YORK, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=world.fleet.cloud.dns_port, timeout=1)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def site_status(world: World) -> dict[str, Any]:
    with world.fleet.api() as api:
        status: dict[str, Any] = api.get(f"{API}/sites/nyc").json().get("status") or {}
    return status


def cache_state(world: World) -> dict[str, Any]:
    workloads = world.fleet.node("nyc-1").get("status", {}).get("workloads") or {}
    return dict(workloads.get("cache") or {})


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((ADDRESS, port)) == 0


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def get(world: World) -> httpx.Response:
    return httpx.get(f"http://{ADDRESS}:{world.http_port}{PATH}", headers={"Host": HOST}, timeout=10)


def site_events(world: World) -> list[dict[str, Any]]:
    with world.fleet.api() as api:
        items: list[dict[str, Any]] = api.get(f"{API}/events").json()["items"]
    mine = [e for e in items if e["spec"]["involvedObject"] == {"kind": "Site", "name": "nyc"}]
    mine.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))  # never updated: creation order
    return [e["spec"] for e in mine]


def burst_until_announced(world: World) -> list[tuple[set[str], bool]]:
    """New York queries until an answer names the node (20 s at most): each answer, and whether the cache
    listened right after it."""
    seen: list[tuple[set[str], bool]] = []
    start = time.monotonic()
    while time.monotonic() - start < 20:
        got = answers(world)
        seen.append((got, listening(world.http_port) if ADDRESS in got else False))
        if ADDRESS in got:
            return seen
        pace(len(seen), QUERIES_PER_SECOND, start)
    return seen


@pytest.fixture
def client(world: World) -> Iterator[DnsFollower]:
    """A New York user following DNS for the Domain, bounded to 90 s and 2,000 requests."""
    target = Target(NAME, world.fleet.cloud.dns_port, NEW_YORK, world.http_port, HOST, LOOP_PATH)
    follower = DnsFollower(target, interval=0.1, max_seconds=90, max_fetches=2000).start()
    yield follower
    follower.stop()


def test_an_inactive_site_scales_its_caches_to_zero_and_announces_them_only_once_ready(
    world: World, client: DnsFollower
) -> None:
    first = get(world)
    assert first.status_code == 200 and first.headers["X-Cache"].startswith("MISS"), first.headers
    assert get(world).headers["X-Cache"].startswith("HIT")
    pid = world.agent.workload_pids()["cache"]
    disk = world.agent.data_dir / "cache-data" / "cache"
    assert disk.is_dir()
    wait_until(lambda: any(f.address == ADDRESS and f.error is None for f in client.fetches), 10, what="a user at nyc")

    client.wait_fresh_answer()  # it holds nyc for a whole TTL into the drain
    moments = {"elastic": time.time()}  # when the test saw each step, for a failure's message
    with world.fleet.api() as api:  # elastic from now on; no demand, so it drains at once
        replace_object(api, f"{API}/sites/nyc", lambda doc: doc["spec"].update(alwaysOn=False))
    wait_until(lambda: site_status(world).get("phase") == "Draining", 10, interval=0.1, what="nyc Draining")
    moments["draining"] = time.time()
    assert ADDRESS not in answers(world), "a draining site gets no new users"
    assert alive(pid), "a draining site's cache serves the users whose resolvers cached the answer"

    wait_until(lambda: site_status(world).get("phase") == "Inactive", 10, interval=0.1, what="nyc Inactive")
    wait_until(lambda: not alive(pid), 15, interval=0.1, what="the cache process stopped")
    moments["stopped"] = time.time()
    assert not listening(world.http_port)
    away = len(client.fetches)
    wait_until(lambda: cache_state(world).get("state") == "ScaledDown", 10, what="the cache reported ScaledDown")
    assert "site nyc is Inactive" in cache_state(world)["message"]
    assert disk.is_dir() and any(disk.iterdir()), "the disk tier is kept"
    assert "Inactive" in world.fleet.cli("get", "sites").stdout

    moments["burst"] = time.time()
    seen = burst_until_announced(world)
    moments["announced"] = time.time()
    assert ADDRESS in seen[-1][0], f"nyc not announced after {len(seen)} queries: {site_status(world)}"
    with world.fleet.api() as api:  # pinned, so that the user's next answer surely names nyc again
        replace_object(api, f"{API}/sites/nyc", lambda doc: doc["spec"].update(alwaysOn=True))
    wait_until(lambda: client.fetches[-1].address == ADDRESS, 3 * DNS_TTL + 5, what="the user back at nyc")
    fetches = client.stop()
    failed = client.failures()
    assert failed == [], f"{len(failed)} of {len(fetches)} failed: {failed[:2]}; {moments}; {client.answers}"
    assert client.addresses() == [ADDRESS, OTHER, ADDRESS], "nyc, then sfo while nyc was away, then nyc again"
    assert any(f.address == OTHER for f in fetches[away:]), "the user was served by sfo while nyc's cache was down"
    assert client.ttls == {DNS_TTL}

    assert seen[-1][1], "DNS named the node before its cache answered"
    assert site_status(world).get("phase") == "Active"
    assert all(ADDRESS not in got for got, _ in seen[:-1]), "no answer with the site before its caches came back"
    assert all(got == {OTHER} for got, _ in seen[:-1]), "meanwhile New York users get sfo"
    reasons = [e["reason"] for e in site_events(world)]
    assert reasons[-4:] == ["SiteDraining", "SiteDeactivated", "SiteActivating", "SiteActivated"], reasons
    assert "caches ready: 1 of 1 nodes ready" in site_events(world)[-1]["message"]
    assert cache_state(world).get("state") == "Running" and cache_state(world).get("restarts") == 0

    again = get(world)
    assert again.headers["X-Cache"].startswith("HIT"), again.headers
    assert world.origin.count(PATH) == 1, "served from the kept disk tier, not fetched again"
