"""Rollouts: how a Workload moves its nodes from one template revision to the next.

How: the strategy lives on the Workload (``spec.strategy``), like a
Kubernetes Deployment's, rather than in a separate Rollout kind: one object
says what runs and how it may change, ``edgefleet apply`` of a new template
starts a rollout with no second object to keep in step, and the admission
checks need to look at one document. Host version maps (``spec.pins``) sit
beside it for the same reason. Which revision each node runs is decided by
the workload controller (:mod:`edgefleet.cloud.rollouts` is the pure rule)
and written to ``status.nodeRevisions``; the per-node view projects that
revision's template, so agents need no rollout logic.

Steps run in order. A batch step (``nodes``, ``percent`` or ``selector``)
moves nodes until the step's target is reached; a ``pause`` waits a number
of seconds, or until ``edgefleet rollout resume``. After the last step every
remaining node moves. With ``analysis`` set, every batch is watched for
``intervalSeconds`` once its nodes have settled, and a failed check rolls
the updated nodes back (see :class:`AnalysisSpec`).

Unavailability: a node counts as unavailable from the start of its drain
until it runs the new revision, ready, and has settled, and also while it is
not Ready, its instance is not ready, or it is drained by hand: the budgets
(``maxUnavailable``, ``maxUnavailablePerSite``) count all of these, so a
site with one broken node and a budget of one waits.

Why the control fields (``status.rollout.resumedStep`` and ``abort``) are in
status: they are signals to the controller about the rollout in progress,
as Argo Rollouts' promote and abort are; a template edit starts a new
rollout and clears them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from edgefleet.api.common import CaBundle, Count, PositiveSeconds, Seconds, Timestamp, check_https_for_ca_bundle
from edgefleet.api.common import Condition as Condition  # defined there so Node can use it without this module
from edgefleet.api.errors import FieldValueError
from edgefleet.api.meta import Model
from edgefleet.api.selectors import SelectorText

_PERCENT = re.compile(r"^([0-9]{1,3})%$")


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 1:
            raise ValueError("must be at least 1 (a budget of 0 would never let a node move)")
        return value
    match = _PERCENT.match(value)
    if match is None or not 1 <= int(match.group(1)) <= 100:
        raise ValueError(f"{value!r}: expected a count such as 2 or a percentage from 1% to 100% such as '25%'")
    return value


IntOrPercent = Annotated[int | str, AfterValidator(_check_int_or_percent)]
"""A count (``2``) or a percentage of the nodes concerned (``'25%'``)."""


def resolve_budget(value: int | str, total: int) -> int:
    """A budget as a node count: percentages round down, but never below 1 (so a rollout can move)."""
    if isinstance(value, int):
        return value
    return max(1, total * int(value.rstrip("%")) // 100)


class Pause(Model):
    """Wait before the next step."""

    seconds: Seconds | None = Field(
        default=None, description="Seconds to wait; unset waits until `edgefleet rollout resume`."
    )


class RolloutStep(Model):
    """One step: a batch (exactly one of nodes, percent, selector) or a pause."""

    nodes: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Move nodes until this many run the new revision (a canary: 1)."
    )
    percent: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None, description="Move nodes until this percentage of the selected nodes run the new revision."
    )
    selector: SelectorText | None = Field(
        default=None, description="Move the nodes this label selector picks (a canary by label or site)."
    )
    pause: Pause | None = Field(default=None, description="Wait, for seconds or until resumed.")

    @model_validator(mode="after")
    def _one_kind(self) -> RolloutStep:
        if sum(item is not None for item in (self.nodes, self.percent, self.selector, self.pause)) != 1:
            raise ValueError("set exactly one of nodes, percent, selector or pause")
        return self


class DrainSpec(Model):
    """How a node is taken out of GSLB answers before its workload changes."""

    enabled: bool = Field(default=True, description="Drain nodes before switching them; false switches at once.")
    seconds: Seconds = Field(
        default=0,
        description="Seconds to wait after the DNS TTL (the longest routing.ttl of the Domains the node "
        "serves), for clients that hold on to a resolved address.",
    )
    until_request_rate_below: float | None = Field(
        default=None,
        ge=0,
        description="Also end the drain as soon as the node serves fewer requests per second than this "
        "(measured from its cache counters), once the DNS TTL has passed.",
    )


Metric = Literal["errorRate", "upstreamErrorRate", "latencyP99Ms", "restarts", "probeFailures"]


class MetricCheck(Model):
    """One figure compared between the updated nodes and the rest, over the analysis window."""

    metric: Metric = Field(
        description="errorRate: 5xx responses / requests; upstreamErrorRate: failed origin or parent fetches "
        "/ requests; latencyP99Ms: mean of the nodes' p99 response time; restarts and probeFailures: per node, "
        "of this workload's instance.",
    )
    max: float | None = Field(default=None, ge=0, description="Fail when the updated nodes' figure exceeds this.")
    max_increase: float | None = Field(
        default=None,
        ge=0,
        description="Fail when the updated nodes' figure exceeds the not-yet-updated nodes' of the same sites "
        "by more than this (same window).",
    )
    min_requests: Count = Field(
        default=20,
        description="Rates need at least this many requests in each group; fewer makes the check inconclusive "
        "(it passes, and says so).",
    )

    @model_validator(mode="after")
    def _some_bound(self) -> MetricCheck:
        if self.max is None and self.max_increase is None:
            raise ValueError("set max, maxIncrease or both")
        return self


class WebhookCheck(Model):
    """An external check: POSTed the batch, a 2xx answer passes."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="URL POSTed a JSON summary of the batch; any 2xx passes, anything else fails.",
    )
    timeout_seconds: PositiveSeconds = Field(
        default=10, le=300, description="Seconds before the call counts as failed."
    )
    failure_policy: Literal["Fail", "Ignore"] = Field(
        default="Fail", description="What an unreachable webhook or a timeout means."
    )
    ca_bundle: CaBundle | None = Field(
        default=None,
        description="PEM CA certificates that sign the webhook's https certificate, trusted instead of the "
        "system CAs (a check behind a private or self-signed CA).",
    )

    @model_validator(mode="after")
    def _https_for_ca_bundle(self) -> WebhookCheck:
        check_https_for_ca_bundle(self.url, self.ca_bundle)
        return self


class AnalysisSpec(Model):
    """Verification of every batch; a failure stops the rollout and rolls the updated nodes back."""

    interval_seconds: PositiveSeconds = Field(
        default=30, le=86400, description="Seconds every batch is watched for, once its nodes have settled."
    )
    metrics: list[MetricCheck] = Field(default_factory=list, max_length=16, description="Figures to compare.")
    webhook: WebhookCheck | None = Field(default=None, description="An external check, e.g. a Prometheus query.")


class RolloutStrategy(Model):
    """How a template change reaches the nodes."""

    max_unavailable: IntOrPercent = Field(
        default="25%", description="Nodes (count or percentage of the selected ones) unavailable at once, fleet-wide."
    )
    max_unavailable_per_site: IntOrPercent = Field(
        default=1, description="Nodes (count or percentage of the site's selected ones) unavailable at once per site."
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=64,
        description="Batches and pauses, in order; after the last one every remaining node moves.",
    )
    drain: DrainSpec = Field(default_factory=DrainSpec, description="Taking a node out of GSLB answers first.")
    settle_seconds: Seconds = Field(
        default=0, description="Seconds a node stays drained after its new instance is ready."
    )
    progress_deadline_seconds: PositiveSeconds = Field(
        default=600,
        description="A connected node whose new instance is not ready after this many seconds fails the rollout.",
    )
    analysis: AnalysisSpec | None = Field(default=None, description="Verification of every batch.")


class VersionPin(Model):
    """A host version map entry: the nodes a selector picks run a given revision, whatever rolls out."""

    selector: SelectorText = Field(
        description="Label selector over Node labels, e.g. 'edgefleet.io/node=edge-a1' or 'ab-test=b'."
    )
    revision: Annotated[int, Field(ge=1)] = Field(description="Revision number (see `edgefleet rollout history`).")

    @model_validator(mode="after")
    def _not_empty(self) -> VersionPin:
        if not self.selector.strip():
            raise FieldValueError(("selector",), "must pick some nodes; an empty selector would pin every node")
        return self


class NodeStep(Model):
    """A node on its way to another revision."""

    to: str = Field(min_length=1, max_length=64, description="The revision it moves to.")
    phase: Literal["Draining", "Updating", "Settling"] = Field(description="Where it is.")
    since: Timestamp = Field(description="When it entered this phase.")


class SiteCounts(Model):
    """One site's nodes of a Workload."""

    desired: Count = Field(default=0, description="Nodes of the site the selector picks.")
    updated: Count = Field(default=0, description="Of those, nodes running the update revision.")
    ready: Count = Field(default=0, description="Nodes whose instance is ready.")
    available: Count = Field(default=0, description="Ready instances on Ready nodes that are not drained.")
    unavailable: Count = Field(default=0, description="desired - available: what the site budget counts.")


RolloutPhase = Literal["Progressing", "Paused", "Analyzing", "Completed", "Failed", "Aborted", "RollingBack"]


class RolloutState(Model):
    """The rollout in progress (or the last one), as the workload controller keeps it."""

    phase: RolloutPhase = Field(description="Where the rollout is.")
    target: str = Field(min_length=1, max_length=64, description="The revision the nodes move to.")
    target_number: int | None = Field(default=None, description="Its revision number.")
    step: Count = Field(default=0, description="Index of the current step in spec.strategy.steps.")
    step_started_at: Timestamp | None = Field(default=None, description="When the current step started.")
    resumed_step: int | None = Field(default=None, description="Set by `rollout resume`: the pause step that may end.")
    abort: bool = Field(default=False, description="Set by `rollout abort`: move the updated nodes back.")
    analysis_started_at: Timestamp | None = Field(default=None, description="When the current batch's analysis began.")
    failed_revision: str | None = Field(
        default=None,
        description="A revision rolled back after a failed batch or an abort; not retried until the template changes.",
    )
    nodes: dict[str, NodeStep] = Field(default_factory=dict, description="Nodes on their way, by name.")
    waiting: list[str] = Field(
        default_factory=list, description="Nodes skipped because they are not Ready; they move when they return."
    )
    message: str = Field(default="", max_length=4096, description="What the rollout is doing or why it stopped.")
