"""Connection balancing between hub replicas (pure): how many sessions to release, and where to send them.

Why: after a replica restarts or is upgraded, the agents it had are spread
over the others and stay there; a layer-4 balancer does not move
long-lived WebSockets. The operators of a telecom CDN on edge Kubernetes
fixed it like this, and so do we: every replica publishes its live
connection count (its Hub object), computes the expected share (total
connections / live replicas), and when it holds more than the share by more
than a tolerance it releases the excess in small batches, then waits an
observation period (default 30 s) for the released agents to land and the
counts to settle before it measures again. It stops when balanced.

:class:`Balancer` is the decision, as a small state machine fed with the
replicas' published loads and the time; the hub shell closes the sessions
it is told to (close code ``CLOSE_REBALANCE`` with the hint) and publishes
its count. States::

    MEASURING --over the share--> RELEASING --excess released--> OBSERVING
    OBSERVING --observation period over--> MEASURING

Only a replica over ``expected * (1 + tolerance)`` releases, and only down
to ``ceil(expected)``; replicas at or under the share never do, so the
released sessions flow towards the least-loaded replicas, whose URL is the
hint. Releasing happens at most ``batch`` sessions per ``batch_interval``,
so the receiving replica sees a trickle, not a storm.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """One live replica as its Hub object says."""

    hub_id: str
    connections: int
    url: str | None = None


@dataclass(frozen=True, slots=True)
class BalanceSettings:
    tolerance: float = 0.05
    """Release only above ``expected * (1 + tolerance)``."""
    observe_seconds: float = 30.0
    """Wait this long after releasing before measuring again."""
    batch: int = 50
    """Release at most this many sessions per ``batch_interval``."""
    batch_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.tolerance < 0 or self.observe_seconds < 0 or self.batch < 1 or self.batch_interval <= 0:
            raise ValueError("balance settings: tolerance and observe must be >= 0, batch >= 1, interval > 0")


class BalanceState(enum.Enum):
    MEASURING = "measuring"
    RELEASING = "releasing"
    OBSERVING = "observing"


@dataclass(frozen=True, slots=True)
class Release:
    """Close ``count`` sessions now, hinting ``hint`` (a URL, or None: any other replica)."""

    count: int
    hint: str | None


def expected_share(loads: Sequence[ReplicaLoad]) -> float:
    """Total connections / live replicas (0 with none)."""
    return sum(load.connections for load in loads) / len(loads) if loads else 0.0


def excess(own: str, loads: Sequence[ReplicaLoad], tolerance: float) -> int:
    """Sessions ``own`` should release: down to ``ceil(expected)`` when over ``expected * (1 + tolerance)``."""
    mine = next((load for load in loads if load.hub_id == own), None)
    if mine is None or len(loads) < 2:
        return 0
    expected = expected_share(loads)
    if mine.connections <= expected * (1 + tolerance):
        return 0
    return max(0, mine.connections - math.ceil(expected))


def least_loaded_url(own: str, loads: Sequence[ReplicaLoad]) -> str | None:
    """The URL of the least-loaded other replica that published one."""
    others = [load for load in loads if load.hub_id != own and load.url]
    return min(others, key=lambda load: (load.connections, load.hub_id)).url if others else None


class Balancer:
    """The release decision over time; see the module docstring."""

    def __init__(self, hub_id: str, settings: BalanceSettings | None = None) -> None:
        self.hub_id = hub_id
        self.settings = settings or BalanceSettings()
        self.state = BalanceState.MEASURING
        self.released_total = 0
        self._to_release = 0
        self._hint: str | None = None
        self._next_batch = 0.0
        self._observe_until = 0.0

    def tick(self, now: float, loads: Sequence[ReplicaLoad]) -> Release | None:
        """What to release at ``now`` (monotonic seconds), given the replicas' published loads."""
        if self.state is BalanceState.OBSERVING:
            if now < self._observe_until:
                return None
            self.state = BalanceState.MEASURING
        if self.state is BalanceState.MEASURING:
            self._to_release = excess(self.hub_id, loads, self.settings.tolerance)
            if not self._to_release:
                return None
            self._hint = least_loaded_url(self.hub_id, loads)
            self.state, self._next_batch = BalanceState.RELEASING, now
        return self._release(now)

    def _release(self, now: float) -> Release | None:
        if now < self._next_batch:
            return None
        count = min(self.settings.batch, self._to_release)
        self._to_release -= count
        self.released_total += count
        self._next_batch = now + self.settings.batch_interval
        if not self._to_release:
            self.state, self._observe_until = BalanceState.OBSERVING, now + self.settings.observe_seconds
        return Release(count, self._hint)

    def next_tick(self, now: float, period: float) -> float:
        """When :meth:`tick` should next be called (the shell's sleep)."""
        if self.state is BalanceState.RELEASING:
            return max(now, self._next_batch)
        if self.state is BalanceState.OBSERVING:
            return max(now, min(self._observe_until, now + period))
        return now + period
