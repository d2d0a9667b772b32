"""Fresh decisions at wire speed (issue 15): precomputed site decisions and query shapes.

The fast path must be the slow path, faster: :class:`SiteChoice` gives the
site :func:`choose` gives (the ``edgefleet route`` CLI calls ``choose``) on
random fleets, policies, locations and draws; the DNS server's shape path
gives byte for byte the answer the full parse and resolve give, on random
queries and fleets, including weighted policies and sites shedding load;
both follow fleet and geo table changes; their tables stay bounded; and a
query varied only in its subnet costs no parse and no decision.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.cli import route as route_cli
from edgefleet.gslb import dns as dnsserver
from edgefleet.gslb import dnswire, policy, zone
from edgefleet.gslb.dns import DnsServer
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.geo import GeoDatabase, GeoTable, Location
from edgefleet.gslb.policy import Client, NodeTarget, RoutingPolicy, SiteChoice, SiteView, choose
from edgefleet.gslb.rrl import RrlSettings
from edgefleet.gslb.zone import Resolver, Zone
from tests.gslb.test_zone import GEO_CSV, NAME, SITES, Clock, fleet_documents, site_document

CITIES = [
    Location("FR", "eu-west", 48.8566, 2.3522),
    Location("FR", "eu-west", 43.2965, 5.3698),
    Location("BE", "eu-west", 50.8503, 4.3517),
    Location("US", "us-east", 40.7128, -74.0060),
    Location("US", "us-west", 37.7749, -122.4194),
    Location("JP", "ap-northeast", 35.6762, 139.6503),
    Location("BR", "sa-east", -23.5505, -46.6333),
]
SITE_NAMES = ["a-edge", "b-edge", "c-edge", "d-edge", "e-edge"]


# --- SiteChoice == choose ------------------------------------------------------------------


@st.composite
def site_views(draw: st.DrawFn) -> list[SiteView]:
    names = draw(st.lists(st.sampled_from(SITE_NAMES), min_size=0, max_size=5, unique=True))
    views: list[SiteView] = []
    for name in names:
        where = draw(st.sampled_from(CITIES))
        count = draw(st.integers(0, 3))
        nodes = tuple(NodeTarget(f"{name}-{i}", (f"10.0.{len(views)}.{i}",), ()) for i in range(count))
        load = draw(st.one_of(st.none(), st.floats(0.0, 12.0)))
        views.append(
            SiteView(name, where.region, where.country, where.lat, where.lon, draw(st.booleans()), 10.0, load, nodes)
        )
    return views


@st.composite
def routing_policies(draw: st.DrawFn) -> RoutingPolicy:
    weights = {name: draw(st.integers(0, 3)) for name in draw(st.lists(st.sampled_from(SITE_NAMES), unique=True))}
    order = tuple(draw(st.lists(st.sampled_from(SITE_NAMES), unique=True)))
    return RoutingPolicy(
        policy=draw(st.sampled_from(policy.POLICIES)),
        weights=weights,
        failover_order=order,
        answers=draw(st.integers(1, 3)),
        prefer_country=draw(st.booleans()),
        shed_threshold=draw(st.sampled_from([0.5, 0.85, 1.0])),
        shed_share=draw(st.sampled_from([0.25, 0.5, 1.0])),
    )


LATENCY = {"eu-west": {"a-edge": 12.0, "c-edge": 30.0}, "us-east": {"b-edge": 5.0}}


@settings(max_examples=300, deadline=None)
@given(
    sites=site_views(),
    routing=routing_policies(),
    where=st.one_of(st.none(), st.sampled_from(CITIES)),
    draws=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=12),
    with_latency=st.booleans(),
)
def test_the_precomputed_site_is_the_one_choose_picks(
    sites: list[SiteView], routing: RoutingPolicy, where: Location | None, draws: list[float], with_latency: bool
) -> None:
    latency = LATENCY if with_latency else None
    decided = SiteChoice(Client("", where), sites, routing, latency)
    picked = set()
    for draw in draws:
        site = decided.site(draw)
        route = choose(Client("192.0.2.1", where), sites, routing, key="k", draw=draw, latency=latency)
        assert (site.name if site else None) == route.site
        picked.add(route.site)
    if not decided.draw_matters:
        assert len(picked) == 1  # the draw is not even computed then: it must not matter


# --- the server's shape path == parse and resolve --------------------------------------------

SHEDDING = [*fleet_documents(), site_document("par-edge", "FR", 48.8566, 2.3522, loadGbps=9.5)]
"""Paris over its threshold (95% > 85%): a share of its clients (by subnet) goes elsewhere."""


def make_server(documents: list[dict[str, Any]], *, shapes: bool, geo: GeoDatabase | None = None) -> DnsServer:
    fleet = FleetState()
    assert fleet.load(documents) == []
    database = geo or GeoDatabase.from_table(GeoTable.from_csv(GEO_CSV))
    server = DnsServer(Resolver(Zone(), fleet, database, clock=Clock()), rrl=RrlSettings(rate=0))
    if not shapes:
        server._ecs_route = server._address_route = None
    return server


def ecs_query(name: str, rdtype: str, address: str, prefix: int, *, payload: int = 1232) -> bytes:
    query = dns.message.make_query(
        name, rdtype, use_edns=0, payload=payload, options=[dns.edns.ECSOption(address, prefix)]
    )
    return query.to_wire()


def random_case(rng: random.Random, name: str) -> str:
    return "".join(char.upper() if rng.random() < 0.3 else char for char in name)


def random_client(rng: random.Random) -> tuple[str, int]:
    if rng.random() < 0.2:
        return f"2001:db8:{rng.choice([2, 3, 9])}:{rng.randrange(65536):x}::", rng.choice([32, 48, 56, 64])
    first = rng.choice(["127.0.5", "127.0.7", "127.0.9", "192.0.2", "198.51.7", "203.0.113", "10.1.2"])
    return f"{first}.{rng.randrange(256)}", rng.choice([8, 16, 22, 24, 25, 32])


def random_queries(seed: int, count: int) -> list[bytes]:
    """ECS queries mostly; a quarter without ECS or with a /0 one (placed by the sender's address)."""
    rng = random.Random(seed)
    names = [NAME, "www.customer.example", "x.img.customer.example", f"whoami.{NAME.split('.', 1)[1]}"]
    out = []
    for _ in range(count):
        address, prefix = random_client(rng)
        name = random_case(rng, rng.choice(names))
        rdtype = rng.choice(["A", "A", "AAAA", "ANY", "TXT"])
        kind = rng.random()
        if kind < 0.1:
            out.append(dns.message.make_query(name, rdtype, use_edns=False).to_wire())
        elif kind < 0.2:
            out.append(ecs_query(name, rdtype, "0.0.0.0", 0))
        else:
            out.append(ecs_query(name, rdtype, address, prefix, payload=rng.choice([512, 1232, 4096])))
    return out


SENDERS = ["127.0.5.9", "127.0.7.3", "192.0.2.8", "203.0.113.5", "198.18.0.1", "2001:db8:3::7", "2001:db8:2::1"]


def same_answers(fast: DnsServer, slow: DnsServer, messages: list[bytes]) -> None:
    for index, message in enumerate(messages):
        client = SENDERS[index % len(SENDERS)]
        udp = index % 3 != 0
        assert fast.answer(message, client, udp=udp) == slow.answer(message, client, udp=udp), message


@pytest.mark.parametrize(
    ("documents", "seed"),
    [
        (fleet_documents(), 1),
        (fleet_documents(policy="weighted", weights={"par-edge": 2, "nyc-edge": 1, "tyo-edge": 1}), 2),
        (fleet_documents(policy="failover", failoverOrder=["tyo-edge", "par-edge"]), 3),
        (SHEDDING, 4),
    ],
    ids=["geo", "weighted", "failover", "shedding"],
)
def test_shape_answers_are_the_resolver_answers(documents: list[dict[str, Any]], seed: int) -> None:
    fast, slow = make_server(documents, shapes=True), make_server(documents, shapes=False)
    messages = random_queries(seed, 600)
    same_answers(fast, slow, messages + messages[:100])  # the repeats come from the packet caches
    assert fast.metrics.shape_hits > 20  # most shapes repeat rarely here (random case, type, size, prefix)
    assert slow.metrics.shape_hits == 0
    reply = dns.message.from_wire(fast.answer(messages[0], "198.18.0.1", udp=False) or b"")
    assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.REFUSED)


def test_shedding_splits_a_location_by_subnet_on_the_fast_path() -> None:
    fast, slow = make_server(SHEDDING, shapes=True), make_server(SHEDDING, shapes=False)
    sites = set()
    for third in range(256):  # 127.0.0.0/8 is Paris, minus 127.0.5/24 and 127.0.7/24
        message = ecs_query(NAME, "A", f"127.1.{third}.0", 24)
        reply = fast.answer(message, "198.18.0.1", udp=True)
        assert reply == slow.answer(message, "198.18.0.1", udp=True)
        parsed = dns.message.from_wire(reply or b"")
        sites.add(tuple(sorted(item.address for rrset in parsed.answer for item in rrset)))
        option = parsed.options[0]
        assert isinstance(option, dns.edns.ECSOption) and option.scopelen == 24  # the answer is per subnet
    assert len(sites) == 2  # Paris for most, the next site for the shed share
    assert fast.metrics.shape_hits == 255


def test_a_bit_past_the_source_prefix_is_still_formerr() -> None:
    fast = make_server(fleet_documents(), shapes=True)
    good = ecs_query(NAME, "A", "127.0.7.0", 24)
    assert fast.answer(good, "198.18.0.1", udp=True) is not None
    bad = bytearray(ecs_query(NAME, "A", "127.0.7.0", 23))
    bad[-1] |= 0x01  # the /23's third byte has its last bit set: past the prefix
    assert len(fast._shapes) == 1
    reply = fast.answer(bytes(bad), "198.18.0.1", udp=True)
    assert reply is not None and reply[3] & 0x0F == dnswire.FORMERR


# --- invalidation -------------------------------------------------------------------------------


def a_records(server: DnsServer, address: str, prefix: int = 24) -> list[str]:
    reply = server.answer(ecs_query(NAME, "A", address, prefix), "198.18.0.1", udp=True)
    return sorted(item.address for rrset in dns.message.from_wire(reply or b"").answer for item in rrset)


def test_a_fleet_change_reaches_the_shapes_and_decisions() -> None:
    fast = make_server(fleet_documents(), shapes=True)
    assert a_records(fast, "203.0.113.0") == ["127.0.7.1", "127.0.7.2"]  # Tokyo
    assert a_records(fast, "127.0.7.0") == ["127.0.7.1", "127.0.7.2"]  # a shape hit
    fleet = fast.resolver.fleet  # type: ignore[attr-defined]
    fleet.apply("Node", "tyo-edge-1", None)
    fleet.apply("Node", "tyo-edge-2", None)
    assert a_records(fast, "127.0.7.0") == ["127.0.1.1", "127.0.1.2"]  # Tokyo empty: next nearest is Paris
    fleet.load([doc for doc in fleet_documents() if doc["metadata"]["name"].startswith("tyo-edge-")])
    assert a_records(fast, "127.0.7.0") == ["127.0.7.1", "127.0.7.2"]


def test_a_geo_table_reload_reaches_the_shapes_and_decisions(tmp_path: Path) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(GEO_CSV)
    fast = make_server(fleet_documents(), shapes=True, geo=GeoDatabase(table))
    assert a_records(fast, "203.0.113.0") == ["127.0.7.1", "127.0.7.2"]
    assert a_records(fast, "127.0.7.0") == ["127.0.7.1", "127.0.7.2"]
    table.write_text(
        GEO_CSV.replace("127.0.7.0/24,JP,ap-northeast,35.6762,139.6503", "127.0.7.0/24,US,us-east,40.7,-74")
    )
    assert fast.resolver.geo.reload() is None  # type: ignore[attr-defined]
    assert a_records(fast, "127.0.7.0") == ["127.0.5.1", "127.0.5.2"]
    assert a_records(fast, "203.0.113.0") == ["127.0.7.1", "127.0.7.2"]


# --- cost and bounds ------------------------------------------------------------------------------


def counting(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_query_varied_only_in_its_subnet_costs_no_parse_and_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = make_server(fleet_documents(), shapes=True)
    parses = counting(monkeypatch, dnswire, "parse_query")
    decisions = counting(monkeypatch, zone, "SiteChoice")
    for third in range(200):
        for fourth in (0, 128):  # /25s: 400 distinct subnets in Paris
            assert a_records(fast, f"127.1.{third}.{fourth}", 25) == ["127.0.1.1", "127.0.1.2"]
    assert (len(parses), len(decisions)) == (1, 1)
    assert fast.metrics.shape_hits == 399


def test_shapes_and_decisions_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsserver, "SHAPE_CACHE_SIZE", 8)
    monkeypatch.setattr(zone, "CHOICE_CACHE_SIZE", 4)
    rows = [f"10.{i}.0.0/16,FR,eu-west,{40 + i / 10:.1f},2.0" for i in range(30)]
    geo = GeoDatabase.from_table(GeoTable.from_csv("\n".join(rows)))
    fast = make_server(fleet_documents(), shapes=True, geo=geo)
    slow = make_server(fleet_documents(), shapes=False, geo=geo)
    rng = random.Random(7)
    messages = [ecs_query(random_case(rng, NAME), "A", f"10.{i % 30}.{i}.0", 24) for i in range(200)]
    same_answers(fast, slow, messages)
    assert len(fast._shapes) <= 8
    resolver = fast.resolver
    assert isinstance(resolver, Resolver)
    assert 0 < len(resolver.choices_for("demo", dnswire.A)) <= 4


def test_a_geo_table_shares_one_location_object_per_place() -> None:
    rows = [f"10.{i >> 8}.{i & 255}.0/24,{'FR' if i % 2 else 'JP'},r1,{i % 2}.5,{i % 2}.5" for i in range(3000)]
    table = GeoTable.from_csv("\n".join(rows))
    assert table.locations == 2
    first, second = table.lookup("10.0.1.7"), table.lookup("10.11.3.9")
    assert first is not None and second is not None and first[0] is second[0]
    assert table.lookup_wire(1, bytes([10, 0, 2])) == table.lookup("10.0.2.0") == (Location("JP", "r1", 0.5, 0.5), 24)
    assert table.lookup_wire(1, bytes([11, 0, 2])) is None


# --- the benchmark's inputs ---------------------------------------------------------------------------


def bench_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "dns_vs_knot.py"
    spec = importlib.util.spec_from_file_location("dns_vs_knot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dns_vs_knot", module)
    spec.loader.exec_module(module)
    return module


def test_the_bench_query_file_gives_distinct_subnets_the_geo_table_covers() -> None:
    bench = bench_module()
    networks = bench.subnets(70_000)  # past the 65,536 /24s of 10.0.0.0/8
    assert len(set(networks)) == 70_000
    table = GeoTable.from_csv(bench.geo_table(networks, 5))
    queries = bench.query_file(networks, 5)
    seen = set()
    position = 0
    while position < len(queries):
        length = int.from_bytes(queries[position : position + 2], "big")
        message = queries[position + 2 : position + 2 + length]
        position += 2 + length
        parsed = dnswire.parse_query(message)
        assert parsed.edns is not None and parsed.edns.ecs is not None
        seen.add(parsed.edns.ecs.address_wire)
        found = table.lookup_wire(1, parsed.edns.ecs.address_wire)
        assert found is not None and found[1] == 24
    assert len(seen) == 70_000
    expected = dns.message.make_query(NAME, "A", use_edns=0, payload=1232, options=[dns.edns.ECSOption("12.3.4.0", 24)])
    expected.id = 0
    expected.flags = 0
    assert bench.query_wire("12.3.4.0") == expected.to_wire()


def test_sites_in_the_test_fleet_are_what_the_assertions_assume() -> None:
    assert SITES["tyo-edge"][3] == "127.0.7" and SITES["par-edge"][3] == "127.0.1"


@pytest.mark.parametrize(
    "documents", [SHEDDING, fleet_documents(policy="weighted", weights={"par-edge": 1, "tyo-edge": 3})]
)
def test_edgefleet_route_explains_the_answer_the_fast_path_gives(documents: list[dict[str, Any]]) -> None:
    fast = make_server(documents, shapes=True)
    resolver = fast.resolver
    assert isinstance(resolver, Resolver)
    match = resolver.fleet.domain_for(NAME)
    assert match is not None
    rng = random.Random(11)
    for _ in range(300):
        address = f"{rng.choice(['127.0', '127.9', '203.0', '198.51'])}.{rng.randrange(256)}.0"
        placement = route_cli.place(resolver.geo, GEO_CSV, route_cli.parse_client(f"{address}/24", redirect=False))
        explained = route_cli.explain(
            resolver.fleet, [], match, placement, name=NAME, mode="A", path=None, now=resolver.clock()
        )
        assert a_records(fast, address) == sorted(ip for node in explained.route.nodes for ip in node.ipv4)
    assert fast.metrics.shape_hits > 250


def test_mutated_queries_of_a_known_shape_get_the_answers_a_full_parse_gives() -> None:
    fast, slow = make_server(SHEDDING, shapes=True), make_server(SHEDDING, shapes=False)
    rng = random.Random(5)
    bases = [ecs_query(NAME, "A", "127.1.2.0", 24), ecs_query("www.customer.example", "AAAA", "2001:db8:3::", 48)]
    for base in bases:
        assert fast.answer(base, "198.18.0.1", udp=True) == slow.answer(base, "198.18.0.1", udp=True)
    for index in range(2000):
        message = bytearray(rng.choice(bases))
        for _ in range(rng.choice([1, 1, 2])):
            position = (
                rng.randrange(len(message) - 6, len(message)) if rng.random() < 0.7 else rng.randrange(len(message))
            )
            message[position] = rng.randrange(256)
        client = f"198.18.{index % 200}.1"
        assert fast.answer(bytes(message), client, udp=True) == slow.answer(bytes(message), client, udp=True)
    assert fast.metrics.shape_hits > 100
    assert fast.metrics.errors == slow.metrics.errors == 0


def test_a_query_from_a_new_resolver_without_ecs_costs_no_parse_and_no_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast, slow = make_server(SHEDDING, shapes=True), make_server(SHEDDING, shapes=False)
    message = dns.message.make_query(NAME, "A", use_edns=0).to_wire()
    assert fast.answer(message, "127.2.0.1", udp=True) == slow.answer(message, "127.2.0.1", udp=True)
    parses = counting(monkeypatch, dnswire, "parse_query")
    decisions = counting(monkeypatch, zone, "SiteChoice")
    sites = set()
    for index in range(1, 301):  # 300 new resolvers in Paris (127.0.0.0/8), which sheds load: split by address
        resolver = f"127.2.{index % 250}.{index // 250 + 2}"
        reply = fast.answer(message, resolver, udp=True)
        sites.add(tuple(sorted(item.address for rrset in dns.message.from_wire(reply or b"").answer for item in rrset)))
        assert reply == slow.answer(message, resolver, udp=True)
    assert len(parses) == 300  # the slow server's: the fast one parsed none
    assert len(decisions) == 0
    assert len(sites) == 2
    assert fast.metrics.shape_hits == 300


def test_a_flood_of_new_subnets_stops_filling_the_packet_cache_and_repeats_refill_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dnsserver, "SHAPE_ADMISSION_WINDOW", 64)
    fast, slow = make_server(fleet_documents(), shapes=True), make_server(fleet_documents(), shapes=False)

    def ask_both(messages: list[bytes]) -> None:
        for message in messages:
            assert fast.answer(message, "198.18.0.1", udp=True) == slow.answer(message, "198.18.0.1", udp=True)

    flood = [ecs_query(NAME, "A", f"127.3.{i % 256}.{i // 256 * 16}", 28) for i in range(1024)]
    ask_both(flood)
    assert fast.metrics.shape_hits == 1023
    assert len(fast._cache) == 1 + 64 + (1023 - 64) // 16  # the parsed one, the first window, then 1 in 16
    regulars = flood[:32]
    for _ in range(40):  # the same 32 resolvers' subnets again and again: they earn their entries back
        ask_both(regulars)
    hits = fast.metrics.cache_hits
    ask_both(regulars)
    assert fast.metrics.cache_hits == hits + 32
