"""Node lifecycle: a node's phase from its liveness; NotReady, then Unknown, when it goes silent.

Liveness: a node is *alive* while it has a live session on some hub
replica. Every replica publishes its sessions in its Hub object (bound to a
store lease, so a dead replica's list disappears), and the controller is
given their union (``liveness``). Idle nodes therefore cost no store writes:
there is no heartbeat time written per node per period.

The rule (:func:`expected_phase`):

- alive: Ready;
- not alive: silent since the latest of ``status.lastHeartbeat`` (the hub
  writes it when it records a report, every few minutes while connected, and
  when the session ends), the last time this controller saw the node alive,
  and the moment it started observing (startup grace: after a cloud outage
  or a leader change the nodes get the thresholds' time to reconnect before
  they are demoted, as Kubernetes' node lifecycle controller does);
- silent for less than ``notReadyAfter`` (default 40 s): Ready; for
  ``notReadyAfter`` or more: NotReady; for ``unknownAfter`` (default 300 s)
  or more: Unknown;
- a ``lastHeartbeat`` more than :data:`MAX_CLOCK_SKEW` seconds ahead of the
  controller's clock is ignored (the hub writes it with the cloud's clock, so
  one from the future was forged or typed by hand, and would keep a silent
  node Ready for ever);
- never heard from and not alive: Unknown ("we have never heard from it"),
  with a message saying what to check, so a Node applied from a manifest
  but never joined shows up as such instead of as a blank.

Writes (:func:`status_patch`, through the status path, with the node's
resourceVersion as a precondition: when a status write lands between the
read and this write, the write fails and the node is judged again next
round): an alive node that is not Ready is promoted; a silent one is
demoted, and its ``hub`` and ``peerVotes`` are cleared (it is connected
nowhere, and the votes of a node nobody hears from must not keep deciding
its peers' health). Nothing else: it never changes spec, never deletes
anything, never evicts or moves workloads (edge autonomy: a quiet node
keeps serving from its local state).

Messages depend only on the stored heartbeat, not on the current time, so an
unchanged verdict writes nothing: a round costs one pass over the nodes (the
hub's in-memory index when given, else one list) and one write per
transition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edgefleet.api.common import parse_timestamp
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.nodes import INFO as NODES
from edgefleet.cloud.controllers.loop import patch_status, run_periodically
from edgefleet.cloud.registry import Registry

log = logging.getLogger("edgefleet.cloud.controllers.nodelifecycle")

READY, NOT_READY, UNKNOWN = "Ready", "NotReady", "Unknown"
MAX_CLOCK_SKEW = timedelta(seconds=5)
"""How far ahead of the controller's clock a heartbeat may be and still count."""
NEVER_HEARD = "no heartbeat received yet: has the node joined (`edgefleet edge join`) and is its agent running?"


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
    alive: bool = False,
    last_alive: datetime | None = None,
) -> Verdict:
    """The phase a node's liveness and silence call for; see the module docstring."""
    if alive:
        return Verdict(READY, None)
    heard = _moment(last_heartbeat)
    if heard is not None and heard > now + MAX_CLOCK_SKEW:
        heard = None  # from the future: not believed
    if heard is None and last_alive is None:
        return Verdict(UNKNOWN, NEVER_HEARD)
    reference = max(moment for moment in (heard, last_alive, observing_since) if moment is not None)
    silent = (now - reference).total_seconds()
    if silent < thresholds.not_ready_after:
        return Verdict(READY, None)
    since = last_heartbeat or "the last time it was seen connected"
    if silent < thresholds.unknown_after:
        return Verdict(
            NOT_READY,
            f"no heartbeat since {since} (more than {thresholds.not_ready_after:g}s); "
            "the node keeps its workloads and serves from its local state",
        )
    return Verdict(
        UNKNOWN,
        f"no heartbeat since {since} (more than {thresholds.unknown_after:g}s); "
        "the node keeps its workloads: check its agent and its link to the cloud",
    )


def status_patch(
    node: StoredDocument,
    now: datetime,
    thresholds: Thresholds,
    *,
    observing_since: datetime | None = None,
    alive: bool = False,
    last_alive: datetime | None = None,
) -> JSONObject | None:
    """The status merge patch to apply to ``node`` (a stored Node document), or None.

    None when the phase already says what it should, or when a node that is
    not alive is still within its grace (a Ready verdict is written only for
    an alive node). The patch carries ``metadata.resourceVersion`` (from the
    document) as a precondition.
    """
    status = node.get("status") or {}
    verdict = expected_phase(
        status.get("lastHeartbeat"),
        now,
        thresholds,
        observing_since=observing_since,
        alive=alive,
        last_alive=last_alive,
    )
    if verdict.phase == READY and not (alive and status.get("phase") != READY):
        return None
    if status.get("phase") == verdict.phase and status.get("message") == verdict.message:
        return None
    patch: JSONObject = {"phase": verdict.phase, "message": verdict.message}
    if verdict.phase != READY:
        patch.update({name: None for name in ("hub", "peerVotes") if status.get(name) is not None})
    return {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "status": patch}


def _moment(timestamp: str | None) -> datetime | None:
    if not timestamp:
        return None
    try:
        return parse_timestamp(timestamp)
    except ValueError:  # stored objects were validated; be lenient anyway
        return None


NodeSource = Callable[[], Iterable[StoredDocument]]
"""Every Node document (with metadata.resourceVersion), e.g. from the hub's in-memory index."""


class NodeLifecycleController:
    """Every ``period`` seconds: judge every Node, patch the phase of those whose liveness calls for it."""

    def __init__(
        self,
        registry: Registry,
        thresholds: Thresholds | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        liveness: Callable[[], Set[str]] | None = None,
        nodes: NodeSource | None = None,
    ) -> None:
        self._registry = registry
        self._thresholds = thresholds or Thresholds()
        self._clock = clock
        self._liveness = liveness
        self._nodes = nodes
        self._last_alive: dict[str, datetime] = {}

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        since = self._clock()
        self._last_alive.clear()  # what a previous term saw is the startup grace's business now
        settings = {
            "not_ready_after": self._thresholds.not_ready_after,
            "unknown_after": self._thresholds.unknown_after,
        }
        await run_periodically(
            "node lifecycle",
            lambda: self.sync_once(observing_since=since),
            self._thresholds.period,
            log,
            settings=settings,
        )

    async def _read(self) -> list[StoredDocument]:
        return list(self._nodes()) if self._nodes is not None else (await self._registry.list(NODES)).items

    async def sync_once(self, *, observing_since: datetime | None = None) -> int:
        """One round; returns how many nodes changed phase."""
        nodes = await self._read()
        alive = self._liveness() if self._liveness is not None else set()
        now = self._clock()
        changed = 0
        for node in nodes:
            name = node["metadata"]["name"]
            if name in alive:
                self._last_alive[name] = now
            patch = status_patch(
                node,
                now,
                self._thresholds,
                observing_since=observing_since,
                alive=name in alive,
                last_alive=self._last_alive.get(name),
            )
            if patch is not None and await self._apply(name, patch):
                changed += 1
        known = {node["metadata"]["name"] for node in nodes}
        for name in [name for name in self._last_alive if name not in known]:
            del self._last_alive[name]
        return changed

    async def _apply(self, name: str, patch: JSONObject) -> bool:
        if not await patch_status(self._registry, NODES, name, patch):
            return False  # a status write (or a delete) came first: judge it again next round
        log.info("node is now %s", patch["status"]["phase"], extra={"node": name, "reason": patch["status"]["message"]})
        return True
