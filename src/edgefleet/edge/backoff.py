"""Exponential back-off with optional jitter: the one schedule of the edge (pure).

How: :meth:`Backoff.delay` gives the wait before retry number ``attempt``
(0 for the first retry): ``initial * 2**attempt`` capped at ``maximum``.
With ``jitter`` > 0 the wait is drawn from
``[ceiling * (1 - jitter), ceiling)`` using the caller's random source, so a
fleet that lost its hub at the same moment does not redial in lockstep.
``reset_after`` is for callers that count consecutive failures: a run (or a
session) that lasted that long counts as healthy and starts the schedule
again (:meth:`Backoff.healthy`).

Two users, two presets: the workload supervisor restarts crashed processes
with :data:`RESTARTS` (1 s doubling to 60 s, no jitter: one node alone
decides) and the hub client redials with :data:`HUB_DIAL` (0.5 s doubling to
30 s, half of it jitter: every node of a fleet redials after a hub restart).

Why pure: no clock and no random module state; time enters as durations and
randomness as a callable, so the schedule is tested without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Random = Callable[[], float]
"""A source of floats uniform in [0, 1), e.g. ``random.Random(seed).random``."""

_MAX_EXPONENT = 32
"""2**32 * initial is past any sensible maximum: bounds the arithmetic for huge attempt counts."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off, in seconds; see the module docstring."""

    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 60.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum or self.reset_after < 0:
            raise ValueError("Backoff needs 0 <= initial <= maximum and reset_after >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff needs 0 <= jitter <= 1")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry ``attempt`` (0-based)."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        return min(self.maximum, self.initial * 2.0**exponent)

    def delay(self, attempt: int, rand: Random | None = None) -> float:
        """The wait before retry ``attempt`` (0-based); ``rand`` is required when ``jitter`` > 0."""
        ceiling = self.ceiling(attempt)
        if self.jitter == 0:
            return ceiling
        if rand is None:
            raise ValueError("a jittered Backoff needs a random source")
        return ceiling * (1.0 - self.jitter * (1.0 - rand()))

    def healthy(self, lasted: float) -> bool:
        """True if a run of ``lasted`` seconds resets the count of consecutive failures."""
        return lasted >= self.reset_after


RESTARTS = Backoff(initial=1.0, maximum=60.0, reset_after=60.0)
"""Workload restarts: 1 s doubling to 60 s; 60 s of running resets it."""

HUB_DIAL = Backoff(initial=0.5, maximum=30.0, jitter=0.5)
"""Hub redials: 0.5 s doubling to 30 s, each wait drawn from its upper half."""
