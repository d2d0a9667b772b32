"""Demand: DNS queries per second by client region, over a sliding window.

How: the DNS server calls :meth:`DemandMeter.record` once per answered
query with the client's region (from the geo table) and the current time;
the site activation controller calls :meth:`DemandMeter.rates` every few
seconds and compares each region's rate with its sites' thresholds
(:mod:`edgefleet.cloud.controllers.siteactivation`).

Each region has a ring of ``window_seconds`` per-second buckets: a bucket
holds the count of one whole second and the second it belongs to. A record
adds to the bucket of its second, first emptying it if it still holds an
older second (the ring has come round). So a record costs a dictionary
lookup and two comparisons, whatever the traffic, and memory is two lists
of ``window_seconds`` integers per region, whatever the traffic. A rate is
the sum of the buckets of the last ``window_seconds`` seconds divided by
``window_seconds``: during the first window after a start the rate is
under-estimated, never over-estimated, which errs on the side of not
activating a site for a burst. A region whose buckets are all older than
the window is forgotten when rates are read.

Why per-second buckets and not an exponential moving average: "stayed above
50 qps over the last minute" is what operators set thresholds by, and the
window's rate says exactly that.

:class:`SenderAllowance` bounds what one sender may add (the DNS server
asks it before counting a query): at most ``per_second`` queries in each
wall-clock second per sender network (/24 for IPv4, /56 for IPv6). Why:
the region comes from the EDNS Client Subnet, which any sender may set to
anything, so without it one host could fake a region's demand and switch
its sites on. A fixed one-second window rather than a token bucket: the
check runs on every answered query, and a dict probe and an increment is
the cheapest bound there is (at most twice the allowance across a second's
boundary, which the demand window averages away). Memory is bounded: at most
``max_senders`` networks are tracked within a second; queries from further
networks in that second are not counted (fail closed: a flood of spoofed
networks adds nothing).

Times are seconds (``time.time()`` or ``time.monotonic()``, as long as one
meter is always given the same clock); a time slightly in the past of the
newest bucket (clocks are not perfectly monotonic across threads) counts in
the newest bucket. Pure: no clock, no I/O.
"""

from __future__ import annotations

from edgefleet.gslb.rrl import client_network

DEMAND_PER_SENDER = 20
"""Security limit: queries a second one sender network (/24, /56) may add to the demand counts (0: no limit).

Below a Site's default ``activateAbove`` (50 qps), so that under the defaults no single sender network can
switch a site on, and above what one resolver network asks about one name while it caches answers."""
MAX_REGIONS = 4096
"""Security limit: regions tracked at once; records for further regions are dropped until some expire."""


class _Ring:
    """Per-second counts of one region over the window."""

    __slots__ = ("counts", "latest", "seconds")

    def __init__(self, window: int) -> None:
        self.counts = [0] * window
        self.seconds = [-1] * window
        self.latest = -1

    def add(self, second: int, count: int) -> None:
        second = max(second, self.latest)
        self.latest = second
        slot = second % len(self.counts)
        if self.seconds[slot] != second:
            self.seconds[slot] = second
            self.counts[slot] = 0
        self.counts[slot] += count

    def total_since(self, oldest: int) -> int:
        return sum(count for count, second in zip(self.counts, self.seconds, strict=True) if second >= oldest)


class DemandMeter:
    """Queries per second by client region over the last ``window_seconds`` (see the module docstring)."""

    def __init__(self, window_seconds: int = 60) -> None:
        if window_seconds < 1:
            raise ValueError("the demand window must be at least 1 second")
        self.window_seconds = window_seconds
        self._regions: dict[str, _Ring] = {}

    def record(self, region: str, now: float, count: int = 1) -> None:
        """Count ``count`` queries from ``region`` at time ``now`` (seconds)."""
        if count <= 0:
            return
        ring = self._regions.get(region)
        if ring is None:
            if len(self._regions) >= MAX_REGIONS:
                return
            ring = self._regions[region] = _Ring(self.window_seconds)
        ring.add(int(now), count)

    def rates(self, now: float) -> dict[str, float]:
        """Queries per second per region over the window ending at ``now``; idle regions are left out."""
        oldest = int(now) - self.window_seconds + 1
        rates: dict[str, float] = {}
        for region, ring in list(self._regions.items()):
            if ring.latest < oldest:
                del self._regions[region]  # nothing left in the window: forget it
                continue
            total = ring.total_since(oldest)
            if total:
                rates[region] = total / self.window_seconds
        return rates

    def __len__(self) -> int:
        """Regions currently tracked."""
        return len(self._regions)


class SenderAllowance:
    """At most ``per_second`` counted queries per sender network each second (0: no bound); see the docstring."""

    def __init__(self, per_second: int, max_senders: int = 65536) -> None:
        if per_second < 0 or max_senders < 1:
            raise ValueError("the demand allowance must be >= 0 and the senders tracked >= 1")
        self.per_second = per_second
        self.max_senders = max_senders
        self._second = -1
        self._counts: dict[str, int] = {}
        self._networks: dict[str, str] = {}

    def allow(self, address: str, now: float) -> bool:
        """Whether a query from ``address`` at ``now`` may be counted as demand (and count it)."""
        if not self.per_second:
            return True
        second = int(now)
        if second != self._second:
            self._second = second
            self._counts.clear()
        network = self._networks.get(address)
        if network is None:
            network = self._learn(address)
        count = self._counts.get(network)
        if count is None:
            if len(self._counts) >= self.max_senders:
                return False
            count = 0
        if count >= self.per_second:
            return False
        self._counts[network] = count + 1
        return True

    def _learn(self, address: str) -> str:
        if len(self._networks) >= self.max_senders:
            self._networks.clear()
        network = self._networks[address] = client_network(address)
        return network
