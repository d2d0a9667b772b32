"""Going upstream: which tier answers a key, in which order, and with which header fields.

How: :meth:`Forwarder.open` tries, in order, the site peer that owns the key
(rendezvous hash, :mod:`edgefleet.cache.upstream.tiers`; unless this node owns it or
the request came from a peer), the owner node of each parent site, then the
Domain's origins (weighted, backups last). A peer or parent that fails to
connect or answers 5xx is marked down in :class:`~edgefleet.cache.upstream.tiers.PeerHealth`
for ``peerDownSeconds`` and the next tier is tried at once; an origin's own
answer, 5xx included, is final (stale-if-error is decided by the caller).

Header fields, why they change on the way: hop-by-hop fields (and those the
request's ``Connection`` lists) never cross a proxy (RFC 9110 §7.6.1). A
client's routing fields (``X-Forwarded-Host``, ``X-Original-URL``,
``X-Rewrite-URL``, ``Forwarded``, method overrides: :data:`CLIENT_ROUTING_FIELDS`)
are stripped: they are not part of the cache key, and an origin that honours
them would let one client choose the content stored for everyone. A
client's own ``Via`` is replaced by this hop's (it could name our nodes and
trip the loop guard of a peer), a fleet node's is extended. A
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
from urllib.parse import urlsplit

from edgefleet.cache.config import CacheConfig
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.policy.domains import ServedDomain
from edgefleet.cache.stats import Stats
from edgefleet.cache.upstream import ruled, tiers
from edgefleet.cache.upstream.client import Target, Upstream, UpstreamResponse
from edgefleet.cache.wire.bodies import BodyStream
from edgefleet.cache.wire.headers import HOP_BY_HOP, connection_listed, get
from edgefleet.cache.wire.http1 import Request

NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
NOT_FORWARDED_CACHEABLE = NOT_FORWARDED | {
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "cache-control",
    "pragma",
}
CLIENT_ROUTING_FIELDS = frozenset(
    {
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-server",
        "x-forwarded-proto",
        "x-forwarded-scheme",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
        "x-original-host",
        "x-host",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
"""Fields that make some origins (and their frameworks) route, rewrite or re-method a request: a client's never
reach upstream, since they are not in the cache key (one client could otherwise poison an entry for all)."""
NOT_RELAYED = HOP_BY_HOP | {"content-length", "server-timing"}
"""Response fields not relayed to the client (framing is ours; timings are this node's)."""
FLEET_FIELDS = ("x-edgefleet-tier", "x-edgefleet-hops", ruled.RULES_FIELD)

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
        self,
        request: Request,
        domain: ServedDomain,
        key: str,
        method: str,
        headers: Fields,
        body: bytes | BodyStream | None,
    ) -> UpstreamResponse:
        """Try each tier in order until one answers with a usable head; UpstreamError from the last one.

        A streamed body (:class:`~edgefleet.cache.wire.bodies.BodyStream`) cannot be sent twice: once any of it
        went to one tier, that tier's failure is final (502), never retried elsewhere with part of a body.
        """
        last_error: UpstreamError | None = None
        for target in self.targets(request, domain, key):
            self.stats.upstream_requests += 1
            try:
                fields = for_target(target, headers)
                if target.kind != "origin" and request.rules is not None:  # what the edge rules decided
                    fields += ruled.tier_fields(request)
                response = await self.upstream.open(target, method, request.target, fields, body)
            except UpstreamError as exc:
                last_error = exc
                self._failed(target)
                if isinstance(body, BodyStream) and (body.sent or body.error is not None):
                    raise UpstreamError(502, f"{exc.message} (after part of the request body; not retried)") from None
                continue
            if target.kind != "origin" and (response.status >= 500 or response.status == 421):
                # 421: that cache does not serve the Domain (a parent site left out of the Domain's sites)
                response.close()
                last_error = UpstreamError(502, f"{target.kind} {target.name} answered {response.status}")
                self._failed(target)
                if isinstance(body, BodyStream) and body.sent:
                    raise last_error
                continue
            if target.kind != "origin":
                self.health.succeeded(target.name)
            else:  # origin load, counted where it happens (module edgefleet.cache.accounting)
                counters = self.stats.accounts.slot(domain.name)
                counters.origin_requests += 1
                response.counters = counters
            return response
        raise last_error or UpstreamError(502, "no upstream to fetch from")

    def _failed(self, target: Target) -> None:
        """A peer or parent failed: marked down for a while (the upstream client counted the failure)."""
        if target.kind != "origin":
            self.health.failed(target.name)

    def targets(self, request: Request, domain: ServedDomain, key: str) -> list[Target]:
        """The tiers to ask for ``key``, in order: owner peer, parent owners, origins."""
        targets: list[Target] = []
        fleet = request.from_fleet  # a client's tier fields were stripped; its Via names no node of ours
        hops = get(request.headers, tiers.HOPS_HEADER) if fleet else None
        via = get(request.headers, "via") if fleet else None
        forwardable = tiers.may_forward(self.node, hops, via)
        from_peer = fleet and get(request.headers, tiers.TIER_HEADER) == "peer"
        if forwardable and not from_peer and len(self.peers) > 1:
            owner = tiers.owner(list(self.peers), key, self.health)
            if owner is not None and owner != self.site_self:
                targets.append(Target("peer", owner, self.peers[owner]))
        if forwardable:
            for parent in self.parents:
                chosen = tiers.owner(list(parent), key, self.health)
                if chosen is not None:
                    targets.append(Target("parent", chosen, parent[chosen]))
        chosen_origin = ruled.origin_of(request) if request.rules is not None else None
        if chosen_origin is not None:  # an A/B variant's origin (edge rules) instead of the Domain's
            base = chosen_origin.rstrip("/")
            targets.append(Target("origin", base, base, None))
            return targets
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
        headers = [(n, v) for n, v in headers if n.lower() not in CLIENT_ROUTING_FIELDS]
        headers.append(("X-Forwarded-For", f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip))
        via = get(request.headers, "via") if request.from_fleet else None  # a client's Via could name our nodes
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


def fleet_addresses(config: CacheConfig) -> list[str]:
    """The addresses whose tier header fields are trusted: peers' and parents' URL hosts, and ``site.trusted``."""
    site = config.site
    if site is None:
        return []
    urls = [peer.url for peer in site.peers] + [node.url for parent in site.parents for node in parent.nodes]
    hosts = [urlsplit(url).hostname or "" for url in urls]
    return [host for host in hosts if host] + list(site.trusted)
