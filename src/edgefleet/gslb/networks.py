"""Client networks for measured latency: which networks to probe, and which measured network a client is in.

How, two pure parts:

- :class:`NetworkCounter` counts the DNS queries the GSLB answered per
  sender network (the resolver's /24, or /56 for IPv6), with exponential
  decay (``half_life``), and names the busiest ones (:meth:`NetworkCounter.top`):
  at most ``top_n``, each with at least ``min_count`` decayed queries, and for
  each the last resolver address seen there (what agents probe). The DNS
  server hands it its per-second counts (:meth:`edgefleet.gslb.dns.DnsServer.take_senders`,
  which counts only queries the demand allowance let through: at most
  ``demand_per_sender`` a second per network), so no query pays more than a
  dict increment for it. A second counter (``subnets=True``) counts the
  EDNS Client Subnets of the same queries
  (:meth:`~edgefleet.gslb.dns.DnsServer.take_client_subnets`): the users'
  own networks, as large CDNs' mapping systems probe them, each probed at
  its first host on :data:`SUBNET_PORT` (a TCP handshake, or the RST of a
  closed port, is one round trip to the network).
- :class:`NetworkTable` finds the longest measured network holding a client
  address (IPv4 and IPv6), in one dict probe per distinct prefix length
  present: a handful, against the DNS server's fresh-query budget of a few
  microseconds.

Why decay and a minimum count (think as an attacker): anyone can send DNS
queries from, or (UDP) spoofed as, random networks. Each such network gets
at most ``demand_per_sender`` counted queries a second, starts at one query,
and falls below one (and is pruned when the table is full) within seconds,
while a real resolver asks all day; networks already counted are updated
before new ones, and new ones enter busiest first, so a spray cannot push
out a counted network or starve a busier newcomer; a network must reach ``min_count`` to be
published, and at most ``top_n`` are, so the probe-target list and the agents'
work stay bounded whatever is sprayed. The table itself holds at most
``max_tracked`` networks; when it is full and nothing can be pruned, new
networks are not counted (fail closed). A Client Subnet is the sender's word
(anyone may set any ECS), so subnets take the same path as senders: only
queries the sender's demand allowance let through are counted, so one sender
network nominates at most ``demand_per_sender`` subnet queries a second, and
the subnets have a counter (and a top-N) of their own, so they cannot push
out the resolvers. What is left (documented in docs/security.md): a sender
that sustains ``min_count`` decayed queries for a subnet makes the fleet
probe that subnet's first host, one TCP handshake per node per probe period,
for at most ``top_n`` subnets: bounded, and no amplification.

Pure: the clock is a parameter (``now``, seconds), no I/O.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefleet.gslb.rrl import client_network

HALF_LIFE = 600.0
"""Seconds for a network's decayed query count to halve."""
TOP_N = 32
"""Security limit: networks published as probe targets."""
MIN_COUNT = 50.0
"""Decayed queries a network needs before it is published as a probe target."""
MAX_TRACKED = 4096
"""Security limit: networks counted at once."""
MAX_MEASURED = 1024
"""Security limit: measured networks a :class:`NetworkTable` holds (the rest are ignored)."""


RESOLVER_PORT = 53
"""Where a resolver network is probed: its last resolver address, DNS over TCP."""
SUBNET_PORT = 443
"""Where a Client Subnet is probed: its first host, HTTPS; a refused connection (RST) is an answer too."""


@dataclass(frozen=True, slots=True)
class SeenNetwork:
    """A busy client network: its CIDR, the address and port to probe there, its decayed query count."""

    network: str
    address: str
    count: float
    port: int = RESOLVER_PORT


class NetworkCounter:
    """Decayed DNS query counts per sender network; bounded (see the module docstring)."""

    def __init__(
        self,
        *,
        half_life: float = HALF_LIFE,
        max_tracked: int = MAX_TRACKED,
        min_count: float = MIN_COUNT,
        top_n: int = TOP_N,
        subnets: bool = False,
    ) -> None:
        """``subnets``: the addresses counted are Client Subnets (ECS), not resolvers: a network is probed at
        its first host on :data:`SUBNET_PORT` (a subnet's address is its network address, which no host has)."""
        if half_life <= 0 or max_tracked < 1 or top_n < 0 or min_count < 0:
            raise ValueError("half_life must be > 0, max_tracked >= 1, top_n and min_count >= 0")
        self.half_life = half_life
        self.max_tracked = max_tracked
        self.min_count = min_count
        self.top_n = top_n
        self.subnets = subnets
        self._counts: dict[str, float] = {}
        self._addresses: dict[str, str] = {}
        self._at: float | None = None

    def __len__(self) -> int:
        return len(self._counts)

    def record(self, counts: Mapping[str, int], now: float) -> None:
        """Add ``counts`` (sender address -> queries) seen up to ``now``, after decaying what was there."""
        self._decay(now)
        seen: dict[str, tuple[int, str]] = {}
        for address, count in counts.items():
            network = client_network(address)
            if network == address and "/" not in network:
                continue  # not an address
            total, _ = seen.get(network, (0, address))
            seen[network] = (total + max(0, count), address)
        # Known networks first, then new ones busiest first: a spray of one-query networks never
        # takes the place of a network already counted, nor of a busier newcomer.
        for network, (count, address) in sorted(
            seen.items(), key=lambda item: (item[0] not in self._counts, -item[1][0])
        ):
            if network not in self._counts and not self._room():
                break
            self._counts[network] = self._counts.get(network, 0.0) + count
            self._addresses[network] = address

    def top(self, now: float) -> list[SeenNetwork]:
        """The busiest networks with at least ``min_count`` decayed queries, busiest first, ``top_n`` at most."""
        self._decay(now)
        busy = [(count, network) for network, count in self._counts.items() if count >= self.min_count]
        busy.sort(key=lambda item: (-item[0], item[1]))
        if self.subnets:
            return [
                SeenNetwork(network, _first_host(network), round(count, 1), SUBNET_PORT)
                for count, network in busy[: self.top_n]
            ]
        return [
            SeenNetwork(network, self._addresses[network], round(count, 1)) for count, network in busy[: self.top_n]
        ]

    def _decay(self, now: float) -> None:
        if self._at is not None and now > self._at:
            factor = math.pow(0.5, (now - self._at) / self.half_life)
            for network in self._counts:
                self._counts[network] *= factor
        if self._at is None or now > self._at:
            self._at = now

    def _room(self) -> bool:
        """Whether a new network may be counted, pruning networks under one decayed query when full."""
        if len(self._counts) < self.max_tracked:
            return True
        for network in [network for network, count in self._counts.items() if count < 1.0]:
            del self._counts[network], self._addresses[network]
        return len(self._counts) < self.max_tracked


class NetworkTable:
    """Longest-prefix match of client addresses against measured networks (CIDR text)."""

    __slots__ = ("_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[str]) -> None:
        v4: dict[int, dict[int, str]] = {}
        v6: dict[int, dict[int, str]] = {}
        kept: list[str] = []
        for text in networks:
            if len(kept) >= MAX_MEASURED:
                break
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            table = v4 if network.version == 4 else v6
            table.setdefault(network.prefixlen, {})[int(network.network_address)] = text
            kept.append(text)
        self.networks = tuple(kept)
        """The networks held, as given."""
        self._v4 = _ordered(v4, 32)
        self._v6 = _ordered(v6, 128)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def match_int(self, version: int, value: int) -> str | None:
        """The longest network holding the address ``value`` (an int of ``version`` 4 or 6), or None."""
        for mask, prefixes in self._v4 if version == 4 else self._v6:
            found = prefixes.get(value & mask)
            if found is not None:
                return found
        return None

    def match_wire(self, family: int, address: bytes) -> str | None:
        """:meth:`match_int` for an ECS address in wire form (family 1: IPv4, 2: IPv6; zero-padded)."""
        if family == 1:
            return self.match_int(4, int.from_bytes(address.ljust(4, b"\0")[:4], "big"))
        return self.match_int(6, int.from_bytes(address.ljust(16, b"\0")[:16], "big"))

    def match(self, address: str) -> str | None:
        """:meth:`match_int` for an address in text (None when it does not parse)."""
        if not self.networks:
            return None
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return None
        return self.match_int(parsed.version, int(parsed))


def _ordered(table: dict[int, dict[int, str]], bits: int) -> tuple[tuple[int, dict[int, str]], ...]:
    """(mask, prefixes) per prefix length, longest first."""
    full = (1 << bits) - 1
    return tuple((full ^ ((1 << (bits - length)) - 1), table[length]) for length in sorted(table, reverse=True))


def _first_host(network: str) -> str:
    """The first address after a network's own (``203.0.113.0/24`` -> ``203.0.113.1``)."""
    parsed = ipaddress.ip_network(network, strict=False)
    return str(parsed.network_address + 1)


def network_prefix(text: str) -> int:
    """The prefix length of a CIDR text (``10.0.0.0/8`` -> 8); 0 when it has none."""
    _, slash, length = text.partition("/")
    return int(length) if slash and length.isdigit() else 0
