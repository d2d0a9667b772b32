"""Which cache server should hold a key: rendezvous hashing over site peers and parents.

How: every node of a site computes, for a cache key, a score per peer
(a 64-bit hash of peer name and key) and the highest score owns the key
(rendezvous or highest-random-weight hashing). Every node computes the same
owner without talking to the others, so each object is fetched and stored
once per site. When a peer is down the next-highest score takes over, and only
that peer's keys move; when it comes back they move back. Parent sites are
hashed the same way over their own nodes.

A request forwarded inside the tiers carries ``X-Edgefleet-Hops`` (hops so
far) and its path in ``Via``; a node that sees its own name in ``Via``, or
too many hops, does not forward again but goes to the origin. That is the
loop guard: a disagreement about peer health can add one hop, never a
cycle. A request that came back to a node it already passed (:func:`looped`)
must also not join that node's fill for the key: the fill is waiting for
this very request, and would wait until its timeout.

Those fields are trusted only from the fleet (:class:`TierTrust`): a client
that sent them could otherwise skip the site's owner and the parent tier
(``X-Edgefleet-Tier: peer``, ``X-Edgefleet-Hops: 9``) or, naming the node
in ``Via``, make it fetch from the origin outside any collapsed fill. A
request is from the fleet when its TCP peer address is one of the site
peers' or parents' addresses (their URLs' hosts) or in ``site.trusted``
(the agent lists the addresses of every node of its view: peers, parents
and their ancestors, so the members of a cycle of parent sites trust each
other, and the nodes of the child sites, so a parent takes their hop
count, ``Via`` and edge-rules decision). From anyone else the proxy strips
``X-Edgefleet-*`` and ignores ``Via`` for the loop guard (the field itself
is relayed: it may name the client's own proxies).

Why addresses and not a shared secret: the nodes that may send these
fields are exactly the ones the rendered config already names, a TCP peer
address cannot be forged without the handshake, and nothing secret has to
be distributed or rotated. The cache binds its connections to peers and
parents to its listen address, so that it is seen from the address the
others know it by. Limit: anything that can send from a fleet node's
address (a workload on that node) is trusted too.

The score and the ranking are :mod:`edgefleet.hashing`'s, shared with the
GSLB so that a 302 keyed by a cache key lands on the key's owner.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edgefleet.hashing import rank as rank

HOPS_HEADER = "X-Edgefleet-Hops"
TIER_HEADER = "X-Edgefleet-Tier"
TIER_HEADER_LENGTH = len(TIER_HEADER)
FLEET_PREFIX = "x-edgefleet-"
"""Request fields only the fleet may send (stripped from everyone else's requests)."""
MAX_HOPS = 4
MAX_TRUST_MEMO = 4096


@dataclass(slots=True)
class PeerHealth:
    """Peers that failed recently are skipped for ``down_seconds`` (passive health)."""

    down_seconds: float
    _down_until: dict[str, float] = field(default_factory=dict)

    def failed(self, peer: str, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        self._down_until[peer] = moment + self.down_seconds

    def succeeded(self, peer: str) -> None:
        self._down_until.pop(peer, None)

    def is_up(self, peer: str, now: float | None = None) -> bool:
        until = self._down_until.get(peer)
        if until is None:
            return True
        moment = time.monotonic() if now is None else now
        if moment >= until:
            del self._down_until[peer]
            return True
        return False


def owner(peers: Sequence[str], key: str, health: PeerHealth) -> str | None:
    """The healthy peer that owns ``key``; None if every peer is down."""
    for peer in rank(peers, key):
        if health.is_up(peer):
            return peer
    return None


def via_names(via: str | None) -> list[str]:
    """Node names in a Via header we wrote (``1.1 node-a, 1.1 node-b``)."""
    if not via:
        return []
    names = []
    for hop in via.split(","):
        parts = hop.split()
        if len(parts) >= 2:
            names.append(parts[1])
    return names


def looped(node: str, via: str | None) -> bool:
    """Whether a request already passed through ``node`` (its name is in ``Via``)."""
    return via is not None and node in via_names(via)


def may_forward(node: str, hops_header: str | None, via: str | None) -> bool:
    """Loop guard: False once this node is already on the path or hops ran out."""
    try:
        hops = int(hops_header) if hops_header else 0
    except ValueError:
        return False
    return hops < MAX_HOPS and node not in via_names(via)


class TierTrust:
    """Which client addresses are nodes of the fleet, whose tier header fields count (see the module docstring)."""

    def __init__(self, addresses: Iterable[str]) -> None:
        networks = []
        for address in addresses:
            try:
                networks.append(ipaddress.ip_network(address.strip("[]"), strict=False))
            except ValueError:
                continue  # a peer named by a DNS name: trusted only through site.trusted
        self._networks = tuple(networks)
        self._memo: dict[str, bool] = {}

    def trusts(self, client: str) -> bool:
        """Whether the TCP peer address ``client`` is a node of the fleet."""
        known = self._memo.get(client)
        if known is None:
            known = self._check(client)
            if len(self._memo) < MAX_TRUST_MEMO:
                self._memo[client] = known
        return known

    def _check(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


def plain_addresses(addresses: Iterable[str]) -> list[str]:
    """The single IP addresses among ``addresses`` (not networks or names), as a connection's peer shows them."""
    found = []
    for address in addresses:
        try:
            found.append(str(ipaddress.ip_address(address.strip("[]"))))
        except ValueError:
            continue
    return found


def asked_by_tier(headers: list[tuple[str, str]]) -> bool:
    """Whether a request carries the tier field another cache of the fleet sends (trust is checked apart)."""
    for name, _ in headers:  # noqa: SIM110 - a loop, not any(): no generator per request on the hit path
        if len(name) == TIER_HEADER_LENGTH and name.lower() == "x-edgefleet-tier":
            return True
    return False


def strip_fleet_fields(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without the fields only the fleet may send."""
    return [(name, value) for name, value in headers if not name.lower().startswith(FLEET_PREFIX)]
