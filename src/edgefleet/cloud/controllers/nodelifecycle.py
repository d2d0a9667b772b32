"""Node lifecycle: mark a node NotReady, then Unknown, when its heartbeats stop.

The rule (:func:`expected_phase`), from ``status.lastHeartbeat`` and now:

- silent for less than ``notReadyAfter`` (default 40 s): Ready;
- silent for ``notReadyAfter`` or more: NotReady;
- silent for ``unknownAfter`` (default 300 s) or more: Unknown;
- never sent a heartbeat: Unknown ("we have never heard from it"), with a
  message saying what to check, so a Node applied from a manifest but never
  joined shows up as such instead of as a blank.

The hub owns ``Ready``: it writes ``lastHeartbeat`` and ``phase: Ready`` with
every status report. This controller only *demotes* (:func:`status_patch`
never returns Ready) and writes nothing but ``status.phase`` and
``status.message``, through the status path, with the node's resourceVersion
as a precondition: when a heartbeat lands between its read and its write
the write fails and the node is judged again next round, so a fresh
heartbeat is never overwritten by a stale verdict. It never changes spec,
never deletes anything, never evicts or moves workloads (edge autonomy: a
quiet node keeps serving from its local state).

Startup grace: silence is measured from ``max(lastHeartbeat, observing
since)``, the moment this controller (the current leader) started. After a
cloud outage or a leader change the nodes get the thresholds' time to
reconnect before they are demoted, instead of all turning NotReady at once
(Kubernetes' node lifecycle controller does the same).

Messages depend only on the stored heartbeat, not on the current time, so an
unchanged verdict writes nothing: the controller costs one list per period
and one write per transition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edgefleet.api.common import parse_timestamp
from edgefleet.api.nodes import INFO as NODES
from edgefleet.cloud.registry import Document, ObjectNotFound, Registry, RegistryError, VersionConflict
from edgefleet.store.interface import StoreError

log = logging.getLogger("edgefleet.cloud.controllers.nodelifecycle")

READY, NOT_READY, UNKNOWN = "Ready", "NotReady", "Unknown"
NEVER_HEARD = (
    "no heartbeat received yet: has the node joined (`edgefleet edge join`) and is its agent running?"
)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a silent node becomes NotReady and Unknown, and how often nodes are checked (seconds)."""

    not_ready_after: float = 40.0
    unknown_after: float = 300.0
    period: float = 5.0

    def __post_init__(self) -> None:
        if self.not_ready_after <= 0 or self.period <= 0:
            raise ValueError("--node-not-ready-after and --node-monitor-period must be positive")
        if self.unknown_after <= self.not_ready_after:
            raise ValueError(
                f"--node-unknown-after ({self.unknown_after:g}s) must be longer than "
                f"--node-not-ready-after ({self.not_ready_after:g}s)"
            )


@dataclass(frozen=True, slots=True)
class Verdict:
    phase: str
    message: str | None


def expected_phase(
    last_heartbeat: str | None,
    now: datetime,
    thresholds: Thresholds,
    *,
    observing_since: datetime | None = None,
) -> Verdict:
    """The phase a node's silence calls for; see the module docstring."""
    heard = _moment(last_heartbeat)
    if heard is None:
        return Verdict(UNKNOWN, NEVER_HEARD)
    reference = max(heard, observing_since) if observing_since is not None else heard
    silent = (now - reference).total_seconds()
    if silent < thresholds.not_ready_after:
        return Verdict(READY, None)
    if silent < thresholds.unknown_after:
        return Verdict(NOT_READY, f"no heartbeat since {last_heartbeat} (more than {thresholds.not_ready_after:g}s); "
                                  "the node keeps its workloads and serves from its local state")
    return Verdict(UNKNOWN, f"no heartbeat since {last_heartbeat} (more than {thresholds.unknown_after:g}s); "
                            "the node keeps its workloads: check its agent and its link to the cloud")


def status_patch(
    node: Document,
    now: datetime,
    thresholds: Thresholds,
    *,
    observing_since: datetime | None = None,
) -> Document | None:
    """The status merge patch to apply to ``node`` (a stored Node document), or None.

    None when the phase is due to be Ready (the hub's to write) or already
    says what it should. The patch carries ``metadata.resourceVersion`` as a
    precondition.
    """
    status = node.get("status") or {}
    verdict = expected_phase(status.get("lastHeartbeat"), now, thresholds, observing_since=observing_since)
    if verdict.phase == READY:
        return None
    if status.get("phase") == verdict.phase and status.get("message") == verdict.message:
        return None
    return {
        "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
        "status": {"phase": verdict.phase, "message": verdict.message},
    }


def _moment(timestamp: str | None) -> datetime | None:
    if not timestamp:
        return None
    try:
        return parse_timestamp(timestamp)
    except ValueError:  # stored objects were validated; be lenient anyway
        return None


class NodeLifecycleController:
    """Every ``period`` seconds: list Nodes, patch the phase of those whose silence calls for it."""

    def __init__(
        self,
        registry: Registry,
        thresholds: Thresholds | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._thresholds = thresholds or Thresholds()
        self._clock = clock

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        since = self._clock()
        log.info("node lifecycle controller started", extra={
            "not_ready_after": self._thresholds.not_ready_after, "unknown_after": self._thresholds.unknown_after})
        while True:
            try:
                await self.sync_once(observing_since=since)
            except (StoreError, RegistryError) as exc:
                log.warning("node lifecycle round failed, retrying next period: %s", exc)
            await asyncio.sleep(self._thresholds.period)

    async def sync_once(self, *, observing_since: datetime | None = None) -> int:
        """One round; returns how many nodes changed phase."""
        page = await self._registry.list(NODES)
        now = self._clock()
        changed = 0
        for node in page.items:
            patch = status_patch(node, now, self._thresholds, observing_since=observing_since)
            if patch is not None and await self._apply(node["metadata"]["name"], patch):
                changed += 1
        return changed

    async def _apply(self, name: str, patch: Document) -> bool:
        try:
            await self._registry.patch(NODES, name, patch, status=True)
        except (VersionConflict, ObjectNotFound):
            return False  # a heartbeat (or a delete) came first: judge it again next round
        log.info("node is now %s", patch["status"]["phase"],
                 extra={"node": name, "reason": patch["status"]["message"]})
        return True
