"""Restart decisions for exited workloads: the restart policy and the back-off schedule (pure).

How: :func:`should_restart` applies the template's ``restartPolicy`` to how
the process ended; :class:`Backoff` says how long to wait before the next
start: ``initial`` seconds, doubling with every consecutive failure up to
``maximum``. A run that lasted ``reset_after`` seconds or more counts as
healthy and resets the schedule, so a workload that crashes once a day
restarts at once, while a crash loop settles at one start per ``maximum``.

An exit whose status is unknown (a process adopted from an earlier agent
process) counts as a failure: for a CDN, restarting a workload that might
have failed is the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgefleet.edge.processes import ExitStatus

RestartPolicy = Literal["Always", "OnFailure", "Never"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off between restarts, in seconds."""

    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum or self.reset_after < 0:
            raise ValueError("Backoff needs 0 <= initial <= maximum and reset_after >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait before the start that follows ``failures`` consecutive failures (>= 1)."""
        exponent = min(max(failures - 1, 0), 32)  # bounded: 2**32 * initial is past any maximum
        return min(self.maximum, self.initial * 2.0**exponent)


def should_restart(policy: RestartPolicy, status: ExitStatus | None) -> bool:
    """Whether to start again after an exit (``status`` None: the process never started)."""
    if policy == "Always":
        return True
    if policy == "Never":
        return False
    return status is None or not status.success
