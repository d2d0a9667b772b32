"""StatusWrites: which agent reports become Node.status writes, and when (pure, fake clock)."""

from __future__ import annotations

import random

from edgefleet.cloud.statuswrites import Intervals, StatusWrites, merge_patch_for

PEERS = frozenset({"b", "c"})
WALL = "2026-12-07T00:00:00Z"


def writes(intervals: Intervals | None = None) -> StatusWrites:
    return StatusWrites(
        intervals or Intervals(min_interval=1, lazy_interval=30, lazy_writes_per_second=50, refresh_interval=300),
        rng=random.Random(1),
    )


def report(w: StatusWrites, status: dict[str, object], now: float, wall: str = WALL) -> None:
    w.report("a", status, now=now, wall=wall, peers=PEERS)


def connected(w: StatusWrites, status: dict[str, object], now: float = 0) -> None:
    """A session's first report and the acknowledgement of its first batch: written at once."""
    report(w, status, now)
    w.synced("a", 7, "epoch-1", now=now)
    assert len(w.due(now)) == 1


def test_the_first_write_waits_for_the_first_acknowledged_batch_and_carries_its_revision() -> None:
    w = writes()
    report(w, {"agentVersion": "1", "syncedRevision": 3}, 0)
    assert w.due(0) == [] and w.next_deadline() == 2.0, "at most first_write_wait for the handshake ack"
    w.synced("a", 42, "epoch-1", now=0.3)
    assert [x.status for x in w.due(0.3)] == [{"agentVersion": "1", "syncedRevision": 42, "syncedEpoch": "epoch-1"}]
    report(w, {"agentVersion": "1"}, 0.5)
    w2 = writes()
    report(w2, {"agentVersion": "1"}, 0)
    assert [x.status for x in w2.due(2.0)] == [{"agentVersion": "1"}], "no ack in time: written anyway"


def test_an_unchanged_report_costs_nothing() -> None:
    w = writes()
    connected(w, {"agentVersion": "1", "workloads": {}})
    for t in range(1, 100):
        report(w, {"agentVersion": "1", "workloads": {}}, t)
        assert w.due(t) == [], "an idle node costs no store write"


def test_new_synced_revisions_ride_along_and_never_cause_a_write() -> None:
    w = writes()
    connected(w, {"agentVersion": "1"})
    for t in range(1, 200):
        w.synced("a", 7 + t, "epoch-1", now=t)  # a push every second
        assert w.due(t) == [], "pushes cost no status writes"
    report(w, {"agentVersion": "2"}, 200)
    assert w.due(200)[0].status == {"agentVersion": "2", "syncedRevision": 206, "syncedEpoch": "epoch-1"}


def test_hub_owned_fields_are_dropped() -> None:
    w = writes()
    report(
        w,
        {
            "agentVersion": "1",
            "lastHeartbeat": "2099-01-01T00:00:00Z",
            "phase": "Ready",
            "hub": "x",
            "syncedRevision": 99,
            "syncedEpoch": "forged",
            "drains": {"x": "2099-01-01T00:00:00Z"},
        },
        0,
    )
    assert w.due(2)[0].status == {"agentVersion": "1"}


def test_changes_coalesce_to_one_write_per_min_interval_latest_wins() -> None:
    w = writes()
    connected(w, {"agentVersion": "1"})
    report(w, {"agentVersion": "2"}, 0.2)
    report(w, {"agentVersion": "3"}, 0.5)
    assert w.due(0.9) == []
    assert w.next_deadline() == 1.0
    assert [x.status["agentVersion"] for x in w.due(1.0)] == ["3"]
    report(w, {"agentVersion": "4"}, 5)
    assert [x.status["agentVersion"] for x in w.due(5)] == ["4"], "after a quiet spell a change goes at once"


def instance(revision: str, ready: bool) -> dict[str, object]:
    return {"workloads": {"cache": {"revision": revision, "ready": ready, "restarts": 0}}}


def test_instance_readiness_changes_go_at_once_from_a_small_allowance() -> None:
    w = writes()
    connected(w, instance("r1", True))
    for at, (revision, ready) in [(0.1, ("r1", False)), (0.2, ("r2", False)), (0.3, ("r2", True))]:
        report(w, instance(revision, ready), at)
        assert [x.status["workloads"] for x in w.due(at)] == [instance(revision, ready)["workloads"]], at
    report(w, instance("r2", False), 0.4)  # a fourth change inside the second: the allowance is spent
    assert w.due(0.4) == [] and w.next_deadline() == 1.3
    report(w, {**instance("r2", False), "agentVersion": "2"}, 5)
    assert len(w.due(5)) == 1
    report(w, {**instance("r2", False), "agentVersion": "3"}, 5.2)  # not an instance change: min_interval
    assert w.due(5.2) == [] and w.next_deadline() == 6.0


def test_a_flapping_instance_gets_one_write_per_min_interval() -> None:
    w = writes()
    connected(w, instance("r1", True))
    written = 0
    for step in range(1, 101):  # ten seconds of a readiness flipping every 0.1 s
        report(w, instance("r1", step % 2 == 0), step / 10)
        written += len(w.due(step / 10))
    assert written <= 3 + 10


def test_lazy_fields_wait_for_the_lazy_interval_plus_jitter_or_ride_along() -> None:
    w = writes()
    connected(w, {"agentVersion": "1", "cache": {"requests": 1}})
    report(w, {"agentVersion": "1", "cache": {"requests": 2}}, 2)
    deadline = w.next_deadline()
    assert deadline is not None and 30 <= deadline <= 45
    report(w, {"agentVersion": "1", "cache": {"requests": 3}}, 10)
    assert w.next_deadline() == deadline, "the jitter is drawn once per pending change"
    assert w.due(deadline - 0.01) == []
    assert [x.status["cache"] for x in w.due(deadline)] == [{"requests": 3}]
    report(w, {"agentVersion": "2", "cache": {"requests": 4}}, deadline + 2)
    assert [x.status for x in w.due(deadline + 2)] == [
        {"agentVersion": "2", "cache": {"requests": 4}, "syncedRevision": 7, "syncedEpoch": "epoch-1"}
    ], "rides along"


def test_busy_nodes_spread_their_lazy_writes() -> None:
    w = writes()
    for i in range(200):
        w.report(f"n{i}", {"cache": {"requests": 0}}, now=0, wall=WALL, peers=frozenset())
        w.synced(f"n{i}", 1, "e", now=0)
    assert len(w.due(0)) == 200
    for i in range(200):
        w.report(f"n{i}", {"cache": {"requests": 1}}, now=1, wall=WALL, peers=frozenset())
    times = sorted(w._nodes[f"n{i}"].lazy_due or 0 for i in range(200))
    assert times[0] >= 30 and times[-1] - times[0] > 10, "not all at once"


def test_the_lazy_interval_grows_with_the_fleet_to_hold_the_write_budget() -> None:
    w = writes(Intervals(lazy_interval=5, lazy_writes_per_second=50))
    for i in range(10_000):
        w.report(f"n{i}", {"cache": {"requests": 0}}, now=0, wall=WALL, peers=frozenset())
        w.synced(f"n{i}", 1, "e", now=0)
    assert len(w.due(0)) == 10_000
    for i in range(10_000):
        w.report(f"n{i}", {"cache": {"requests": 1}}, now=1, wall=WALL, peers=frozenset())
    due = sorted(w._nodes[f"n{i}"].lazy_due or 0 for i in range(10_000))
    assert due[0] >= 200, "10,000 nodes / 50 writes per second: every 200 s at most"
    assert sum(1 for t in due if t < 210) < 10_000 * 0.15, "and spread over the next 100 s (about 10% a 10 s)"
    small = writes(Intervals(lazy_interval=5, lazy_writes_per_second=50))
    connected(small, {"cache": {"requests": 0}})
    report(small, {"cache": {"requests": 1}}, 1)
    deadline = small.next_deadline()
    assert deadline is not None and 5 <= deadline <= 7.5, "a small fleet sees its counters within seconds"


def test_unchanged_status_is_refreshed_every_refresh_interval_with_jitter() -> None:
    w = writes()
    connected(w, {"agentVersion": "1"})
    deadline = w.next_deadline()
    assert deadline is not None and 240 <= deadline <= 360
    assert w.due(deadline - 0.01) == []
    assert len(w.due(deadline)) == 1


def test_refresh_times_are_spread_over_a_fleet() -> None:
    w = writes()
    for i in range(200):
        w.report(f"n{i}", {"agentVersion": "1"}, now=0, wall=WALL, peers=frozenset())
    assert len(w.due(2)) == 200
    refresh = sorted(w._nodes[f"n{i}"].refresh_at for i in range(200))
    assert refresh[-1] - refresh[0] > 60, "a fleet that connected together does not refresh together"


def test_votes_keep_only_site_peers_and_carry_the_cloud_time_of_the_last_change() -> None:
    w = writes()
    votes = {"b": {"healthy": True, "at": "2099-01-01T00:00:00Z"}, "zz": {"healthy": False, "at": WALL}}
    report(w, {"peerVotes": votes}, 0, wall="2026-12-07T00:00:00Z")
    assert w.due(2)[0].status["peerVotes"] == {"b": {"healthy": True, "at": "2026-12-07T00:00:00Z"}}
    confirmed = {"b": {"healthy": True, "at": "2026-12-07T00:00:09Z"}}
    report(w, {"peerVotes": confirmed}, 9, wall="2026-12-07T00:00:09Z")
    assert w.due(9) == [], "a confirmation of the same verdict is no change"
    report(w, {"peerVotes": {"b": {"healthy": False}}}, 12, wall="2026-12-07T00:00:12Z")
    assert w.due(12)[0].status["peerVotes"] == {"b": {"healthy": False, "at": "2026-12-07T00:00:12Z"}}


def test_forget_and_failed() -> None:
    w = writes()
    report(w, {"agentVersion": "1"}, 0)
    w.forget("a")
    assert w.due(5) == [] and w.next_deadline() is None
    connected(w, {"agentVersion": "1"}, 10)
    w.failed("a", 10)
    assert w.due(10.5) == [] and len(w.due(11)) == 1, "a failed write is retried"


def test_merge_patch_removes_map_keys_the_report_no_longer_has() -> None:
    stored = {"workloads": {"old": {"ready": True}, "web": {"ready": True}}, "peerVotes": {"b": {"healthy": True}}}
    patch = merge_patch_for({"workloads": {"web": {"ready": False}}}, stored)
    assert patch == {"workloads": {"old": None, "web": {"ready": False}}, "peerVotes": {"b": None}}


def test_a_reported_cache_replaces_the_stored_one_whole_nested_domains_too() -> None:
    stored = {
        "cache": {"requests": 5, "offload": 0.9, "domains": {"shop": {"requests": 3, "peer": 2}, "gone": {"peer": 1}}}
    }
    patch = merge_patch_for({"cache": {"requests": 6, "domains": {"shop": {"requests": 4}}}}, stored)
    assert patch == {
        "cache": {"requests": 6, "offload": None, "domains": {"gone": None, "shop": {"requests": 4, "peer": None}}}
    }, "a quiet window has no offload; a Domain no longer reported is gone"
    assert merge_patch_for({"phase": "Ready"}, stored) == {"phase": "Ready"}, "no cache reported: left as it is"
