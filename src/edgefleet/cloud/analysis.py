"""Rollout analysis: compare the updated nodes with the rest over one window (pure).

How: the workload controller takes a :class:`Sample` of every node of the
Workload when a batch's analysis window opens and another when it closes
(:func:`sample_of` reads what agents report in ``Node.status``: the cache's
counters and the workload instance's restarts and probe failures).
:func:`evaluate` turns the two into one figure per group and metric and
judges each :class:`~edgefleet.api.rollouts.MetricCheck`:

- ``errorRate`` and ``upstreamErrorRate``: the group's 5xx responses (or
  failed upstream fetches) over its requests in the window; fewer than
  ``minRequests`` requests makes the figure unknown;
- ``latencyP99Ms``: the mean of the nodes' last-minute p99 at the window's
  end (nodes that served nothing are left out);
- ``restarts`` and ``probeFailures``: per node, over the window.

``max`` bounds the updated group's figure; ``maxIncrease`` bounds how far it
may exceed the baseline (the nodes of the same sites still on the stable
revision; the whole stable rest when those sites have none). An unknown
figure makes the check inconclusive: the controller watches up to
:data:`~edgefleet.cloud.controllers.workloads.MAX_EXTRA_WINDOWS` more windows
(the figures may only be late: agents report counters lazily), then it
passes and the message says so (a quiet canary must not block a rollout
forever; ``max`` on ``restarts`` still catches a crashing one). A counter that went down, or whose instance
changed revision during the window (a new process), counts from zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.api.rollouts import MetricCheck
from edgefleet.cloud.rollouts import Verdict


@dataclass(frozen=True, slots=True)
class Sample:
    """One node's counters at one moment."""

    requests: int = 0
    server_errors: int = 0
    upstream_errors: int = 0
    latency_p99_ms: float | None = None
    restarts: int = 0
    probe_failures: int = 0
    revision: str | None = None
    """The instance's revision: a change restarts every counter (a new process, a new instance)."""


def sample_of(node: Mapping[str, Any], workload: str) -> Sample:
    """A node's counters from its stored document (missing figures are zero)."""
    status = node.get("status") or {}
    cache = status.get("cache") or {}
    instance = (status.get("workloads") or {}).get(workload) or {}
    latency = cache.get("latencyP99Ms")
    return Sample(
        requests=int(cache.get("requests") or 0),
        server_errors=int(cache.get("serverErrors") or 0),
        upstream_errors=int(cache.get("upstreamErrors") or 0),
        latency_p99_ms=float(latency) if isinstance(latency, (int, float)) else None,
        restarts=int(instance.get("restarts") or 0),
        probe_failures=int(instance.get("probeFailures") or 0),
        revision=instance.get("revision"),
    )


def _delta(start: Sample, end: Sample, field: str) -> int:
    """``field``'s increase over the window; from zero when the counter restarted (it went down, or the
    instance changed revision in between, which restarts the process and its counters)."""
    before, after = int(getattr(start, field)), int(getattr(end, field))
    return after if after < before or start.revision != end.revision else after - before


def figure(
    check: MetricCheck, nodes: Iterable[str], start: Mapping[str, Sample], end: Mapping[str, Sample]
) -> float | None:
    """The group's figure for ``check.metric`` over the window; None when unknown."""
    names = [name for name in nodes if name in end]
    if not names:
        return None
    before = {name: start.get(name, Sample()) for name in names}
    metric = check.metric
    if metric in ("errorRate", "upstreamErrorRate"):
        field = "server_errors" if metric == "errorRate" else "upstream_errors"
        requests = sum(_delta(before[n], end[n], "requests") for n in names)
        errors = sum(_delta(before[n], end[n], field) for n in names)
        return None if requests < max(1, check.min_requests) else errors / requests
    if metric == "latencyP99Ms":
        values = [latency for n in names if (latency := end[n].latency_p99_ms) is not None]
        return sum(values) / len(values) if values else None
    field = "restarts" if metric == "restarts" else "probe_failures"
    return sum(_delta(before[n], end[n], field) for n in names) / len(names)


def evaluate(
    checks: Iterable[MetricCheck],
    start: Mapping[str, Sample],
    end: Mapping[str, Sample],
    updated: Iterable[str],
    baseline: Iterable[str],
) -> Verdict:
    """Judge every check; the first failure decides (its message names the figures)."""
    updated, baseline = list(updated), list(baseline)
    notes: list[str] = []
    unknown = False
    for check in checks:
        mine = figure(check, updated, start, end)
        theirs = figure(check, baseline, start, end)
        failure = _failure(check, mine, theirs)
        if failure is not None:
            return Verdict(False, failure)
        unknown = unknown or mine is None
        notes.append(_note(check, mine, theirs))
    return Verdict(True, "; ".join(notes) or "no metric checks", inconclusive=unknown)


def _failure(check: MetricCheck, mine: float | None, theirs: float | None) -> str | None:
    if mine is None:
        return None
    if check.max is not None and mine > check.max:
        return f"{check.metric} of the updated nodes is {mine:.4g}, above max {check.max:g}"
    if check.max_increase is not None and theirs is not None and mine - theirs > check.max_increase:
        return (
            f"{check.metric} of the updated nodes is {mine:.4g}, {mine - theirs:.4g} above the others' "
            f"{theirs:.4g} (maxIncrease {check.max_increase:g})"
        )
    return None


def _note(check: MetricCheck, mine: float | None, theirs: float | None) -> str:
    if mine is None:
        return f"{check.metric}: inconclusive (too little traffic on the updated nodes)"
    other = "n/a" if theirs is None else f"{theirs:.4g}"
    return f"{check.metric} {mine:.4g} (others {other})"
