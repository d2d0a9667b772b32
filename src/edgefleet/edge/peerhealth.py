"""Peer health votes: each agent probes the caches of the other nodes of its site and says what it sees.

Why: the GSLB must stop sending users to a node whose cache fails, and must
keep sending them to a node that serves well even when its link to the
cloud is down (docs/architecture.md, "Request path"). Neither the node's own
reports nor its heartbeat can say that; its site peers can, from the same
network the users' traffic crosses. So every agent reports
``Node.status.peerVotes: {peer: {healthy, at}}`` and the GSLB counts a node
healthy while a majority of its peers' fresh votes say so.

The verdict (:class:`PeerVotes`, sans I/O) is a small hysteresis per peer:

- ``fall`` (2) failed probes in a row make the peer unhealthy, ``rise`` (1)
  passed probe in a row makes it healthy: quick to drop a failing cache
  (two probe periods), quick to take a recovered one back, and one lost
  packet does not flap it;
- before its first verdict a peer has no vote (a new peer is not voted
  unhealthy for one failed probe, nor healthy for nothing);
- ``at`` is when the verdict last changed or was last confirmed by a probe
  agreeing with it; the GSLB ignores votes older than its TTL (30 s), so a
  vote no longer confirmed (the prober stopped) fades out by itself, and
  :meth:`PeerVotes.votes` leaves out those older than ``stale_after``;
- votes about nodes that are no longer peers (deleted, moved to another
  site, address removed) are dropped (:meth:`PeerVotes.retain`).

The prober (:class:`PeerProber`, a thin asyncio loop) runs every
``period`` seconds (2 by default), whether or not the cloud link is up:
it asks the agent for the current peers (:func:`peer_targets`: the Nodes of
the site in the node's view, but itself, that have an address), sends
``GET /healthz`` to each one's cache admin port at its first address (where
the built-in cache listens, see :mod:`edgefleet.edge.cacheconfig`), all at
once, each bounded by ``timeout`` (1 s), and feeds the results in. When a
verdict changes (or a peer leaves) it calls ``on_change``: the agent asks
the hub client for a status report now, not at the next heartbeat. While
there are votes it also calls it every :data:`REFRESH_SECONDS`, so the
reported ``at`` stays fresh for the GSLB whatever the heartbeat period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgefleet.api.common import format_timestamp
from edgefleet.edge.cacheconfig import node_host
from edgefleet.edge.probes import check_http

log = logging.getLogger("edgefleet.edge.peerhealth")

HEALTH_PATH = "/healthz"
DEFAULT_PERIOD = 2.0
PROBE_TIMEOUT = 1.0
REFRESH_SECONDS = 10.0
"""Report votes at least this often, so the GSLB's vote TTL (30 s) never expires a live one."""
STALE_AFTER = 30.0
"""Votes not confirmed for this long are left out of reports (the GSLB would ignore them anyway)."""


@dataclass(slots=True)
class _Peer:
    healthy: bool | None = None  # None: no verdict yet
    failures: int = 0  # failed probes in a row
    passes: int = 0  # passed probes in a row
    at: float = 0.0  # when the verdict last changed or was last confirmed


class PeerVotes:
    """Verdicts about site peers from consecutive probe results; see the module docstring."""

    def __init__(self, *, fall: int = 2, rise: int = 1, stale_after: float = STALE_AFTER) -> None:
        if fall < 1 or rise < 1:
            raise ValueError("fall and rise must be at least 1")
        self.fall = fall
        self.rise = rise
        self.stale_after = stale_after
        self._peers: dict[str, _Peer] = {}

    def observe(self, peer: str, ok: bool, now: float) -> bool:
        """Record one probe of ``peer`` at ``now`` (seconds since the epoch); True if its verdict changed."""
        state = self._peers.setdefault(peer, _Peer())
        if ok:
            state.passes, state.failures = state.passes + 1, 0
            reached = state.passes >= self.rise
        else:
            state.failures, state.passes = state.failures + 1, 0
            reached = state.failures >= self.fall
        if state.healthy is ok:
            state.at = now  # confirmed
            return False
        if not reached:
            return False  # not enough in a row to change (or reach) a verdict
        state.healthy, state.at = ok, now
        return True

    def retain(self, peers: Iterable[str]) -> bool:
        """Forget every peer not in ``peers``; True if a vote was dropped."""
        keep = set(peers)
        gone = [peer for peer in self._peers if peer not in keep]
        dropped = False
        for peer in gone:
            dropped |= self._peers.pop(peer).healthy is not None
        return dropped

    def verdict(self, peer: str) -> bool | None:
        """True/False, or None before the first verdict (or for an unknown peer)."""
        state = self._peers.get(peer)
        return None if state is None else state.healthy

    def votes(self, now: float) -> dict[str, dict[str, Any]]:
        """``{peer: {"healthy": bool, "at": RFC 3339}}`` (Node.status.peerVotes), fresh verdicts only."""
        return {
            peer: {"healthy": state.healthy, "at": format_timestamp(datetime.fromtimestamp(state.at, UTC))}
            for peer, state in sorted(self._peers.items())
            if state.healthy is not None and now - state.at < self.stale_after
        }


@dataclass(frozen=True, slots=True)
class PeerTarget:
    """A peer's cache admin endpoint: node name, address and port."""

    name: str
    host: str
    port: int


def _spec(document: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = document.get("spec")
    return spec if isinstance(spec, dict) else {}


def peer_targets(nodes: Iterable[Mapping[str, Any]], self_name: str, site: str, port: int) -> list[PeerTarget]:
    """The Nodes of ``site`` other than ``self_name`` that have an address, by name."""
    targets = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name")
        spec = _spec(node)
        if not isinstance(name, str) or name == self_name or spec.get("site") != site:
            continue
        if spec.get("addresses"):
            targets.append(PeerTarget(name, node_host(node), port))
    return sorted(targets, key=lambda target: target.name)


Probe = Callable[[PeerTarget, float], Awaitable[bool]]


async def probe_cache(target: PeerTarget, time_limit: float) -> bool:
    """``GET /healthz`` on the peer's cache admin port: True for a 2xx/3xx within ``time_limit`` seconds."""
    outcome = await check_http(target.port, HEALTH_PATH, time_limit, host=target.host)
    return outcome.ok


class PeerProber:
    """Every ``period`` seconds: probe the current peers, feed :class:`PeerVotes`, call ``on_change``."""

    def __init__(
        self,
        votes: PeerVotes,
        targets: Callable[[], list[PeerTarget]],
        on_change: Callable[[], None],
        *,
        period: float = DEFAULT_PERIOD,
        timeout: float = PROBE_TIMEOUT,
        probe: Probe = probe_cache,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if period <= 0:
            raise ValueError("--peer-probe-period must be positive")
        self.votes = votes
        self.period = period
        self.timeout = min(timeout, period)  # a probe never outlives its round
        self._targets = targets
        self._on_change = on_change
        self._probe = probe
        self._clock = clock
        self._reported_at = 0.0

    async def run(self) -> None:
        """Until cancelled; one failing round (a bug) is logged and the next one tried."""
        while True:
            started = time.monotonic()
            try:
                await self.probe_once()
            except Exception:
                log.exception("peer probe round failed")
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))

    async def probe_once(self) -> bool:
        """One round; True if a verdict changed or a peer's vote was dropped."""
        targets = self._targets()
        changed = self.votes.retain(target.name for target in targets)
        results = await asyncio.gather(*(self._checked(target) for target in targets))
        now = self._clock()
        for target, ok in zip(targets, results, strict=True):
            if self.votes.observe(target.name, ok, now):
                changed = True
                log.info(
                    "peer %s is now %s",
                    target.name,
                    "healthy" if ok else "unhealthy",
                    extra={"peer": target.name, "address": f"{target.host}:{target.port}"},
                )
        refresh = bool(targets) and now - self._reported_at >= REFRESH_SECONDS
        if changed or refresh:
            self._reported_at = now
            self._on_change()
        return changed

    async def _checked(self, target: PeerTarget) -> bool:
        """One probe; a failure is confirmed at once by a second probe (and counted twice).

        So a dead peer is voted down within one period rather than two (the
        GSLB must drop it within two periods, report latency included), while
        one lost packet still does not flip the vote.
        """
        if await self._attempt(target):
            return True
        if await self._attempt(target):
            return True
        self.votes.observe(target.name, False, self._clock())
        return False

    async def _attempt(self, target: PeerTarget) -> bool:
        with contextlib.suppress(Exception):  # a probe that breaks is a failed probe, never a dead loop
            return await self._probe(target, self.timeout)
        return False
