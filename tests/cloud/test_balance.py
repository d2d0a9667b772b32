"""Balancer: how many sessions an over-loaded hub replica releases, when, and where to (pure, fake clock)."""

from __future__ import annotations

from edgefleet.cloud.balance import Balancer, BalanceSettings, BalanceState, ReplicaLoad, excess, least_loaded_url


def loads(a: int, b: int, c: int) -> list[ReplicaLoad]:
    return [ReplicaLoad("a", a, "http://a"), ReplicaLoad("b", b, "http://b"), ReplicaLoad("c", c, "http://c")]


def test_excess_is_the_part_over_the_share_beyond_the_tolerance() -> None:
    assert excess("a", loads(1500, 1500, 0), 0.05) == 500
    assert excess("c", loads(1500, 1500, 0), 0.05) == 0
    assert excess("a", loads(1040, 1000, 960), 0.05) == 0, "within tolerance"
    assert excess("a", loads(1100, 1000, 900), 0.05) == 100
    assert excess("a", [ReplicaLoad("a", 3000)], 0.05) == 0, "alone: nothing to balance against"
    assert excess("x", loads(1, 2, 3), 0.05) == 0


def test_hint_is_the_least_loaded_other_replica_with_a_url() -> None:
    assert least_loaded_url("a", loads(1500, 1500, 0)) == "http://c"
    assert least_loaded_url("a", [ReplicaLoad("a", 5), ReplicaLoad("b", 0)]) is None


def test_release_in_batches_then_observe_then_measure_again() -> None:
    balancer = Balancer("a", BalanceSettings(tolerance=0.05, observe_seconds=30, batch=200, batch_interval=1))
    released = []
    now = 0.0
    current = loads(1500, 1500, 0)
    while now < 10:
        release = balancer.tick(now, current)
        if release:
            released.append(release.count)
            assert release.hint == "http://c"
        now = balancer.next_tick(now, 5)
        if balancer.state is BalanceState.OBSERVING:
            break
    assert released == [200, 200, 100] and balancer.released_total == 500
    assert balancer.tick(now + 29, loads(1000, 1500, 500)) is None, "observing: no new measure"
    release = balancer.tick(now + 30, loads(1000, 1000, 1000))
    assert release is None and balancer.state is BalanceState.MEASURING, "balanced: stop"


def test_balanced_replicas_never_release() -> None:
    balancer = Balancer("b", BalanceSettings())
    for t in range(100):
        assert balancer.tick(float(t), loads(1000, 1020, 980)) is None
