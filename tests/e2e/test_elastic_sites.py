"""Elastic sites end to end: DNS demand from a region switches its ``alwaysOn: false`` site on, then off.

One cloud with its embedded DNS (the example geo table), a 2 s demand
window (``--demand-window``) and a site activation round every 0.2 s
(``--site-activation-period``), so that the whole cycle takes seconds
instead of minutes. Two sites serve the Domain: ``par`` (always on, Paris)
and ``nyc`` (New York, ``alwaysOn: false``, activated above 5 qps held
2 s, drained below 1 qps held 2 s, deactivated 2 s into its drain), one
node each, reported Ready through the admin API (no agents: the node
lifecycle controller is slowed down so that they stay Ready).

- A new on-demand site starts Active and, with no demand, drains and goes
  Inactive; a New York client is then sent to Paris.
- A bounded burst of queries from New York (EDNS Client Subnet, about
  50/s) makes it Active again, with a SiteActivated event that quotes the
  measured demand; New York clients get the New York node.
- Once the queries stop it goes Draining, then Inactive, with an event
  for each step, and New York clients are back on Paris.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.cloudproc import CloudProcess, running_cloud
from tests.fleet import API
from tests.waiting import pace, wait_until

pytestmark = pytest.mark.slow

GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
NAME = "demo.cdn.edgefleet.test"
NEW_YORK = "198.51.100.0"  # us-east in the example geo table
PARIS_NODE, NEW_YORK_NODE = "127.0.1.31", "127.0.5.31"
MERGE = {"Content-Type": "application/merge-patch+json"}
QUERIES_PER_SECOND = 50
BURST_SECONDS = 10.0  # the longest the burst may last; it stops as soon as the site is Active
ACTIVATION = {"activateAbove": 5, "deactivateBelow": 1, "forSeconds": 2, "drainSeconds": 2}
CLOUD_ARGS = (
    "--geo",
    str(GEO),
    "--demand-window",
    "2",
    "--site-activation-period",
    "0.2",
    "--node-not-ready-after",
    "3600",
    "--node-unknown-after",
    "7200",
    "--node-monitor-period",
    "3600",
)


def site(name: str, region: str, country: str, lat: float, lon: float, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"tier": "edge"}},
        "spec": {
            "region": region,
            "location": {"lat": lat, "lon": lon, "country": country},
            "tier": "edge",
            "capacityGbps": 10,
            **spec,
        },
    }


def node(name: str, site_name: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"site": site_name, "addresses": [address]},
    }


DOCUMENTS = {
    "sites": [
        site("par", "eu-west", "FR", 48.86, 2.35),
        site("nyc", "us-east", "US", 40.71, -74.0, alwaysOn=False, activation=ACTIVATION),
    ],
    "nodes": [node("par-1", "par", PARIS_NODE), node("nyc-1", "nyc", NEW_YORK_NODE)],
    "domains": [
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Domain",
            "metadata": {"name": "demo"},
            "spec": {"hostnames": ["demo.test"], "origins": [{"url": "http://127.0.0.1:9"}]},
        }
    ],
}


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path, *CLOUD_ARGS) as process:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with process.client() as api:
            for plural, documents in DOCUMENTS.items():
                for document in documents:
                    response = api.post(f"{API}/{plural}", json=document)
                    assert response.status_code == 201, response.text
            for name in ("par-1", "nyc-1"):  # what an agent's heartbeat would write
                response = api.patch(
                    f"{API}/nodes/{name}/status",
                    headers=MERGE,
                    content=json.dumps({"status": {"phase": "Ready", "lastHeartbeat": now}}),
                )
                assert response.status_code == 200, response.text
        yield process


def new_york_answers(cloud: CloudProcess) -> set[str]:
    """The A records for NAME given to a client in New York (EDNS Client Subnet /24)."""
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(NEW_YORK, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=cloud.dns_port, timeout=1)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def phase(cloud: CloudProcess) -> str | None:
    with cloud.client() as api:
        status: dict[str, Any] = api.get(f"{API}/sites/nyc").json().get("status") or {}
    return status.get("phase")


def site_events(cloud: CloudProcess) -> list[dict[str, Any]]:
    """The Events about Site nyc, oldest first (Events are never updated: resourceVersion is creation order)."""
    with cloud.client() as api:
        items: list[dict[str, Any]] = api.get(f"{API}/events").json()["items"]
    mine = [e for e in items if e["spec"]["involvedObject"] == {"kind": "Site", "name": "nyc"}]
    return sorted(mine, key=lambda e: int(e["metadata"]["resourceVersion"]))


def reasons(cloud: CloudProcess) -> list[str]:
    return [e["spec"]["reason"] for e in site_events(cloud)]


def query_until_active(cloud: CloudProcess) -> int:
    """About QUERIES_PER_SECOND New York queries a second until nyc is Active or BURST_SECONDS pass; the count."""
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < BURST_SECONDS:
        new_york_answers(cloud)
        sent += 1
        if sent % (QUERIES_PER_SECOND // 5) == 0 and phase(cloud) == "Active":
            return sent
        pace(sent, QUERIES_PER_SECOND, start)
    return sent


def recorded(cloud: CloudProcess, expected: list[str]) -> list[dict[str, Any]]:
    """The site's events once their reasons are ``expected`` (the status is written just before its event)."""
    wait_until(lambda: reasons(cloud) == expected, 5, what=f"the events {expected}")
    return site_events(cloud)


def test_demand_switches_an_on_demand_site_on_then_off(cloud: CloudProcess) -> None:
    cycle = ["SiteActivated", "SiteDraining", "SiteDeactivated"]
    wait_until(lambda: phase(cloud) == "Inactive", 10, what="nyc Inactive for lack of demand")
    recorded(cloud, cycle)  # a new on-demand site starts Active, then drains for lack of demand
    assert new_york_answers(cloud) == {PARIS_NODE}, "an inactive site gets no users"

    sent = query_until_active(cloud)
    assert phase(cloud) == "Active", f"nyc not Active after {sent} queries"
    activated = recorded(cloud, [*cycle, "SiteActivated"])[-1]["spec"]
    assert "demand from region us-east" in activated["message"]
    assert "above activateAbove 5 qps for 2s" in activated["message"]
    assert activated["source"] == "site-activation-controller"
    assert new_york_answers(cloud) == {NEW_YORK_NODE}

    wait_until(lambda: phase(cloud) == "Draining", 10, interval=0.05, what="nyc Draining once the queries stop")
    wait_until(lambda: phase(cloud) == "Inactive", 10, interval=0.05, what="nyc Inactive after its drain")
    events = recorded(cloud, cycle + cycle)
    assert "below deactivateBelow 1 qps for 2s" in events[-2]["spec"]["message"]
    assert new_york_answers(cloud) == {PARIS_NODE}
