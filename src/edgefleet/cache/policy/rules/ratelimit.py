"""Token buckets: the rate limit action's arithmetic, and a bounded per-process table of buckets.

How: a bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request takes one
token or is refused with the seconds until one is back (``Retry-After``, rounded up, at least 1). So over
any window of T seconds a key gets at most ``rate * T + burst`` requests. :func:`take_token` is that
arithmetic on one bucket's ``(tokens, last)`` and nothing else, so that every store of buckets makes the
same decision: :class:`TokenBuckets` here (one process; ``edgefleet rules test``, tests, a cache Proxy
built without a shared table) and the node-wide table in shared memory that every cache worker uses
(:mod:`edgefleet.cache.storage.ratetable`, which also uses :func:`pick_way` to place a key in its set).

:class:`TokenBuckets` keeps buckets in an insertion-ordered dict used as an LRU: a key seen again moves
to the end, and a new key past ``size`` evicts the least recently seen one. Memory is therefore bounded
whatever the number of distinct clients; the price is that a key evicted while its bucket was not yet
full comes back with a full bucket, which only happens when more than ``size`` distinct keys arrive
within one refill time (``burst / rate``): size the table above the number of clients seen in that time.

A rate-limit action gets its buckets from a :data:`LimiterFactory` (``CompileEnv.limiters``; by default
a :class:`TokenBuckets`). ``now`` is always an argument here (no clock); a clock that goes backwards
refills nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol


def take_token(tokens: float, last: float, now: float, rate: float, burst: float) -> tuple[float, float, int | None]:
    """Take a token from a bucket holding ``tokens`` as of ``last``, at ``now``.

    Returns the bucket to store (tokens, as of when) and None when allowed, else the seconds to wait (>= 1).
    """
    if now > last:
        tokens = min(burst, tokens + (now - last) * rate)
        last = now
    if tokens >= 1.0:
        return tokens - 1.0, last, None
    return tokens, last, max(1, math.ceil((1.0 - tokens) / rate))


def pick_way(tags: Sequence[int], lasts: Sequence[float], tag: int) -> tuple[int, bool]:
    """Where ``tag`` goes in a set of ways: (way, True) where it is; else (an empty way, False), empty meaning
    tag 0; else (the least recently used way, False), the one whose bucket was last taken earliest."""
    try:
        return tags.index(tag), True
    except ValueError:
        pass
    try:
        return tags.index(0), False
    except ValueError:
        return lasts.index(min(lasts)), False


class Limiter(Protocol):
    """The buckets of one rate-limit action: what the action calls per request."""

    def take(self, key: str, now: float) -> int | None:
        """Take a token for ``key``: None when allowed, else the seconds to wait (>= 1)."""
        ...

    def adopt(self, other: Limiter) -> None:
        """After a config reload that kept this action (name and settings): carry ``other``'s buckets over."""
        ...


LimiterFactory = Callable[[str, float, float, int], Limiter]
"""(action identity in the Domain: ``rule/position``, rate, burst, table size) -> its buckets."""


class TokenBuckets:
    """Buckets of one rate-limit action in this process."""

    __slots__ = ("_buckets", "burst", "rate", "size")

    def __init__(self, rate: float, burst: float, size: int) -> None:
        if rate <= 0 or burst < 1 or size < 1:
            raise ValueError("rate must be > 0, burst >= 1 and size >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.size = size
        self._buckets: dict[str, tuple[float, float]] = {}

    @classmethod
    def factory(cls, identity: str, rate: float, burst: float, size: int) -> TokenBuckets:
        """A :data:`LimiterFactory`: buckets of this process only (``identity`` is not needed)."""
        return cls(rate, burst, size)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> int | None:
        """Take a token for ``key`` at ``now``: None when allowed, else the seconds to wait (>= 1)."""
        buckets = self._buckets
        state = buckets.pop(key, None)
        if state is None:
            state = (self.burst, now)
            if len(buckets) >= self.size:
                del buckets[next(iter(buckets))]
        tokens, last, wait = take_token(state[0], state[1], now, self.rate, self.burst)
        buckets[key] = (tokens, last)
        return wait

    def same_settings(self, other: TokenBuckets) -> bool:
        return (self.rate, self.burst, self.size) == (other.rate, other.burst, other.size)

    def adopt(self, other: Limiter) -> None:
        """Take over ``other``'s buckets if it is a table of the same settings (a reload that kept the action)."""
        if isinstance(other, TokenBuckets) and self.same_settings(other):
            self._buckets = other._buckets
