"""DemandMeter: queries per second by region over a sliding window of per-second buckets."""

from __future__ import annotations

import pytest

from edgefleet.gslb import demand
from edgefleet.gslb.demand import DemandMeter

T0 = 1_700_000_000.0


def test_rate_is_the_window_average_per_region() -> None:
    meter = DemandMeter(window_seconds=10)
    for second in range(10):
        meter.record("eu-west", T0 + second + 0.5, count=20)
        meter.record("us-east", T0 + second + 0.1)
    assert meter.rates(T0 + 9.9) == {"eu-west": 20.0, "us-east": 1.0}


def test_old_seconds_leave_the_window() -> None:
    meter = DemandMeter(window_seconds=10)
    meter.record("eu-west", T0, count=100)
    meter.record("eu-west", T0 + 5, count=10)
    assert meter.rates(T0 + 9) == {"eu-west": 11.0}
    assert meter.rates(T0 + 10) == {"eu-west": 1.0}  # T0's second has left the window
    assert meter.rates(T0 + 15) == {}
    assert len(meter) == 0, "an idle region is forgotten"


def test_a_bucket_is_reused_when_the_ring_comes_round() -> None:
    meter = DemandMeter(window_seconds=4)
    meter.record("eu", T0, count=7)
    meter.record("eu", T0 + 4, count=1)  # same slot as T0, a newer second: T0's count must not linger
    assert meter.rates(T0 + 4) == {"eu": 0.25}


def test_a_time_slightly_in_the_past_counts_in_the_newest_bucket() -> None:
    meter = DemandMeter(window_seconds=2)
    meter.record("eu", T0 + 1, count=2)
    meter.record("eu", T0 + 0.5, count=2)
    assert meter.rates(T0 + 2) == {"eu": 2.0}, "both counted in T0+1, still in the window"


def test_zero_and_negative_counts_are_ignored() -> None:
    meter = DemandMeter()
    meter.record("eu", T0, count=0)
    meter.record("eu", T0, count=-5)
    assert meter.rates(T0) == {}
    assert len(meter) == 0


def test_memory_is_bounded_by_the_window_whatever_the_traffic() -> None:
    meter = DemandMeter(window_seconds=3)
    for i in range(10_000):
        meter.record("eu", T0 + i / 100)
    ring = meter._regions["eu"]
    assert len(ring.counts) == len(ring.seconds) == 3
    assert meter.rates(T0 + 99.99) == {"eu": pytest.approx(300 / 3)}


def test_regions_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demand, "MAX_REGIONS", 2)
    meter = DemandMeter()
    for region in ("a", "b", "c"):
        meter.record(region, T0)
    assert set(meter.rates(T0)) == {"a", "b"}


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        DemandMeter(window_seconds=0)


# --- SenderAllowance: what one sender network may add --------------------------------------------------------------


def test_one_sender_network_counts_at_most_its_allowance_each_second() -> None:
    allowance = demand.SenderAllowance(per_second=3)
    assert [allowance.allow("192.0.2.1", T0) for _ in range(5)] == [True, True, True, False, False]
    assert not allowance.allow("192.0.2.200", T0 + 0.5)  # the same /24
    assert allowance.allow("198.51.100.1", T0 + 0.5)  # another network has its own
    assert allowance.allow("192.0.2.1", T0 + 1.0)  # a new second


def test_ipv6_senders_are_grouped_by_slash_56() -> None:
    allowance = demand.SenderAllowance(per_second=1)
    assert allowance.allow("2001:db8:0:100::1", T0)
    assert not allowance.allow("2001:db8:0:1ff::9", T0)
    assert allowance.allow("2001:db8:0:200::1", T0)


def test_zero_means_no_bound_and_a_flood_of_networks_adds_nothing_past_the_table() -> None:
    assert all(demand.SenderAllowance(per_second=0).allow("192.0.2.1", T0) for _ in range(1000))
    allowance = demand.SenderAllowance(per_second=5, max_senders=4)
    counted = [allowance.allow(f"10.0.{n}.1", T0) for n in range(10)]
    assert counted == [True] * 4 + [False] * 6
    with pytest.raises(ValueError, match=">= 0"):
        demand.SenderAllowance(per_second=-1)
