"""The pure rollout rule (edgefleet.cloud.rollouts), driven round by round over a simulated fleet.

The simulated agents switch to their assigned revision one round after the
assignment and report it ready unless the revision is marked bad; the
timeline of every round is kept so budgets are asserted on it, not on
sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgefleet.api.workloads import Workload, WorkloadStatus
from edgefleet.cloud.rollouts import NodeFacts, RolloutInput, Verdict, analysis_due, plan

T0 = datetime(2026, 12, 1, tzinfo=UTC)
OLD, NEW, OTHER = "a" * 16, "b" * 16, "c" * 16
NUMBERS = {OLD: 1, NEW: 2, OTHER: 3}


def workload(strategy: dict[str, Any] | None = None, **spec: Any) -> Workload:
    return Workload.model_validate(
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Workload",
            "metadata": {"name": "cache"},
            "spec": {"template": {"command": ["x"]}, "strategy": strategy or {"drain": {"enabled": False}}, **spec},
        }
    )


@dataclass
class Sim:
    spec: Workload
    sites: int = 3
    per_site: int = 3
    bad: set[str] = field(default_factory=set)
    now: datetime = T0
    status: WorkloadStatus = field(default_factory=lambda: WorkloadStatus(current_revision=OLD))
    ready: dict[str, bool] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)
    timeline: list[WorkloadStatus] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    drained: list[set[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.names():
            self.ready.setdefault(name, True)
            self.running.setdefault(name, OLD)

    def names(self) -> list[str]:
        return [f"s{s}-n{n}" for s in range(self.sites) for n in range(self.per_site)]

    def facts(self) -> list[NodeFacts]:
        return [
            NodeFacts(
                name=name,
                site=name.split("-")[0],
                labels={"edgefleet.io/node": name, "edgefleet.io/site": name.split("-")[0]},
                ready=self.ready[name],
                running=self.running[name],
                instance_ready=self.running[name] not in self.bad,
            )
            for name in self.names()
        ]

    def round(self, update: str = NEW, verdict: Verdict | None = None, seconds: float = 1.0) -> None:
        decision = plan(
            RolloutInput("cache", 1, self.spec.spec, self.status, update, NUMBERS, self.facts(), self.now, verdict)
        )
        self.status = decision.status
        self.timeline.append(decision.status.model_copy(deep=True))
        self.drained.append(decision.drained)
        self.events += [f"{event.reason}: {event.message}" for event in decision.events]
        for name in self.names():  # agents follow their assignment (connected ones only)
            if self.ready[name]:
                self.running[name] = (self.status.node_revisions or {}).get(name, self.status.current_revision or OLD)
        self.now += timedelta(seconds=seconds)

    def run(self, rounds: int = 60, **kwargs: Any) -> None:
        for _ in range(rounds):
            self.round(**kwargs)

    def max_moving_per_site(self) -> int:
        worst = 0
        for status in self.timeline:
            for counts in (status.sites or {}).values():
                worst = max(worst, counts.unavailable)
        return worst


def test_first_sight_adopts_the_template_without_a_rollout() -> None:
    sim = Sim(workload())
    sim.status = WorkloadStatus()
    sim.round(update=OLD)
    assert sim.status.current_revision == OLD and sim.status.rollout is None
    assert sim.status.desired_count == 9 and sim.status.available_count == 9


def test_rolling_update_respects_the_site_budget_and_completes() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "maxUnavailable": "100%"}))
    sim.run(12)
    assert sim.status.current_revision == NEW and sim.status.rollout is not None
    assert sim.status.rollout.phase == "Completed"
    assert sim.status.node_revisions is None
    assert set(sim.running.values()) == {NEW}
    assert sim.max_moving_per_site() == 1
    assert any(len(s.rollout.nodes) == 3 for s in sim.timeline if s.rollout)  # the 3 sites moved in parallel


def test_global_budget_limits_parallel_moves() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "maxUnavailable": 1, "maxUnavailablePerSite": 3}))
    sim.run(30)
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Completed"
    assert max(s.unavailable_count or 0 for s in sim.timeline) == 1


def test_drain_waits_the_dns_ttl_before_switching() -> None:
    sim = Sim(workload({"drain": {"seconds": 3}}), sites=1, per_site=1)
    sim.round()
    assert sim.drained[-1] == {"s0-n0"} and sim.running["s0-n0"] == OLD
    sim.run(2)
    assert sim.running["s0-n0"] == OLD  # 2 s of 3 s drained
    sim.run(4)
    assert sim.running["s0-n0"] == NEW and sim.drained[-1] == set()
    assert [e.split(":")[0] for e in sim.events][:3] == ["RolloutStarted", "NodeDraining", "NodeUpdating"]


def test_canary_then_pause_until_resumed() -> None:
    steps = [{"nodes": 1}, {"pause": {}}, {"percent": 50}]
    sim = Sim(workload({"drain": {"enabled": False}, "steps": steps, "maxUnavailable": "100%"}))
    sim.run(8)
    assert list(sim.running.values()).count(NEW) == 1
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Paused"
    assert sim.status.rollout.step == 1
    sim.status.rollout.resumed_step = 1
    sim.run(6)
    rollout = sim.status.rollout  # a new name: mypy still holds the phase narrowed to "Paused" above
    assert rollout.phase == "Completed"
    on_new_at = [sum(1 for n in (s.node_revisions or {}).values() if n == NEW) for s in sim.timeline]
    assert 5 in on_new_at  # the 50% step (ceil 4.5) held before the final batch


def test_canary_with_a_bad_revision_rolls_back_only_the_canary() -> None:
    strategy = {"drain": {"enabled": False}, "steps": [{"nodes": 1}], "progressDeadlineSeconds": 5}
    sim = Sim(workload(strategy), bad={NEW})
    sim.run(20)
    rollout = sim.status.rollout
    assert rollout is not None and rollout.phase == "Failed" and rollout.failed_revision == NEW
    assert "not ready after" in rollout.message
    ever_new = {n for s in sim.timeline for n, r in (s.node_revisions or {}).items() if r == NEW}
    assert len(ever_new) == 1
    assert set(sim.running.values()) == {OLD} and sim.status.current_revision == OLD
    sim.run(5)  # not retried while the template stays the bad one
    assert set(sim.running.values()) == {OLD}


def test_analysis_failure_rolls_back() -> None:
    strategy = {
        "drain": {"enabled": False},
        "steps": [{"nodes": 2}],
        "analysis": {"intervalSeconds": 3, "metrics": [{"metric": "errorRate", "max": 0.01}]},
    }
    sim = Sim(workload(strategy))
    for _ in range(10):
        due = analysis_due(sim.spec.spec, sim.status, sim.now)
        sim.round(verdict=Verdict(False, "errorRate 0.2 > 0.01") if due else None)
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Failed"
    assert "errorRate 0.2" in sim.status.rollout.message
    assert set(sim.running.values()) == {OLD}


def test_analysis_pass_moves_on() -> None:
    strategy = {
        "drain": {"enabled": False},
        "steps": [{"nodes": 2}],
        "maxUnavailable": "100%",
        "analysis": {"intervalSeconds": 3, "metrics": [{"metric": "errorRate", "max": 0.01}]},
    }
    sim = Sim(workload(strategy))
    phases = []
    for _ in range(20):
        due = analysis_due(sim.spec.spec, sim.status, sim.now)
        sim.round(verdict=Verdict(True, "errorRate 0 <= 0.01") if due else None)
        phases.append(sim.status.rollout.phase if sim.status.rollout else None)
    assert "Analyzing" in phases and phases[-1] == "Completed"


def test_an_updated_instance_turning_unready_fails_the_rollout() -> None:
    strategy = {"drain": {"enabled": False}, "steps": [{"nodes": 1}, {"pause": {}}]}
    sim = Sim(workload(strategy))
    sim.run(5)
    sim.bad.add(NEW)  # its probe starts failing after a while
    sim.run(5)
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Failed"
    assert "not ready" in sim.status.rollout.message


def test_a_not_ready_node_waits_counts_against_its_site_and_moves_when_back() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "maxUnavailable": "100%"}))
    sim.ready["s0-n0"] = False
    sim.run(15)
    rollout = sim.status.rollout
    assert rollout is not None and rollout.phase == "Progressing" and rollout.waiting == ["s0-n0"]
    assert "budget at s0" in rollout.message
    assert sim.running["s0-n1"] == OLD  # site s0's budget is taken by the absent node
    assert all(sim.running[f"s{s}-n{n}"] == NEW for s in (1, 2) for n in range(3))  # other sites not blocked
    sim.ready["s0-n0"] = True
    sim.run(15)
    assert set(sim.running.values()) == {NEW} and sim.status.node_revisions is None
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Completed"


def test_a_rollout_completes_without_a_node_that_stays_away() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "maxUnavailable": "100%", "maxUnavailablePerSite": 2}))
    sim.ready["s0-n0"] = False
    sim.run(15)
    rollout = sim.status.rollout
    assert rollout is not None and rollout.phase == "Completed" and rollout.waiting == ["s0-n0"]
    assert sim.status.current_revision == NEW and sim.status.node_revisions == {"s0-n0": OLD}
    assert "1 not Ready" in rollout.message
    sim.ready["s0-n0"] = True
    sim.run(5)
    assert sim.running["s0-n0"] == NEW and sim.status.node_revisions is None


def test_pins_hold_through_a_rollout_and_unpinning_moves() -> None:
    spec = workload(
        {"drain": {"enabled": False}, "maxUnavailable": "100%"},
        pins=[{"selector": "edgefleet.io/node=s1-n1", "revision": 1}],
    )
    sim = Sim(spec)
    sim.run(12)
    assert sim.running["s1-n1"] == OLD and sim.status.current_revision == NEW
    assert sim.status.node_revisions == {"s1-n1": OLD}
    sim.spec = workload({"drain": {"enabled": False}})
    sim.run(4)
    assert sim.running["s1-n1"] == NEW and sim.status.node_revisions is None


def test_pin_to_a_third_revision_for_an_ab_test() -> None:
    sim = Sim(workload({"drain": {"enabled": False}}, pins=[{"selector": "edgefleet.io/site=s2", "revision": 3}]))
    sim.run(10, update=OLD)
    assert {sim.running[f"s2-n{i}"] for i in range(3)} == {OTHER}
    assert sim.running["s0-n0"] == OLD and sim.max_moving_per_site() == 1


def test_paused_holds_new_moves() -> None:
    sim = Sim(workload({"drain": {"enabled": False}}, paused=True))
    sim.run(5)
    assert set(sim.running.values()) == {OLD}
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Paused"


def test_abort_rolls_back_and_is_not_retried() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "steps": [{"nodes": 2}, {"pause": {}}]}))
    sim.run(6)
    assert list(sim.running.values()).count(NEW) == 2
    assert sim.status.rollout is not None
    sim.status.rollout.abort = True
    sim.run(10)
    assert sim.status.rollout.phase == "Aborted" and set(sim.running.values()) == {OLD}


def test_template_change_back_to_stable_rolls_back() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "steps": [{"nodes": 3}, {"pause": {}}]}))
    sim.run(6)
    sim.run(10, update=OLD)  # `rollout undo`: the template is the stable one again
    assert set(sim.running.values()) == {OLD}
    assert sim.status.rollout is not None and sim.status.rollout.phase == "Completed"


@pytest.mark.parametrize("settle", [0, 3])
def test_settle_keeps_the_node_drained(settle: int) -> None:
    sim = Sim(workload({"settleSeconds": settle}), sites=1, per_site=1)
    sim.run(10)
    drained_rounds = sum(1 for d in sim.drained if d)
    assert sim.running["s0-n0"] == NEW
    assert drained_rounds == 1 + settle  # no Domain, no drain time: it switches at once, then settles


def test_restart_resumes_from_the_status_alone() -> None:
    sim = Sim(workload({"drain": {"enabled": False}, "steps": [{"nodes": 4}]}))
    sim.run(3)
    saved = WorkloadStatus.model_validate(sim.status.model_dump(mode="json", by_alias=True))
    resumed = replace(sim)
    resumed.status = saved
    resumed.run(20)
    assert resumed.status.rollout is not None and resumed.status.rollout.phase == "Completed"


def test_plan_leaves_its_input_alone() -> None:
    sim = Sim(workload({"drain": {"seconds": 5}, "maxUnavailable": "100%"}))
    sim.run(2)
    before = sim.status.model_dump(mode="json")
    plan(RolloutInput("cache", 1, sim.spec.spec, sim.status, NEW, NUMBERS, sim.facts(), sim.now + timedelta(seconds=9)))
    assert sim.status.model_dump(mode="json") == before
