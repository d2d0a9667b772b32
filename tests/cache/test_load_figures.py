"""The cache's load figures (egress and request rates over the latest slots), without processes."""

from __future__ import annotations

from edgefleet.cache import accounting, stats
from edgefleet.cache.accounting import FIELDS, RecentAccounts
from edgefleet.edge.cachetasks import cache_stats


def counts(**values: int) -> list[int]:
    return [values.get(name, 0) for name in FIELDS]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_load_figures_cover_the_latest_six_slots_not_the_whole_window() -> None:
    clock = Clock()
    recent = RecentAccounts(window=300, slot_seconds=10, clock=clock)
    for second in range(0, 121, 10):  # the master samples every slot: a burst, then a steady rate
        local = 100 + max(0, second - 60)
        sent = 10**9 + max(0, second - 60) * 125_000_000
        recent.observe(0, 1, {"demo": counts(local=local, bytes=sent, tier_bytes=(sent - 10**9) // 5)})
        clock.now += 10
    clock.now -= 5  # halfway into the slot after the last snapshot
    window, seconds = recent.recent()
    assert seconds == 60.0, "from the snapshot before the first of the last 6 slots to the latest"
    assert window == {"demo": counts(local=60, bytes=7_500_000_000, tier_bytes=1_500_000_000)}
    assert recent.figures()["demo"][FIELDS.index("local")] == 160, "the 5-minute window keeps the burst"
    assert accounting.load_figures(window, seconds) == {
        "loadWindowSeconds": 60.0,
        "requestsPerSecond": 1.0,
        "egressGbps": 1.0,
        "clientGbps": 0.8,
    }
    clock.now += 60
    assert accounting.load_figures(*recent.recent())["egressGbps"] == 0.0, "a minute later the load is gone"


def test_snapshots_at_any_pace_give_the_rate_over_the_time_they_cover() -> None:
    clock = Clock()
    recent = RecentAccounts(window=300, slot_seconds=10, clock=clock)
    total = 0
    for _ in range(60):  # /status asked every 1.3 s besides the sampling: 100 requests a second
        clock.now += 1.3
        total += 130
        recent.observe(0, 1, {"demo": counts(local=total)})
    window, seconds = recent.recent()
    assert 50 <= seconds <= 61
    assert accounting.load_figures(window, seconds)["requestsPerSecond"] == 100.0


def test_a_cache_that_just_started_divides_by_its_uptime() -> None:
    clock = Clock()
    recent = RecentAccounts(window=300, slot_seconds=0.5, clock=clock)
    clock.now += 1.5
    recent.observe(0, 1, {"demo": counts(origin=3, bytes=3 * 125_000)})
    window, seconds = recent.recent()
    assert seconds == 1.5
    figures = accounting.load_figures(window, seconds)
    assert (figures["requestsPerSecond"], figures["egressGbps"]) == (2.0, 0.002)


def test_no_traffic_is_zero_not_missing() -> None:
    figures = accounting.load_figures({}, 60.0)
    assert figures == {"loadWindowSeconds": 60.0, "requestsPerSecond": 0.0, "egressGbps": 0.0, "clientGbps": 0.0}


def test_status_carries_the_load_figures_into_node_status() -> None:
    clock = Clock()
    recent = RecentAccounts(window=300, slot_seconds=10, clock=clock)
    clock.now += 60
    recent.observe(0, 1, {"demo": counts(local=30, bytes=750_000_000)})
    document = stats.summary({"requests": 30}, recent)
    reported = cache_stats(document)  # what the agent reports in Node.status.cache
    assert reported is not None
    assert {name: reported[name] for name in ("loadWindowSeconds", "requestsPerSecond", "egressGbps")} == {
        "loadWindowSeconds": 60.0,
        "requestsPerSecond": 0.5,
        "egressGbps": 0.1,
    }
    assert reported["clientGbps"] == 0.1
