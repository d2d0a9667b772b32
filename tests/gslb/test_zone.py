"""The authoritative zone: which question gets which answer, from a real FleetState and geo table.

Queries are built by dnspython, parsed by ``dnswire``, answered by the
Resolver, encoded by ``dnswire.response`` and read back by dnspython, so each
test states a question and the answer a DNS client would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import pytest

from edgefleet.gslb import dnswire, policy, zone
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.geo import GeoDatabase, GeoTable
from edgefleet.gslb.zone import Resolver, Zone

ORIGIN = "cdn.edgefleet.test"
NAME = f"demo.{ORIGIN}"
T0 = 1_800_000_000.0

GEO_CSV = """\
cidr,country,region,lat,lon
127.0.0.0/8,FR,eu-west,48.8566,2.3522
127.0.5.0/24,US,us-east,40.7128,-74.0060
127.0.7.0/24,JP,ap-northeast,35.6762,139.6503
192.0.2.0/24,DE,eu-central,50.1109,8.6821
198.51.0.0/16,US,us-east,40.7128,-74.0060
203.0.113.0/24,JP,ap-northeast,35.6762,139.6503
2001:db8:2::/48,US,us-east,40.7128,-74.0060
2001:db8:3::/48,JP,ap-northeast,35.6762,139.6503
"""

SITES = {  # name: country, lat, lon, IPv4 prefix, IPv6 prefix or None
    "par-edge": ("FR", 48.8566, 2.3522, "127.0.1", "2001:db8:1"),
    "nyc-edge": ("US", 40.7128, -74.0060, "127.0.5", None),
    "tyo-edge": ("JP", 35.6762, 139.6503, "127.0.7", "2001:db8:3"),
}


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def site_document(
    name: str, country: str, lat: float, lon: float, *, always_on: bool = True, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"tier": "edge"}},
        "spec": {
            "region": "r1",
            "location": {"lat": lat, "lon": lon, "country": country},
            "capacityGbps": 10,
            "alwaysOn": always_on,
        },
        "status": status,
    }


def node_document(
    name: str,
    site: str,
    addresses: list[str],
    *,
    phase: str = "Ready",
    draining: bool = False,
    votes: dict[str, tuple[bool, float]] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if votes:
        status["peerVotes"] = {peer: {"healthy": ok, "at": stamp(at)} for peer, (ok, at) in votes.items()}
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"site": site, "addresses": addresses, "draining": draining},
        "status": status,
    }


def domain_document(name: str = "demo", **routing: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {
            "hostnames": ["www.customer.example", "*.img.customer.example"],
            "origins": [{"url": "http://127.0.0.1:8080"}],
            "sites": "tier=edge",
            "routing": {"policy": "geo", "answers": 2, "ttl": 30, **routing},
        },
    }


def fleet_documents(**routing: Any) -> list[dict[str, Any]]:
    """Three edge sites of two Ready nodes each (nyc without IPv6) and the ``demo`` Domain."""
    documents = []
    for name, (country, lat, lon, v4, v6) in SITES.items():
        documents.append(site_document(name, country, lat, lon))
        for i in (1, 2):
            addresses = [f"{v4}.{i}"] + ([f"{v6}::{i}"] if v6 else [])
            documents.append(node_document(f"{name}-{i}", name, addresses))
    documents.append(domain_document(**routing))
    return documents


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_resolver(
    documents: list[dict[str, Any]] | None = None,
    *,
    geo_csv: str = GEO_CSV,
    zone_data: Zone | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> Resolver:
    fleet = FleetState()
    assert fleet.load(fleet_documents() if documents is None else documents) == []
    geo = GeoDatabase.from_table(GeoTable.from_csv(geo_csv))
    return Resolver(zone_data or Zone(), fleet, geo, clock=clock or Clock(), **options)


@pytest.fixture
def resolver() -> Iterator[Resolver]:
    yield make_resolver()


def ask(
    resolver: Resolver,
    name: str = NAME,
    rdtype: str = "A",
    *,
    ecs: tuple[str, int] | None = None,
    client: str = "127.0.0.1",
    edns: bool = True,
    **query_options: Any,
) -> dns.message.Message:
    options: list[dns.edns.Option] = [dns.edns.ECSOption(*ecs)] if ecs else []
    use_edns = query_options.pop("use_edns", 0 if edns or ecs else False)
    query = dns.message.make_query(name, rdtype, use_edns=use_edns, options=options, **query_options)
    parsed = dnswire.parse_query(query.to_wire())
    rcode, answers, authority, additional, scope = resolver.resolve(parsed, client)
    wire = dnswire.response(
        parsed,
        rcode,
        answers,
        authority,
        additional,
        aa=rcode in (dnswire.NOERROR, dnswire.NXDOMAIN),
        ecs_scope=scope,
        max_size=65535,
    )
    return dns.message.from_wire(wire)


def addresses(message: dns.message.Message) -> list[str]:
    return sorted(item.address for rrset in message.answer if rrset.rdtype in (1, 28) for item in rrset)


def scope_of(message: dns.message.Message) -> int:
    (option,) = [o for o in message.options if isinstance(o, dns.edns.ECSOption)]
    return int(option.scopelen)


# --- the apex and the zone's own names ------------------------------------------------------------


def test_apex_soa_and_ns(resolver: Resolver) -> None:
    soa = ask(resolver, ORIGIN, "SOA")
    assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AA
    assert soa.answer[0].to_text() == (f"{ORIGIN}. 3600 IN SOA ns1.{ORIGIN}. hostmaster.{ORIGIN}. 1 3600 600 604800 30")
    ns = ask(resolver, ORIGIN, "NS")
    assert ns.answer[0].to_text() == f"{ORIGIN}. 3600 IN NS ns1.{ORIGIN}."
    assert ns.additional == []  # no glue configured


def test_glue_for_name_servers_in_the_zone() -> None:
    glue = {f"ns1.{ORIGIN}": ("192.0.2.53", "2001:db8::53")}
    zone_data = Zone(
        ns=(f"ns1.{ORIGIN}", "ns.elsewhere.example"), glue=glue, hostmaster="dns-admin@edgefleet.test", serial=7
    )
    resolver = make_resolver(zone_data=zone_data)
    ns = ask(resolver, ORIGIN, "NS")
    assert sorted(rrset.to_text() for rrset in ns.additional) == [
        f"ns1.{ORIGIN}. 3600 IN A 192.0.2.53",
        f"ns1.{ORIGIN}. 3600 IN AAAA 2001:db8::53",
    ]
    assert addresses(ask(resolver, f"ns1.{ORIGIN}", "A")) == ["192.0.2.53"]
    assert addresses(ask(resolver, f"ns1.{ORIGIN}", "AAAA")) == ["2001:db8::53"]
    assert ask(resolver, f"ns1.{ORIGIN}", "MX").authority[0].rdtype == 6  # NODATA
    soa = ask(resolver, ORIGIN, "SOA").answer[0][0]
    assert (soa.rname.to_text(), soa.serial) == ("dns-admin.edgefleet.test.", 7)


def test_apex_any_and_nodata(resolver: Resolver) -> None:
    assert sorted(rrset.rdtype for rrset in ask(resolver, ORIGIN, "ANY").answer) == [2, 6]
    nodata = ask(resolver, ORIGIN, "A")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert nodata.authority[0].to_text().startswith(f"{ORIGIN}. 30 IN SOA")


def test_nxdomain_under_the_zone_carries_the_soa(resolver: Resolver) -> None:
    for name in (f"nope.{ORIGIN}", f"x.demo.{ORIGIN}", f"_route.nope.{ORIGIN}"):
        message = ask(resolver, name)
        assert message.rcode() == dns.rcode.NXDOMAIN and message.flags & dns.flags.AA, name
        assert message.authority[0].to_text().startswith(f"{ORIGIN}. 30 IN SOA"), name


def test_names_outside_every_zone_are_refused(resolver: Resolver) -> None:
    for name in ("example.org", "customer.example", "edgefleet.test", "a.www.customer.example", "."):
        message = ask(resolver, name)
        assert message.rcode() == dns.rcode.REFUSED and not message.flags & dns.flags.AA, name
        assert (message.answer, message.authority) == ([], [])


def test_negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() -> None:
    resolver = make_resolver(zone_data=Zone(soa_ttl=10, negative_ttl=300))
    assert ask(resolver, f"nope.{ORIGIN}").authority[0].ttl == 10


# --- Domain names ------------------------------------------------------------------------------------


def test_zone_name_answers_the_nearest_sites_nodes(resolver: Resolver) -> None:
    tokyo = ask(resolver, ecs=("203.0.113.0", 24))
    assert addresses(tokyo) == ["127.0.7.1", "127.0.7.2"]
    assert tokyo.answer[0].ttl == 30 and tokyo.flags & dns.flags.AA
    assert addresses(ask(resolver, ecs=("198.51.100.0", 24))) == ["127.0.5.1", "127.0.5.2"]
    assert addresses(ask(resolver, ecs=("192.0.2.0", 24))) == ["127.0.1.1", "127.0.1.2"]  # Frankfurt -> Paris


def test_without_ecs_the_resolver_address_places_the_client(resolver: Resolver) -> None:
    assert addresses(ask(resolver, client="127.0.5.9", edns=False)) == ["127.0.5.1", "127.0.5.2"]
    assert addresses(ask(resolver, client="127.0.7.9")) == ["127.0.7.1", "127.0.7.2"]


def test_ecs_scope_is_the_matched_prefix_capped_at_the_source(resolver: Resolver) -> None:
    assert scope_of(ask(resolver, ecs=("203.0.113.0", 24))) == 24
    assert scope_of(ask(resolver, ecs=("198.51.100.128", 25))) == 16  # the geo table matched a /16
    assert scope_of(ask(resolver, ecs=("203.0.113.0", 20))) == 20  # the /20 holds no /24 match: scope = source
    assert scope_of(ask(resolver, ecs=("2001:db8:3::", 56))) == 48
    assert scope_of(ask(resolver, ecs=("100.64.0.0", 24))) == 24  # unknown: as specific as the source


def test_ecs_with_source_zero_uses_the_resolver_address_and_scope_zero(resolver: Resolver) -> None:
    message = ask(resolver, ecs=("0.0.0.0", 0), client="127.0.7.9")
    assert addresses(message) == ["127.0.7.1", "127.0.7.2"]
    assert scope_of(message) == 0


def test_aaaa_answers_only_sites_with_ipv6_nodes(resolver: Resolver) -> None:
    assert addresses(ask(resolver, rdtype="AAAA", ecs=("203.0.113.0", 24))) == ["2001:db8:3::1", "2001:db8:3::2"]
    # New York's nodes have no IPv6: a New York client is sent to the nearest site that has some.
    assert addresses(ask(resolver, rdtype="AAAA", ecs=("198.51.100.0", 24))) == ["2001:db8:1::1", "2001:db8:1::2"]


def test_any_at_a_domain_name_answers_the_a_records(resolver: Resolver) -> None:
    assert addresses(ask(resolver, rdtype="ANY", ecs=("203.0.113.0", 24))) == ["127.0.7.1", "127.0.7.2"]


def test_other_types_at_a_domain_name_are_nodata(resolver: Resolver) -> None:
    message = ask(resolver, rdtype="MX")
    assert message.rcode() == dns.rcode.NOERROR and message.answer == []
    assert message.authority[0].rdtype == 6


def test_hostname_answers_cname_and_the_routed_addresses(resolver: Resolver) -> None:
    message = ask(resolver, "WWW.Customer.Example", ecs=("203.0.113.0", 24))
    texts = [rrset.to_text() for rrset in message.answer]
    assert texts[0] == f"WWW.Customer.Example. 30 IN CNAME {NAME}."
    assert sorted(texts[1].splitlines()) == [f"{NAME}. 30 IN A 127.0.7.1", f"{NAME}. 30 IN A 127.0.7.2"]


def test_wildcard_hostname_and_non_address_types_get_only_the_cname(resolver: Resolver) -> None:
    wildcard = ask(resolver, "a.b.img.customer.example", ecs=("198.51.100.0", 24))
    assert addresses(wildcard) == ["127.0.5.1", "127.0.5.2"]
    for rdtype in ("TXT", "CNAME"):
        message = ask(resolver, "www.customer.example", rdtype)
        assert [rrset.to_text() for rrset in message.answer] == [f"www.customer.example. 30 IN CNAME {NAME}."]


def test_no_eligible_site_is_nodata() -> None:
    documents = [d for d in fleet_documents() if d["kind"] != "Node"]
    message = ask(make_resolver(documents))
    assert message.rcode() == dns.rcode.NOERROR and message.answer == [] and message.authority[0].rdtype == 6


# --- per-node names (where the 302 redirector sends users) ---------------------------------------


def test_a_node_name_answers_that_node_whatever_the_client(resolver: Resolver) -> None:
    message = ask(resolver, f"tyo-edge-1.demo.{ORIGIN}", ecs=("198.51.100.0", 24))  # a New York client
    assert message.rcode() == dns.rcode.NOERROR and message.flags & dns.flags.AA
    assert [rrset.to_text() for rrset in message.answer] == [f"tyo-edge-1.demo.{ORIGIN}. 30 IN A 127.0.7.1"]
    assert addresses(ask(resolver, f"TYO-Edge-1.Demo.{ORIGIN}.", "AAAA")) == ["2001:db8:3::1"]
    assert addresses(ask(resolver, f"nyc-edge-2.demo.{ORIGIN}", "ANY")) == ["127.0.5.2"]
    for name, rdtype in ((f"nyc-edge-2.demo.{ORIGIN}", "AAAA"), (f"tyo-edge-1.demo.{ORIGIN}", "MX")):
        nodata = ask(resolver, name, rdtype)  # New York's nodes have no IPv6; MX is no address type
        assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == [], (name, rdtype)
        assert nodata.authority[0].rdtype == 6


def test_a_node_name_lives_while_the_node_is_fit_and_its_site_selected() -> None:
    documents = fleet_documents(ttl=7)
    documents[1] = node_document("par-edge-1", "par-edge", ["127.0.1.1"], draining=True)
    documents[2] = node_document("par-edge-2", "par-edge", ["127.0.1.2"], phase="NotReady")
    lab = site_document("lab", "FR", 48.0, 2.0)
    lab["metadata"]["labels"] = {"tier": "lab"}
    documents += [lab, node_document("lab-1", "lab", ["127.0.9.1"])]
    resolver = make_resolver(documents)
    for label in (
        "par-edge-1.demo",
        "par-edge-2.demo",
        "lab-1.demo",
        "nobody.demo",
        "tyo-edge-1.other",
        "x.tyo-edge-1.demo",
    ):
        message = ask(resolver, f"{label}.{ORIGIN}")
        assert message.rcode() == dns.rcode.NXDOMAIN and message.authority[0].rdtype == 6, label
    answer = ask(resolver, f"tyo-edge-2.demo.{ORIGIN}").answer
    assert [rrset.to_text() for rrset in answer] == [f"tyo-edge-2.demo.{ORIGIN}. 7 IN A 127.0.7.2"]


def test_node_and_domain_names_may_hold_dots_and_a_domain_name_wins() -> None:
    shop = domain_document("v2.shop")
    shop["spec"]["hostnames"] = ["shop.example"]
    shadow = domain_document("tyo-edge-1.demo")
    shadow["spec"]["hostnames"] = ["shadow.example"]
    dotted = node_document("rack.7", "tyo-edge", ["127.0.7.7"])
    resolver = make_resolver([*fleet_documents(), shop, shadow, dotted])
    assert addresses(ask(resolver, f"rack.7.v2.shop.{ORIGIN}")) == ["127.0.7.7"]
    assert addresses(ask(resolver, f"tyo-edge-2.v2.shop.{ORIGIN}")) == ["127.0.7.2"]
    # "tyo-edge-1.demo" is a Domain: its zone name is routed (two answers), not the node's own name.
    assert len(addresses(ask(resolver, f"tyo-edge-1.demo.{ORIGIN}", client="127.0.5.9"))) == 2
    assert resolver.node_for(f"tyo-edge-2.demo.{ORIGIN}") == (
        "demo",
        policy.NodeTarget("tyo-edge-2", ("127.0.7.2",), ("2001:db8:3::2",)),
    )
    assert resolver.node_for("tyo-edge-2.demo.example.org") is None
    assert zone.node_hostname("tyo-edge-2", "demo", ORIGIN.upper() + ".") == f"tyo-edge-2.demo.{ORIGIN}"


def test_answers_count_and_ttl_follow_the_routing() -> None:
    message = ask(make_resolver(fleet_documents(answers=1, ttl=5)), ecs=("203.0.113.0", 24))
    assert len(addresses(message)) == 1 and message.answer[0].ttl == 5


def test_weighted_answers_depend_on_the_subnet_so_scope_is_the_source() -> None:
    documents = fleet_documents(policy="weighted", weights={"par-edge": 1, "nyc-edge": 1, "tyo-edge": 1})
    resolver = make_resolver(documents)
    sites = {tuple(addresses(ask(resolver, ecs=(f"198.51.{i}.0", 24)))) for i in range(40)}
    assert len(sites) == 3  # subnets spread over the three sites
    assert scope_of(ask(resolver, ecs=("198.51.100.0", 24))) == 24  # not the /16 the geo table matched
    again = [addresses(ask(resolver, ecs=("198.51.7.0", 24))) for _ in range(3)]
    assert again[0] == again[1] == again[2]  # a subnet sticks to its site


def test_a_site_shedding_load_makes_answers_per_subnet() -> None:
    resolver = make_resolver()
    assert scope_of(ask(resolver, ecs=("198.51.100.0", 24))) == 16
    loaded = site_document("nyc-edge", "US", 40.7128, -74.0060, loadGbps=9.9)  # 99% of 10 Gbit/s
    resolver.fleet.apply("Site", "nyc-edge", loaded)
    answers = {tuple(addresses(ask(resolver, ecs=(f"198.51.{i}.0", 24)))) for i in range(40)}
    assert answers == {("127.0.5.1", "127.0.5.2"), ("127.0.1.1", "127.0.1.2")}  # some subnets shed to Paris
    assert scope_of(ask(resolver, ecs=("198.51.100.0", 24))) == 24


# --- diagnostics -----------------------------------------------------------------------------------------


def test_whoami_tells_the_client_address_and_location(resolver: Resolver) -> None:
    message = ask(resolver, f"whoami.{ORIGIN}", "TXT", ecs=("203.0.113.0", 24))
    strings = [s.decode() for s in message.answer[0][0].strings]
    assert strings == ["client 203.0.113.0/24 (ECS)", "location JP ap-northeast 35.6762,139.65 (prefix /24)"]
    assert message.answer[0].ttl == 0
    plain = ask(resolver, f"whoami.{ORIGIN}", "TXT", client="100.64.1.2")
    assert [s.decode() for s in plain.answer[0][0].strings] == [
        "client 100.64.1.2 (resolver address)",
        "location unknown",
    ]
    assert ask(resolver, f"whoami.{ORIGIN}", "A").answer == []


def test_route_txt_explains_the_choice(resolver: Resolver) -> None:
    message = ask(resolver, f"_route.demo.{ORIGIN}", "TXT", ecs=("198.51.100.0", 24))
    strings = [s.decode() for s in message.answer[0][0].strings]
    assert strings[0] == "client 198.51.100.0/24 (ECS)"
    assert strings[2] == "site nyc-edge"
    assert strings[3].startswith("nodes nyc-edge-")
    assert strings[4].startswith("reason geo:")
    assert ask(resolver, f"_route.demo.{ORIGIN}", "A").authority[0].rdtype == 6


# --- queries the zone cannot answer -------------------------------------------------------------------------


def test_other_opcodes_are_not_implemented(resolver: Resolver) -> None:
    query = dns.message.make_query(NAME, "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    parsed = dnswire.parse_query(query.to_wire())
    assert resolver.resolve(parsed, "127.0.0.1")[0] == dnswire.NOTIMP


def test_edns_version_above_zero_gets_badvers(resolver: Resolver) -> None:
    message = ask(resolver, edns=False, use_edns=1)
    assert message.rcode() == dns.rcode.BADVERS


def test_other_classes_and_zone_transfers_are_refused(resolver: Resolver) -> None:
    assert ask(resolver, "version.bind", "TXT", rdclass=dns.rdataclass.CH).rcode() == dns.rcode.REFUSED
    assert ask(resolver, ORIGIN, "AXFR").rcode() == dns.rcode.REFUSED
    assert ask(resolver, ORIGIN, "IXFR").rcode() == dns.rcode.REFUSED


def test_opt_as_a_question_type_is_a_format_error(resolver: Resolver) -> None:
    assert ask(resolver, ORIGIN, "OPT").rcode() == dns.rcode.FORMERR


# --- changes reach answers -----------------------------------------------------------------------------------


def test_fleet_changes_move_the_generation_and_the_answers() -> None:
    resolver = make_resolver()
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.7.1", "127.0.7.2"]
    before = resolver.generation
    assert resolver.generation == before  # stable while nothing changes
    resolver.fleet.apply("Node", "tyo-edge-1", node_document("tyo-edge-1", "tyo-edge", ["127.0.7.1"], draining=True))
    assert resolver.generation != before
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.7.2"]  # the other node of the site
    resolver.fleet.apply("Node", "tyo-edge-2", None)
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.1.1", "127.0.1.2"]  # next nearest: Paris


def test_an_inactive_site_leaves_answers_and_comes_back() -> None:
    resolver = make_resolver()
    off = site_document("tyo-edge", "JP", 35.6762, 139.6503, always_on=False, active=False)
    resolver.fleet.apply("Site", "tyo-edge", off)
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.1.1", "127.0.1.2"]
    resolver.fleet.apply("Site", "tyo-edge", {**off, "status": {"active": True}})
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.7.1", "127.0.7.2"]


def test_peer_votes_decide_and_stale_votes_fall_back_to_the_phase() -> None:
    clock = Clock()
    documents = fleet_documents()
    # tyo-edge-2 says tyo-edge-1 is failing; tyo-edge-1 is NotReady (cloud link cut) but its peer's vote rules.
    documents[8] = node_document("tyo-edge-2", "tyo-edge", ["127.0.7.2"], votes={"tyo-edge-1": (False, T0)})
    resolver = make_resolver(documents, clock=clock)
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.7.2"]
    clock.now = T0 + 31  # the vote is stale: tyo-edge-1 is Ready again, by its phase
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.7.1", "127.0.7.2"]


def test_a_notready_node_its_peers_see_healthy_stays_in_answers() -> None:
    documents = fleet_documents()
    documents[7] = node_document("tyo-edge-1", "tyo-edge", ["127.0.7.1"], phase="NotReady")
    documents[8] = node_document("tyo-edge-2", "tyo-edge", ["127.0.7.2"], votes={"tyo-edge-1": (True, T0)})
    assert addresses(ask(make_resolver(documents), ecs=("203.0.113.0", 24))) == ["127.0.7.1", "127.0.7.2"]


def test_geo_table_reload_moves_the_generation(tmp_path: Path) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(GEO_CSV)
    fleet = FleetState()
    fleet.load(fleet_documents())
    resolver = Resolver(Zone(), fleet, GeoDatabase(table), clock=Clock())
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.7.1", "127.0.7.2"]
    before = resolver.generation
    table.write_text(
        GEO_CSV.replace("203.0.113.0/24,JP,ap-northeast,35.6762,139.6503", "203.0.113.0/24,US,us-east,40.7128,-74.0060")
    )
    assert resolver.geo.reload() is None
    assert resolver.generation != before
    assert addresses(ask(resolver, ecs=("203.0.113.0", 24))) == ["127.0.5.1", "127.0.5.2"]


def test_answers_are_cached_per_location(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = make_resolver()
    calls = []

    def counting_decision(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].location)
        return policy.SiteChoice(*args, **kwargs)

    monkeypatch.setattr(zone, "SiteChoice", counting_decision)
    for subnet in ("203.0.113.0", "127.0.7.0", "203.0.113.0"):  # two subnets, one location (Tokyo)
        assert addresses(ask(resolver, ecs=(subnet, 24))) == ["127.0.7.1", "127.0.7.2"]
    assert [location.country for location in calls] == ["JP"]
    ask(resolver, rdtype="AAAA", ecs=("203.0.113.0", 24))
    assert len(calls) == 2  # another type is another answer
    resolver.fleet.apply("Node", "par-edge-1", None)
    ask(resolver, ecs=("203.0.113.0", 24))
    assert len(calls) == 3  # the fleet changed: decided again


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = make_resolver(cache_size=0)
    calls = []

    def counting_decision(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return policy.SiteChoice(*args, **kwargs)

    monkeypatch.setattr(zone, "SiteChoice", counting_decision)
    for _ in range(3):
        ask(resolver, ecs=("203.0.113.0", 24))
    assert len(calls) == 3


def test_zone_and_fleet_must_agree_on_the_origin() -> None:
    with pytest.raises(ValueError, match="zone"):
        Resolver(Zone(origin="other.test"), FleetState(), GeoDatabase(None))
    with pytest.raises(ValueError):
        Zone(origin="a" * 64 + ".test")
    assert Zone(origin="CDN.Edgefleet.Test.").origin == ORIGIN
