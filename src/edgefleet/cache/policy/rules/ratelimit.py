"""Token buckets per key in a fixed-size table: the rate limit action's state.

How: a bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request takes one
token or is refused with the seconds until one is back (``Retry-After``, rounded up, at least 1). So over
any window of T seconds a key gets at most ``rate * T + burst`` requests. Buckets live in an
insertion-ordered dict used as an LRU: a key seen again moves to the end, and a new key past
``size`` evicts the least recently seen one. Memory is therefore bounded whatever the number of
distinct clients; the price is that a key evicted while its bucket was not yet full comes back with a
full bucket, which only happens when more than ``size`` distinct keys arrive within one refill time
(``burst / rate``): size the table above the number of clients seen in that time.

``now`` is always an argument (no clock here); a clock that goes backwards refills nothing.
"""

from __future__ import annotations

import math


class TokenBuckets:
    """Buckets of one rate-limit action on one worker."""

    __slots__ = ("_buckets", "burst", "rate", "size")

    def __init__(self, rate: float, burst: float, size: int) -> None:
        if rate <= 0 or burst < 1 or size < 1:
            raise ValueError("rate must be > 0, burst >= 1 and size >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.size = size
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> int | None:
        """Take a token for ``key`` at ``now``: None when allowed, else the seconds to wait (>= 1)."""
        buckets = self._buckets
        state = buckets.pop(key, None)
        if state is None:
            tokens = self.burst
            if len(buckets) >= self.size:
                del buckets[next(iter(buckets))]
        else:
            tokens, last = state
            if now > last:
                tokens = min(self.burst, tokens + (now - last) * self.rate)
            else:
                now = last
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return None
        buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def same_settings(self, other: TokenBuckets) -> bool:
        return (self.rate, self.burst, self.size) == (other.rate, other.burst, other.size)

    def adopt(self, other: TokenBuckets) -> None:
        """Take over ``other``'s buckets (a config reload that kept this action's settings)."""
        self._buckets = other._buckets
