"""Routing policy: site choice per policy, load shedding, node answers, candidates."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.gslb.geo import Location
from edgefleet.gslb.policy import (
    Client,
    NodeTarget,
    RoutingPolicy,
    SiteView,
    choose,
    draw_for,
    rank_nodes,
    shed_share,
)

PARIS = Location("FR", "eu-west", 48.8566, 2.3522)
AMSTERDAM = Location("NL", "eu-west", 52.3676, 4.9041)
STRASBOURG = Location("FR", "eu-west", 48.5734, 7.7521)  # nearer Frankfurt than Paris
NEW_YORK = Location("US", "us-east", 40.7128, -74.0060)
TOKYO = Location("JP", "ap-northeast", 35.6762, 139.6503)


def nodes(site: str, count: int = 3) -> tuple[NodeTarget, ...]:
    return tuple(NodeTarget(f"{site}-{i}", (f"192.0.2.{i}",), (f"2001:db8::{i}",)) for i in range(1, count + 1))


def site(name: str, where: Location, **changes: object) -> SiteView:
    view = SiteView(name, where.region, where.country, where.lat, where.lon, True, 10.0, 1.0, nodes(name))
    return dataclasses.replace(view, **changes)  # type: ignore[arg-type]


PAR = site("par", PARIS)
AMS = site("ams", AMSTERDAM)
FRA = site("fra", Location("DE", "eu-central", 50.1109, 8.6821))
NYC = site("nyc", NEW_YORK)
TYO = site("tyo", TOKYO)
ALL = [AMS, FRA, NYC, PAR, TYO]
GEO = RoutingPolicy("geo")


def client(where: Location | None) -> Client:
    return Client("192.0.2.77", where)


def pick(where: Location | None, sites: list[SiteView], policy: RoutingPolicy = GEO, draw: float = 0.5) -> str | None:
    return choose(client(where), sites, policy, key="www.example.com", draw=draw).site


# -- geo -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [(PARIS, "par"), (AMSTERDAM, "ams"), (NEW_YORK, "nyc"), (TOKYO, "tyo"), (Location("KR", "ap", 37.5, 127), "tyo")],
)
def test_geo_picks_the_nearest_site(where: Location, expected: str) -> None:
    assert pick(where, ALL) == expected


def test_geo_prefers_a_site_in_the_clients_country_when_asked() -> None:
    assert pick(STRASBOURG, ALL) == "par"
    assert pick(STRASBOURG, ALL, RoutingPolicy("geo", prefer_country=False)) == "fra"
    # No usable site in the country: the nearest one anywhere.
    assert pick(STRASBOURG, [AMS, FRA, dataclasses.replace(PAR, nodes=())]) == "fra"


def test_geo_candidates_explain_the_ranking() -> None:
    down = dataclasses.replace(NYC, active=False)
    empty = dataclasses.replace(TYO, nodes=())
    route = choose(client(STRASBOURG), [AMS, FRA, down, PAR, empty], GEO, key="k", draw=0.5)
    assert [c.site for c in route.candidates] == ["par", "fra", "ams", "nyc", "tyo"]
    assert [c.eligible for c in route.candidates] == [True, True, True, False, False]
    par, fra = route.candidates[0], route.candidates[1]
    assert par.score == pytest.approx(397, rel=0.02)
    assert fra.score < par.score and "outside FR" in fra.note
    assert route.candidates[3].note == "inactive"
    assert "no healthy, non-draining node" in route.candidates[4].note
    assert route.reason == "geo: nearest site in FR to eu-west/FR -> par"


def test_geo_with_unknown_location_falls_back_to_a_fixed_order() -> None:
    assert pick(None, ALL) == "ams"  # first by name
    ordered = RoutingPolicy("geo", failover_order=("nyc", "par"))
    assert pick(None, ALL, ordered) == "nyc"
    route = choose(client(None), ALL, ordered, key="k", draw=0.1)
    assert [c.site for c in route.candidates] == ["nyc", "par", "ams", "fra", "tyo"]
    assert all(math.isinf(c.score) and c.note.startswith("client location unknown") for c in route.candidates)


def test_no_eligible_site_gives_no_answer() -> None:
    route = choose(
        client(PARIS),
        [dataclasses.replace(PAR, active=False), dataclasses.replace(AMS, nodes=())],
        GEO,
        key="k",
        draw=0.5,
    )
    assert (route.site, route.nodes) == (None, ())
    assert route.reason.startswith("no eligible site")
    assert [c.site for c in route.candidates] == ["ams", "par"]
    assert choose(client(PARIS), [], GEO, key="k", draw=0.5).reason == "no eligible site (the domain selects no site)"


# -- latency -------------------------------------------------------------------------------------


LATENCY = {"eu-west": {"par": 30.0, "ams": 12.0, "nyc": 80.0}, "us-east": {"nyc": 5.0}}


def test_latency_picks_the_lowest_measured_rtt() -> None:
    policy = RoutingPolicy("latency")
    route = choose(client(PARIS), ALL, policy, key="k", draw=0.5, latency=LATENCY)
    assert route.site == "ams"  # farther than par, but faster
    assert [(c.site, c.score) for c in route.candidates[:3]] == [("ams", 12.0), ("par", 30.0), ("nyc", 80.0)]
    # Unmeasured sites follow the measured ones, by distance.
    assert [c.site for c in route.candidates[3:]] == ["fra", "tyo"]
    assert route.candidates[3].note.startswith("no RTT measured")


def test_latency_falls_back_to_geo_without_measurements() -> None:
    policy = RoutingPolicy("latency")
    assert choose(client(TOKYO), ALL, policy, key="k", draw=0.5, latency=LATENCY).site == "tyo"  # region not in matrix
    assert choose(client(PARIS), ALL, policy, key="k", draw=0.5, latency=None).site == "par"
    route = choose(client(None), ALL, policy, key="k", draw=0.5, latency=LATENCY)
    assert route.site == "ams" and "region unknown" in route.reason
    # The measured site is down: the next measured one, not the nearest.
    sites = [dataclasses.replace(AMS, active=False), FRA, NYC, PAR]
    assert choose(client(AMSTERDAM), sites, policy, key="k", draw=0.5, latency=LATENCY).site == "par"


# -- weighted ------------------------------------------------------------------------------------


WEIGHTED = RoutingPolicy("weighted", weights={"par": 3, "ams": 1})


def test_weighted_splits_clients_by_weight() -> None:
    draws = [draw_for(f"198.51.{i // 256}.{i % 256}", "www") for i in range(4000)]
    counts = Counter(pick(PARIS, ALL, WEIGHTED, draw=draw) for draw in draws)
    assert set(counts) == {"par", "ams"}
    assert counts["par"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_weighted_is_sticky_and_moves_only_the_clients_of_a_lost_site() -> None:
    policy = RoutingPolicy("weighted", weights={"par": 2, "ams": 1, "fra": 1})
    draws = [i / 997 for i in range(997)]
    before = {draw: pick(PARIS, ALL, policy, draw=draw) for draw in draws}
    assert before == {draw: pick(PARIS, ALL, policy, draw=draw) for draw in draws}
    without_ams = [s for s in ALL if s.name != "ams"]
    after = {draw: pick(PARIS, without_ams, policy, draw=draw) for draw in draws}
    moved = {draw for draw in draws if before[draw] != after[draw]}
    assert moved == {draw for draw in draws if before[draw] == "ams"}
    assert {after[draw] for draw in moved} == {"par", "fra"}


def test_weighted_uses_unweighted_sites_only_as_a_last_resort() -> None:
    assert {pick(PARIS, ALL, WEIGHTED, draw=i / 50) for i in range(50)} == {"par", "ams"}
    down = [dataclasses.replace(PAR, active=False), dataclasses.replace(AMS, nodes=()), NYC, FRA]
    route = choose(client(PARIS), down, WEIGHTED, key="k", draw=0.3)
    assert route.site == "fra"  # by name among the last resorts
    assert route.candidates[0].note == "weight 0: last resort"


# -- failover ------------------------------------------------------------------------------------


def test_failover_takes_the_first_eligible_site_of_the_order() -> None:
    policy = RoutingPolicy("failover", failover_order=("nyc", "par", "ams"))
    assert pick(TOKYO, ALL, policy) == "nyc"
    assert pick(TOKYO, [dataclasses.replace(NYC, nodes=()), AMS, FRA, PAR, TYO], policy) == "par"
    only_unlisted = [dataclasses.replace(NYC, active=False), FRA, TYO]
    route = choose(client(TOKYO), only_unlisted, policy, key="k", draw=0.5)
    assert route.site == "fra" and route.candidates[0].note == "not in failover order: last resort"


# -- load shedding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "threshold", "full", "expected"),
    [
        (0.5, 0.85, 0.5, 0.0),
        (0.85, 0.85, 0.5, 0.0),
        (0.9, 0.8, 0.5, 0.25),
        (1.0, 0.8, 0.5, 0.5),
        (3.0, 0.8, 0.5, 0.5),
        (1.2, 1.5, 0.5, 0.0),
        (1.6, 1.5, 0.4, 0.4),
    ],
)
def test_shed_share_grows_linearly_from_the_threshold(
    load: float, threshold: float, full: float, expected: float
) -> None:
    assert shed_share(load, threshold, full) == pytest.approx(expected)


def test_an_overloaded_site_sheds_its_share_of_draws_to_the_next_site() -> None:
    busy = dataclasses.replace(PAR, load_gbps=9.5)  # 95% load: share 0.5 * 0.10 / 0.15 = 1/3
    sites = [busy, AMS, FRA, NYC]
    assert pick(PARIS, sites, draw=0.30) == "ams"
    assert pick(PARIS, sites, draw=0.34) == "par"
    share = sum(pick(PARIS, sites, draw=i / 1000) == "ams" for i in range(1000)) / 1000
    assert share == pytest.approx(1 / 3, abs=0.002)
    route = choose(client(PARIS), sites, GEO, key="k", draw=0.9)
    assert "par at 95% load > 85%: shedding 33% of answers to ams" in route.reason


def test_shedding_skips_sites_without_room_and_keeps_the_site_when_none_has_any() -> None:
    busy_par = dataclasses.replace(PAR, load_gbps=10.0)
    busy_ams = dataclasses.replace(AMS, load_gbps=9.0)
    assert pick(PARIS, [busy_par, busy_ams, FRA], draw=0.1) == "fra"
    unknown_load = dataclasses.replace(FRA, load_gbps=None)
    assert pick(PARIS, [busy_par, busy_ams, unknown_load], draw=0.1) == "fra"
    route = choose(client(PARIS), [busy_par, busy_ams], GEO, key="k", draw=0.1)
    assert route.site == "par" and "no other site has room" in route.reason
    assert pick(PARIS, [busy_par, AMS], RoutingPolicy("geo", shed_share=0.0), draw=0.0) == "par"


def test_weighted_and_failover_shed_too() -> None:
    busy = dataclasses.replace(PAR, load_gbps=20.0)
    failover = RoutingPolicy("failover", failover_order=("par", "nyc", "ams"), shed_share=1.0)
    assert pick(PARIS, [busy, AMS, NYC], failover, draw=0.99) == "nyc"
    weighted = RoutingPolicy("weighted", weights={"par": 1}, shed_share=0.5)
    assert {pick(PARIS, [busy, AMS], weighted, draw=i / 100) for i in range(100)} == {"par", "ams"}


def test_a_site_of_unknown_load_or_capacity_never_sheds() -> None:
    for busy in (dataclasses.replace(PAR, load_gbps=None), dataclasses.replace(PAR, capacity_gbps=None)):
        assert pick(PARIS, [busy, AMS], draw=0.0) == "par"


# -- node answers --------------------------------------------------------------------------------


def test_answers_are_the_first_nodes_of_the_rendezvous_order() -> None:
    big = dataclasses.replace(PAR, nodes=nodes("par", 10))
    policy = RoutingPolicy("geo", answers=3)
    route = choose(client(PARIS), [big], policy, key="www.example.com", draw=0.5)
    assert route.nodes == rank_nodes(big.nodes, "www.example.com")[:3]
    assert len(set(route.nodes)) == 3
    other = choose(client(PARIS), [big], policy, key="img.example.com", draw=0.5)
    assert other.nodes != route.nodes  # (these two keys happen to differ; many would not)
    assert len(choose(client(PARIS), [PAR], RoutingPolicy("geo", answers=8), key="k", draw=0.5).nodes) == 3


def test_draw_for_is_stable_and_in_range() -> None:
    values = [draw_for(f"198.51.100.{i}/24", "www.example.com") for i in range(200)]
    assert all(0.0 <= value < 1.0 for value in values)
    assert values == [draw_for(f"198.51.100.{i}/24", "www.example.com") for i in range(200)]
    assert len(set(values)) == 200
    assert draw_for("198.51.100.0/24", "a.example") != draw_for("198.51.100.0/24", "b.example")


# -- properties ------------------------------------------------------------------------------------

LOCATIONS = st.one_of(
    st.none(),
    st.builds(
        Location,
        st.sampled_from(["FR", "NL", "DE", "US", "JP"]),
        st.sampled_from(["eu-west", "us-east", "nowhere"]),
        st.floats(min_value=-90, max_value=90),
        st.floats(min_value=-180, max_value=180),
    ),
)
SITES = st.lists(
    st.builds(
        SiteView,
        name=st.sampled_from(["par", "ams", "fra", "nyc", "tyo", "sin"]),
        region=st.sampled_from(["eu-west", "us-east"]),
        country=st.sampled_from(["FR", "NL", "DE", "US", "JP"]),
        lat=st.floats(min_value=-90, max_value=90),
        lon=st.floats(min_value=-180, max_value=180),
        active=st.booleans(),
        capacity_gbps=st.one_of(st.none(), st.floats(min_value=0.1, max_value=100)),
        load_gbps=st.one_of(st.none(), st.floats(min_value=0, max_value=200)),
        nodes=st.integers(min_value=0, max_value=4).map(lambda n: nodes("n", n)),
    ),
    max_size=6,
    unique_by=lambda s: s.name,
)
POLICIES = st.builds(
    RoutingPolicy,
    policy=st.sampled_from(["geo", "latency", "weighted", "failover"]),
    weights=st.dictionaries(st.sampled_from(["par", "ams", "fra", "nyc"]), st.integers(min_value=0, max_value=5)),
    failover_order=st.lists(st.sampled_from(["par", "ams", "fra", "tyo", "gone"]), unique=True).map(tuple),
    answers=st.integers(min_value=1, max_value=8),
    ttl=st.just(30),
    prefer_country=st.booleans(),
    shed_threshold=st.floats(min_value=0.1, max_value=2),
    shed_share=st.floats(min_value=0, max_value=1),
)
DRAWS = st.floats(min_value=0, max_value=1, exclude_max=True)


@settings(max_examples=300, deadline=None)
@given(where=LOCATIONS, sites=SITES, policy=POLICIES, draw=DRAWS, key=st.text(max_size=20))
def test_choose_returns_an_eligible_site_or_none(
    where: Location | None, sites: list[SiteView], policy: RoutingPolicy, draw: float, key: str
) -> None:
    latency = {"eu-west": {"par": 10.0, "nyc": 90.0}}
    route = choose(client(where), sites, policy, key=key, draw=draw, latency=latency)
    eligible = {s.name: s for s in sites if s.active and s.nodes}
    if not eligible:
        assert route.site is None and route.nodes == ()
    else:
        assert route.site in eligible
        chosen = eligible[route.site]
        assert set(route.nodes) <= set(chosen.nodes)
        assert len(route.nodes) == min(policy.answers, len(chosen.nodes))
    assert sorted(c.site for c in route.candidates) == sorted(s.name for s in sites)
    assert {c.site for c in route.candidates if c.eligible} == set(eligible)
    assert route == choose(client(where), sites, policy, key=key, draw=draw, latency=latency)


NODE_SETS = st.lists(st.text(alphabet="abcdefgh-123", min_size=1, max_size=8), min_size=1, max_size=12, unique=True)


@settings(max_examples=200, deadline=None)
@given(
    names=NODE_SETS,
    keys=st.lists(st.text(max_size=30), min_size=1, max_size=20),
    answers=st.integers(1, 4),
    data=st.data(),
)
def test_removing_a_node_only_moves_that_nodes_keys(
    names: list[str], keys: list[str], answers: int, data: st.DataObject
) -> None:
    targets = tuple(NodeTarget(name, ("192.0.2.1",), ()) for name in names)
    gone = data.draw(st.sampled_from(names))
    rest = tuple(t for t in targets if t.name != gone)
    for key in keys:
        before = rank_nodes(targets, key)[:answers]
        assert rank_nodes(tuple(reversed(targets)), key)[:answers] == before  # same key, same nodes
        after = rank_nodes(rest, key)[:answers]
        if all(t.name != gone for t in before):
            assert after == before
        else:
            kept = tuple(t for t in before if t.name != gone)
            assert after[: len(kept)] == kept
