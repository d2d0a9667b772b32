"""Response times of the last minute, and their 99th percentile, at a cost a hit can afford.

How: :class:`RecentLatency` counts each response in a histogram of fixed,
log-spaced buckets (:data:`BOUNDS`: 10 µs to about 9 minutes, each bound
2^(1/4) times the one before, so a bucket is 19 % wide). There is one
histogram per 10-second slot and six slots, used in turn: a response is
counted in the slot of the time it ended, and a slot is zeroed when it is
used again a minute later. :meth:`RecentLatency.counts` sums the slots of the
current 10 seconds and the five before them, so "the last minute" is the
last 50 to 60 seconds. Workers' counts are summed bucket by bucket (the
master merges them as every other list of the stats snapshot) and
:func:`percentile` reads a quantile from the sum, interpolating linearly
inside its bucket as Prometheus' ``histogram_quantile`` does.

Why buckets and not samples: counting costs one comparison, one
``bisect`` in C over a tuple and one ``+= 1``, with no list or object made
per response and no lock (each worker has its own, and the master only
reads snapshots over the control channel); the snapshot is the same 105
integers whatever the traffic, and sums across workers exactly, which
percentiles of samples do not.

The clock: :meth:`RecentLatency.observe` is given the times a response
started and ended, read from the clock the instance was made with
(``time.monotonic`` unless a test injects another), which
:meth:`RecentLatency.counts` reads to know which slots are recent.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate

SMALLEST_BOUND = 10e-6
"""Seconds: the upper bound of the first bucket."""
GROWTH = 2**0.25
BOUNDS: tuple[float, ...] = tuple(SMALLEST_BOUND * GROWTH**index for index in range(104))
"""Bucket upper bounds, seconds; one more bucket counts the responses above the last bound."""
BUCKETS = len(BOUNDS) + 1
SLOT_SECONDS = 10.0
SLOTS = 6


class RecentLatency:
    """One worker's response-time histogram of the last minute (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots = [[0] * BUCKETS for _ in range(SLOTS)]
        self._epochs = [-1] * SLOTS  # the 10-second period each slot counts (-1: none yet)
        self._current = self._slots[0]
        self._current_ends = float("-inf")  # when the current slot's period ends: the next response moves on

    def observe(self, start: float, end: float) -> None:
        """Count one response that began at ``start`` and ended at ``end`` (seconds, on this instance's clock)."""
        if end >= self._current_ends:
            self._enter(end)
        self._current[bisect_left(BOUNDS, end - start)] += 1

    def _enter(self, now: float) -> None:
        """Make the slot of ``now``'s period current, zeroed if it last counted an older period."""
        epoch = int(now // SLOT_SECONDS)
        index = epoch % SLOTS
        if self._epochs[index] != epoch:
            self._slots[index] = [0] * BUCKETS
            self._epochs[index] = epoch
        self._current = self._slots[index]
        self._current_ends = (epoch + 1) * SLOT_SECONDS

    def counts(self) -> list[int]:
        """Responses per bucket that ended in the current 10-second period or the five before it."""
        epoch = int(self._clock() // SLOT_SECONDS)
        total = [0] * BUCKETS
        for slot_epoch, slot in zip(self._epochs, self._slots, strict=True):
            if epoch - SLOTS < slot_epoch <= epoch:
                total = [a + b for a, b in zip(total, slot, strict=True)]
        return total


def percentile(counts: Sequence[int], fraction: float) -> float | None:
    """The ``fraction`` quantile (0.99: p99) in seconds of bucket ``counts``; None when they count nothing.

    Linear inside the bucket that holds it; a quantile above the last bound is that bound (a floor).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a quantile is a fraction in (0, 1], not {fraction}")
    cumulative = list(accumulate(counts))
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = fraction * cumulative[-1]
    index = bisect_left(cumulative, rank)  # the first bucket whose running count reaches the rank
    below = cumulative[index - 1] if index > 0 else 0
    lower = BOUNDS[index - 1] if index > 0 else 0.0
    upper = BOUNDS[index] if index < len(BOUNDS) else lower
    return lower + (upper - lower) * (rank - below) / (cumulative[index] - below)
