"""Purge controller: count how the nodes serving a Domain did each open Purge and Prefetch.

The rule (:func:`tally` and :func:`status_patch`, pure), for each Purge or
Prefetch without ``status.completedAt``:

- ``targetNodes``: the nodes whose view holds the Domain, i.e. the nodes of
  the sites its ``spec.sites`` selects. The answer comes from the hub's
  :class:`~edgefleet.sync.views.FleetIndex` (:meth:`nodes_serving`), the
  very rule that puts the task in those nodes' views, never a copy of it;
- ``completedNodes`` / ``failedNodes``: target nodes whose agent reports the
  task's uid as Done / Failed in ``Node.status.purges`` (or ``prefetches``);
- ``completedAt``: set once every target node has reported Done or Failed
  (so ``completedNodes == targetNodes`` when nothing failed). A completed
  task leaves every node's view and is not counted again: its status is
  final. A Domain served by no node completes at once with zero targets; a
  Domain that does not exist keeps the task open, with a message.

How: every ``period`` seconds the controller lists Purges and Prefetches,
reads targets and node reports from the in-memory index of the hub of its
own process (kept current by the hub's store watch, so this costs no store
reads), and writes only statuses that changed, through the status path,
with the task's resourceVersion as a precondition (a conflict is retried
next round). It runs on one cloud replica at a time, under the leader
election ``/system/leader/purges``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgefleet.api.common import format_timestamp
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.meta import KindInfo
from edgefleet.api.purges import PREFETCHES, PURGES
from edgefleet.cloud.controllers.loop import patch_status, run_periodically
from edgefleet.cloud.registry import Registry
from edgefleet.sync.views import FleetIndex

log = logging.getLogger("edgefleet.cloud.controllers.purges")

REPORT_FIELDS = {"Purge": "purges", "Prefetch": "prefetches"}
"""Where a node reports each kind in its Node.status."""
NodeStatusOf = Callable[[str], Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Tally:
    """How the target nodes did one task."""

    targets: int
    completed: int
    failed: int
    failures: tuple[str, ...] = ()  # "node: message", the first few


def tally(task: StoredDocument, targets: Iterable[str], node_status: NodeStatusOf) -> Tally:
    """Count the reports of ``task``'s uid among ``targets`` (node name -> its status, or None)."""
    uid = task.get("metadata", {}).get("uid")
    field = REPORT_FIELDS.get(str(task.get("kind")), "purges")
    names = sorted(targets)
    completed, failed, failures = 0, 0, []
    for name in names:
        reports = (node_status(name) or {}).get(field) or []
        report = next((r for r in reports if isinstance(r, dict) and r.get("uid") == uid), None)
        state = report.get("state") if report else None
        if state == "Done":
            completed += 1
        elif state == "Failed":
            failed += 1
            failures.append(f"{name}: {report.get('message') if report else ''}")
    return Tally(len(names), completed, failed, tuple(failures[:3]))


def _message(task: StoredDocument, counts: Tally, domain_exists: bool) -> str | None:
    domain = task.get("spec", {}).get("domain")
    if not domain_exists:
        return f"domain {domain!r} does not exist"
    if counts.targets == 0:
        return f"no node serves domain {domain!r}"
    if counts.failed:
        return f"failed on {counts.failed} node(s): " + "; ".join(counts.failures)
    waiting = counts.targets - counts.completed
    return f"waiting for {waiting} node(s)" if waiting else None


def desired_status(task: StoredDocument, counts: Tally, *, domain_exists: bool, now: datetime) -> JSONObject:
    """The status ``task`` should have given ``counts``; None values are fields to remove."""
    finished = domain_exists and counts.completed + counts.failed >= counts.targets
    return {
        "targetNodes": counts.targets,
        "completedNodes": counts.completed,
        "failedNodes": counts.failed,
        "message": _message(task, counts, domain_exists),
        "completedAt": format_timestamp(now) if finished else None,
    }


def status_patch(task: StoredDocument, counts: Tally, *, domain_exists: bool, now: datetime) -> JSONObject | None:
    """The status merge patch for ``task``, or None when it already says so (or is completed: final)."""
    current = task.get("status") or {}
    if current.get("completedAt"):
        return None
    wanted = desired_status(task, counts, domain_exists=domain_exists, now=now)
    if all(current.get(key) == value for key, value in wanted.items()):
        return None
    return {"metadata": {"resourceVersion": task["metadata"]["resourceVersion"]}, "status": wanted}


class PurgeController:
    """Every ``period`` seconds: list open Purges and Prefetches, write their counts where they changed."""

    def __init__(
        self,
        registry: Registry,
        index: Callable[[], FleetIndex],
        *,
        period: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._index = index
        self._period = period
        self._clock = clock

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        await run_periodically("purge", self.sync_once, self._period, log)

    async def sync_once(self) -> int:
        """One round; returns how many statuses were written."""
        written = 0
        for info in (PURGES, PREFETCHES):
            page = await self._registry.list(info)
            for task in page.items:
                patch = self._patch(task)
                if patch is not None and await self._apply(info, task["metadata"]["name"], patch):
                    written += 1
        return written

    def _patch(self, task: StoredDocument) -> JSONObject | None:
        if (task.get("status") or {}).get("completedAt"):
            return None
        index = self._index()
        domain = str(task.get("spec", {}).get("domain", ""))
        exists = index.get(f"/registry/domains/{domain}") is not None
        counts = tally(task, index.nodes_serving(domain), lambda node: _status_of(index, node))
        return status_patch(task, counts, domain_exists=exists, now=self._clock())

    async def _apply(self, info: KindInfo, name: str, patch: JSONObject) -> bool:
        if not await patch_status(self._registry, info, name, patch):
            return False
        status = patch["status"]
        if status.get("completedAt"):
            log.info("%s %s completed on %s/%s nodes", info.kind, name, status["completedNodes"], status["targetNodes"])
        return True


def _status_of(index: FleetIndex, node: str) -> Mapping[str, Any] | None:
    entry = index.get(f"/registry/nodes/{node}")
    status = entry[1].get("status") if entry is not None else None
    return status if isinstance(status, dict) else None
