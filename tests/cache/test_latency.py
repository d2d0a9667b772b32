"""The response-time histogram of the last minute and its p99, with an injected clock; the figures' summary.

No process and no real time: :class:`RecentLatency` is given a clock the
test moves, and responses are observed with the start and end times the
test chooses.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.cache import stats
from edgefleet.cache.latency import BOUNDS, BUCKETS, GROWTH, SLOT_SECONDS, SLOTS, RecentLatency, percentile


class Clock:
    """A clock the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def observe_at(latency: RecentLatency, clock: Clock, now: float, seconds: float, count: int = 1) -> None:
    """``count`` responses of ``seconds`` each, ending at ``now`` (the clock moves there)."""
    clock.now = now
    for _ in range(count):
        latency.observe(now - seconds, now)


def p99_ms(latency: RecentLatency) -> float | None:
    p99 = percentile(latency.counts(), 0.99)
    return None if p99 is None else p99 * 1000


def near(estimate: float | None, true: float) -> bool:
    """Whether a bucket estimate is within one bucket's width of the true value (and float rounding)."""
    slack = GROWTH * (1 + 1e-9)
    return estimate is not None and true / slack <= estimate <= true * slack


def test_bounds_are_log_spaced_from_10_us_to_minutes() -> None:
    assert BOUNDS[0] == pytest.approx(10e-6)
    assert all(later / earlier == pytest.approx(GROWTH) for earlier, later in itertools.pairwise(BOUNDS))
    assert BOUNDS[-1] > 300
    assert len(BOUNDS) + 1 == BUCKETS


def test_p99_is_the_slow_tail_once_more_than_one_in_a_hundred_is_slow() -> None:
    clock = Clock()
    latency = RecentLatency(clock)
    observe_at(latency, clock, 1000.0, 0.001, count=990)
    observe_at(latency, clock, 1001.0, 0.100, count=10)
    assert near(p99_ms(latency), 1.0), "the 990th of 1000 is still a fast one"
    observe_at(latency, clock, 1002.0, 0.100)
    assert near(p99_ms(latency), 100.0)
    assert sum(latency.counts()) == 1001


def test_the_window_is_the_current_slot_and_the_five_before() -> None:
    clock = Clock()
    latency = RecentLatency(clock)
    start = 100 * SLOT_SECONDS  # the start of a slot's period
    for slot in range(SLOTS):
        observe_at(latency, clock, start + slot * SLOT_SECONDS + 1, 0.010 * (slot + 1))
    assert sum(latency.counts()) == SLOTS
    clock.now = start + SLOTS * SLOT_SECONDS  # a minute on: the first slot's period has left the window
    assert sum(latency.counts()) == SLOTS - 1
    clock.now = start + (2 * SLOTS + 1) * SLOT_SECONDS  # two idle minutes, nothing observed since
    assert latency.counts() == [0] * BUCKETS
    assert p99_ms(latency) is None


def test_a_slot_used_again_starts_from_zero() -> None:
    clock = Clock()
    latency = RecentLatency(clock)
    observe_at(latency, clock, 1005.0, 2.0, count=50)
    observe_at(latency, clock, 1005.0 + SLOTS * SLOT_SECONDS, 0.002)  # the same slot, a minute later
    assert sum(latency.counts()) == 1
    assert near(p99_ms(latency), 2.0)


def test_responses_outside_the_bounds_land_in_the_end_buckets() -> None:
    clock = Clock()
    latency = RecentLatency(clock)
    observe_at(latency, clock, 1000.0, 0.0)
    assert latency.counts()[0] == 1
    observe_at(latency, clock, 1000.0, 3600.0, count=2)
    assert latency.counts()[-1] == 2
    assert percentile(latency.counts(), 0.99) == BOUNDS[-1], "above the last bound: that bound, a floor"


def test_percentile_needs_counts_and_a_fraction() -> None:
    assert percentile([], 0.99) is None
    assert percentile([0] * BUCKETS, 0.99) is None
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            percentile([1] * BUCKETS, fraction)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=BOUNDS[0], max_value=BOUNDS[-1]), min_size=1, max_size=300))
def test_p99_is_within_a_bucket_of_the_exact_one(samples: list[float]) -> None:
    clock = Clock()
    latency = RecentLatency(clock)
    for seconds in samples:
        observe_at(latency, clock, 1000.0, seconds)
    exact = sorted(samples)[math.ceil(0.99 * len(samples)) - 1]  # nearest rank
    assert near(percentile(latency.counts(), 0.99), exact)


# -- the worker's counters and the /status summary ----------------------------------------------------


def test_workers_snapshots_sum_into_the_status_figures() -> None:
    clock = Clock()
    workers = [stats.Stats(), stats.Stats()]
    for index, worker in enumerate(workers):
        worker.response_times = RecentLatency(clock)
        worker.requests, worker.server_errors = 100, 3 + index
        worker.upstream_failed("origin")
        worker.upstream_failed("parent")
        worker.upstream_failed("peer")
    observe_at(workers[0].response_times, clock, 1000.0, 0.004, count=98)
    observe_at(workers[1].response_times, clock, 1000.0, 0.250, count=2)  # 2 in 100: the p99
    merged = stats.merge(worker.snapshot({}) for worker in workers)
    figures = stats.summary(merged)
    assert (figures["requests"], figures["serverErrors"], figures["upstreamErrors"]) == (200, 7, 4)
    assert merged["peer_failures"] == 2, "site peers are counted apart"
    assert near(figures["latencyP99Ms"], 250.0)


def test_status_has_no_p99_without_a_response_in_the_last_minute() -> None:
    figures = stats.summary(stats.merge([stats.Stats().snapshot({})]))
    assert figures["latencyP99Ms"] is None
    assert (figures["serverErrors"], figures["upstreamErrors"]) == (0, 0)
