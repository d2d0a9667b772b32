"""The request path's decisions (edgefleet.cache.policy.decisions), on a fake clock.

Each stored entry is made the way the fetcher makes it (``freshness.evaluate``
then ``freshness.timing`` at the response time); the clock is then moved past
``max-age``, ``stale-while-revalidate`` or ``stale-if-error`` instead of
sleeping there, which is what the end-to-end tests did before.
"""

from __future__ import annotations

import dataclasses

import pytest

from edgefleet.cache.policy import decisions, freshness
from edgefleet.cache.policy.decisions import Answered, Collapse, Lookup
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.wire.headers import format_http_date

START = 1_700_000_000.0
DOMAIN = freshness.Policy(ttl_override=None, bypass=False, default_ttl=0, heuristic=False, serve_stale_on_error=True)
STRICT = dataclasses.replace(DOMAIN, serve_stale_on_error=False, stale_if_error_default=0)


class FakeClock:
    """A :data:`decisions.Clock` that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stored(clock: FakeClock, cache_control: str, policy: freshness.Policy = DOMAIN, age: int = 0) -> EntryMeta:
    """The entry a 200 with ``cache_control`` (and ``Age``) received at ``clock()`` is stored as."""
    now = clock()
    headers = [("Date", format_http_date(now)), ("Cache-Control", cache_control), ("Age", str(age))]
    decision = freshness.evaluate("GET", 200, [], headers, policy)
    assert decision.storable, decision.reason
    initial = freshness.initial_age(headers, now, now)
    deadlines = freshness.timing(decision, initial, now)
    return EntryMeta(
        key="http://demo.test/a",
        variant="",
        vary=(),
        status=200,
        reason="OK",
        headers=headers,
        request_time=now,
        response_time=now,
        initial_age=initial,
        fresh_until=deadlines.fresh_until,
        stale_while_revalidate_until=deadlines.stale_while_revalidate_until,
        stale_if_error_until=deadlines.stale_if_error_until,
        must_revalidate=decision.must_revalidate,
        no_cache=decision.no_cache,
        size=400,
        tags=(),
    )


def test_a_fresh_entry_is_a_hit_until_max_age_then_it_is_revalidated() -> None:
    clock = FakeClock()
    meta = stored(clock, "max-age=1")
    assert decisions.on_lookup(meta, clock()) is Lookup.HIT and decisions.fast_hit(meta, clock())
    clock.advance(0.999)
    assert decisions.on_lookup(meta, clock()) is Lookup.HIT
    clock.advance(0.001)
    assert decisions.on_lookup(meta, clock()) is Lookup.FILL and not decisions.fast_hit(meta, clock())
    assert decisions.on_answer(304, meta, clock()) is Answered.REVALIDATED
    assert decisions.on_answer(200, meta, clock()) is Answered.RECEIVE, "a changed object is fetched anew"
    assert decisions.on_answer(304, None, clock()) is Answered.RECEIVE, "a 304 to an unconditional fetch is relayed"
    assert decisions.on_lookup(stored(clock, "max-age=60"), clock()) is Lookup.HIT


def test_stale_while_revalidate_serves_stale_at_once_then_must_revalidate() -> None:
    clock = FakeClock()
    meta = stored(clock, "max-age=1, stale-while-revalidate=30")
    clock.advance(1.3)
    assert decisions.on_lookup(meta, clock()) is Lookup.STALE
    clock.advance(29.6)  # 30.9 s: within max-age + stale-while-revalidate
    assert decisions.on_lookup(meta, clock()) is Lookup.STALE
    clock.advance(0.2)
    assert decisions.on_lookup(meta, clock()) is Lookup.FILL


@pytest.mark.parametrize(
    ("cache_control", "policy", "allowed"),
    [
        ("max-age=1, stale-if-error=60", DOMAIN, True),
        ("max-age=1", DOMAIN, True),  # serveStaleOnError: the Domain's default window
        ("max-age=1, must-revalidate, stale-if-error=60", DOMAIN, False),
        ("max-age=1, proxy-revalidate, stale-if-error=60", DOMAIN, False),
        ("s-maxage=1, stale-if-error=60", DOMAIN, False),  # s-maxage implies proxy-revalidate
        ("max-age=1, stale-if-error=1", DOMAIN, False),  # the window is over at 2.3 s
        ("max-age=1", STRICT, False),  # serveStaleOnError: false
    ],
)
def test_stale_if_error_when_the_origin_fails(cache_control: str, policy: freshness.Policy, allowed: bool) -> None:
    clock = FakeClock()
    meta = stored(clock, cache_control, policy)
    clock.advance(2.3)
    assert decisions.on_lookup(meta, clock()) is Lookup.FILL
    assert decisions.stale_on_error(meta, clock()) is allowed
    assert (decisions.on_answer(503, meta, clock()) is Answered.STALE) is allowed
    assert decisions.on_answer(404, meta, clock()) is Answered.RECEIVE, "only a 5xx is an upstream failure"
    assert not decisions.stale_on_error(None, clock())


def test_age_counts_from_the_origins_age_on_the_clock() -> None:
    clock = FakeClock()
    meta = stored(clock, "max-age=3600", age=100)
    assert freshness.current_age(meta.initial_age, meta.response_time, clock()) == 100
    clock.advance(1.1)
    assert freshness.current_age(meta.initial_age, meta.response_time, clock()) == 101
    assert decisions.on_lookup(meta, clock()) is Lookup.HIT


def test_soft_purged_and_no_cache_entries_are_validated_first() -> None:
    clock = FakeClock()
    meta = stored(clock, "max-age=60")
    purged = dataclasses.replace(meta, invalidated=True)
    assert decisions.on_lookup(purged, clock()) is Lookup.FILL and not decisions.is_fresh(purged, clock())
    no_cache = stored(clock, "max-age=60, no-cache")
    assert decisions.on_lookup(no_cache, clock()) is Lookup.FILL and not decisions.fast_hit(no_cache, clock())
    assert decisions.is_fresh(no_cache, clock()), "fresh for prefetch and other workers' fills, whatever no-cache"
    assert not decisions.fast_hit(dataclasses.replace(meta, status=404), clock()), "the fast path serves 200s only"


def test_a_miss_is_fetched_sliced_or_refused_when_only_if_cached() -> None:
    assert decisions.on_lookup(None, START) is Lookup.FILL
    assert decisions.on_lookup(None, START, sliced=True) is Lookup.SLICES
    assert decisions.on_lookup(None, START, only_if_cached=True, sliced=True) is Lookup.NOT_CACHED


@pytest.mark.parametrize(
    ("fill_running", "stored_entry", "node_locks", "looped", "expected"),
    [
        (True, False, True, False, Collapse.JOIN),
        (True, True, False, False, Collapse.JOIN),
        (False, False, True, False, Collapse.TRY_NODE_LOCK),
        (False, True, True, False, Collapse.START),  # a revalidation is not collapsed across workers
        (False, False, False, False, Collapse.START),
        (True, False, True, True, Collapse.START),  # back around the tiers: never wait for our own fill
        (False, False, True, True, Collapse.START),
    ],
)
def test_collapse(fill_running: bool, stored_entry: bool, node_locks: bool, looped: bool, expected: Collapse) -> None:
    got = decisions.collapse(fill_running=fill_running, stored=stored_entry, node_locks=node_locks, looped=looped)
    assert got is expected


def test_a_peers_response_is_relayed_not_stored() -> None:
    assert decisions.store_response(storable=True, refusal="", from_peer=False) == decisions.Storing(True, True)
    assert decisions.store_response(storable=True, refusal="", from_peer=True) == decisions.Storing(False, True)
    assert decisions.store_response(storable=False, refusal="no-store", from_peer=True) == decisions.Storing(
        False, False
    )
    assert decisions.store_response(storable=False, refusal="private", from_peer=False).shareable is False
