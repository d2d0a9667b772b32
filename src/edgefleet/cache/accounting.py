"""Honest accounting: where each answer's body came from, per Domain, and the origin offload users care about.

What is counted. Every answered request has a *source*, the place its body
came from as this node saw it:

- ``local``: this node's storage (a hit, a stale answer, a 304 revalidated
  upstream and answered from storage, a hot object);
- ``peer``: relayed from a site peer, the key's owner;
- ``parent``: relayed from a node of a parent site;
- ``origin``: this node fetched it from an origin (a miss, or a pass/bypass
  sent straight to the origin);
- ``error``: nothing came from anywhere (the cache answered with an error).

The node's own ``X-Cache`` status word says the same thing
(:data:`STATUS_SOURCE`): ``HIT``/``STALE``/``REVALIDATED`` are local,
``PEER`` and ``PARENT`` name the tier the body was relayed from, ``MISS``
the origin, ``PASS`` uncached (its source is the tier it was passed to),
``ERROR`` none. Each cache on the path appends its entry to the one it
relayed (:func:`x_cache`), Squid-style, so a client sees
``X-Cache: HIT from owner, PEER from edge``: the owner had it, the edge
relayed it.

Requests that arrive from another cache of the fleet (a site peer or a child
site: they carry ``X-Edgefleet-Tier``) are counted too, by source, and also
in ``tier_requests``/``tier_bytes``, so that *client requests* (all requests
minus tier requests) count each user request once fleet-wide. The field
counts here even from an address the node does not trust for routing
(a standalone cache may not list its child caches); a client that sends it
only removes its own requests from its Domain's client requests (it cannot
hide origin load, counted where it happens). Origin load is counted where it happens: ``origin_requests``
are the requests this node sent to an origin (fills, revalidations, passes,
prefetches; requests collapsed onto one fill share it) and
``origin_bytes`` the body bytes it received from origins.

The ratios (:func:`ratios`): origin offload = 1 - origin requests / client
requests (over a Domain, summed over its nodes: the share of user requests
the origin did not see), byte offload = 1 - origin bytes / client bytes,
and the local ratio = requests served from this node's storage / requests
it answered. Per node, offload is over every request it answered, client
and tier: how much it shielded what is above it.

How it stays cheap: a worker keeps one :class:`DomainCounters` per configured
Domain (plain integer attributes; the proxy finds the Domain's once per
request, so a hit costs ``counters.local += 1; counters.bytes += size``).
:class:`Accounts` holds them, bounded by the config's Domains. The master
sums the workers' snapshots and keeps :class:`RecentAccounts`, the counts of
the last :data:`WINDOW_SECONDS` in 10-second slots, from the differences
between successive snapshots of each worker process (a restarted worker's
counters start again from zero: its new counts are all new). The window
is what ``/status`` reports and the agent puts in ``Node.status.cache``: it
does not jump when a cache restarts (it loses at most one window), and a
sum over nodes is a current figure rather than one since each node's start.
Prometheus gets the cumulative counters.

The load figures (:func:`load_figures`: ``egressGbps``, ``clientGbps``,
``requestsPerSecond``) cover only the last :data:`LOAD_SLOTS` slots of the
same window (a minute at 10-second slots): the GSLB sheds load on them, and a
5-minute average would react too late. They count every body byte the node
sent (``egress``: to clients and to other caches; ``client``: to clients
only) over the time those slots cover, or since the master started when that
is shorter. The slot length is a setting of the cache (``edgefleet cache
--load-window``: the load window, a sixth of it per slot), so a test can
make the figures follow traffic within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

SOURCES = ("local", "peer", "parent", "origin", "error")
"""Where an answer's body came from (see the module docstring)."""
FIELDS = (*SOURCES, "bytes", "tier_requests", "tier_bytes", "origin_requests", "origin_bytes")
"""The per-Domain counters, in snapshot order."""
STATUS_SOURCE = {
    "HIT": "local",
    "STALE": "local",
    "REVALIDATED": "local",
    "PEER": "peer",
    "PARENT": "parent",
    "MISS": "origin",
    "PASS": "origin",
    "ERROR": "error",
}
"""The source an ``X-Cache`` status word means (``PASS``: unless the pass went to a peer or parent)."""
FETCHED_STATUS = {"peer": "PEER", "parent": "PARENT", "origin": "MISS"}
"""The status word of a body fetched from an upstream tier of each kind."""
WINDOW_SECONDS = 300
SLOT_SECONDS = 10.0
LOAD_SLOTS = 6
"""The load figures cover this many of the latest slots (a minute at the default slot)."""
LOAD_WINDOW_SECONDS = SLOT_SECONDS * LOAD_SLOTS
MAX_NODE_DOMAINS = 50
"""At most this many Domains (the busiest) in a node's status report."""


def fetched_status(kind: str) -> str:
    """The X-Cache status word of a body relayed from an upstream of ``kind`` (peer, parent or origin)."""
    return FETCHED_STATUS.get(kind, "MISS")


def source_of(status: str) -> str:
    """The source an X-Cache status word means."""
    return STATUS_SOURCE.get(status, "error")


def x_cache(upstream: str | None, status: str, node: str) -> str:
    """This node's ``X-Cache`` value: its entry after the upstream's (the chain, upstream first)."""
    own = f"{status} from {node}"
    return f"{upstream}, {own}" if upstream else own


def split_x_cache(headers: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
    """``headers`` without their X-Cache fields, and those fields' values joined (None: there were none)."""
    kept, values = [], []
    for name, value in headers:
        if name.lower() == "x-cache":
            values.append(value)
        else:
            kept.append((name, value))
    return kept, ", ".join(values) if values else None


class DomainCounters:
    """One Domain's counters in one worker (plain attributes: see the module docstring)."""

    __slots__ = FIELDS

    def __init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, 0)

    local: int
    peer: int
    parent: int
    origin: int
    error: int
    bytes: int
    tier_requests: int
    tier_bytes: int
    origin_requests: int
    origin_bytes: int

    def count(self, source: str, sent: int, tier: bool) -> None:
        """One answered request whose body came from ``source``; ``tier``: asked by another cache of the fleet."""
        if source == "local":
            self.local += 1
        elif source == "peer":
            self.peer += 1
        elif source == "parent":
            self.parent += 1
        elif source == "origin":
            self.origin += 1
        else:
            self.error += 1
        self.bytes += sent
        if tier:
            self.tier_requests += 1
            self.tier_bytes += sent

    def values(self) -> list[int]:
        return [getattr(self, name) for name in FIELDS]


class Accounts:
    """A worker's :class:`DomainCounters`, one per configured Domain."""

    def __init__(self) -> None:
        self._by_name: dict[str, DomainCounters] = {}

    def slot(self, name: str) -> DomainCounters:
        counters = self._by_name.get(name)
        if counters is None:
            counters = self._by_name[name] = DomainCounters()
        return counters

    def retain(self, names: Iterable[str]) -> None:
        """Keep only the Domains of the current config (bounded by it)."""
        wanted = set(names)
        self._by_name = {name: c for name, c in self._by_name.items() if name in wanted}

    def snapshot(self) -> dict[str, list[int]]:
        return {name: counters.values() for name, counters in self._by_name.items()}


def merge_accounts(total: Mapping[str, list[int]], more: Mapping[str, Any]) -> dict[str, list[int]]:
    """Sum two account snapshots (Domain -> counters in :data:`FIELDS` order); malformed entries are skipped."""
    merged = {name: list(values) for name, values in total.items()}
    for name, values in more.items():
        if not isinstance(values, list) or len(values) != len(FIELDS):
            continue
        old = merged.get(name, [0] * len(FIELDS))
        merged[name] = [a + int(b) for a, b in zip(old, values, strict=True)]
    return merged


class RecentAccounts:
    """The per-Domain counts of the last :data:`WINDOW_SECONDS`, from successive cumulative worker snapshots.

    ``observe(worker, process, accounts)`` takes a worker's cumulative snapshot; the difference from that
    worker's previous one is added to the slot of now: all of it when ``process`` changed (the worker
    restarted), and all of a Domain's when one of its counters went down (its counters started again).
    :meth:`figures` sums the slots of the window.
    """

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        slot_seconds: float = SLOT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.slot_seconds = slot_seconds
        self._slots = int(window // slot_seconds)
        self._clock = clock
        self._started = clock()
        self._seen = self._started  # when the latest snapshot came (the start, before the first)
        self._since: dict[int, float] = {}  # slot epoch -> when the counts of its first snapshot began
        self._last: dict[int, tuple[object, Mapping[str, list[int]]]] = {}
        self._counts: dict[int, dict[str, list[int]]] = {}  # slot epoch -> Domain -> deltas

    def observe(self, worker: int, process: object, accounts: Mapping[str, Any]) -> None:
        self._note_time()
        current = merge_accounts({}, accounts)
        previous = self._last.get(worker)
        self._last[worker] = (process, current)
        base: Mapping[str, list[int]] = previous[1] if previous is not None and previous[0] == process else {}
        deltas = {}
        for name, values in current.items():
            old = base.get(name, [0] * len(FIELDS))
            if any(new < was for new, was in zip(values, old, strict=True)):
                old = [0] * len(FIELDS)  # this Domain's counters started again (removed and re-added by a reload)
            delta = [new - was for new, was in zip(values, old, strict=True)]
            if any(delta):
                deltas[name] = delta
        if deltas:
            epoch = int(self._clock() // self.slot_seconds)
            self._counts[epoch] = merge_accounts(self._counts.get(epoch, {}), deltas)
            self._prune(epoch)

    def _note_time(self) -> None:
        """Record since when the snapshots of this slot count (the previous snapshot's time), for the rates."""
        now = self._clock()
        epoch = int(now // self.slot_seconds)
        if epoch not in self._since:
            self._since[epoch] = self._seen
            for old in [e for e in self._since if e <= epoch - self._slots]:
                del self._since[old]
        self._seen = now

    def _prune(self, epoch: int) -> None:
        for old in [e for e in self._counts if e <= epoch - self._slots]:
            del self._counts[old]

    def figures(self, slots: int | None = None) -> dict[str, list[int]]:
        """Domain -> counts (:data:`FIELDS` order) of the current slot and the ones before it in the window
        (``slots``: only that many of the latest slots)."""
        epoch = int(self._clock() // self.slot_seconds)
        last = min(slots or self._slots, self._slots)
        total: dict[str, list[int]] = {}
        for slot_epoch, counts in self._counts.items():
            if epoch - last < slot_epoch <= epoch:
                total = merge_accounts(total, counts)
        return total

    def recent(self, slots: int = LOAD_SLOTS) -> tuple[dict[str, list[int]], float]:
        """The counts of the latest ``slots`` slots and the seconds they cover: from the snapshot before the
        first one in them to the latest (no snapshot in them: the slots' length, or the time since the start)."""
        now = self._clock()
        epoch = int(now // self.slot_seconds)
        last = min(slots, self._slots)
        starts = [at for slot_epoch, at in self._since.items() if epoch - last < slot_epoch <= epoch]
        if starts:
            seconds = self._seen - min(starts)
        else:
            seconds = min(last * self.slot_seconds, now - self._started)
        return self.figures(slots), max(seconds, self.slot_seconds)


# --- figures for /status (camelCase, as Node.status.cache) ---------------------------------------------------


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, clamped to [0, 1] and rounded; None without a whole."""
    if whole <= 0:
        return None
    return round(min(max(part / whole, 0.0), 1.0), 4)


def offload(origin: int, whole: int) -> float | None:
    """1 - origin / whole, clamped to [0, 1] (origin work above the traffic, e.g. prefetches, shows as 0)."""
    share = ratio(origin, whole)
    return None if share is None else round(1.0 - share, 4)


def domain_figures(values: list[int]) -> dict[str, Any]:
    """One Domain's window counts as the fields of ``Node.status.cache.domains[name]``."""
    c = dict(zip(FIELDS, values, strict=True))
    answered = sum(c[source] for source in SOURCES)
    return {
        "requests": answered - c["tier_requests"],
        "tierRequests": c["tier_requests"],
        "bytes": c["bytes"] - c["tier_bytes"],
        "originRequests": c["origin_requests"],
        "originBytes": c["origin_bytes"],
        "local": c["local"],
        "peer": c["peer"],
        "parent": c["parent"],
        "origin": c["origin"],
    }


def node_figures(window: Mapping[str, list[int]], seconds: float) -> dict[str, Any]:
    """The windowed ``/status`` fields of a node: totals over its Domains, ratios, the busiest Domains."""
    total = [0] * len(FIELDS)
    for values in window.values():
        total = [a + b for a, b in zip(total, values, strict=True)]
    c = dict(zip(FIELDS, total, strict=True))
    answered = sum(c[source] for source in SOURCES)
    busiest = sorted(window.items(), key=lambda item: (-sum(item[1][: len(SOURCES)]), item[0]))[:MAX_NODE_DOMAINS]
    return {
        "windowSeconds": int(seconds),
        "clientRequests": answered - c["tier_requests"],
        "tierRequests": c["tier_requests"],
        "servedLocal": c["local"],
        "servedPeer": c["peer"],
        "servedParent": c["parent"],
        "servedOrigin": c["origin"],
        "clientBytes": c["bytes"] - c["tier_bytes"],
        "originRequests": c["origin_requests"],
        "originBytes": c["origin_bytes"],
        "localRatio": ratio(c["local"], answered),
        "offload": offload(c["origin_requests"], answered),
        "byteOffload": offload(c["origin_bytes"], c["bytes"]),
        "domains": {name: domain_figures(values) for name, values in busiest},
    }


def load_figures(window: Mapping[str, list[int]], seconds: float) -> dict[str, Any]:
    """The load fields of ``/status`` from the counts of the last ``seconds`` (:meth:`RecentAccounts.recent`).

    ``egressGbps``: every body byte sent (to clients and other caches), in Gbit/s; ``clientGbps``: to clients
    only; ``requestsPerSecond``: requests answered (clients and other caches).
    """
    total = [0] * len(FIELDS)
    for values in window.values():
        total = [a + b for a, b in zip(total, values, strict=True)]
    c = dict(zip(FIELDS, total, strict=True))
    per_second = 1.0 / seconds if seconds > 0 else 0.0
    return {
        "loadWindowSeconds": round(seconds, 3),
        "requestsPerSecond": round(sum(c[source] for source in SOURCES) * per_second, 3),
        "egressGbps": round(c["bytes"] * 8 * per_second / 1e9, 9),
        "clientGbps": round((c["bytes"] - c["tier_bytes"]) * 8 * per_second / 1e9, 9),
    }
