"""The workload controller: revisions, rollouts and Workload.status, every second.

How: one replica runs it (leader election ``/system/leader/workloads``). A
round reads the hub's in-memory index (Workloads, WorkloadRevisions, Nodes,
Sites, Domains: no store lists), and for every Workload:

1. makes sure a WorkloadRevision exists for its template (numbered after
   the highest kept one);
2. gathers the facts of the nodes its selector picks (phase, drains by
   hand, the revision and readiness the agent reports, the DNS TTL of the
   Domains the node's site serves, its recent request rate) and, when an
   analysis window has ended, the verdict (:mod:`edgefleet.cloud.analysis`,
   then the optional webhook);
3. calls the pure rule (:func:`edgefleet.cloud.rollouts.plan`) and writes
   the status it returns as a merge patch, with the Workload's
   resourceVersion as a precondition: a round that read a stale index loses
   the race and is redone next round, so two decisions never interleave;
   Before it, the drains (``Node.status.drains["workload/<name>"]``, which
   the GSLB reads) follow the decision: finished moves end theirs first,
   then new moves start theirs, so a node is out of the answers before it
   switches and a site never has more nodes out than its budget;
4. records the Events, in the background: the next round waits for them,
   the status write and the view push it triggers do not;
5. deletes the oldest WorkloadRevisions beyond ``revisionHistoryLimit``
   that nothing refers to, and the revisions of deleted Workloads.

Rounds run when the hub's index applies a change that can matter (a
Workload, a WorkloadRevision, a Domain, or a fact of a Node the rule reads:
not its counters or heartbeat), at most every 0.05 s, so a node step is not
held back by a period; and every second while a rollout is active (its
timers). An idle fleet costs one full round every 30 s; an unchanged
decision writes nothing. Drains are reconciled against what the Nodes say
every round, so a crash between two writes is repaired by the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from edgefleet.api.common import format_timestamp
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.nodes import INFO as NODES
from edgefleet.api.patches import make_merge_patch
from edgefleet.api.revisions import INFO as REVISIONS
from edgefleet.api.revisions import revision_object_name
from edgefleet.api.rollouts import WebhookCheck
from edgefleet.api.selectors import Selector, parse_selector
from edgefleet.api.workloads import INFO as WORKLOADS
from edgefleet.api.workloads import Workload, template_revision
from edgefleet.cloud import events, webhooks
from edgefleet.cloud.analysis import Sample, evaluate, sample_of
from edgefleet.cloud.registry import ObjectExists, ObjectNotFound, Registry, RegistryError, VersionConflict
from edgefleet.cloud.rollouts import (
    FINISHED_PHASES,
    Decision,
    EventNote,
    NodeFacts,
    RolloutInput,
    Verdict,
    analysis_due,
    plan,
)
from edgefleet.store.interface import StoreError
from edgefleet.sync.views import NODE_LABEL, SITE_LABEL

log = logging.getLogger("edgefleet.cloud.controllers.workloads")

DRAIN_PREFIX = "workload/"
"""Node.status.drains keys this controller owns: ``workload/<name>``."""
WEBHOOK_MAX_BYTES = 64 * 1024
SOURCE = "workload-controller"


WRITE_CONCURRENCY = 64
"""Drain patches and Events written at once (the store groups concurrent writes into one commit)."""
MIN_GAP = 0.05
"""Seconds between two rounds at least: changes arriving together are decided together."""
MAX_DUTY = 0.5
"""The largest share of the cloud's event loop the controller takes when changes keep waking it."""
NODES_PREFIX = "/registry/nodes/"
WAKING_PREFIXES = tuple(f"/registry/{plural}/" for plural in ("workloads", "workloadrevisions", "domains"))
"""Changes that can move a rollout (an edit, a new revision, a DNS TTL) and so wake a round (Nodes: see wake)."""
REFRESH = 30.0
MAX_EXTRA_WINDOWS = 2
"""Analysis windows added when a figure of the updated nodes is unknown (their counters may only be late)."""
"""Seconds between full rounds of an idle fleet (a safety net: every relevant change wakes a round)."""

Documents = Callable[[str], Sequence[StoredDocument]]
"""Plural -> every document of that kind (with metadata.resourceVersion), e.g. from the hub's index; read-only
(shared snapshots, :mod:`edgefleet.cloud.snapshots`)."""


class ControllerMetrics:
    """What the controller costs and does, exported on the cloud's /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rounds = Counter(
            "edgefleet_workload_controller_rounds", "Rounds over every Workload", registry=self.registry
        )
        self.decide_seconds = Counter(
            "edgefleet_workload_controller_decide_seconds",
            "CPU seconds spent deciding (reading the index, the rollout rule, building statuses), writes excluded",
            registry=self.registry,
        )
        self.status_writes = Counter(
            "edgefleet_workload_controller_status_writes", "Workload.status writes", registry=self.registry
        )
        self.node_steps = Counter(
            "edgefleet_workload_controller_node_steps",
            "Node moves started (a node drained or switched towards another revision)",
            registry=self.registry,
        )
        self.rolling = Gauge(
            "edgefleet_workloads_rolling", "Workloads with a rollout in progress", registry=self.registry
        )


@dataclass(frozen=True, slots=True)
class _Fleet:
    """One round's view of the nodes."""

    nodes: Sequence[StoredDocument]
    labels: dict[str, dict[str, str]]
    ttl_by_site: dict[str, float]


class WorkloadController:
    """Every ``period`` seconds, one round over every Workload (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        documents: Documents,
        *,
        period: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._registry = registry
        self.metrics = metrics or ControllerMetrics()
        self._documents = documents
        self._period = period
        self._clock = clock
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._decided = 0.0  # CPU seconds spent deciding, as the decide_seconds metric counts them
        self._dirty = True
        self._active = False
        self._fingerprints: dict[str, str | None] = {}
        self._windows: dict[tuple[str, str], dict[str, Sample]] = {}
        self._rates: dict[str, tuple[int, float, float | None]] = {}  # node -> (requests, seen at, rate)
        # Derived per node, reused while its resourceVersion (and the other inputs) stay the same: a round in a
        # large fleet where few nodes changed rebuilds only theirs.
        self._labels: dict[str, tuple[str | None, dict[str, str]]] = {}
        self._facts_cache: dict[tuple[str, str], tuple[tuple[Any, ...], NodeFacts]] = {}
        self._cached_workloads: set[str] = set()
        self._recording: list[asyncio.Task[None]] = []
        self._extra_windows: dict[tuple[str, str, int], int] = {}  # (workload, target, step) -> windows added

    def wake(self, key: str, document: StoredDocument | None) -> None:
        """A store key changed (the hub's index applied it): run a round soon if it can matter.

        Workload and WorkloadRevision changes always matter; a Node change
        only when a fact the rule reads changed (its phase, spec, labels,
        drains or workload instances), not its traffic counters or heartbeat,
        so an idle fleet reporting counters does not keep the controller busy.
        """
        if key.startswith(NODES_PREFIX):
            facts = None if document is None else _node_fingerprint(document)
            if self._fingerprints.get(key) == facts:
                return
            self._fingerprints[key] = facts
        elif not key.startswith(WAKING_PREFIXES):
            return
        self._dirty = True
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: rounds when woken (at most every ``MIN_GAP``), and every ``period`` while a
        rollout is active (its timers: drains, settles, pauses, analysis windows, deadlines).

        An idle fleet costs nothing but a full round every ``REFRESH`` seconds. Store failures are
        logged and retried next round.
        """
        log.info("workload controller started", extra={"period": self._period})
        try:
            await self._rounds()
        finally:
            for task in self._recording:
                task.cancel()

    async def _rounds(self) -> None:
        last_full = -REFRESH
        while True:
            self._wake.clear()
            started, decided_before = self._monotonic(), self._decided
            if self._dirty or self._active or started - last_full >= REFRESH:
                self._dirty = False
                last_full = started
                try:
                    await self.sync_once()
                except (StoreError, RegistryError) as exc:
                    self._dirty = True
                    log.warning("workload round failed, retrying next round: %s", exc)
            took = self._monotonic() - started
            deciding = self._decided - decided_before
            # At least MIN_GAP between round starts, and deciding takes at most MAX_DUTY of the event loop (which
            # the API and the hub share): in a huge fleet where many nodes change at once, rounds space out.
            await asyncio.sleep(max(MIN_GAP - took, deciding * (1 / MAX_DUTY - 1)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, self._period - MIN_GAP))

    def _deciding(self, seconds: float) -> None:
        self._decided += seconds
        self.metrics.decide_seconds.inc(seconds)

    async def sync_once(self) -> int:
        """One round; returns how many Workload statuses were written."""
        await self.flush_events()
        started = time.thread_time()
        fleet = self._fleet()
        revisions = self._documents("workloadrevisions")
        workloads = self._documents("workloads")
        self._deciding(time.thread_time() - started)
        written = 0
        for document in workloads:
            written += await self._reconcile(document, fleet, revisions)
        names = {d["metadata"]["name"] for d in workloads}
        await self._end_orphan_drains(fleet.nodes, names)
        if not self._cached_workloads <= names:  # a Workload is gone: forget its nodes' facts
            for key in [key for key in self._facts_cache if key[0] not in names]:
                del self._facts_cache[key]
        self._cached_workloads = names
        await self._collect_revisions(workloads, revisions)
        self.metrics.rounds.inc()
        self.metrics.status_writes.inc(written)
        rolling = sum(1 for doc in self._documents("workloads") if _rolling(doc))
        self.metrics.rolling.set(rolling)
        self._active = rolling > 0
        return written

    async def flush_events(self) -> None:
        """Wait for the Events of earlier rounds to be written (each round starts with this)."""
        recording, self._recording = self._recording, []
        if recording:
            await asyncio.gather(*recording)

    # --- the fleet --------------------------------------------------------------

    def _fleet(self) -> _Fleet:
        nodes = self._documents("nodes")
        labels = {node["metadata"]["name"]: self._labels_of(node) for node in nodes}
        if len(self._labels) > len(labels):
            self._forget_gone(labels)
        self._track_rates(nodes)
        return _Fleet(nodes, labels, self._ttl_by_site())

    def _labels_of(self, node: StoredDocument) -> dict[str, str]:
        name, version = node["metadata"]["name"], node["metadata"].get("resourceVersion")
        cached = self._labels.get(name)
        if cached is None or cached[0] != version or version is None:
            cached = self._labels[name] = (version, _node_labels(node))
        return cached[1]

    def _forget_gone(self, present: dict[str, dict[str, str]]) -> None:
        for name in [name for name in self._labels if name not in present]:
            del self._labels[name]
            self._rates.pop(name, None)
        for key in [key for key in self._facts_cache if key[1] not in present]:
            del self._facts_cache[key]

    def _ttl_by_site(self) -> dict[str, float]:
        """Longest routing.ttl of the Domains whose spec.sites picks each site."""
        sites = {
            site["metadata"]["name"]: {**(site["metadata"].get("labels") or {}), SITE_LABEL: site["metadata"]["name"]}
            for site in self._documents("sites")
        }
        ttl: dict[str, float] = {}
        for domain in self._documents("domains"):
            spec = domain.get("spec") or {}
            selector = _parse(spec.get("sites", ""))
            seconds = float(((spec.get("routing") or {}).get("ttl")) or 30)
            for name, site_labels in sites.items():
                if selector is not None and selector.matches(site_labels):
                    ttl[name] = max(ttl.get(name, 0.0), seconds)
        return ttl

    def _track_rates(self, nodes: Iterable[StoredDocument]) -> None:
        """Request rates from the cache counters: requests between two distinct readings over the time between."""
        now = self._monotonic()
        for node in nodes:
            name = node["metadata"]["name"]
            requests = int(((node.get("status") or {}).get("cache") or {}).get("requests") or 0)
            seen = self._rates.get(name)
            if seen is None:
                self._rates[name] = (requests, now, None)
            elif requests != seen[0]:
                elapsed = max(now - seen[1], 1e-3)
                self._rates[name] = (requests, now, max(0, requests - seen[0]) / elapsed)
            elif now - seen[1] > 60:
                self._rates[name] = (requests, seen[1], 0.0)  # a minute without a new count: idle

    # --- one workload --------------------------------------------------------------

    async def _reconcile(self, document: StoredDocument, fleet: _Fleet, revisions: Sequence[StoredDocument]) -> int:
        """One Workload's round; returns 1 when its status was written."""
        started = time.thread_time()
        try:
            workload = Workload.model_validate(document)
        except ValidationError as exc:
            log.error("skipping invalid workload %s: %s", document["metadata"].get("name"), exc)
            return 0
        name = workload.name
        update = template_revision(workload.spec.template)
        mine = _revisions_of(workload, revisions)
        numbers = {doc["spec"]["revision"]: int(doc["spec"]["number"]) for doc in mine}
        self._deciding(time.thread_time() - started)
        if update not in numbers:
            number = await self._create_revision(workload, update, max(numbers.values(), default=0) + 1)
            if number is None:
                return 0
            numbers[update] = number
        started = time.thread_time()
        selector = workload.spec.selector()
        selected = [node for node in fleet.nodes if selector.matches(fleet.labels[node["metadata"]["name"]])]
        facts = [self._facts(node, name, fleet) for node in selected]
        now = self._clock()
        due = analysis_due(workload.spec, workload.status, now)
        self._deciding(time.thread_time() - started)
        verdict = await self._verdict(workload, selected, now) if due else None
        started = time.thread_time()
        decision = plan(
            RolloutInput(
                name, workload.metadata.generation, workload.spec, workload.status, update, numbers, facts, now, verdict
            )
        )
        self._open_window(workload, decision, selected)
        self.metrics.node_steps.inc(decision.moves_started)
        self._deciding(time.thread_time() - started)
        await self._drain_first(fleet.nodes, name, decision.drained)
        outcome = await self._write_status(document, decision)
        if outcome == "lost":
            return 0  # a stale index: decide again next round (drains follow that decision)
        if decision.events:  # off the round's path: the next node step does not wait for the Event commit
            self._recording.append(asyncio.create_task(self._record(name, decision)))
        return int(outcome == "written")

    def _facts(self, node: StoredDocument, workload: str, fleet: _Fleet) -> NodeFacts:
        name = node["metadata"]["name"]
        site = (node.get("spec") or {}).get("site", "")
        inputs = (
            node["metadata"].get("resourceVersion"),
            fleet.ttl_by_site.get(site, 0.0),
            self._rates.get(name, (0, 0.0, None))[2],
        )
        cached = self._facts_cache.get((workload, name))
        if cached is not None and cached[0] == inputs and inputs[0] is not None:
            return cached[1]
        facts = self._build_facts(node, workload, fleet)
        self._facts_cache[(workload, name)] = (inputs, facts)
        return facts

    def _build_facts(self, node: StoredDocument, workload: str, fleet: _Fleet) -> NodeFacts:
        name = node["metadata"]["name"]
        status = node.get("status") or {}
        instance = (status.get("workloads") or {}).get(workload) or {}
        site = (node.get("spec") or {}).get("site", "")
        return NodeFacts(
            name=name,
            site=site,
            labels=fleet.labels[name],
            # A cache scaled to zero with its Inactive site waits like a node that is away: the rollout skips
            # it (listed in rollout.waiting) and moves it, drained and verified, once its site is active again.
            ready=status.get("phase") == "Ready" and instance.get("state") != "ScaledDown",
            drained_by_hand=bool((node.get("spec") or {}).get("draining")),
            running=instance.get("revision"),
            instance_ready=bool(instance.get("ready")),
            dns_ttl=fleet.ttl_by_site.get(site, 0.0),
            request_rate=self._rates.get(name, (0, 0.0, None))[2],
        )

    async def _create_revision(self, workload: Workload, revision: str, number: int) -> int | None:
        object_name = revision_object_name(workload.name, number)
        document: StoredDocument = {
            "apiVersion": "edgefleet.io/v1",
            "kind": "WorkloadRevision",
            "metadata": {"name": object_name, "labels": {"edgefleet.io/workload": workload.name}},
            "spec": {
                "workload": workload.name,
                "workloadUid": workload.metadata.uid or "",
                "number": number,
                "revision": revision,
                "template": workload.spec.template.model_dump(mode="json", by_alias=True, exclude_none=True),
            },
        }
        try:
            await self._registry.create(REVISIONS, document)
        except ObjectExists:
            log.info("revision %s exists already (the index lags the store); next round", object_name)
            return None
        log.info("new workload revision", extra={"workload": workload.name, "number": number, "revision": revision})
        return number

    async def _write_status(self, document: StoredDocument, decision: Decision) -> str:
        """ "unchanged", "written", or "lost" (the Workload changed since the index was read)."""
        new = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        old = document.get("status") or {}
        if new == old:
            return "unchanged"
        patch = {
            "metadata": {"resourceVersion": document["metadata"]["resourceVersion"]},
            "status": make_merge_patch(old, new),
        }
        try:
            await self._registry.patch(WORKLOADS, document["metadata"]["name"], patch, status=True)
        except (VersionConflict, ObjectNotFound):
            return "lost"
        return "written"

    async def _record(self, name: str, decision: Decision) -> None:
        """The decision's Events, one per reason (a round that moves twenty nodes records one NodeDraining
        naming them, not twenty), written concurrently."""
        notes = _grouped(decision.events)
        for chunk in range(0, len(notes), WRITE_CONCURRENCY):
            await asyncio.gather(*(self._record_one(name, note) for note in notes[chunk : chunk + WRITE_CONCURRENCY]))

    async def _record_one(self, name: str, note: EventNote) -> None:
        log.info("%s", note.message, extra={"workload": name, "reason": note.reason})
        try:
            await events.record(self._registry, "Workload", name, note.reason, note.message, note.type, source=SOURCE)
        except (StoreError, RegistryError) as exc:
            log.warning("could not record event %s for workload %s: %s", note.reason, name, exc)

    # --- analysis --------------------------------------------------------------------

    def _open_window(self, workload: Workload, decision: Decision, selected: list[StoredDocument]) -> None:
        rollout = decision.status.rollout
        started = rollout.analysis_started_at if rollout is not None else None
        for key in [key for key in self._windows if key[0] == workload.name and key[1] != started]:
            del self._windows[key]
        if started is not None and (workload.name, started) not in self._windows:
            self._windows[(workload.name, started)] = {
                n["metadata"]["name"]: sample_of(n, workload.name) for n in selected
            }

    async def _verdict(self, workload: Workload, selected: list[StoredDocument], now: datetime) -> Verdict:
        rollout = workload.status.rollout
        analysis = workload.spec.strategy.analysis
        assert rollout is not None and analysis is not None and rollout.analysis_started_at is not None
        start = self._windows.get((workload.name, rollout.analysis_started_at))
        if start is None:
            return Verdict(None, "no samples from the window's start (a new leader): watching again")
        end = {n["metadata"]["name"]: sample_of(n, workload.name) for n in selected}
        updated, baseline = _groups(workload, selected, rollout.target)
        verdict = evaluate(analysis.metrics, start, end, updated, baseline)
        key = (workload.name, rollout.target, rollout.step)
        if verdict.inconclusive and self._extra_windows.get(key, 0) < MAX_EXTRA_WINDOWS:
            self._extra_windows[key] = self._extra_windows.get(key, 0) + 1
            return Verdict(None, f"{verdict.message}: watching another window")
        self._extra_windows.pop(key, None)
        if verdict.passed and analysis.webhook is not None:
            verdict = await _ask_webhook(analysis.webhook, workload, rollout.target, updated, verdict, now)
        return verdict

    # --- drains and garbage -------------------------------------------------------------

    async def _end_orphan_drains(self, nodes: Sequence[StoredDocument], workloads: set[str]) -> None:
        """End the drains of Workloads that are gone."""
        for node in nodes:
            held = (node.get("status") or {}).get("drains") or {}
            ended = {
                key: None for key in held if key.startswith(DRAIN_PREFIX) and key[len(DRAIN_PREFIX) :] not in workloads
            }
            if ended:
                await self._patch_node(node["metadata"]["name"], {"status": {"drains": ended}})

    async def _drain_first(self, nodes: Sequence[StoredDocument], workload: str, drained: set[str]) -> None:
        """Before the status: end the drains of finished moves, then start the new ones.

        A new drain is written before the assignment, so a node leaves the
        answers before it switches; a finished one ends before the next node
        of the site starts, so a site never has more nodes out than its budget.
        """
        stamp = format_timestamp(self._clock())
        key = DRAIN_PREFIX + workload
        held = {node["metadata"]["name"] for node in nodes if _drained_for(node, workload)}
        await self._patch_nodes(sorted(held - drained), {"status": {"drains": {key: None}}})
        await self._patch_nodes(sorted(drained - held), {"status": {"drains": {key: stamp}}})

    async def _patch_nodes(self, names: list[str], patch: JSONObject) -> None:
        """The same patch to many Nodes at once (the store groups concurrent writes into one commit)."""
        for chunk in range(0, len(names), WRITE_CONCURRENCY):
            await asyncio.gather(*(self._patch_node(name, patch) for name in names[chunk : chunk + WRITE_CONCURRENCY]))

    async def _patch_node(self, name: str, patch: JSONObject) -> None:
        with contextlib.suppress(ObjectNotFound):
            await self._registry.patch(NODES, name, patch, status=True)

    async def _collect_revisions(
        self, workloads: Sequence[StoredDocument], revisions: Sequence[StoredDocument]
    ) -> None:
        by_name = {doc["metadata"]["name"]: doc for doc in workloads}
        for workload_name, docs in _group_revisions(revisions).items():
            workload = by_name.get(workload_name)
            doomed = _doomed(workload, docs)
            for doc in doomed:
                with contextlib.suppress(ObjectNotFound):
                    await self._registry.delete(REVISIONS, doc["metadata"]["name"])


def _node_fingerprint(node: StoredDocument) -> str:
    """The facts of a Node the rule reads: a change of anything else (counters, heartbeat) wakes nobody."""
    status = node.get("status") or {}
    facts = [
        status.get("phase"),
        node.get("spec"),
        (node.get("metadata") or {}).get("labels"),
        status.get("drains"),
        status.get("workloads"),
    ]
    return json.dumps(facts, sort_keys=True)


def _grouped(notes: list[EventNote]) -> list[EventNote]:
    """Notes of one reason and type merged into one, in first-seen order (long messages are cut by events.record)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for note in notes:
        groups.setdefault((note.reason, note.type), []).append(note.message)
    return [
        EventNote(reason, messages[0] if len(messages) == 1 else f"{len(messages)} nodes: {'; '.join(messages)}", kind)
        for (reason, kind), messages in groups.items()
    ]


def _rolling(workload: StoredDocument) -> bool:
    phase = (((workload.get("status") or {}).get("rollout")) or {}).get("phase")
    return phase is not None and phase not in FINISHED_PHASES


def _parse(text: Any) -> Selector | None:
    try:
        return parse_selector(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _node_labels(node: StoredDocument) -> dict[str, str]:
    name = node["metadata"]["name"]
    return {
        **(node["metadata"].get("labels") or {}),
        NODE_LABEL: name,
        SITE_LABEL: (node.get("spec") or {}).get("site", ""),
    }


def _drained_for(node: StoredDocument, workload: str) -> bool:
    return DRAIN_PREFIX + workload in ((node.get("status") or {}).get("drains") or {})


def _revisions_of(workload: Workload, revisions: Iterable[StoredDocument]) -> list[StoredDocument]:
    uid = workload.metadata.uid or ""
    return [
        doc
        for doc in revisions
        if (doc.get("spec") or {}).get("workload") == workload.name and doc["spec"].get("workloadUid", "") in ("", uid)
    ]


def _group_revisions(revisions: Iterable[StoredDocument]) -> dict[str, list[StoredDocument]]:
    grouped: dict[str, list[StoredDocument]] = {}
    for doc in revisions:
        grouped.setdefault((doc.get("spec") or {}).get("workload", ""), []).append(doc)
    return grouped


def _doomed(workload: StoredDocument | None, docs: list[StoredDocument]) -> list[StoredDocument]:
    """Revisions to delete: all of a deleted Workload's; else the oldest unused beyond the history limit."""
    if workload is None:
        return docs
    uid = workload["metadata"].get("uid") or ""
    stale = [doc for doc in docs if doc["spec"].get("workloadUid", "") not in ("", uid)]
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    rollout = status.get("rollout") or {}
    used = {
        status.get("currentRevision"),
        status.get("updateRevision"),
        rollout.get("target"),
        rollout.get("failedRevision"),
        *(status.get("nodeRevisions") or {}).values(),
        *(step.get("to") for step in (rollout.get("nodes") or {}).values()),
    }
    pinned = {pin.get("revision") for pin in spec.get("pins") or []}
    if status.get("currentRevision") is None:
        return stale  # the controller has not seen it yet
    unused = sorted(
        (
            doc
            for doc in docs
            if doc not in stale and doc["spec"]["revision"] not in used and doc["spec"]["number"] not in pinned
        ),
        key=lambda doc: int(doc["spec"]["number"]),
    )
    keep = int(spec.get("revisionHistoryLimit", 10))
    return stale + unused[: max(0, len(unused) - keep)]


def _groups(workload: Workload, selected: list[StoredDocument], target: str) -> tuple[list[str], list[str]]:
    """(updated nodes, baseline nodes): the baseline is the stable nodes of the updated nodes' sites, else all."""
    assigned = workload.status.node_revisions or {}
    stable = workload.status.current_revision
    site_of = {n["metadata"]["name"]: (n.get("spec") or {}).get("site", "") for n in selected}
    updated = [name for name in site_of if assigned.get(name, stable) == target]
    rest = [name for name in site_of if assigned.get(name, stable) == stable]
    sites = {site_of[name] for name in updated}
    near = [name for name in rest if site_of[name] in sites]
    return updated, near or rest


async def _ask_webhook(
    check: WebhookCheck, workload: Workload, target: str, updated: list[str], verdict: Verdict, now: datetime
) -> Verdict:
    """POST the batch; 2xx passes. Unreachable, slow or oversized answers follow failurePolicy."""
    body = {
        "workload": workload.name,
        "revision": target,
        "revisionNumber": workload.status.update_revision_number,
        "updatedNodes": updated,
        "metrics": verdict.message,
        "at": format_timestamp(now),
    }
    try:
        reply = await webhooks.post(
            check.url,
            json.dumps(body).encode(),
            deadline=float(check.timeout_seconds),
            max_bytes=WEBHOOK_MAX_BYTES,
            headers={"Content-Type": "application/json"},
            ca_bundle=check.ca_bundle,
        )
    except webhooks.WebhookCallFailed as exc:
        if check.failure_policy == "Ignore":
            return Verdict(True, f"{verdict.message}; webhook failed and is ignored: {exc}")
        return Verdict(False, f"webhook {check.url} failed: {exc}")
    if 200 <= reply.status < 300:
        return Verdict(True, f"{verdict.message}; webhook passed")
    return Verdict(False, f"webhook {check.url} answered {reply.status}")
