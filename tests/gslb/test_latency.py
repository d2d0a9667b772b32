"""Measured latency in the GSLB: client networks seen (top-N with decay), the matrix, and the latency policy.

- :class:`NetworkCounter` publishes only busy networks, at most N, forgets
  quiet ones, and a sender spraying random networks neither gets one
  published nor grows the table past its bound.
- :class:`NetworkTable` matches the longest measured network, IPv4 and IPv6,
  from text and from ECS wire bytes.
- :func:`build` makes network rows and region rows from Sites' figures.
- The policy sends a client in a measured network to the lowest-RTT site,
  a client outside every network by its region's row, else by geo.
- The DNS server's fast path (shapes, precomputed decisions) answers like
  the full parse and resolve under a matrix, follows a matrix change (a Site
  status write), scopes answers to the client's subnet, and ``edgefleet
  route`` explains the same decision with the figures.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import dns.edns
import dns.message
import pytest

from edgefleet.cli import route as route_cli
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.geo import Location
from edgefleet.gslb.latency import EMPTY, SiteLatency, build
from edgefleet.gslb.networks import NetworkCounter, NetworkTable
from edgefleet.gslb.policy import Client, RoutingPolicy, SiteChoice, choose
from tests.gslb.test_fastpath import CITIES, ecs_query, make_server, same_answers
from tests.gslb.test_zone import NAME, fleet_documents

# --- networks seen -------------------------------------------------------------------------


def test_busy_networks_are_published_busiest_first_and_at_most_n() -> None:
    counter = NetworkCounter(min_count=10, top_n=2, half_life=60)
    counter.record({"192.0.2.7": 30, "198.51.100.9": 50, "203.0.113.1": 20, "203.0.113.200": 5}, 0.0)
    top = counter.top(0.0)
    assert [(seen.network, seen.address) for seen in top] == [
        ("198.51.100.0/24", "198.51.100.9"),
        ("192.0.2.0/24", "192.0.2.7"),
    ]
    assert counter.top(0.0)[0].count == 50


def test_counts_decay_and_quiet_networks_leave_the_list() -> None:
    counter = NetworkCounter(min_count=10, top_n=8, half_life=60)
    counter.record({"192.0.2.7": 40}, 0.0)
    counter.record({"198.51.100.9": 15}, 0.0)
    assert {seen.network for seen in counter.top(60.0)} == {"192.0.2.0/24"}  # 20 and 7.5 after one half-life
    assert counter.top(180.0) == []  # 5 after three
    counter.record({"192.0.2.8": 40}, 180.0)  # busy again; the last address seen is the one probed
    assert [(seen.network, seen.address) for seen in counter.top(180.0)] == [("192.0.2.0/24", "192.0.2.8")]


def test_ipv6_senders_count_per_56_and_junk_is_ignored() -> None:
    counter = NetworkCounter(min_count=1)
    counter.record({"2001:db8:1:2::5": 3, "2001:db8:1:ff::1": 2, "not-an-address": 99}, 0.0)
    assert [(seen.network, seen.count) for seen in counter.top(0.0)] == [("2001:db8:1::/56", 5.0)]


def test_a_sender_spraying_random_networks_gets_none_published_and_the_table_stays_bounded() -> None:
    counter = NetworkCounter(min_count=50, top_n=4, max_tracked=64, half_life=600)
    rng = random.Random(7)
    for second in range(60):
        spray = {f"10.{rng.randrange(256)}.{rng.randrange(256)}.1": 1 for _ in range(200)}
        spray["192.0.2.53"] = 20  # one real resolver, at the demand allowance
        counter.record(spray, float(second))
        assert len(counter) <= 64
    assert [seen.network for seen in counter.top(60.0)] == ["192.0.2.0/24"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="half_life"):
        NetworkCounter(half_life=0)


# --- longest prefix -------------------------------------------------------------------------


def test_the_longest_measured_network_holding_the_address_matches() -> None:
    table = NetworkTable(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "2001:db8::/32", "2001:db8:5::/48", "junk"])
    assert table.networks == ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "2001:db8::/32", "2001:db8:5::/48")
    assert table.match("10.1.2.3") == "10.1.2.0/24"
    assert table.match("10.1.3.3") == "10.1.0.0/16"
    assert table.match("10.200.0.1") == "10.0.0.0/8"
    assert table.match("11.0.0.1") is None
    assert table.match("2001:db8:5::1") == "2001:db8:5::/48"
    assert table.match("2001:db8:6::1") == "2001:db8::/32"
    assert table.match("nonsense") is None
    assert table.match_wire(1, bytes([10, 1, 2])) == "10.1.2.0/24"  # an ECS /24 address: three bytes
    assert table.match_wire(2, bytes.fromhex("20010db80005")) == "2001:db8:5::/48"
    assert not NetworkTable([]) and NetworkTable([]).match("10.0.0.1") is None


# --- the matrix -----------------------------------------------------------------------------


def test_sites_figures_make_network_rows_and_region_rows() -> None:
    latency = build(
        [
            SiteLatency("par", "eu-west", (("10.0.0.0/8", 20.0), ("site/ams", 8.0), ("site/nyc", 80.0))),
            SiteLatency("ams", "eu-west", (("10.0.0.0/8", 30.0), ("site/par", 8.0))),
            SiteLatency("nyc", "us-east", (("10.0.0.0/8", 90.0),)),
        ]
    )
    assert latency.matrix["10.0.0.0/8"] == {"par": 20.0, "ams": 30.0, "nyc": 90.0}
    assert latency.matrix["eu-west"] == {"par": 4.0, "ams": 4.0, "nyc": 80.0}  # medians of (0, 8), (8, 0), (80)
    assert "us-east" not in latency.matrix  # nyc measured no site: no row, plain geo
    assert latency.networks.networks == ("10.0.0.0/8",)
    assert build([SiteLatency("par", "eu-west", ())]) is EMPTY


PARIS = Location("FR", "eu-west", 48.8566, 2.3522)


def test_the_policy_picks_the_lowest_rtt_of_the_network_then_the_region_then_geo() -> None:
    documents = fleet_documents(policy="latency")
    fleet = FleetState()
    fleet.load(documents)
    sites = fleet.sites_for("demo", 0.0)
    matrix = {"10.0.0.0/8": {"tyo-edge": 5.0, "par-edge": 50.0}, "eu-west": {"nyc-edge": 3.0}}
    policy = RoutingPolicy("latency")
    in_network = choose(Client("10.1.1.1", PARIS, "10.0.0.0/8"), sites, policy, key=NAME, draw=0.5, latency=matrix)
    assert in_network.site == "tyo-edge"
    assert in_network.reason == "latency: lowest measured RTT to network 10.0.0.0/8 -> tyo-edge"
    notes = {candidate.site: candidate.note for candidate in in_network.candidates}
    assert notes["par-edge"] == "50 ms to 10.0.0.0/8" and notes["nyc-edge"].startswith("no RTT measured")
    by_region = choose(Client("127.0.0.1", PARIS), sites, policy, key=NAME, draw=0.5, latency=matrix)
    assert by_region.site == "nyc-edge" and "region eu-west" in by_region.reason
    elsewhere = Location("JP", "ap-northeast", 35.6762, 139.6503)
    by_geo = choose(Client("127.0.7.1", elsewhere), sites, policy, key=NAME, draw=0.5, latency=matrix)
    assert by_geo.site == "tyo-edge" and "no latency measurements" in by_geo.reason
    for location in CITIES:
        for network in (None, "10.0.0.0/8"):
            client = Client("", location, network)
            expected = choose(client, sites, policy, key=NAME, draw=0.3, latency=matrix).site
            chosen = SiteChoice(client, sites, policy, matrix).site(0.3)
            assert chosen is not None and chosen.name == expected


def test_equal_rtts_go_to_the_nearer_site() -> None:
    fleet = FleetState()
    fleet.load(fleet_documents(policy="latency"))
    sites = fleet.sites_for("demo", 0.0)
    matrix = {"10.0.0.0/8": {"tyo-edge": 5.0, "par-edge": 5.0, "nyc-edge": 5.0}}
    route = choose(Client("", PARIS, "10.0.0.0/8"), sites, RoutingPolicy("latency"), key=NAME, draw=0.1, latency=matrix)
    assert route.site == "par-edge"


# --- the DNS server with measured figures ----------------------------------------------------


def measured_documents(par: float, tyo: float) -> list[dict[str, Any]]:
    """The test fleet under the latency policy, with Paris and Tokyo's RTTs to 10.1.0.0/16 in their status."""
    documents = copy.deepcopy(fleet_documents(policy="latency"))
    for document in documents:
        name = document["metadata"]["name"]
        if document["kind"] == "Site" and name in ("par-edge", "tyo-edge"):
            document["status"]["latency"] = {"10.1.0.0/16": par if name == "par-edge" else tyo}
    return documents


def answer_and_scope(server: Any, address: str) -> tuple[list[str], int]:
    reply = dns.message.from_wire(server.answer(ecs_query(NAME, "A", address, 24), "198.18.0.1", udp=True) or b"")
    option = reply.options[0]
    assert isinstance(option, dns.edns.ECSOption)
    return sorted(item.address for rrset in reply.answer for item in rrset), option.scopelen


def test_dns_answers_follow_the_measured_matrix_on_the_fast_path() -> None:
    documents = measured_documents(par=60.0, tyo=4.0)
    fast, slow = make_server(documents, shapes=True), make_server(documents, shapes=False)
    rng = random.Random(3)
    messages = [ecs_query(NAME, "A", f"10.1.{rng.randrange(256)}.0", 24) for _ in range(50)]
    messages += [ecs_query(NAME, "A", f"127.1.{rng.randrange(256)}.0", 24) for _ in range(50)]
    same_answers(fast, slow, messages)
    assert answer_and_scope(fast, "10.1.9.0") == (["127.0.7.1", "127.0.7.2"], 24)  # Tokyo, measured 4 ms
    assert answer_and_scope(fast, "127.1.9.0") == (["127.0.1.1", "127.0.1.2"], 24)  # no row: geo, Paris
    assert fast.metrics.shape_hits > 50
    # A Site status write (the latency controller's) moves the fleet generation: decisions are rebuilt.
    fleet: FleetState = fast.resolver.fleet  # type: ignore[attr-defined]
    for document in measured_documents(par=3.0, tyo=40.0):
        if document["kind"] == "Site":
            fleet.apply("Site", document["metadata"]["name"], document)
    assert answer_and_scope(fast, "10.1.9.0") == (["127.0.1.1", "127.0.1.2"], 24)


def test_without_measurements_the_latency_policy_keeps_geo_scopes() -> None:
    fast = make_server(fleet_documents(policy="latency"), shapes=True)
    assert answer_and_scope(fast, "127.0.7.0") == (["127.0.7.1", "127.0.7.2"], 24)  # Tokyo's /24
    geo = make_server(fleet_documents(), shapes=True)
    assert answer_and_scope(fast, "127.1.7.0") == answer_and_scope(geo, "127.1.7.0")  # the geo block's scope


def test_edgefleet_route_explains_the_measured_decision() -> None:
    documents = measured_documents(par=60.0, tyo=4.0)
    fleet = FleetState()
    fleet.load(documents)
    match = fleet.domain_for(NAME)
    assert match is not None
    placement = route_cli.Placement("10.1.2.0", "10.1.2.0/24", route_cli.ECS, PARIS, "/8")
    explanation = route_cli.explain(fleet, documents, match, placement, name=NAME, mode="A", path=None, now=0.0)
    document = route_cli.explanation_document(explanation)
    assert document["site"] == "tyo-edge" and document["client"]["measuredNetwork"] == "10.1.0.0/16"
    scores = {row["site"]: row["score"] for row in document["candidates"]}
    assert scores["tyo-edge"] == 4.0 and scores["par-edge"] == 60.0
    head, _ = route_cli.text_lines(document)
    assert "Measured: network 10.1.0.0/16 (RTTs by site)" in head
