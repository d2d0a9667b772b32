"""The plan of ``edgefleet up``, without a process: shape, manifests, ports, readiness, DNS probe, up.json, text."""

from __future__ import annotations

import dataclasses
import shlex
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import dns.message
import pytest

from edgefleet.api.certificates import inspect, uncovered
from edgefleet.api.common import format_timestamp
from edgefleet.api.meta import parse
from edgefleet.cli import upplan
from edgefleet.cli.upplan import Endpoint, FleetPlan, Logs, Ports, ProcessEntry, TryIt, UpRecord
from edgefleet.gslb import dnswire
from edgefleet.gslb.geo import GeoTable, great_circle_km
from tests.pemfiles import issue

PORTS = Ports(Endpoint("127.0.0.1", 7440), Endpoint("127.0.0.1", 8053), Endpoint("127.0.0.1", 8080))
SINCE = datetime(2026, 5, 1, 12, 0, 0, 400_000, tzinfo=UTC)


def plan(sites: int = 2, nodes: int = 2, ports: Ports = PORTS) -> FleetPlan:
    return upplan.plan_fleet(sites, nodes, ports)


# -- shape ----------------------------------------------------------------------------


def test_default_shape_is_a_parent_and_two_edge_sites_of_two_nodes() -> None:
    fleet = plan()
    assert [site.name for site in fleet.sites] == ["fra-parent", "par-edge", "ams-edge"]
    assert fleet.parent.tier == "parent" and {site.tier for site in fleet.edges} == {"edge"}
    assert [(node.name, node.address) for node in fleet.nodes] == [
        ("fra-parent-1", "127.0.3.1"),
        ("par-edge-1", "127.0.1.1"),
        ("par-edge-2", "127.0.1.2"),
        ("ams-edge-1", "127.0.2.1"),
        ("ams-edge-2", "127.0.2.2"),
    ]
    assert fleet.server == "https://127.0.0.1:7440"
    assert fleet.edges[0].client_subnet == "127.0.1.0/24" and fleet.edges[0].sample_client == "127.0.1.10"


def test_every_site_its_clients_and_its_nodes_are_in_its_city_in_the_packaged_geo_table() -> None:
    geo = GeoTable.from_csv(resources.files("edgefleet").joinpath("data/geo.csv").read_text())
    fleet = plan(sites=len(upplan.EDGE_CITIES), nodes=3)
    for site in fleet.sites:
        addresses = [site.client_subnet.split("/")[0], site.sample_client, *sorted(site.addresses)]
        for address in addresses:
            found = geo.lookup(address)
            assert found is not None, address
            location, prefix = found
            assert prefix == 24, f"{address} is placed by a /{prefix}, not by its city's /24"
            assert location.country == site.city.country, (site.name, address)
            assert great_circle_km(location.lat, location.lon, site.city.lat, site.city.lon) < 1, site.name


def test_city_octets_and_codes_are_unique() -> None:
    cities = [upplan.PARENT_CITY, *upplan.EDGE_CITIES]
    assert len({city.octet for city in cities}) == len(cities)
    assert len({city.code for city in cities}) == len(cities)


def test_packaged_geo_table_is_the_example_one() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
    assert resources.files("edgefleet").joinpath("data/geo.csv").read_text() == example.read_text()


@pytest.mark.parametrize(
    ("sites", "nodes", "message"),
    [
        (0, 2, "--sites 0"),
        (len(upplan.EDGE_CITIES) + 1, 2, "--sites"),
        (2, 0, "--nodes 0"),
        (2, upplan.MAX_NODES_PER_SITE + 1, "--nodes"),
    ],
)
def test_absurd_shapes_are_refused_naming_the_option(sites: int, nodes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(sites, nodes)


def test_cache_ports_must_differ() -> None:
    with pytest.raises(ValueError, match="--cache-port and --cache-admin-port"):
        plan(ports=Ports(PORTS.api, PORTS.dns, PORTS.origin, 9000, 9000))
    with pytest.raises(ValueError, match="--cache-https-port 9001 is the cache's HTTP or admin port"):
        plan(ports=Ports(PORTS.api, PORTS.dns, PORTS.origin, 9000, 9001, 9001))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:7440", Endpoint("127.0.0.1", 7440)), ("[::1]:53", Endpoint("::1", 53))],
)
def test_endpoints(text: str, expected: Endpoint) -> None:
    assert upplan.parse_endpoint(text, "--listen") == expected


@pytest.mark.parametrize("text", ["7440", "localhost:7440", "127.0.0.1:0", "127.0.0.1:70000", ":80", "1.2.3.4:x"])
def test_bad_endpoints_name_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--dns-listen"):
        upplan.parse_endpoint(text, "--dns-listen")


# -- manifests ----------------------------------------------------------------------------


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def test_manifests_are_valid_and_wired_together() -> None:
    ports = Ports(PORTS.api, PORTS.dns, Endpoint("127.0.0.1", 18080), 18081, 19081, 18443)
    issued = issue(upplan.certificate_hosts())
    documents = upplan.manifests(plan(sites=3, ports=ports), upplan.certificate_manifest(issued.chain, issued.key))
    for document in documents:
        parse(document)
    assert [d["kind"] for d in documents].index("Certificate") < [d["kind"] for d in documents].index("Domain")
    sites = by_kind(documents, "Site")
    assert [site["metadata"]["name"] for site in sites] == ["fra-parent", "par-edge", "ams-edge", "lon-edge"]
    assert "parents" not in sites[0]["spec"]
    assert all(site["spec"]["parents"] == ["fra-parent"] for site in sites[1:])
    assert sites[3]["spec"]["location"]["country"] == "GB"
    [domain] = by_kind(documents, "Domain")
    assert domain["spec"]["origins"][0]["url"] == "http://127.0.0.1:18080"
    assert upplan.DEMO_HOST in domain["spec"]["hostnames"]
    assert domain["spec"]["tls"] == {"certificate": upplan.CERTIFICATE}
    [certificate] = by_kind(documents, "Certificate")
    names = inspect(certificate["spec"]["certificate"], certificate["spec"]["key"]).dns_names
    assert not uncovered(
        names, [*domain["spec"]["hostnames"], "demo.cdn.edgefleet.test", "par-edge-1.demo.cdn.edgefleet.test"]
    )
    [workload] = by_kind(documents, "Workload")
    template = workload["spec"]["template"]
    assert template["builtin"] == "cache" and workload["spec"]["nodeSelector"] == ""
    assert {port["name"]: port["port"] for port in template["ports"]} == {"http": 18081, "admin": 19081, "https": 18443}
    assert template["healthProbe"]["http"] == {"path": "/healthz", "port": 19081}


def test_the_domain_selects_the_edge_sites_and_the_parent() -> None:
    from edgefleet.api.selectors import parse_selector

    [domain] = by_kind(upplan.manifests(plan()), "Domain")
    selector = parse_selector(domain["spec"]["sites"])
    sites = by_kind(upplan.manifests(plan()), "Site")
    assert all(selector.matches(site["metadata"]["labels"]) for site in sites)


# -- ports ----------------------------------------------------------------------------


def test_port_needs_cover_every_listener_with_the_option_that_moves_it() -> None:
    fleet = plan(nodes=3)
    needs = upplan.port_needs(fleet)
    assert len(needs) == 4 + 3 * len(fleet.nodes)
    options = {(need.endpoint, need.protocol): need.option for need in needs}
    assert options[(PORTS.dns, "udp")] == options[(PORTS.dns, "tcp")] == "--dns-listen"
    assert options[(Endpoint("127.0.1.3", 8081), "tcp")] == "--cache-port"
    assert options[(Endpoint("127.0.3.1", 9081), "tcp")] == "--cache-admin-port"
    assert options[(Endpoint("127.0.1.2", 8443), "tcp")] == "--cache-https-port"
    message = needs[0].taken_message()
    assert "7440" in message and "--listen" in message and "taken" in message


# -- readiness ----------------------------------------------------------------------------


def node_doc(
    name: str,
    *,
    heartbeat: datetime | None,
    phase: str = "Ready",
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "workloads": {"cache": cache} if cache is not None else {}}
    if heartbeat is not None:
        status["lastHeartbeat"] = format_timestamp(heartbeat)
    return {"metadata": {"name": name}, "status": status}


def test_progress_needs_a_report_from_this_run_a_ready_cache_and_a_listening_port() -> None:
    fleet = plan(sites=1, nodes=2)
    fresh, stale = SINCE.replace(microsecond=0), SINCE - timedelta(seconds=5)
    documents = [
        node_doc("fra-parent-1", heartbeat=fresh, cache={"ready": True}),
        node_doc("par-edge-1", heartbeat=stale, cache={"ready": True}),  # left over from an earlier run
        node_doc("par-edge-2", heartbeat=fresh, cache={"ready": False, "state": "Starting"}),
    ]
    found = {item.node.name: item for item in upplan.progress(fleet, documents, SINCE, ["fra-parent-1"])}
    assert (found["fra-parent-1"].phase, found["fra-parent-1"].cache, found["fra-parent-1"].ready) == (
        "Ready",
        "ready",
        True,
    )
    assert (found["par-edge-1"].phase, found["par-edge-1"].ready) == ("Pending", False)
    assert (found["par-edge-2"].cache, found["par-edge-2"].ready) == ("Starting", False)
    not_listening = upplan.progress(fleet, documents, SINCE, [])[0]
    assert (not_listening.cache, not_listening.ready) == ("not listening", False)


def test_a_node_not_yet_created_or_without_cache_status_is_not_ready() -> None:
    fleet = plan(sites=1, nodes=1)
    items = upplan.progress(
        fleet, [node_doc("fra-parent-1", heartbeat=SINCE, phase="NotReady")], SINCE, ["fra-parent-1", "par-edge-1"]
    )
    assert [(item.phase, item.cache) for item in items] == [("NotReady", "not started"), ("Pending", "not reported")]


def test_waiting_for_names_what_and_where_its_log_is() -> None:
    fleet = plan(sites=2, nodes=1)
    documents = [
        node_doc("fra-parent-1", heartbeat=SINCE, cache={"ready": True}),
        node_doc("par-edge-1", heartbeat=SINCE, cache={"ready": False, "state": "Failed"}),
    ]
    items = upplan.progress(fleet, documents, SINCE, ["fra-parent-1", "par-edge-1"])
    lines = upplan.waiting_for(items, {"par-edge": True, "ams-edge": False}, Logs("/d"))
    assert lines == [
        "the cache on par-edge-1 is Failed, not ready: see /d/nodes/par-edge-1/logs/cache.log",
        "node ams-edge-1 is Pending, not Ready: see its agent's log /d/logs/agent-ams-edge-1.log",
        f"the GSLB does not yet answer {upplan.DEMO_HOST} for clients of ams-edge with ams-edge's nodes: "
        "see /d/logs/cloud.log",
    ]
    ready = [item for item in items if item.ready]
    assert upplan.waiting_for(ready, {"par-edge": True}, Logs("/d")) == []


def test_dns_is_ready_when_the_answer_is_nodes_of_the_site() -> None:
    paris = plan().edges[0]
    assert upplan.dns_ready(paris, ["127.0.1.2", "127.0.1.1"])
    assert not upplan.dns_ready(paris, [])
    assert not upplan.dns_ready(paris, ["127.0.1.1", "127.0.2.1"])


# -- DNS probe ----------------------------------------------------------------------------


def test_the_query_carries_the_client_subnet_like_dig() -> None:
    wire = upplan.dns_query(upplan.DEMO_HOST, "127.0.1.0/24", 4242)
    parsed = dnswire.parse_query(wire)  # the GSLB's own parser accepts it
    assert (parsed.id, parsed.qname, parsed.qtype) == (4242, upplan.DEMO_HOST, 1)
    assert parsed.edns is not None and parsed.edns.ecs is not None
    assert (parsed.edns.ecs.source_prefix, parsed.edns.ecs.address) == (24, "127.0.1.0")
    other = dns.message.from_wire(wire)  # and so does an independent one
    assert other.question[0].name.to_text() == upplan.DEMO_HOST + "."


def reply_to(wire: bytes, *addresses: str, cname: bool = True) -> bytes:
    """The reply the GSLB builds (its own record builders, so the order of the answers is kept)."""
    query = dnswire.parse_query(wire)
    target = "demo.cdn.edgefleet.test"
    owner = target if cname else upplan.DEMO_HOST
    records = [dnswire.cname(upplan.DEMO_HOST, 30, target, question=query.qname_wire)] if cname else []
    records += [dnswire.a(owner, 30, address, question=query.qname_wire) for address in addresses]
    return dnswire.response(query, 0, records, [], [], aa=True, ecs_scope=24, max_size=1232)


def test_a_records_are_read_in_order_past_a_cname() -> None:
    wire = upplan.dns_query(upplan.DEMO_HOST, "127.0.2.0/24", 7)
    assert upplan.a_records(reply_to(wire, "127.0.2.2", "127.0.2.1"), 7) == ["127.0.2.2", "127.0.2.1"]
    assert upplan.a_records(reply_to(wire, "127.0.2.1", cname=False), 7) == ["127.0.2.1"]
    assert dns.message.from_wire(reply_to(wire, "127.0.2.1")).answer  # a well-formed reply, to dnspython too


@pytest.mark.parametrize("damage", ["id", "query", "cut", "empty"])
def test_a_reply_that_is_not_ours_or_is_damaged_is_a_value_error(damage: str) -> None:
    wire = upplan.dns_query(upplan.DEMO_HOST, "127.0.1.0/24", 7)
    reply = {"id": reply_to(wire, "127.0.1.1"), "query": wire, "cut": reply_to(wire, "127.0.1.1")[:40], "empty": b""}[
        damage
    ]
    with pytest.raises(ValueError):
        upplan.a_records(reply, 8 if damage == "id" else 7)


# -- up.json ----------------------------------------------------------------------------


def test_up_record_round_trips_and_refuses_what_it_does_not_know() -> None:
    record = UpRecord(
        "http://127.0.0.1:7440",
        "127.0.0.1:8053",
        "127.0.0.1:8080",
        (8081, 9081),
        {"par-edge-1": "127.0.1.1"},
        (
            ProcessEntry("cloud", "cloud", 10, 111, "boot"),
            ProcessEntry("agent", "par-edge-1", 11, 112, "boot", "/d/nodes/par-edge-1"),
        ),
        True,
    )
    assert UpRecord.from_document(record.to_document()) == record
    assert [entry.pid for entry in record.by_role("agent")] == [11]
    with pytest.raises(ValueError, match="version"):
        UpRecord.from_document({**record.to_document(), "version": 99})
    broken = record.to_document()
    del broken["processes"][0]["pid"]
    with pytest.raises(ValueError, match="pid"):
        UpRecord.from_document(broken)


# -- the text ----------------------------------------------------------------------------


def test_try_it_prints_commands_with_the_real_ports_tokens_and_node() -> None:
    ports = Ports(Endpoint("127.0.0.1", 17440), Endpoint("127.0.0.1", 18053), PORTS.origin, 18081, 19081)
    how = TryIt(
        cli=".venv/bin/edgefleet",
        data="my data",
        admin_token="adm.x",
        viewer_token="vwr.y",
        first_node="127.0.1.2",
        geo_argument=" --geo geo.csv",
    )
    text = upplan.try_it(plan(ports=ports), how)
    lines = [line.strip() for line in text.splitlines()]
    assert "https://127.0.0.1:17440/ui" in lines and "viewer token: vwr.y" in lines
    assert "export EDGEFLEET_SERVER=https://127.0.0.1:17440 EDGEFLEET_TOKEN=adm.x" in lines
    with_ca = upplan.try_it(plan(ports=ports), dataclasses.replace(how, ca_file="/d/my data/tls/ca.crt"))
    assert (
        "export EDGEFLEET_SERVER=https://127.0.0.1:17440 EDGEFLEET_CA_FILE='/d/my data/tls/ca.crt' "
        "EDGEFLEET_TOKEN=adm.x"
    ) in [line.strip() for line in with_ca.splitlines()]
    assert "dig @127.0.0.1 -p 18053 demo.edgefleet.test +subnet=127.0.1.0/24" in lines
    assert ".venv/bin/edgefleet route demo --client 127.0.1.10 --geo geo.csv" in lines
    curl = "curl --resolve demo.edgefleet.test:18081:127.0.1.2 http://demo.edgefleet.test:18081/static/app.js -sI"
    assert curl in lines
    assert ".venv/bin/edgefleet purge demo /static/app.js" in lines
    assert not any("--cacert" in line for line in lines), "no demo CA: no HTTPS line"
    with_https = upplan.try_it(plan(ports=ports), dataclasses.replace(how, demo_ca_file="/d/my data/demo-tls/ca.crt"))
    assert (
        "curl --cacert '/d/my data/demo-tls/ca.crt' --resolve demo.edgefleet.test:8443:127.0.1.2 "
        "https://demo.edgefleet.test:8443/static/app.js -sI"
    ) in [line.strip() for line in with_https.splitlines()]
    assert any("Ctrl-C" in line for line in lines)
    detached = upplan.try_it(plan(ports=ports), dataclasses.replace(how, detached=True))
    assert f"Stop everything: .venv/bin/edgefleet down --data {shlex.quote('my data')}" in detached
    assert "Ctrl-C" not in detached
