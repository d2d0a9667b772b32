"""The rollout rule: which revision each node of a Workload runs, and how nodes move (pure).

How: :func:`plan` takes one Workload (spec and the status the controller
wrote last), the facts about the nodes its selector picks, the revision
numbers, the time and, when an analysis window just ended, its verdict; it
returns the status to write, the nodes that must be drained for the GSLB, and
the Events to record. The workload controller
(:mod:`edgefleet.cloud.controllers.workloads`) is the asyncio shell that
reads, calls this every round and writes; everything it needs to carry on
after a restart is in the status, so a new leader resumes where the old one
stopped.

Revisions: ``status.currentRevision`` is the *stable* revision; every node
not listed in ``status.nodeRevisions`` runs it. A Workload seen for the first
time (or an existing one after an upgrade) adopts its template as stable at
once: there is nothing to move from. A template change makes the update
revision differ from the stable one, and a rollout moves nodes over.

Which revision a node should run (``desired``), in order: the first pin
whose selector picks it; the stable revision when nothing rolls forward
(also while rolling back); the rollout's target when the node is already
on it or on its way; the stable revision otherwise. A node whose assigned
revision differs from its desired one *moves*:

1. Draining (skipped when ``strategy.drain.enabled`` is false): the node is
   out of GSLB answers (``Node.status.drains``) until its move ends; it
   waits the DNS TTL of the Domains it serves plus ``drain.seconds``, or
   until its request rate is under ``drain.untilRequestRateBelow`` once the
   TTL has passed.
2. Updating: the assignment changes, the per-node view carries the new
   template, the agent runs preStop, replaces the process and probes it.
   It ends when the node reports the new revision ready. A connected node
   that is not there after ``progressDeadlineSeconds`` fails a forward
   rollout.
3. Settling: ``settleSeconds`` more, drained; an instance that turns
   unready here fails a forward rollout. Then the drain ends.

Budgets: a move starts only when it keeps the site's and the fleet's
unavailable nodes within ``maxUnavailablePerSite`` and ``maxUnavailable``.
Unavailable: moving, not Ready, instance not ready, or drained by hand
(``spec.draining``). A node that is already unavailable may always move (it
costs nothing more). Nodes that are not Ready are never started: they are
listed in ``rollout.waiting`` and move when they return; they do not block
other sites, and a rollout whose only missing nodes are waiting completes
(the stable revision switches; the stragglers keep their old assignment
in ``nodeRevisions`` and move once back).

Steps (forward only): a batch step moves nodes in an order spread over the
sites (each site's first node, then each site's second, ...) until its goal
is met or no node can be started; ``pause`` waits. After a batch, with
``analysis`` set, the rollout is ``Analyzing`` for ``intervalSeconds`` and
the shell's verdict decides. Also without analysis, an updated node whose
instance turns unready while connected fails the rollout.

Failure (a verdict, a deadline, an unready instance) or ``rollout abort``:
the target is recorded as ``failedRevision`` and every node moves back to
the stable revision with the same drain steps; the rollout ends ``Failed``
(or ``Aborted``) and the template is not retried until it changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from edgefleet.api.common import format_timestamp, parse_timestamp
from edgefleet.api.rollouts import (
    Condition,
    NodeStep,
    RolloutState,
    RolloutStep,
    SiteCounts,
    resolve_budget,
)
from edgefleet.api.selectors import Selector, parse_selector
from edgefleet.api.workloads import WorkloadSpec, WorkloadStatus

DRAINING: Final = "Draining"
UPDATING: Final = "Updating"
SETTLING: Final = "Settling"
FINISHED_PHASES = frozenset({"Completed", "Failed", "Aborted"})


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the rule needs to know of one selected node."""

    name: str
    site: str
    labels: Mapping[str, str]
    ready: bool
    """Node.status.phase is Ready (connected to a hub, or recently)."""
    drained_by_hand: bool = False
    running: str | None = None
    """The revision its agent reports for this workload."""
    instance_ready: bool = False
    dns_ttl: float = 0.0
    """Longest DNS TTL (seconds) of the Domains its site serves."""
    request_rate: float | None = None
    """Requests per second it served lately, from its cache counters; None: unknown."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of an analysis window: passed True/False, or None to start the window again."""

    passed: bool | None
    message: str
    inconclusive: bool = False
    """A pass only because some figure was unknown (too little traffic on the updated nodes)."""


@dataclass(frozen=True, slots=True)
class RolloutInput:
    workload: str
    generation: int | None
    spec: WorkloadSpec
    status: WorkloadStatus
    update: str
    """Revision (hash) of spec.template."""
    numbers: Mapping[str, int]
    """Revision hash -> number, for this workload's kept revisions."""
    nodes: Sequence[NodeFacts]
    now: datetime
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class EventNote:
    reason: str
    message: str
    type: str = "Normal"


@dataclass(slots=True)
class Decision:
    status: WorkloadStatus
    drained: set[str]
    """Nodes that must be out of GSLB answers for this workload (those moving, when drains are enabled)."""
    events: list[EventNote] = field(default_factory=list)
    moves_started: int = 0


def analysis_due(spec: WorkloadSpec, status: WorkloadStatus, now: datetime) -> bool:
    """Whether an analysis window has ended and the shell must compute a verdict for the next :func:`plan`."""
    rollout = status.rollout
    analysis = spec.strategy.analysis
    if rollout is None or rollout.phase != "Analyzing" or analysis is None or rollout.analysis_started_at is None:
        return False
    return _elapsed(rollout.analysis_started_at, now) >= analysis.interval_seconds


def plan(inp: RolloutInput) -> Decision:
    """One round of the rule for one Workload; see the module docstring."""
    return _Round(inp).run()


def precise_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds: drain and settle times are measured from these, so whole seconds
    (:func:`~edgefleet.api.common.format_timestamp`) would end them up to a second early."""
    return format_timestamp(moment)[:-1] + f".{moment.astimezone(UTC).microsecond // 1000:03d}Z"


def _elapsed(since: str, now: datetime) -> float:
    return (now - parse_timestamp(since)).total_seconds()


@dataclass(slots=True)
class _Budget:
    per_site: dict[str, int]
    site_limit: dict[str, int]
    total: int
    limit: int

    def admits(self, node: NodeFacts, already_unavailable: bool) -> bool:
        if already_unavailable:
            return True
        return self.per_site.get(node.site, 0) < self.site_limit.get(node.site, 1) and self.total < self.limit

    def take(self, node: NodeFacts, already_unavailable: bool) -> None:
        if not already_unavailable:
            self.per_site[node.site] = self.per_site.get(node.site, 0) + 1
            self.total += 1


class _Round:
    """The state of one :func:`plan` call (kept in one object so each step is a short method)."""

    def __init__(self, inp: RolloutInput) -> None:
        self.inp = inp
        self.now = inp.now
        self.stamp = precise_timestamp(inp.now)
        self.strategy = inp.spec.strategy
        self.status = _private_copy(inp.status)
        self.events: list[EventNote] = []
        self.moves_started = 0
        self.nodes = {node.name: node for node in inp.nodes}
        self.stable = self.status.current_revision or inp.update
        self.assigned = dict(self.status.node_revisions or {})
        self.rollout = self.status.rollout
        self.pins = self._pin_map()

    # --- the round ---------------------------------------------------------

    def run(self) -> Decision:
        if self.status.current_revision is None:
            self._adopt()
        self.target = self._target()
        self._start_or_continue()
        if self.rollout is not None:
            self._progress_moves()
            self._check_updated_health()
            self._advance()
            self._start_moves()
            self._finish()
        self._write_counts()
        drained = set(self._moving()) if self.strategy.drain.enabled else set()
        return Decision(self.status, drained, self.events, self.moves_started)

    def _adopt(self) -> None:
        self.status.current_revision = self.inp.update
        self.stable = self.inp.update

    def _target(self) -> str:
        rollout = self.rollout
        if rollout is not None and rollout.failed_revision == self.inp.update:
            return self.stable  # failed or aborted: not retried until the template changes
        if rollout is not None and rollout.abort and rollout.target == self.inp.update != self.stable:
            self._fail("aborted by `edgefleet rollout abort`", aborted=True)
            return self.stable
        return self.inp.update

    def _start_or_continue(self) -> None:
        rollout = self.rollout
        off_stable = any(self._desired(node) != self._assigned(node.name) for node in self.nodes.values())
        if self.target != self.stable and (rollout is None or rollout.target != self.target):
            moving = rollout.nodes if rollout is not None else {}
            self.rollout = RolloutState(
                phase="Progressing",
                target=self.target,
                target_number=self.inp.numbers.get(self.target),
                step=0,
                step_started_at=self.stamp,
                nodes=dict(moving),
                message=f"rolling out revision {self._number(self.target)}",
            )
            self._event(
                "RolloutStarted",
                f"rolling out revision {self._number(self.target)} "
                f"(from {self._number(self.stable)}) to {len(self.nodes)} nodes",
            )
        elif rollout is None and off_stable:
            self.rollout = RolloutState(
                phase="Progressing",
                target=self.stable,
                target_number=self.inp.numbers.get(self.stable),
                step_started_at=self.stamp,
                message="moving nodes to their assigned revision",
            )

    # --- moves in progress ---------------------------------------------------

    def _moving(self) -> dict[str, NodeStep]:
        return self.rollout.nodes if self.rollout is not None else {}

    def _progress_moves(self) -> None:
        moving = self._moving()
        for name in sorted(moving):
            node = self.nodes.get(name)
            if node is None:
                del moving[name]  # deleted, or no longer selected
                continue
            self._progress(node, moving)

    def _progress(self, node: NodeFacts, moving: dict[str, NodeStep]) -> None:
        step = moving[node.name]
        desired = self._desired(node)
        if step.phase == DRAINING and step.to != desired:
            step.to = desired  # the goal changed (a failure, a pin) before anything was switched
        if step.phase == DRAINING:
            if step.to == self._assigned(node.name):
                del moving[node.name]
            elif self._drained(node, step):
                self._switch(node, step)
        elif step.phase == UPDATING:
            self._check_updating(node, step, moving)
        elif step.phase == SETTLING:
            self._check_settling(node, step, moving)

    def _drained(self, node: NodeFacts, step: NodeStep) -> bool:
        drain = self.strategy.drain
        if not drain.enabled:
            return True
        elapsed = _elapsed(step.since, self.now)
        if elapsed >= node.dns_ttl + drain.seconds:
            return True
        threshold = drain.until_request_rate_below
        return (
            threshold is not None
            and elapsed >= node.dns_ttl
            and node.request_rate is not None
            and node.request_rate < threshold
        )

    def _switch(self, node: NodeFacts, step: NodeStep) -> None:
        self._assign(node.name, step.to)
        step.phase, step.since = UPDATING, self.stamp
        self._event("NodeUpdating", f"node {node.name}: switching to revision {self._number(step.to)}")

    def _check_updating(self, node: NodeFacts, step: NodeStep, moving: dict[str, NodeStep]) -> None:
        if node.running == step.to and node.instance_ready:
            step.phase, step.since = SETTLING, self.stamp
            self._check_settling(node, step, moving)
            return
        waited = _elapsed(step.since, self.now)
        if node.ready and waited > self.strategy.progress_deadline_seconds and self._forward(step.to):
            self._fail(
                f"node {node.name}: revision {self._number(step.to)} not ready after {waited:.0f}s "
                f"(progressDeadlineSeconds {self.strategy.progress_deadline_seconds})"
            )

    def _check_settling(self, node: NodeFacts, step: NodeStep, moving: dict[str, NodeStep]) -> None:
        if not (node.running == step.to and node.instance_ready):
            if self._forward(step.to):
                self._fail(f"node {node.name}: revision {self._number(step.to)} became unready while settling")
            else:
                step.phase, step.since = UPDATING, self.stamp
            return
        if _elapsed(step.since, self.now) >= self.strategy.settle_seconds:
            del moving[node.name]
            self._event("NodeUpdated", f"node {node.name}: running revision {self._number(step.to)}, undrained")

    def _forward(self, revision: str) -> bool:
        return self.rollout is not None and revision == self.target != self.stable

    def _check_updated_health(self) -> None:
        """An updated, settled node whose instance turns unready while connected fails a forward rollout."""
        if self.target == self.stable:
            return
        moving = self._moving()
        for name, node in sorted(self.nodes.items()):
            if (
                name not in moving
                and self._assigned(name) == self.target
                and name not in self.pins
                and node.ready
                and node.running == self.target
                and not node.instance_ready
            ):
                self._fail(f"node {name}: revision {self._number(self.target)} is running but not ready")
                return

    # --- failure -------------------------------------------------------------

    def _fail(self, reason: str, *, aborted: bool = False) -> None:
        rollout = self.rollout
        if rollout is None or rollout.failed_revision == rollout.target:
            return
        failed = rollout.target
        rollout.failed_revision = failed
        rollout.phase = "RollingBack"
        rollout.message = (
            f"{'aborted' if aborted else 'failed'}: {reason}; rolling back to revision {self._number(self.stable)}"
        )
        rollout.analysis_started_at = None
        self.target = self.stable
        self._event("RolloutAborted" if aborted else "RolloutFailed", rollout.message, "Warning")
        for name, step in rollout.nodes.items():
            if step.to == failed and step.phase != DRAINING:
                step.to, step.phase, step.since = self.stable, UPDATING, self.stamp
                self._assign(name, self.stable)

    # --- steps ---------------------------------------------------------------

    def _steps(self) -> list[RolloutStep]:
        return self.strategy.steps if self.target != self.stable else []

    def _advance(self) -> None:
        """Go through every step whose end condition holds."""
        rollout = self.rollout
        assert rollout is not None
        steps = self._steps()
        while rollout.step < len(steps) and rollout.phase not in ("RollingBack", *FINISHED_PHASES):
            if not self._step_done(steps[rollout.step]):
                return
            rollout.step += 1
            rollout.step_started_at = self.stamp
            rollout.resumed_step = None
            rollout.phase = "Progressing"
            self._event("StepCompleted", f"step {rollout.step} of {len(steps)} done")
            rollout.message = (
                f"step {rollout.step + 1} of {len(steps)}"
                if rollout.step < len(steps)
                else "moving the remaining nodes"
            ) + f" to revision {self._number(self.target)}"

    def _step_done(self, step: RolloutStep) -> bool:
        rollout = self.rollout
        assert rollout is not None
        if step.pause is not None:
            return self._pause_over(step)
        if rollout.phase == "Analyzing":
            return self._analysis_over()
        if self._moving_to_target() or self._batch_left(step):
            return False
        if self.strategy.analysis is not None:
            rollout.phase, rollout.analysis_started_at = "Analyzing", self.stamp
            rollout.message = f"analysing step {rollout.step + 1} for {self.strategy.analysis.interval_seconds}s"
            return False
        return True

    def _pause_over(self, step: RolloutStep) -> bool:
        rollout = self.rollout
        assert rollout is not None and step.pause is not None
        seconds = step.pause.seconds
        started = rollout.step_started_at or self.stamp
        if seconds is not None and _elapsed(started, self.now) >= seconds:
            return True
        if seconds is None and rollout.resumed_step is not None and rollout.resumed_step >= rollout.step:
            return True
        rollout.phase = "Paused"
        rollout.message = (
            f"paused at step {rollout.step + 1} for {seconds}s"
            if seconds is not None
            else f"paused at step {rollout.step + 1}: `edgefleet rollout resume {self.inp.workload}` continues"
        )
        return False

    def _analysis_over(self) -> bool:
        rollout = self.rollout
        verdict = self.inp.verdict
        assert rollout is not None
        if verdict is None:
            return False
        if verdict.passed is None:
            rollout.analysis_started_at = self.stamp  # no baseline (a controller restart): watch again
            return False
        if not verdict.passed:
            self._fail(f"analysis of step {rollout.step + 1}: {verdict.message}")
            return False
        self._event("AnalysisPassed", f"step {rollout.step + 1}: {verdict.message}")
        rollout.analysis_started_at = None
        return True

    def _moving_to_target(self) -> bool:
        return any(step.to == self.target for step in self._moving().values())

    def _batch_left(self, step: RolloutStep) -> bool:
        """Whether the batch still has nodes it could start."""
        return bool(self._batch_candidates(step, limit=1))

    def _goal(self, step: RolloutStep | None) -> int:
        total = len(self._rolling_nodes())
        if step is None:
            return total
        if step.nodes is not None:
            return min(step.nodes, total)
        if step.percent is not None:
            return min(total, math.ceil(step.percent * total / 100))
        return total  # a selector step: every node it picks

    def _rolling_nodes(self) -> list[NodeFacts]:
        return [node for name, node in self.nodes.items() if name not in self.pins]

    def _batch_candidates(self, step: RolloutStep | None, limit: int | None = None) -> list[NodeFacts]:
        """Nodes the current batch may still start, in spread order, up to its goal."""
        nodes = self._rolling_nodes()
        selector = parse_selector(step.selector) if step is not None and step.selector is not None else None
        if selector is not None:
            nodes = [node for node in nodes if selector.matches(node.labels)]
        on_target = sum(1 for node in self._rolling_nodes() if self._assigned(node.name) == self.target)
        moving = self._moving()
        room = (
            len(nodes)
            if selector is not None
            else self._goal(step) - on_target - sum(1 for s in moving.values() if s.to == self.target)
        )
        pending = [
            node
            for node in nodes
            if self._assigned(node.name) != self.target and node.name not in moving and node.ready
        ]
        ordered = _spread(pending)
        count = room if limit is None else min(room, limit)
        return ordered[: max(0, count)]

    # --- starting moves ------------------------------------------------------

    def _start_moves(self) -> None:
        rollout = self.rollout
        assert rollout is not None
        rollout.waiting = self._waiting()
        if self.inp.spec.paused:
            if rollout.phase not in FINISHED_PHASES:
                rollout.phase, rollout.message = "Paused", "paused (spec.paused): `edgefleet rollout resume` continues"
            return
        budget = self._budget()
        blocked: set[str] = set()
        for node, to in self._wanting_moves():
            unavailable = self._unavailable(node)
            if budget.admits(node, unavailable):
                budget.take(node, unavailable)
                self._begin(node, to)
            else:
                blocked.add(node.site)
        if blocked and not rollout.nodes and rollout.phase == "Progressing":
            rollout.message = (
                f"waiting for the unavailability budget at {', '.join(sorted(blocked)[:5])}: "
                "nodes that are not Ready or not ready count against it"
            )

    def _waiting(self) -> list[str]:
        """Nodes that would move but are not Ready: skipped until they return."""
        forward = self.target != self.stable
        return sorted(
            name
            for name, node in self.nodes.items()
            if not node.ready
            and (
                self._desired(node) != self._assigned(name)
                or (forward and name not in self.pins and self._assigned(name) != self.target)
            )
        )

    def _wanting_moves(self) -> list[tuple[NodeFacts, str]]:
        """(node, revision) to start, Ready nodes only: nodes off their desired revision, then the batch's."""
        moving = self._moving()
        wanting = [
            (node, self._desired(node))
            for name, node in sorted(self.nodes.items())
            if node.ready and name not in moving and self._desired(node) != self._assigned(name)
        ]
        step = self._open_batch()
        if step is not False:
            chosen = {node.name for node, _ in wanting}
            wanting += [(node, self.target) for node in self._batch_candidates(step) if node.name not in chosen]
        return wanting

    def _open_batch(self) -> RolloutStep | Literal[False] | None:
        """The batch step nodes may move in now (None: the final "everything"), or False when none is open."""
        rollout = self.rollout
        if self.target == self.stable or rollout is None or rollout.phase != "Progressing":
            return False
        steps = self._steps()
        step = steps[rollout.step] if rollout.step < len(steps) else None
        return False if step is not None and step.pause is not None else step

    def _begin(self, node: NodeFacts, to: str) -> None:
        rollout = self.rollout
        assert rollout is not None
        step = NodeStep(to=to, phase=DRAINING, since=self.stamp)
        rollout.nodes[node.name] = step
        self.moves_started += 1
        if rollout.phase in FINISHED_PHASES:
            rollout.phase, rollout.message = "Progressing", "moving nodes to their assigned revision"
        if self.strategy.drain.enabled:
            self._event("NodeDraining", f"node {node.name}: draining before revision {self._number(to)}")
        if self._drained(node, step):  # no drain, or nothing to wait for (no Domain, no drain time)
            self._switch(node, step)

    def _budget(self) -> _Budget:
        per_site: dict[str, int] = {}
        desired_per_site: dict[str, int] = {}
        for node in self.nodes.values():
            desired_per_site[node.site] = desired_per_site.get(node.site, 0) + 1
            if self._unavailable(node):
                per_site[node.site] = per_site.get(node.site, 0) + 1
        limits = {
            site: resolve_budget(self.strategy.max_unavailable_per_site, count)
            for site, count in desired_per_site.items()
        }
        total_limit = resolve_budget(self.strategy.max_unavailable, len(self.nodes))
        return _Budget(per_site, limits, sum(per_site.values()), total_limit)

    def _unavailable(self, node: NodeFacts) -> bool:
        return (
            node.name in self._moving()
            or not node.ready
            or node.drained_by_hand
            or not node.instance_ready
            or node.running != self._assigned(node.name)
        )

    # --- completion ------------------------------------------------------------

    def _finish(self) -> None:
        rollout = self.rollout
        assert rollout is not None
        if self._moving() or rollout.phase in FINISHED_PHASES:
            return
        behind = [n for n in self._rolling_nodes() if self._assigned(n.name) != self.target and n.ready]
        pinned_off = [
            n
            for n in self.nodes.values()
            if n.name in self.pins and n.ready and self._assigned(n.name) != self.pins[n.name]
        ]
        if behind or pinned_off or (self.target != self.stable and rollout.step < len(self._steps())):
            return
        self._complete(rollout)

    def _complete(self, rollout: RolloutState) -> None:
        old_stable = self.stable
        if rollout.phase == "RollingBack":
            aborted = rollout.message.startswith("aborted")
            rollout.phase = "Aborted" if aborted else "Failed"
            rollout.message = rollout.message.replace("; rolling back to", "; rolled back to")
            self._event("RollbackCompleted", f"every node runs revision {self._number(self.stable)} again")
        else:
            self.stable = self.target
            rollout.phase = "Completed"
            rollout.message = f"revision {self._number(self.target)} runs on every node"
            if rollout.waiting:
                rollout.message += f" but {len(rollout.waiting)} not Ready (they move when they return)"
            self._event("RolloutCompleted", rollout.message)
        rollout.analysis_started_at = None
        if old_stable != self.stable:
            self.assigned = {name: self._assigned(name, old_stable) for name in self.nodes}

    # --- assignment ------------------------------------------------------------

    def _pin_map(self) -> dict[str, str]:
        """Node -> pinned revision hash (first matching pin; pins naming unknown revisions are ignored)."""
        by_number = {number: revision for revision, number in self.inp.numbers.items()}
        selectors: list[tuple[Selector, str]] = []
        for pin in self.inp.spec.pins:
            revision = by_number.get(pin.revision)
            if revision is not None:
                selectors.append((parse_selector(pin.selector), revision))
        pins: dict[str, str] = {}
        for node in self.inp.nodes:
            for selector, revision in selectors:
                if selector.matches(node.labels):
                    pins[node.name] = revision
                    break
        return pins

    def _assigned(self, name: str, stable: str | None = None) -> str:
        return self.assigned.get(name, stable or self.stable)

    def _assign(self, name: str, revision: str) -> None:
        self.assigned[name] = revision

    def _desired(self, node: NodeFacts) -> str:
        pinned = self.pins.get(node.name)
        if pinned is not None:
            return pinned
        if self.target == self.stable:
            return self.stable
        current = self._assigned(node.name)
        step = self._moving().get(node.name)
        if current == self.target or (step is not None and step.to == self.target):
            return self.target
        return self.stable

    # --- status ------------------------------------------------------------------

    def _write_counts(self) -> None:
        status = self.status
        status.observed_generation = self.inp.generation
        status.current_revision = self.stable
        status.current_revision_number = self.inp.numbers.get(self.stable)
        status.update_revision = self.inp.update
        status.update_revision_number = self.inp.numbers.get(self.inp.update)
        assigned = {
            name: revision
            for name, revision in sorted(self.assigned.items())
            if revision != self.stable and name in self.nodes
        }
        status.node_revisions = assigned or None
        status.rollout = self.rollout
        tally: dict[str, list[int]] = {}  # site -> [desired, updated, ready, unavailable]: plain ints, one model each
        for node in self.nodes.values():
            counts = tally.setdefault(node.site, [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += node.running == self.inp.update == self._assigned(node.name)
            counts[2] += node.instance_ready
            counts[3] += self._unavailable(node)
        sites = {
            site: SiteCounts(desired=d, updated=u, ready=r, available=d - n, unavailable=n)
            for site, (d, u, r, n) in sorted(tally.items())
        }
        status.sites = sites or None
        status.desired_count = len(self.nodes)
        status.updated_count = sum(c.updated for c in sites.values())
        status.ready_count = sum(c.ready for c in sites.values())
        status.unavailable_count = sum(c.unavailable for c in sites.values())
        status.available_count = len(self.nodes) - status.unavailable_count
        status.conditions = self._conditions()

    def _conditions(self) -> list[Condition]:
        rollout = self.rollout
        limit = resolve_budget(self.strategy.max_unavailable, len(self.nodes))
        available = (self.status.unavailable_count or 0) <= limit
        wanted = [
            (
                "Available",
                available,
                "MinimumAvailable" if available else "TooManyUnavailable",
                f"{self.status.available_count} of {self.status.desired_count} nodes available",
            ),
        ]
        if rollout is not None:
            progressing = rollout.phase not in FINISHED_PHASES
            wanted.append(("Progressing", progressing, rollout.phase, rollout.message))
            wanted.append(
                (
                    "Paused",
                    rollout.phase == "Paused",
                    "Paused" if rollout.phase == "Paused" else "Running",
                    rollout.message if rollout.phase == "Paused" else "",
                )
            )
        old = {condition.type: condition for condition in self.status.conditions or []}
        return [self._condition(old.get(kind), kind, holds, reason, message) for kind, holds, reason, message in wanted]

    def _condition(self, old: Condition | None, kind: str, holds: bool, reason: str, message: str) -> Condition:
        status = "True" if holds else "False"
        since = old.last_transition_time if old is not None and old.status == status else self.stamp
        return Condition(type=kind, status=status, reason=reason, message=message[:1024], last_transition_time=since)

    def _number(self, revision: str) -> str:
        number = self.inp.numbers.get(revision)
        return str(number) if number is not None else revision[:8]

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        self.events.append(EventNote(reason, message, kind))


def _private_copy(status: WorkloadStatus) -> WorkloadStatus:
    """A copy of the caller's status that the round may change: the parts it changes in place (the
    rollout, its node steps) are copied; the rest is replaced whole, never mutated (pydantic's deep copy
    of a thousand-node status costs more than the whole round)."""
    rollout = status.rollout
    if rollout is not None:
        rollout = rollout.model_copy(
            update={
                "nodes": {name: step.model_copy() for name, step in rollout.nodes.items()},
                "waiting": list(rollout.waiting),
            }
        )
    return status.model_copy(update={"rollout": rollout})


def _spread(nodes: list[NodeFacts]) -> list[NodeFacts]:
    """Each site's first node (by name), then each site's second, ...: batches touch many sites lightly."""
    by_site: dict[str, list[NodeFacts]] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        by_site.setdefault(node.site, []).append(node)
    ordered: list[NodeFacts] = []
    rank = 0
    while len(ordered) < len(nodes):
        for site in sorted(by_site):
            members = by_site[site]
            if rank < len(members):
                ordered.append(members[rank])
        rank += 1
    return ordered
