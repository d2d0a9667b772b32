"""Accounting without processes: sources, the X-Cache chain, per-Domain counters, the window, hot objects."""

from __future__ import annotations

import timeit
from dataclasses import replace

import pytest

from edgefleet.cache import accounting, stats
from edgefleet.cache.accounting import FIELDS, Accounts, DomainCounters, RecentAccounts
from edgefleet.cache.policy import keys
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.hot import HotObjects
from edgefleet.cache.upstream import tiers

# --- classification and X-Cache --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "source"),
    [
        ("HIT", "local"),
        ("STALE", "local"),
        ("REVALIDATED", "local"),
        ("PEER", "peer"),
        ("PARENT", "parent"),
        ("MISS", "origin"),
        ("PASS", "origin"),
        ("ERROR", "error"),
        ("SOMETHING", "error"),
    ],
)
def test_each_status_word_names_where_the_body_came_from(status: str, source: str) -> None:
    assert accounting.source_of(status) == source


def test_a_body_fetched_from_a_tier_gets_that_tiers_word() -> None:
    assert [accounting.fetched_status(kind) for kind in ("peer", "parent", "origin")] == ["PEER", "PARENT", "MISS"]


def test_x_cache_appends_this_nodes_entry_to_the_upstreams_chain() -> None:
    assert accounting.x_cache(None, "HIT", "edge-a") == "HIT from edge-a"
    assert accounting.x_cache("HIT from owner", "PEER", "edge-a") == "HIT from owner, PEER from edge-a"
    headers = [("Content-Type", "text/plain"), ("X-Cache", "MISS from p"), ("x-cache", "PEER from o")]
    kept, chain = accounting.split_x_cache(headers)
    assert kept == [("Content-Type", "text/plain")] and chain == "MISS from p, PEER from o"
    assert accounting.split_x_cache(kept) == (kept, None)


def test_only_a_request_with_the_tier_field_is_a_tier_request() -> None:
    assert tiers.asked_by_tier([("Host", "a"), ("X-Edgefleet-Tier", "peer")])
    assert not tiers.asked_by_tier([("Host", "a"), ("X-Edgefleet-Hops", "1")])


# --- per-Domain counters -------------------------------------------------------------------------------


def test_domain_counters_count_sources_bytes_and_tier_requests_apart() -> None:
    counters = DomainCounters()
    counters.count("local", 100, tier=False)
    counters.count("peer", 50, tier=False)
    counters.count("local", 10, tier=True)
    counters.count("nonsense", 0, tier=False)
    values = dict(zip(FIELDS, counters.values(), strict=True))
    assert values == {
        "local": 2,
        "peer": 1,
        "parent": 0,
        "origin": 0,
        "error": 1,
        "bytes": 160,
        "tier_requests": 1,
        "tier_bytes": 10,
        "origin_requests": 0,
        "origin_bytes": 0,
    }


def test_accounts_keep_only_the_configured_domains_and_merge_across_workers() -> None:
    one, two = Accounts(), Accounts()
    one.slot("demo").count("local", 5, tier=False)
    one.slot("gone").count("origin", 5, tier=False)
    two.slot("demo").count("peer", 7, tier=False)
    one.retain(["demo"])
    assert set(one.snapshot()) == {"demo"}
    merged = stats.merge([{"requests": 1, "accounts": one.snapshot()}, {"requests": 2, "accounts": two.snapshot()}])
    demo = dict(zip(FIELDS, merged["accounts"]["demo"], strict=True))
    assert (merged["requests"], demo["local"], demo["peer"], demo["bytes"]) == (3, 1, 1, 12)


def test_merging_skips_malformed_account_entries() -> None:
    assert accounting.merge_accounts({}, {"demo": [1, 2], "x": "no", "ok": [0] * len(FIELDS)}) == {"ok": [0] * 10}


def test_prometheus_gets_per_domain_counters_with_bounded_labels() -> None:
    accounts = Accounts()
    accounts.slot("demo").count("peer", 3, tier=False)
    accounts.slot("demo").origin_requests += 2
    families = {family.name: family for family in stats.domain_families(accounts.snapshot())}
    requests = families["edgefleet_cache_domain_requests"]
    by_source = {sample.labels["source"]: sample.value for sample in requests.samples}
    assert by_source == {"local": 0.0, "peer": 1.0, "parent": 0.0, "origin": 0.0, "error": 0.0}
    assert families["edgefleet_cache_domain_origin_requests"].samples[0].value == 2.0


# --- the window --------------------------------------------------------------------------------------


def counts(**fields: int) -> list[int]:
    return [fields.get(name, 0) for name in FIELDS]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_counts_the_differences_between_snapshots_and_forgets_old_slots() -> None:
    clock = Clock()
    recent = RecentAccounts(window=60, slot_seconds=10, clock=clock)
    recent.observe(0, 111, {"demo": counts(local=5)})
    clock.now += 15
    recent.observe(0, 111, {"demo": counts(local=8, origin_requests=1)})
    assert recent.figures() == {"demo": counts(local=8, origin_requests=1)}
    clock.now += 50  # the first slot left the window
    assert recent.figures() == {"demo": counts(local=3, origin_requests=1)}
    clock.now += 60
    assert recent.figures() == {}


def test_a_restarted_worker_counts_from_zero_again_not_backwards() -> None:
    clock = Clock()
    recent = RecentAccounts(window=60, slot_seconds=10, clock=clock)
    recent.observe(0, 111, {"demo": counts(local=50)})
    recent.observe(1, 222, {"demo": counts(peer=5)})
    recent.observe(0, 333, {"demo": counts(local=2)})  # worker 0 restarted (new process): 2 new
    recent.observe(1, 222, {"demo": counts(peer=1), "shop": counts(local=4)})  # demo's went down: a reset, 1 new
    recent.observe(1, 222, {"demo": counts(peer=1), "shop": counts(local=6)})  # shop's own: only 2 new
    assert recent.figures() == {"demo": counts(local=52, peer=6), "shop": counts(local=6)}


def test_node_figures_count_client_requests_once_and_give_the_offloads() -> None:
    window = {
        "demo": counts(local=6, peer=2, origin=2, bytes=1000, tier_requests=4, tier_bytes=400, origin_requests=2),
        "other": counts(origin=1, bytes=10, origin_requests=1, origin_bytes=10),
    }
    figures = accounting.node_figures(window, 300)
    assert figures["clientRequests"] == 7 and figures["tierRequests"] == 4
    assert (figures["servedLocal"], figures["servedPeer"], figures["servedOrigin"]) == (6, 2, 3)
    assert figures["offload"] == round(1 - 3 / 11, 4) and figures["localRatio"] == round(6 / 11, 4)
    assert figures["byteOffload"] == round(1 - 10 / 1010, 4)
    assert list(figures["domains"]) == ["demo", "other"], "busiest first"
    assert figures["domains"]["demo"] == {
        "requests": 6,
        "tierRequests": 4,
        "bytes": 600,
        "originRequests": 2,
        "originBytes": 0,
        "local": 6,
        "peer": 2,
        "parent": 0,
        "origin": 2,
    }
    assert accounting.node_figures({}, 300)["offload"] is None


def test_a_node_reports_at_most_its_busiest_domains() -> None:
    window = {f"d{index}": counts(local=index) for index in range(accounting.MAX_NODE_DOMAINS + 10)}
    reported = accounting.node_figures(window, 300)["domains"]
    assert len(reported) == accounting.MAX_NODE_DOMAINS and "d59" in reported and "d0" not in reported


def test_offload_is_clamped_when_the_origin_did_more_than_the_traffic() -> None:
    assert accounting.offload(5, 2) == 0.0 and accounting.offload(0, 2) == 1.0 and accounting.offload(1, 0) is None


def test_a_hit_costs_two_increments_per_domain() -> None:
    """The per-hit cost of the Domain counters (the figure is printed for the report; no assertion on speed)."""
    slots = {"demo": DomainCounters()}

    def hit() -> None:
        counters = slots["demo"]
        counters.local += 1
        counters.bytes += 1024

    rounds = 200_000
    seconds = min(timeit.repeat(hit, number=rounds, repeat=3))
    print(f"per-Domain accounting of a hit: {seconds / rounds * 1e9:.0f} ns")
    assert slots["demo"].local == 3 * rounds


# --- hot objects -------------------------------------------------------------------------------------


def meta(key: str = "http://demo.test/a", *, fresh_until: float = 1100.0, **changes: object) -> EntryMeta:
    base = EntryMeta(
        key=key,
        variant="",
        vary=(),
        status=200,
        reason="OK",
        headers=[("Cache-Control", "max-age=100")],
        request_time=1000.0,
        response_time=1000.0,
        initial_age=0.0,
        fresh_until=fresh_until,
        stale_while_revalidate_until=fresh_until + 50,
        stale_if_error_until=fresh_until + 500,
        must_revalidate=False,
        no_cache=False,
        size=5,
        tags=("t1",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def no_vary(vary: tuple[str, ...]) -> str:
    return ""


def test_a_hot_copy_is_served_no_longer_than_its_window_nor_the_owners_freshness() -> None:
    hot = HotObjects(2**20, 1024, seconds=2)
    assert hot.offer(meta(), b"hello", now=1000.0)
    entry = hot.find("http://demo.test/a", no_vary, now=1001.9)
    assert entry is not None and entry.body == b"hello"
    assert entry.meta.fresh_until == entry.meta.stale_if_error_until == entry.meta.stale_while_revalidate_until == 1002
    assert hot.find("http://demo.test/a", no_vary, now=1002.0) is None, "past its window: gone"
    assert len(hot.tier) == 0
    assert hot.offer(meta(fresh_until=1000.5), b"hello", now=1000.0)
    assert hot.find("http://demo.test/a", no_vary, now=1000.6) is None, "never beyond the owner's freshness"


@pytest.mark.parametrize(
    "changes",
    [
        {"status": 404},
        {"no_cache": True},
        {"invalidated": True},
        {"fresh_until": 999.0},
        {"size": 4},
        {"key": "http://demo.test/a" + keys.SLICE_MARK + "0"},
    ],
)
def test_only_fresh_whole_plain_200s_become_hot(changes: dict[str, object]) -> None:
    hot = HotObjects(2**20, 1024, seconds=2)
    assert not hot.offer(meta(**changes), b"hello", now=1000.0)  # type: ignore[arg-type]


def test_hot_objects_are_bounded_and_off_when_any_limit_is_zero() -> None:
    assert not HotObjects(2**20, 4, seconds=2).offer(meta(), b"hello", now=1000.0), "larger than maxObjectBytes"
    for limits in ((0, 1024, 2.0), (2**20, 0, 2.0), (2**20, 1024, 0.0)):
        hot = HotObjects(*limits)
        assert not hot.enabled and not hot.offer(meta(), b"hello", now=1000.0)


def test_a_hot_copy_answers_only_the_variant_it_is() -> None:
    hot = HotObjects(2**20, 1024, seconds=2)
    gzip = meta(vary=("accept-encoding",), variant="gzip")
    assert hot.offer(gzip, b"hello", now=1000.0)
    assert hot.find(gzip.key, lambda vary: "gzip", now=1000.5) is not None
    assert hot.find(gzip.key, lambda vary: "br", now=1000.5) is None
    assert hot.get_plain(gzip.key) is None, "the fast path takes only entries without Vary"


def test_a_purge_removes_hot_copies_by_key_prefix_and_tag() -> None:
    hot = HotObjects(2**20, 1024, seconds=2)
    for key in ("http://demo.test/a", "http://demo.test/dir/b", "http://demo.test/c"):
        hot.offer(meta(key), b"hello", now=1000.0)
    assert hot.purge(["http://demo.test/a"], [], []) == 1
    assert hot.purge([], ["http://demo.test/dir/"], []) == 1
    assert hot.purge([], [], ["t1"]) == 1
    assert len(hot.tier) == 0 and hot.stats() == {"hot_bytes": 0, "hot_objects": 0}


def test_the_single_addresses_of_the_fleet_are_known_tier_clients_from_the_start() -> None:
    assert tiers.plain_addresses(["10.0.0.2", "[2001:DB8::1]", "192.0.2.0/24", "edge.example"]) == [
        "10.0.0.2",
        "2001:db8::1",
    ]
