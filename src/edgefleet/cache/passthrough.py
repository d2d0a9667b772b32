"""Requests the cache does not cache: relayed to upstream and back, one upstream request each.

How: methods other than GET and HEAD, paths under a Domain ``bypass``
rule, and a few cache outcomes (a waiter whose collapsed fill was private,
a request that met other variants too often) are passed through: the
request goes to the same tiers as a fill (:class:`~edgefleet.cache.forwarding.Forwarder`),
with the client's own conditionals, Range and body, and the answer is relayed
as it arrives, never stored (``X-Cache: PASS``).

Why an unsafe method invalidates: RFC 9111 §4.4 requires a cache to
invalidate the target URI after a successful (non-error) POST, PUT, PATCH or
DELETE through it, since the resource has likely changed. The proxy's
``invalidate`` marks the entry stale rather than removing it: any client may
send a POST, and must not be able to throw stored objects (and the copies
stale-if-error would serve) away; the next request revalidates instead.
"""

from __future__ import annotations

from collections.abc import Callable

from edgefleet.cache.domains import ServedDomain
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.forwarding import NOT_RELAYED, Forwarder
from edgefleet.cache.http1 import Request
from edgefleet.cache.replies import Client, Replies
from edgefleet.cache.stats import Stats

INVALIDATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Passthrough:
    """Forwards uncached requests; ``invalidate(key)`` marks a stored URL stale after a successful unsafe method."""

    def __init__(
        self, forwarder: Forwarder, replies: Replies, stats: Stats, invalidate: Callable[[str], object]
    ) -> None:
        self.forwarder = forwarder
        self.replies = replies
        self.stats = stats
        self.invalidate = invalidate

    async def send(self, client: Client, request: Request, domain: ServedDomain, key: str, started: float) -> None:
        """Forward ``request`` (cache key ``key``) uncached and relay the answer."""
        self.stats.bypass += 1
        headers = self.forwarder.request_headers(request, cacheable=False)
        body = request.body if request.has_body else None
        method = request.method
        try:
            response = await self.forwarder.open(request, domain, key, method, headers, body)
        except UpstreamError as exc:
            await self.replies.send_error(client, request, exc.status, exc.message)
            return
        if method in INVALIDATING and response.status < 400:
            self.invalidate(key)
        relayed = [(n, v) for n, v in response.headers if n.lower() not in NOT_RELAYED]
        relayed.append(("X-Cache", f"PASS from {self.replies.node}"))
        await self.replies.relay(client, request, response.status, relayed, response.content_length,
                                 response.chunks(), "PASS", started)
