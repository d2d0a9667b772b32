"""Response rate limiting (RRL) for UDP answers, as Knot DNS and BIND do it.

The attack: UDP has no handshake, so anyone can send queries with a
victim's address as the source, and every answer (larger than the query)
goes to the victim. An authoritative server is a good reflector for that:
it answers anyone, always the same way.

How: each UDP response is classified by the client's network (its /24 for
IPv4, its /56 for IPv6: one spoofed victim network, one budget) and by what
it is (BIND's "response identity"): a positive or NODATA answer by its
question (name and type), every NXDOMAIN of the client together (so random
names do not get a budget each), every error (REFUSED, FORMERR, SERVFAIL,
NOTIMP...) together. Each class has a token bucket: ``rate`` responses a
second, holding at most ``rate`` (one second of burst). A response that
finds its bucket empty is *limited*: it is dropped, except every
``slip``-th one, which is replaced by a tiny truncated reply (TC=1, no
records) so that a real resolver behind that network retries over TCP,
where the source address cannot be spoofed and no limit applies (``slip``
0: drop every limited response; 1: truncate every one).

Memory is fixed: the buckets live in ``table_size`` slots. A class goes to
the slot its keyed hash picks (the key is random per process, so nobody can
aim at a slot), or one of the next :data:`PROBES` slots; a slot can be taken
over only when its bucket is full again (its class has been quiet for a
second), so flooding the table cannot reset a limited class's budget. When
all those slots are busy, the class shares the first one: a collision can
only limit sooner, never let more through.

Pure: no clock (callers pass ``now``, monotonic seconds), no I/O.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from enum import Enum

from edgefleet.gslb.geo import parse_address

DEFAULT_RATE = 50
DEFAULT_SLIP = 2
PROBES = 4
"""Slots tried for a class before it shares one (bounded work per response)."""
IPV4_PREFIX = 24
IPV6_PREFIX = 56


@dataclass(frozen=True, slots=True)
class RrlSettings:
    """How many UDP responses one client network gets per second, and what happens past that.

    ``rate`` 0 turns rate limiting off. The defaults are above what a
    resolver sends for one name (it caches the answer for its TTL) and far
    below what makes a useful reflection attack.
    """

    rate: int = DEFAULT_RATE
    slip: int = DEFAULT_SLIP
    table_size: int = 65536
    exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks never limited. Loopback by default: packets from it cannot come from off the host, so
    they cannot be spoofed to reflect answers at a victim (a local resolver or dnsperf run there)."""

    def __post_init__(self) -> None:
        if self.rate < 0 or self.slip < 0 or self.table_size < 1:
            raise ValueError("RRL rate and slip must be >= 0 and the table size >= 1")
        for network in self.exempt:
            ipaddress.ip_network(network, strict=False)  # ValueError now rather than at the first query


class Verdict(Enum):
    """What to do with one response."""

    SEND = "send"
    SLIP = "slip"
    """Send a truncated reply (TC=1) instead, so a real client retries over TCP."""
    DROP = "drop"


SEND, SLIP, DROP = Verdict.SEND, Verdict.SLIP, Verdict.DROP
"""The verdicts as module constants: on Python 3.11 ``Verdict.SEND`` costs about 130 ns (the enum class's
attribute lookup), a global 15 ns; the DNS server checks one per UDP answer."""


def client_network(address: str) -> str:
    """The client's /24 (IPv4) or /56 (IPv6), as text; the address itself if it does not parse."""
    parsed = parse_address(address)
    if parsed is None:
        return address
    prefix = IPV4_PREFIX if parsed.version == 4 else IPV6_PREFIX
    return f"{ipaddress.ip_network(f'{parsed}/{prefix}', strict=False)}"


class ResponseRateLimiter:
    """Token buckets per (client network, response class) in a fixed table (see the module docstring)."""

    def __init__(self, settings: RrlSettings) -> None:
        self.settings = settings
        size = settings.table_size
        self._salt = os.urandom(8).hex()
        self._keys: list[tuple[str, str] | None] = [None] * size
        self._tokens = [0.0] * size
        self._stamps = [0.0] * size
        self._limited = [0] * size
        self._rate = settings.rate
        self._networks: dict[str, str] = {}  # client address -> its network ("" when exempt)
        self._exempt = [ipaddress.ip_network(network, strict=False) for network in settings.exempt]

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def check(self, client_address: str, response_class: str, now: float) -> Verdict:
        """Count one response of ``response_class`` to ``client_address`` at ``now`` and say what to do with it."""
        if not self._rate:
            return SEND
        network = self._networks.get(client_address)
        if network is None:
            network = self._learn(client_address)
        if not network:
            return SEND
        key = (network, response_class)
        slot = self._slot(key, now)
        rate = self._rate
        tokens = min(float(rate), self._tokens[slot] + (now - self._stamps[slot]) * rate)
        self._stamps[slot] = now
        if tokens >= 1.0:
            self._tokens[slot] = tokens - 1.0
            return SEND
        self._tokens[slot] = tokens
        self._limited[slot] += 1
        slip = self.settings.slip
        return SLIP if slip and self._limited[slot] % slip == 0 else DROP

    def _learn(self, address: str) -> str:
        """The client's network, memoised (parsing an address costs more than the rest); "" if exempt."""
        if len(self._networks) >= self.settings.table_size:
            self._networks.clear()
        parsed = parse_address(address)
        exempt = parsed is not None and any(parsed in network for network in self._exempt)
        network = self._networks[address] = "" if exempt else client_network(address)
        return network

    def _slot(self, key: tuple[str, str], now: float) -> int:
        """The slot of ``key``: its own, a free or idle one of the next PROBES, or (all busy) the first."""
        keys, size = self._keys, len(self._keys)
        first = hash((self._salt, key)) % size
        for step in range(PROBES):
            slot = (first + step) % size
            held = keys[slot]
            if held == key:
                return slot
            if held is None or self._idle(slot, now):
                keys[slot] = key
                self._tokens[slot] = float(self.settings.rate)
                self._stamps[slot] = now
                self._limited[slot] = 0
                return slot
        return first

    def _idle(self, slot: int, now: float) -> bool:
        """Whether the slot's bucket has refilled completely (its class is not being limited)."""
        rate = self.settings.rate
        return self._tokens[slot] + (now - self._stamps[slot]) * rate >= rate
