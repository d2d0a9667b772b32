"""Node status writes: what the hub writes to ``Node.status`` from agent reports, and when (pure).

Why: a status report used to be one store write, and every store write is
a watch event for every watcher. Ten thousand idle nodes reporting every ten
seconds were a thousand writes a second of nothing, and every push made
every node write its new synced revision at once. Liveness now lives
elsewhere (the hub's published session list, :mod:`edgefleet.api.hubs`),
so ``Node.status`` is written only when it says something new, as
Kubernetes writes NodeStatus only on change or every few minutes once
heartbeats moved to Leases.

The rules, per node (:class:`StatusWrites`; the hub feeds it reports and
acknowledgements and asks what is due; no clock of its own, no I/O):

- The hub owns ``lastHeartbeat``, ``hub``, ``phase`` and ``message``; a
  report's values for them are ignored. ``syncedRevision`` and
  ``syncedEpoch`` are the hub's too: they come from the batches the node
  acknowledged (:meth:`StatusWrites.synced`), which is what the node
  provably committed. They never cause a write by themselves: they ride
  along with every write, so they are at most ``refresh_interval`` old
  (the hub's ``edgefleet_hub_*`` metrics say how far behind sessions are).
- Peer votes are normalised: only votes about the voter's own site peers
  are kept, and a vote's ``at`` is the cloud's time when that verdict last
  *changed* (the agent's clock and its per-probe confirmations are not
  trusted and would change every report). This is the only way a node's
  status reaches the store: its credential may not write status over REST
  (:data:`edgefleet.cloud.auth.NODE_OPERATIONS`), reports were validated
  against the bounded ``NodeStatus`` model before they get here, and the hub
  reads each session at a bounded rate (:mod:`edgefleet.cloud.limits`).
- *Lazy* fields (``cache``: counters that move with traffic) cause a write
  at most every ``max(lazy_interval, nodes / lazy_writes_per_second)``
  seconds: every few seconds in a small fleet, every few minutes in a large
  one, so that busy nodes together stay within a write budget. A lazy change
  waits a random part of half that interval first, so ten thousand busy
  nodes do not write in step. A lazy field's *first* appearance in a
  session (a cache's first figures) is written like any other change, so
  ``get sites`` shows a site's load seconds after its caches start, not a
  lazy interval later; it happens once per cache start, so it costs the
  write budget nothing.
- Any other change is written at once when the node's last write is at
  least ``min_interval`` old, else as soon as it is (the latest report
  wins: bursts coalesce). Except a change of a workload instance's
  revision or readiness: a rollout waits on exactly that, so it is written
  at once, from a small per-node allowance (``urgent_burst`` writes,
  refilled one per ``min_interval``) that covers the stop, start and ready
  of one restart; a node whose readiness flaps gets no more writes than
  before.
- The first write of a session waits until the node acknowledged its first
  batch (so it carries the revision the node really holds), or
  ``first_write_wait`` at most; it sets ``hub`` and ``phase: Ready``.
- Every ``refresh_interval`` (jittered per node, so a fleet that connected
  together does not refresh together) the latest report is written even if
  nothing changed, so ``lastHeartbeat`` stays a meaningful "last heard".
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from edgefleet.api.documents import JSONObject

HUB_OWNED = frozenset({"lastHeartbeat", "hub", "phase", "message", "syncedRevision", "syncedEpoch", "drains"})
"""Status fields the cloud sets itself (drains: the workload controller); reported values are dropped."""

LAZY_FIELDS = frozenset({"cache", "latency"})
"""Status fields that do not trigger a write sooner than ``lazy_interval``."""

REPLACED_MAPS = ("workloads", "peerVotes")
"""Maps a report replaces whole: keys the new report lacks are removed from the stored status."""
REPLACED_WHEN_REPORTED = ("cache", "latency")
"""Maps a report replaces whole, nested maps too, when it carries them: a figure it leaves out is gone (a quiet
window has no ratio; a Domain left the node's busiest). A report without them leaves them (not polled this time)."""


@dataclass(frozen=True, slots=True)
class Intervals:
    """Seconds: the minimum gap between writes of one node, lazy fields' gap, the forced refresh."""

    min_interval: float = 1.0
    lazy_interval: float = 5.0
    lazy_writes_per_second: float = 50.0
    """The fleet-wide budget of lazy (counter) writes: the lazy interval grows with the node count."""
    refresh_interval: float = 300.0
    first_write_wait: float = 2.0
    urgent_burst: float = 3.0
    """Instance readiness/revision changes written at once, per node, before the min_interval applies again."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_interval <= self.lazy_interval <= self.refresh_interval:
            raise ValueError("status intervals must satisfy 0 <= min <= lazy <= refresh")
        if self.first_write_wait < 0 or self.lazy_writes_per_second <= 0:
            raise ValueError("first_write_wait must be >= 0 and lazy_writes_per_second > 0")


@dataclass(slots=True)
class _Node:
    latest: JSONObject  # the normalised latest report
    started: float  # when the session's first report came
    written: JSONObject | None = None  # what was last written (None: nothing this session)
    synced: JSONObject = field(default_factory=dict)  # syncedRevision/syncedEpoch from acks
    acked: bool = False  # the session's first batch was acknowledged (the first write need not wait)
    last_write: float = float("-inf")
    last_lazy_write: float = float("-inf")
    lazy_due: float | None = None  # when a pending lazy change falls due (jitter drawn once)
    refresh_at: float = 0.0
    votes: dict[str, tuple[bool, str]] = field(default_factory=dict)  # peer -> (healthy, at)
    queued_at: float | None = None  # the deadline in the heap, if any
    urgent_tokens: float = 0.0  # readiness changes that may be written at once (see Intervals.urgent_burst)
    urgent_refilled: float = float("-inf")


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """Write ``status`` (wire names; the hub adds lastHeartbeat, hub, phase and message) for ``node``."""

    node: str
    status: JSONObject


class StatusWrites:
    """When to write which node's status; see the module docstring."""

    def __init__(self, intervals: Intervals | None = None, *, rng: random.Random | None = None) -> None:
        self.intervals = intervals or Intervals()
        self._rng = rng or random.Random()
        self._nodes: dict[str, _Node] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._nodes)

    def report(self, node: str, status: Mapping[str, Any], *, now: float, wall: str, peers: Set[str]) -> None:
        """A report from ``node`` at monotonic ``now`` (``wall``: RFC 3339 time); ``peers``: its site peers."""
        record = self._nodes.get(node)
        if record is None:
            record = self._nodes[node] = _Node({}, now, refresh_at=now + self._jittered_refresh())
        record.latest = self._normalise(record, status, wall, peers)
        self._schedule(node, record, self._deadline(record, now))

    def synced(self, node: str, revision: int, epoch: str, *, now: float) -> None:
        """``node`` acknowledged a batch: it holds the view at ``revision`` of store ``epoch``."""
        record = self._nodes.get(node)
        if record is None:
            return  # no report yet: the first one will carry it
        record.synced = {"syncedRevision": revision, "syncedEpoch": epoch}
        if not record.acked:
            record.acked = True
            if record.written is None:
                self._schedule(node, record, self._deadline(record, now))

    def forget(self, node: str) -> None:
        """The node's session ended: nothing more is written for it from here."""
        self._nodes.pop(node, None)

    def next_deadline(self) -> float | None:
        """The monotonic time the next write falls due, or None."""
        while self._heap:
            at, node = self._heap[0]
            record = self._nodes.get(node)
            if record is not None and record.queued_at == at:
                return at
            heapq.heappop(self._heap)  # superseded or forgotten
        return None

    def due(self, now: float) -> list[StatusWrite]:
        """Writes due at ``now``; each is taken as written (call :meth:`failed` if it was not)."""
        writes: list[StatusWrite] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, node = heapq.heappop(self._heap)
            record = self._nodes[node]
            record.queued_at = None
            write = self._take(node, record, now)
            if write is not None:
                writes.append(write)
        return writes

    def failed(self, node: str, now: float) -> None:
        """The write for ``node`` did not land: try again after ``min_interval``."""
        record = self._nodes.get(node)
        if record is not None:
            record.written = None
            record.acked = True  # no first-write wait on a retry
            self._schedule(node, record, now + max(self.intervals.min_interval, 1.0))

    # --- decisions -----------------------------------------------------------

    def _deadline(self, record: _Node, now: float) -> float:
        """When ``record.latest`` must be written, given what was written and when."""
        intervals = self.intervals
        if record.written is None:
            return now if record.acked else max(now, record.started + intervals.first_write_wait)
        if _significant(record.latest) != _significant(record.written):
            if _instances(record.latest) != _instances(record.written) and self._urgent_tokens(record, now) >= 1:
                return now
            return max(now, record.last_write + intervals.min_interval)
        if _lazy(record.latest) != _lazy(record.written):
            if any(name in record.latest and name not in record.written for name in LAZY_FIELDS):
                return max(now, record.last_write + intervals.min_interval)  # first figures: no lazy wait
            if record.lazy_due is None:
                interval = max(intervals.lazy_interval, len(self._nodes) / intervals.lazy_writes_per_second)
                jitter = self._rng.random() * interval / 2
                record.lazy_due = max(now, record.last_lazy_write + interval) + jitter
            return max(record.lazy_due, record.last_write + intervals.min_interval)
        return record.refresh_at

    def _take(self, node: str, record: _Node, now: float) -> StatusWrite | None:
        deadline = self._deadline(record, now)
        if deadline > now:
            self._schedule(node, record, deadline)
            return None
        if record.written is not None and _instances(record.latest) != _instances(record.written):
            # Every instance change written takes from the allowance, early or not: a flapping
            # instance ends up at one write per min_interval, as before.
            record.urgent_tokens = max(0.0, self._urgent_tokens(record, now) - 1)
        record.written = dict(record.latest)
        record.last_write = record.last_lazy_write = now
        record.lazy_due = None
        record.refresh_at = now + self._jittered_refresh()
        self._schedule(node, record, record.refresh_at)
        return StatusWrite(node, {**record.latest, **record.synced})

    def _urgent_tokens(self, record: _Node, now: float) -> float:
        """The node's allowance of early writes at ``now`` (refilled one per min_interval, up to urgent_burst)."""
        refill = (now - record.urgent_refilled) / max(self.intervals.min_interval, 1e-9)
        record.urgent_tokens = min(self.intervals.urgent_burst, record.urgent_tokens + refill)
        record.urgent_refilled = now
        return record.urgent_tokens

    def _schedule(self, node: str, record: _Node, deadline: float) -> None:
        if record.queued_at == deadline:
            return
        record.queued_at = deadline
        heapq.heappush(self._heap, (deadline, node))

    def _jittered_refresh(self) -> float:
        return self.intervals.refresh_interval * (0.8 + 0.4 * self._rng.random())

    @staticmethod
    def _normalise(record: _Node, status: Mapping[str, Any], wall: str, peers: Set[str]) -> JSONObject:
        normalised = {key: value for key, value in status.items() if key not in HUB_OWNED}
        if "peerVotes" in normalised:
            normalised["peerVotes"] = _stamp_votes(record, normalised["peerVotes"], wall, peers)
        return normalised


def _stamp_votes(record: _Node, reported: Any, wall: str, peers: Set[str]) -> JSONObject:
    """Votes about site peers only, each with the time its verdict last changed (cloud clock)."""
    votes: dict[str, tuple[bool, str]] = {}
    for peer, vote in (reported or {}).items():
        if peer not in peers or not isinstance(vote, Mapping) or not isinstance(vote.get("healthy"), bool):
            continue
        healthy: bool = vote["healthy"]
        old = record.votes.get(peer)
        votes[peer] = old if old is not None and old[0] == healthy else (healthy, wall)
    record.votes = votes
    return {peer: {"healthy": healthy, "at": at} for peer, (healthy, at) in sorted(votes.items())}


def _instances(status: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each workload instance's (revision, ready): what a rollout waits for."""
    workloads = status.get("workloads")
    if not isinstance(workloads, Mapping):
        return {}
    return {
        name: (item.get("revision"), item.get("ready")) for name, item in workloads.items() if isinstance(item, Mapping)
    }


def _significant(status: Mapping[str, Any]) -> JSONObject:
    return {key: value for key, value in status.items() if key not in LAZY_FIELDS}


def _lazy(status: Mapping[str, Any]) -> JSONObject:
    return {key: value for key, value in status.items() if key in LAZY_FIELDS}


def merge_patch_for(status: Mapping[str, Any], stored: Mapping[str, Any]) -> JSONObject:
    """The ``status`` merge patch that makes ``stored`` say ``status`` (maps it replaces whole lose missing keys)."""
    patch = dict(status)
    for name in REPLACED_MAPS:
        old = stored.get(name) or {}
        new = status.get(name) or {}
        if old or name in status:
            patch[name] = {**{key: None for key in old if key not in new}, **new}
    for name in REPLACED_WHEN_REPORTED:
        reported = status.get(name)
        if isinstance(reported, Mapping):
            patch[name] = _replacing(stored.get(name), reported)
    return patch


def _replacing(old: object, new: Mapping[str, Any]) -> JSONObject:
    """The merge patch turning map ``old`` into ``new`` exactly: keys ``new`` lacks become null, at every depth."""
    before = old if isinstance(old, Mapping) else {}
    patch: JSONObject = {key: None for key in before if key not in new}
    for key, value in new.items():
        patch[key] = _replacing(before.get(key), value) if isinstance(value, Mapping) else value
    return patch
