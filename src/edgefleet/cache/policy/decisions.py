"""What the request path does, decided without I/O: from a stored entry, a fill and ``now``.

How: the front end (:mod:`edgefleet.cache.front.proxy`, ``slices``) and the
fetch behind a fill (:mod:`edgefleet.cache.upstream.fetches`) ask these
functions and then do what the answer says. Each takes the time as an
argument (POSIX seconds, from the worker's injected :data:`Clock`) and
returns a value:

- :func:`on_lookup`: a stored entry (or none) -> :class:`Lookup`: serve it
  fresh (``HIT``), serve it stale while a background fill revalidates it
  (``STALE``), answer 504 to ``only-if-cached`` (``NOT_CACHED``), answer a
  Range miss from slices (``SLICES``) or go upstream (``FILL``: revalidate
  the entry if there is one, else fetch).
- :func:`fast_hit`: whether the synchronous memory fast path may answer.
- :func:`collapse`: join the key's fill, start one, or first try the
  node-wide lock (another worker may be filling the key).
- :func:`on_answer`: an upstream status -> :class:`Answered`: the stored
  entry is current (304), serve it stale (5xx within ``stale-if-error``),
  or take the response (``RECEIVE``); :func:`store_response` then says
  whether it is stored and shared.
- :func:`stale_on_error`, :func:`is_fresh`: the two questions asked after an
  upstream failure and after another worker's fill.

Why: these were ``time.time()`` calls spread through the asyncio code, so
only real processes and real sleeps past a ``max-age`` could test them. Here
they are plain functions of their arguments (the model is ``edgefleet.sync``
and h11's state table; docs/architecture.md, "The cache" and "Layering").
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgefleet.cache.policy import freshness

Clock = Callable[[], float]
"""Returns POSIX seconds: ``time.time`` in a worker, a fake clock in tests."""

__all__ = [
    "Answered",
    "Clock",
    "Collapse",
    "Lookup",
    "StoredMeta",
    "Storing",
    "collapse",
    "fast_hit",
    "is_fresh",
    "on_answer",
    "on_lookup",
    "stale_on_error",
    "store_response",
    "use_of",
]


class StoredMeta(Protocol):
    """What the decisions read of a stored entry's metadata (``storage.entries.EntryMeta`` has it)."""

    @property
    def status(self) -> int: ...
    @property
    def fresh_until(self) -> float: ...
    @property
    def stale_while_revalidate_until(self) -> float: ...
    @property
    def stale_if_error_until(self) -> float: ...
    @property
    def no_cache(self) -> bool: ...
    @property
    def must_revalidate(self) -> bool: ...
    @property
    def invalidated(self) -> bool: ...


class Lookup(enum.Enum):
    """What to do with a cacheable request after looking up its key."""

    HIT = "hit"
    STALE = "stale"
    NOT_CACHED = "not-cached"
    SLICES = "slices"
    FILL = "fill"


class Collapse(enum.Enum):
    """How a request that must go upstream gets its fill."""

    JOIN = "join"
    START = "start"
    TRY_NODE_LOCK = "try-node-lock"


class Answered(enum.Enum):
    """What an upstream answer to a fill's request means."""

    REVALIDATED = "revalidated"
    STALE = "stale"
    RECEIVE = "receive"


@dataclass(frozen=True, slots=True)
class Storing:
    """Whether a response is stored, and whether waiters of other requests may take it."""

    store: bool
    shareable: bool


def timing(meta: StoredMeta) -> freshness.Timing:
    return freshness.Timing(meta.fresh_until, meta.stale_while_revalidate_until, meta.stale_if_error_until)


def use_of(meta: StoredMeta, now: float) -> freshness.Use:
    """How a stored entry may be used at ``now``: fresh, stale while revalidating, or not without asking."""
    return freshness.use(timing(meta), now, no_cache=meta.no_cache, invalidated=meta.invalidated)


def on_lookup(meta: StoredMeta | None, now: float, *, only_if_cached: bool = False, sliced: bool = False) -> Lookup:
    """What to do with a request whose key holds ``meta`` (None: nothing stored for its variant).

    ``only_if_cached``: the client sent ``Cache-Control: only-if-cached``; ``sliced``: a Range miss that
    slices can answer (asked only when nothing is stored).
    """
    if meta is not None:
        use = use_of(meta, now)
        if use is freshness.Use.FRESH:
            return Lookup.HIT
        if use is freshness.Use.STALE_REVALIDATE_ASYNC:
            return Lookup.STALE
        return Lookup.FILL
    if only_if_cached:
        return Lookup.NOT_CACHED
    return Lookup.SLICES if sliced else Lookup.FILL


def fast_hit(meta: StoredMeta, now: float) -> bool:
    """Whether the memory fast path may answer: a fresh 200 that needs no validation."""
    return now < meta.fresh_until and not meta.invalidated and not meta.no_cache and meta.status == 200


def is_fresh(meta: StoredMeta, now: float) -> bool:
    """Whether the entry is fresh at ``now`` and not soft-purged (whatever no-cache says)."""
    return now < meta.fresh_until and not meta.invalidated


def stale_on_error(meta: StoredMeta | None, now: float) -> bool:
    """Whether the entry may be served stale at ``now`` because upstream failed (stale-if-error, no must-revalidate)."""
    if meta is None or meta.must_revalidate:
        return False
    return freshness.may_serve_stale_on_error(timing(meta), now)


def collapse(*, fill_running: bool, stored: bool, node_locks: bool, looped: bool) -> Collapse:
    """How to get a fill: join the running one, take the node lock first, or start one.

    ``looped``: the request came back around the tiers; it must neither join the fill that sent it (a
    deadlock) nor wait for the node lock. The node lock is tried only when nothing is stored: a
    revalidation is cheap and need not be collapsed across workers.
    """
    if fill_running and not looped:
        return Collapse.JOIN
    if not stored and node_locks and not looped:
        return Collapse.TRY_NODE_LOCK
    return Collapse.START


def on_answer(status: int, meta: StoredMeta | None, now: float) -> Answered:
    """What an upstream ``status`` means for a fill that revalidates ``meta`` (None: a plain fetch)."""
    if meta is None:
        return Answered.RECEIVE
    if status == 304:
        return Answered.REVALIDATED
    if status >= 500 and stale_on_error(meta, now):
        return Answered.STALE
    return Answered.RECEIVE


def store_response(*, storable: bool, refusal: str, from_peer: bool) -> Storing:
    """Whether to store a response and share it with other waiters.

    A site peer's response is relayed, not stored (its owner stores it: one copy per site), but its
    waiters may share it when only the storing was refused for being a peer's (``refusal`` empty).
    """
    return Storing(store=storable and not from_peer, shareable=storable or (from_peer and refusal == ""))
