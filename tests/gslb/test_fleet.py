"""Fleet state: documents in; domains, candidate sites, node health and generations out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edgefleet.gslb.errors import NotServed
from edgefleet.gslb.fleet import DomainMatch, FleetState
from edgefleet.gslb.geo import Location
from edgefleet.gslb.policy import Client, NodeTarget, RoutingPolicy, choose

Doc = dict[str, Any]
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make(kind: str, name: str, spec: Doc, status: Doc | None = None, labels: dict[str, str] | None = None) -> Doc:
    doc: Doc = {
        "apiVersion": "edgefleet.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }
    if status is not None:
        doc["status"] = status
    return doc


def site(
    name: str,
    lat: float,
    lon: float,
    country: str,
    *,
    tier: str = "edge",
    status: Doc | None = None,
    always_on: bool = True,
    capacity: float = 10,
) -> Doc:
    spec = {
        "region": "eu-west",
        "location": {"lat": lat, "lon": lon, "country": country},
        "tier": tier,
        "capacityGbps": capacity,
        "alwaysOn": always_on,
    }
    return make("Site", name, spec, status, labels={"tier": tier})


def node(
    name: str,
    site_name: str,
    addresses: list[str],
    *,
    phase: str | None = "Ready",
    draining: bool = False,
    votes: dict[str, tuple[bool, float | None]] | None = None,
) -> Doc:
    status: Doc = {"phase": phase, "lastHeartbeat": stamp(1)}
    if votes is not None:
        status["peerVotes"] = {
            peer: {"healthy": healthy} | ({} if ago is None else {"at": stamp(ago)})
            for peer, (healthy, ago) in votes.items()
        }
    return make("Node", name, {"site": site_name, "addresses": addresses, "draining": draining}, status)


def domain(
    name: str = "demo", *, hostnames: list[str] | None = None, sites: str = "tier=edge", routing: Doc | None = None
) -> Doc:
    spec = {
        "hostnames": hostnames or ["demo.example.com", "*.demo.example.com"],
        "origins": [{"url": "http://origin.example.com"}],
        "sites": sites,
    }
    if routing is not None:
        spec["routing"] = routing
    return make("Domain", name, spec)


def fleet_of(*documents: Doc, vote_ttl: float = 30.0) -> FleetState:
    fleet = FleetState(vote_ttl=vote_ttl)
    assert fleet.load(documents) == []
    return fleet


@pytest.fixture
def fleet() -> FleetState:
    return fleet_of(
        site("par", 48.85, 2.35, "FR"),
        site("ams", 52.37, 4.90, "NL"),
        site("fra", 50.11, 8.68, "DE", tier="parent"),
        node("par-1", "par", ["192.0.2.11", "2001:db8::11"]),
        node("par-2", "par", ["192.0.2.12"]),
        node("ams-1", "ams", ["2001:db8::21"]),
        node("ams-2", "ams", ["192.0.2.22"], draining=True),
        node("fra-1", "fra", ["192.0.2.31"]),
        domain(),
        domain("shop", hostnames=["www.shop.example", "*.img.shop.example", "*.shop.example"], sites=""),
    )


def names(fleet: FleetState, domain_name: str = "demo") -> dict[str, list[str]]:
    return {view.name: [n.name for n in view.nodes] for view in fleet.sites_for(domain_name, NOW)}


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("demo.example.com", DomainMatch("demo", "demo.cdn.edgefleet.test", "hostname", "demo.example.com")),
        ("DEMO.Example.com.", DomainMatch("demo", "demo.cdn.edgefleet.test", "hostname", "demo.example.com")),
        ("a.b.demo.example.com", DomainMatch("demo", "demo.cdn.edgefleet.test", "wildcard", "*.demo.example.com")),
        ("demo.cdn.edgefleet.test", DomainMatch("demo", "demo.cdn.edgefleet.test", "zone", "")),
        ("shop.cdn.edgefleet.test.", DomainMatch("shop", "shop.cdn.edgefleet.test", "zone", "")),
        ("www.shop.example", DomainMatch("shop", "shop.cdn.edgefleet.test", "hostname", "www.shop.example")),
        ("x.img.shop.example", DomainMatch("shop", "shop.cdn.edgefleet.test", "wildcard", "*.img.shop.example")),
        ("x.www.shop.example", DomainMatch("shop", "shop.cdn.edgefleet.test", "wildcard", "*.shop.example")),
    ],
)
def test_domain_for_matches_hostnames_wildcards_and_zone_names(
    fleet: FleetState, name: str, expected: DomainMatch
) -> None:
    assert fleet.domain_for(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "demo.example.com.evil",
        "shop.example",
        "cdn.edgefleet.test",
        "nope.cdn.edgefleet.test",
        "x.demo.cdn.edgefleet.test",
        "_route.demo.cdn.edgefleet.test",
        "",
    ],
)
def test_domain_for_serves_nothing_else(fleet: FleetState, name: str) -> None:
    assert fleet.domain_for(name) is None


def test_names_under_the_zone_belong_to_the_zone_even_if_a_wildcard_covers_them() -> None:
    fleet = fleet_of(domain("grab", hostnames=["*.edgefleet.test"]), domain("demo"))
    assert fleet.domain_for("demo.cdn.edgefleet.test") == DomainMatch("demo", "demo.cdn.edgefleet.test", "zone", "")
    assert fleet.domain_for("other.cdn.edgefleet.test") is None
    assert fleet.domain_for("www.edgefleet.test") is not None


def test_hostnames_follow_domain_updates_and_deletions(fleet: FleetState) -> None:
    fleet.apply("Domain", "demo", domain(hostnames=["new.example.com"]))
    assert fleet.domain_for("demo.example.com") is None
    assert fleet.domain_for("x.demo.example.com") is None
    assert fleet.domain_for("new.example.com") is not None
    fleet.apply("Domain", "demo", None)
    assert fleet.domain_for("new.example.com") is None
    assert fleet.domain_for("demo.cdn.edgefleet.test") is None
    assert fleet.domain_names() == ["shop"]


def test_another_zone_can_be_served() -> None:
    fleet = FleetState(zone="CDN.Example.NET.")
    fleet.apply("Domain", "demo", domain())
    assert fleet.domain_for("demo.cdn.example.net") == DomainMatch("demo", "demo.cdn.example.net", "zone", "")
    assert fleet.domain_for("demo.example.com") == DomainMatch(
        "demo", "demo.cdn.example.net", "hostname", "demo.example.com"
    )


# -- sites and nodes ----------------------------------------------------------------------------------


def test_sites_for_follows_the_selector_and_keeps_only_fit_nodes(fleet: FleetState) -> None:
    assert names(fleet) == {"ams": ["ams-1"], "par": ["par-1", "par-2"]}  # fra is a parent; ams-2 drains
    # shop selects every site, the parent fra too, but users are only answered with edge sites
    assert names(fleet, "shop") == {"ams": ["ams-1"], "par": ["par-1", "par-2"]}
    par = fleet.sites_for("demo", NOW)[1]
    assert (par.name, par.region, par.country, par.lat, par.lon) == ("par", "eu-west", "FR", 48.85, 2.35)
    assert par.active
    assert par.nodes[0] == NodeTarget("par-1", ("192.0.2.11",), ("2001:db8::11",))
    with pytest.raises(NotServed, match="no Domain named 'gone'"):
        fleet.sites_for("gone", NOW)


def test_nodes_without_addresses_or_of_unknown_sites_are_not_answers(fleet: FleetState) -> None:
    fleet.apply("Node", "par-3", node("par-3", "par", []))
    fleet.apply("Node", "lost-1", node("lost-1", "lost", ["192.0.2.99"]))
    assert names(fleet)["par"] == ["par-1", "par-2"]
    assert fleet.node_health("par-3", NOW) == (False, "no addresses")
    assert fleet.node_health("ams-2", NOW) == (False, "draining")
    assert fleet.node_health("nobody", NOW) == (False, "no such node")


def test_a_node_moving_to_another_site_moves_in_the_answers(fleet: FleetState) -> None:
    fleet.apply("Node", "par-2", node("par-2", "ams", ["192.0.2.12"]))
    assert names(fleet) == {"ams": ["ams-1", "par-2"], "par": ["par-1"]}
    fleet.apply("Node", "par-2", None)
    assert names(fleet) == {"ams": ["ams-1"], "par": ["par-1"]}


@pytest.mark.parametrize(
    ("status", "always_on", "active"),
    [
        ({}, True, True),
        ({}, False, True),
        ({"active": True}, False, True),
        ({"active": False}, False, False),
        ({"active": False}, True, True),
    ],
)
def test_a_site_is_active_unless_switched_off(status: Doc, always_on: bool, active: bool) -> None:
    fleet = fleet_of(site("par", 48.85, 2.35, "FR", status=status, always_on=always_on), domain())
    assert fleet.sites_for("demo", NOW)[0].active is active


@pytest.mark.parametrize(
    ("status", "load_gbps"),
    [({}, None), ({"loadGbps": 7.5}, 7.5), ({"load": 0.5}, 10.0), ({"loadGbps": 3, "load": 0.9}, 3)],
)
def test_site_load_comes_from_its_status(status: Doc, load_gbps: float | None) -> None:
    fleet = fleet_of(site("par", 48.85, 2.35, "FR", status=status, capacity=20), domain())
    view = fleet.sites_for("demo", NOW)[0]
    assert (view.capacity_gbps, view.load_gbps) == (20, load_gbps)


# -- data-plane health -----------------------------------------------------------------------------


def site_of_three(phase_of_c: str | None, votes_about_c: dict[str, tuple[bool, float | None]]) -> FleetState:
    """Nodes a, b, c in site par; a and b vote about c as given (name -> (healthy, seconds ago))."""
    docs = [
        site("par", 48.85, 2.35, "FR"),
        domain(),
        node("c", "par", ["192.0.2.3"], phase=phase_of_c, votes={"a": (True, 1), "b": (True, 1)}),
    ]
    for voter in ("a", "b"):
        votes = {"c": votes_about_c[voter]} if voter in votes_about_c else {}
        docs.append(node(voter, "par", [f"192.0.2.{ord(voter) - 96}"], votes=votes))
    return fleet_of(*docs)


@pytest.mark.parametrize(
    ("phase", "votes", "healthy", "reason"),
    [
        ("Ready", {}, True, "no fresh peer votes; phase Ready"),
        ("NotReady", {}, False, "no fresh peer votes; phase NotReady"),
        (None, {}, False, "no fresh peer votes; phase unknown"),
        # Peers see it serving: in, whatever its cloud link.
        ("NotReady", {"a": (True, 5), "b": (True, 5)}, True, "2 of 2 fresh peer votes say healthy"),
        ("Unknown", {"a": (True, 5)}, True, "1 of 1 fresh peer votes say healthy"),
        # Peers see it failing: out, even if its cloud link is fine.
        ("Ready", {"a": (False, 5), "b": (False, 5)}, False, "2 of 2 peer voters say unhealthy"),
        # A tie, or one voter of two, is no majority: one (perhaps compromised) peer cannot decide.
        ("Ready", {"a": (True, 5), "b": (False, 5)}, True, "1 of 2 fresh peer votes say healthy"),
        ("Ready", {"b": (False, 5)}, True, "1 of 2 peer voters say unhealthy (no majority); phase Ready"),
        ("NotReady", {"b": (False, 5)}, False, "1 of 2 peer voters say unhealthy (no majority); phase NotReady"),
        # A vote dated ahead of the clock (beyond the skew allowed) never counts.
        ("Ready", {"a": (False, -3600), "b": (False, -3600)}, True, "no fresh peer votes; phase Ready"),
        ("Ready", {"a": (False, -4), "b": (False, -4)}, False, "2 of 2 peer voters say unhealthy"),
        # Stale or undated votes do not count.
        ("Ready", {"a": (False, 31), "b": (False, 30)}, True, "no fresh peer votes; phase Ready"),
        ("NotReady", {"a": (True, None)}, False, "no fresh peer votes; phase NotReady"),
        ("NotReady", {"a": (True, 29), "b": (False, 40)}, True, "1 of 1 fresh peer votes say healthy"),
    ],
)
def test_node_health_comes_from_fresh_peer_votes_else_from_the_phase(
    phase: str | None, votes: dict[str, tuple[bool, float | None]], healthy: bool, reason: str
) -> None:
    fleet = site_of_three(phase, votes)
    assert fleet.node_health("c", NOW) == (healthy, reason)
    assert ("c" in names(fleet)["par"]) is healthy


def test_only_peers_of_the_same_site_vote_and_a_node_cannot_vote_for_itself() -> None:
    fleet = fleet_of(
        site("par", 48.85, 2.35, "FR"),
        site("ams", 52.37, 4.90, "NL"),
        node("c", "par", ["192.0.2.3"], phase="NotReady", votes={"c": (True, 1)}),
        node("x", "ams", ["192.0.2.9"], votes={"c": (True, 1)}),
    )
    assert fleet.node_health("c", NOW) == (False, "no fresh peer votes; phase NotReady")


def test_only_ready_peers_are_voters() -> None:
    """A voter the cloud does not hear (NotReady, Unknown) neither votes nor counts towards the majority."""
    fleet = site_of_three("Ready", {"a": (False, 5), "b": (True, 5)})
    silent = node("b", "par", ["192.0.2.2"], phase="NotReady", votes={"c": (True, 5)})
    fleet.apply("Node", "b", silent)
    assert fleet.node_health("c", NOW) == (False, "1 of 1 peer voters say unhealthy")
    fleet.apply("Node", "a", node("a", "par", ["192.0.2.1"], phase="Unknown", votes={"c": (False, 5)}))
    assert fleet.node_health("c", NOW) == (True, "no fresh peer votes; phase Ready")


def test_votes_expire_with_the_vote_ttl() -> None:
    fleet = fleet_of(
        site("par", 48.85, 2.35, "FR"),
        domain(),
        node("a", "par", ["192.0.2.1"], votes={"b": (False, 0)}),
        node("b", "par", ["192.0.2.2"]),
        vote_ttl=10,
    )
    assert fleet.node_health("b", NOW + 9.5)[0] is False
    assert fleet.node_health("b", NOW + 10) == (True, "no fresh peer votes; phase Ready")


def test_votes_of_a_voter_with_a_live_session_hold_until_the_session_ends() -> None:
    voter = node("a", "par", ["192.0.2.1"], votes={"b": (False, 3600)})
    voter["status"]["hub"] = "cloud-1:7440"  # the hub writes votes only when a verdict changes
    fleet = fleet_of(site("par", 48.85, 2.35, "FR"), domain(), voter, node("b", "par", ["192.0.2.2"]), vote_ttl=10)
    assert fleet.node_health("b", NOW + 86400) == (False, "1 of 1 peer voters say unhealthy")
    voter["status"]["hub"] = None  # the session ended (the hub also clears the votes then)
    fleet.apply("Node", "a", voter)
    assert fleet.node_health("b", NOW) == (True, "no fresh peer votes; phase Ready")


# -- routing -----------------------------------------------------------------------------------------


def test_routing_for_reads_the_domains_routing(fleet: FleetState) -> None:
    assert fleet.routing_for("demo") == RoutingPolicy("geo", {}, (), 2, 30, True, 0.85, 0.5)
    routing = {
        "policy": "failover",
        "failoverOrder": ["par", "ams"],
        "answers": 1,
        "ttl": 5,
        "preferCountry": False,
        "shedThreshold": 0.7,
        "shedShare": 0.25,
    }
    fleet.apply("Domain", "demo", domain(routing=routing))
    assert fleet.routing_for("demo") == RoutingPolicy("failover", {}, ("par", "ams"), 1, 5, False, 0.7, 0.25)
    fleet.apply(
        "Domain", "w", domain("w", hostnames=["w.example"], routing={"policy": "weighted", "weights": {"par": 3}})
    )
    assert fleet.routing_for("w").weights == {"par": 3}
    with pytest.raises(NotServed):
        fleet.routing_for("gone")


def test_the_fleet_feeds_the_policy(fleet: FleetState) -> None:
    amsterdam = Client("127.0.2.1", Location("NL", "eu-west", 52.37, 4.9))
    route = choose(amsterdam, fleet.sites_for("demo", NOW), fleet.routing_for("demo"), key="demo.example.com", draw=0.1)
    assert (route.site, [n.name for n in route.nodes]) == ("ams", ["ams-1"])
    fleet.apply("Node", "ams-1", node("ams-1", "ams", ["2001:db8::21"], draining=True))
    route = choose(amsterdam, fleet.sites_for("demo", NOW), fleet.routing_for("demo"), key="demo.example.com", draw=0.1)
    assert route.site == "par"


# -- bad documents -----------------------------------------------------------------------------------


def test_a_bad_document_is_reported_and_dropped(fleet: FleetState) -> None:
    bad = node("par-1", "par", ["not-an-address"])
    message = fleet.apply("Node", "par-1", bad)
    assert message is not None and message.startswith("Node par-1: ignored, not a valid object:")
    assert "not-an-address" in message
    assert names(fleet)["par"] == ["par-2"]
    assert fleet.apply("Workload", "w", {"whatever": 1}) is None  # other kinds: not ours
    errors = fleet.load([{"kind": "Site"}, site("bad", 100, 0, "FR"), site("ok", 0, 0, "FR")])
    assert len(errors) == 2 and errors[0] == "document without kind or metadata.name: ignored"
    assert "ok" in names(fleet) and "bad" not in names(fleet)


def test_clear_forgets_everything(fleet: FleetState) -> None:
    before = fleet.generation
    fleet.clear()
    assert fleet.domain_names() == [] and fleet.domain_for("demo.example.com") is None
    assert fleet.node_health("par-1", NOW) == (False, "no such node")
    assert fleet.generation > before


# -- generations -------------------------------------------------------------------------------------


def test_generation_changes_with_routing_facts_only(fleet: FleetState) -> None:
    start = fleet.generation_at(NOW)
    heartbeat = node("par-1", "par", ["192.0.2.11", "2001:db8::11"])
    heartbeat["status"]["lastHeartbeat"] = stamp(0)
    heartbeat["status"]["cache"] = {"requests": 10}
    fleet.apply("Node", "par-1", heartbeat)
    fleet.apply("Site", "par", site("par", 48.85, 2.35, "FR"))
    fleet.apply("Domain", "demo", domain())
    assert fleet.generation_at(NOW) == start
    fleet.apply("Node", "par-1", node("par-1", "par", ["192.0.2.11"]))
    assert fleet.generation_at(NOW) == start + 1
    fleet.apply("Site", "par", site("par", 48.85, 2.35, "FR", status={"load": 0.5}))
    fleet.apply("Domain", "demo", domain(routing={"policy": "geo", "answers": 1}))
    assert fleet.generation_at(NOW) == start + 3


def test_generation_ignores_refreshes_of_fresh_votes_but_sees_stale_ones_return() -> None:
    def vote(healthy: bool, seconds_ago: float) -> Doc:
        return node("a", "par", ["192.0.2.1"], votes={"b": (healthy, seconds_ago)})

    fleet = fleet_of(
        site("par", 48.85, 2.35, "FR"), vote(True, 20), node("b", "par", ["192.0.2.2"], phase="NotReady"), domain()
    )
    start = fleet.generation_at(NOW)
    assert fleet.node_health("b", NOW)[0] is True
    fleet.apply("Node", "a", vote(True, 5))  # same verdict, fresher: nothing routing can see
    assert fleet.generation_at(NOW) == start
    # That vote goes stale 30 s after it was cast: b is judged by its phase again.
    assert fleet.generation_at(NOW + 24) == start
    assert fleet.generation_at(NOW + 25) == start + 1
    assert fleet.node_health("b", NOW + 25) == (False, "no fresh peer votes; phase NotReady")
    # The same verdict, cast again: it was stale when last asked, so this is news.
    fleet.apply("Node", "a", vote(True, -26))
    assert fleet.generation_at(NOW + 26) == start + 2
    assert fleet.node_health("b", NOW + 26)[0] is True
    fleet.apply("Node", "a", vote(False, -27))  # a new verdict
    assert fleet.generation_at(NOW + 27) == start + 3
    assert fleet.node_health("b", NOW + 27)[0] is False


def test_a_replaced_vote_does_not_expire_at_its_old_time() -> None:
    fleet = fleet_of(
        site("par", 48.85, 2.35, "FR"),
        node("a", "par", ["192.0.2.1"], votes={"b": (True, 25)}),
        node("b", "par", ["192.0.2.2"]),
        domain(),
    )
    start = fleet.generation_at(NOW)
    fleet.apply("Node", "a", node("a", "par", ["192.0.2.1"], votes={"b": (True, 0)}))
    assert fleet.generation_at(NOW + 10) == start  # the first vote's expiry (NOW + 5) passed: replaced, no change
    assert fleet.generation_at(NOW + 30) == start + 1


def test_site_views_are_cached_until_the_generation_changes(fleet: FleetState) -> None:
    first = fleet.sites_for("demo", NOW)
    again = fleet.sites_for("demo", NOW + 1)
    assert all(a is b for a, b in zip(first, again, strict=True))
    fleet.apply("Node", "par-2", node("par-2", "par", ["192.0.2.12"], draining=True))
    assert [n.name for n in fleet.sites_for("demo", NOW + 1)[1].nodes] == ["par-1"]


def test_expiry_bookkeeping_stays_bounded_when_nobody_asks() -> None:
    fleet = fleet_of(site("par", 48.85, 2.35, "FR"), node("b", "par", ["192.0.2.2"]))
    for second in range(2000):
        fleet.apply("Node", "a", node("a", "par", ["192.0.2.1"], votes={"b": (True, -second)}))
    assert len(fleet._expiries) <= 64 + 4


def test_a_rollout_drain_takes_a_node_out_and_bumps_the_generation(fleet: FleetState) -> None:
    before = fleet.generation_at(NOW)
    drained = node("par-2", "par", ["192.0.2.12"])
    drained["status"]["drains"] = {"workload/cache": stamp(1)}
    fleet.apply("Node", "par-2", drained)
    assert fleet.node_health("par-2", NOW) == (False, "draining")
    assert names(fleet)["par"] == ["par-1"] and fleet.generation_at(NOW) != before
    fleet.apply("Node", "par-2", node("par-2", "par", ["192.0.2.12"]))
    assert names(fleet)["par"] == ["par-1", "par-2"]
