"""Going upstream: which tier answers a key, in which order, and with which header fields.

How: :meth:`Forwarder.open` tries, in order, the site peer that owns the key
(rendezvous hash, :mod:`edgefleet.cache.tiers`; unless this node owns it or
the request came from a peer), the owner node of each parent site, then the
Domain's origins (weighted, backups last). A peer or parent that fails to
connect or answers 5xx is marked down in :class:`~edgefleet.cache.tiers.PeerHealth`
for ``peerDownSeconds`` and the next tier is tried at once; an origin's own
answer, 5xx included, is final (stale-if-error is decided by the caller).

Header fields, why they change on the way: hop-by-hop fields (and those the
request's ``Connection`` lists) never cross a proxy (RFC 9110 §7.6.1). A
cacheable fetch is made on behalf of every client that will share it, so
one client's validators, Range and Cache-Control are dropped: the fill
adds its own. ``X-Forwarded-For`` and ``Via`` gain this hop; ``Via`` is also
the loop guard of the tiers. Inside the fleet a request carries its tier and
hop count (``X-Edgefleet-Tier``, ``X-Edgefleet-Hops``); an origin never sees
them, and gets the Domain's ``Host`` override if one is set.

A Forwarder is built from one config; a reload builds a new one, so peer
health starts afresh with a new peer list.
"""

from __future__ import annotations

import random

from edgefleet.cache import tiers
from edgefleet.cache.config import CacheConfig
from edgefleet.cache.domains import ServedDomain
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.headers import HOP_BY_HOP, connection_listed, get
from edgefleet.cache.http1 import Request
from edgefleet.cache.stats import Stats
from edgefleet.cache.upstream import Target, Upstream, UpstreamResponse

NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
NOT_FORWARDED_CACHEABLE = NOT_FORWARDED | {
    "range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "cache-control",
    "pragma",
}
NOT_RELAYED = HOP_BY_HOP | {"content-length", "server-timing"}
"""Response fields not relayed to the client (framing is ours; timings are this node's)."""
FLEET_FIELDS = ("x-edgefleet-tier", "x-edgefleet-hops")

Fields = list[tuple[str, str]]


class Forwarder:
    """Opens upstream requests for one worker, under one config (see the module docstring)."""

    def __init__(self, config: CacheConfig, upstream: Upstream, stats: Stats, rng: random.Random) -> None:
        self.upstream = upstream
        self.stats = stats
        self.rng = rng
        self.node = config.node
        self.via = f"1.1 {config.node}"
        self.health = tiers.PeerHealth(config.upstream.peer_down_seconds)
        site = config.site
        self.peers = {peer.name: peer.url.rstrip("/") for peer in site.peers} if site else {}
        self.parents = [{p.name: p.url.rstrip("/") for p in parent.nodes} for parent in site.parents] if site else []
        self.site_self = site.self_name if site else config.node

    async def open(
        self, request: Request, domain: ServedDomain, key: str, method: str, headers: Fields, body: bytes | None
    ) -> UpstreamResponse:
        """Try each tier in order until one answers with a usable head; UpstreamError from the last one."""
        last_error: UpstreamError | None = None
        for target in self.targets(request, domain, key):
            self.stats.upstream_requests += 1
            try:
                response = await self.upstream.open(target, method, request.target, for_target(target, headers), body)
            except UpstreamError as exc:
                last_error = exc
                self._failed(target)
                continue
            if target.kind != "origin" and (response.status >= 500 or response.status == 421):
                # 421: that cache does not serve the Domain (a parent site left out of the Domain's sites)
                response.close()
                last_error = UpstreamError(502, f"{target.kind} {target.name} answered {response.status}")
                self._failed(target)
                continue
            if target.kind != "origin":
                self.health.succeeded(target.name)
            return response
        raise last_error or UpstreamError(502, "no upstream to fetch from")

    def _failed(self, target: Target) -> None:
        """A peer or parent failed: marked down for a while (the upstream client counted the failure)."""
        if target.kind != "origin":
            self.health.failed(target.name)

    def targets(self, request: Request, domain: ServedDomain, key: str) -> list[Target]:
        """The tiers to ask for ``key``, in order: owner peer, parent owners, origins."""
        targets: list[Target] = []
        hops, via = get(request.headers, tiers.HOPS_HEADER), get(request.headers, "via")
        forwardable = tiers.may_forward(self.node, hops, via)
        from_peer = get(request.headers, tiers.TIER_HEADER) == "peer"
        if forwardable and not from_peer and len(self.peers) > 1:
            owner = tiers.owner(list(self.peers), key, self.health)
            if owner is not None and owner != self.site_self:
                targets.append(Target("peer", owner, self.peers[owner]))
        if forwardable:
            for parent in self.parents:
                chosen = tiers.owner(list(parent), key, self.health)
                if chosen is not None:
                    targets.append(Target("parent", chosen, parent[chosen]))
        for origin in domain.origin_order(self.rng):
            targets.append(Target("origin", origin.base, origin.base, origin.host_header))
        return targets

    def request_headers(self, request: Request, *, cacheable: bool) -> Fields:
        """The request's fields as sent upstream (``cacheable``: for a fill that others may share)."""
        dropped = (NOT_FORWARDED_CACHEABLE if cacheable else NOT_FORWARDED) | connection_listed(request.headers)
        headers = [(n, v) for n, v in request.headers if n.lower() not in dropped]
        forwarded_for = get(request.headers, "x-forwarded-for")
        client_ip = request.client
        headers = [(n, v) for n, v in headers if n.lower() not in ("x-forwarded-for", "via")]
        headers.append(("X-Forwarded-For", f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip))
        via = get(request.headers, "via")
        headers.append(("Via", f"{via}, {self.via}" if via else self.via))
        headers.append(("Host", request.host))
        return headers


def for_target(target: Target, headers: Fields) -> Fields:
    """``headers`` for one tier: the fleet's own fields for a peer or parent, the Host override for an origin."""
    out = [(n, v) for n, v in headers if n.lower() not in FLEET_FIELDS]
    if target.kind == "origin":
        if target.host_header:
            out = [(n, v) for n, v in out if n.lower() != "host"] + [("Host", target.host_header)]
        return out
    hops = get(headers, tiers.HOPS_HEADER)
    count = int(hops) + 1 if hops and hops.isdigit() else 1
    return [*out, (tiers.TIER_HEADER, target.kind), (tiers.HOPS_HEADER, str(count))]
