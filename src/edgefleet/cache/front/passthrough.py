"""Requests the cache does not cache: relayed to upstream and back, one upstream request each.

How: methods other than GET and HEAD, paths under a Domain ``bypass``
rule, and a few cache outcomes (a waiter whose collapsed fill was private,
a request that met other variants too often) are passed through: the
request goes to the same tiers as a fill (:class:`~edgefleet.cache.upstream.forwarding.Forwarder`),
with the client's own conditionals, Range and body, and the answer is relayed
as it arrives, never stored (``X-Cache: PASS``).

Why an unsafe method invalidates: RFC 9111 §4.4 requires a cache to
invalidate the target URI after a successful (non-error) POST, PUT, PATCH or
DELETE through it, since the resource has likely changed; the URLs of the
answer's ``Location`` and ``Content-Location`` on the same host are
invalidated too (:mod:`edgefleet.cache.policy.invalidation`). The proxy's
``invalidate`` marks the entry stale rather than removing it: any client may
send a POST, and must not be able to throw stored objects (and the copies
stale-if-error would serve) away; the next request revalidates instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from edgefleet.cache import accounting
from edgefleet.cache.errors import BadRequest, UpstreamError
from edgefleet.cache.front import interim
from edgefleet.cache.front.replies import Client, Replies
from edgefleet.cache.policy import invalidation, keys
from edgefleet.cache.policy.domains import ServedDomain
from edgefleet.cache.stats import Stats
from edgefleet.cache.upstream.forwarding import NOT_RELAYED, Forwarder
from edgefleet.cache.wire.bodies import BodyStream
from edgefleet.cache.wire.http1 import Request


class Passthrough:
    """Forwards uncached requests; ``invalidate(key)`` marks a stored URL stale after a successful unsafe method."""

    def __init__(
        self,
        forwarder: Forwarder,
        replies: Replies,
        stats: Stats,
        invalidate: Callable[[str], Awaitable[object]],
    ) -> None:
        self.forwarder = forwarder
        self.replies = replies
        self.stats = stats
        self.invalidate = invalidate

    async def send(self, client: Client, request: Request, domain: ServedDomain, key: str, started: float) -> None:
        """Forward ``request`` (cache key ``key``) uncached and relay the answer."""
        self.stats.bypass += 1
        headers = self.forwarder.request_headers(request, cacheable=False)
        stream = request.stream
        body: bytes | BodyStream | None = request.body if request.has_body else None
        if stream is not None:  # streamed as it arrives (edgefleet.cache.wire.bodies), framed as the client framed it
            body = stream
            if stream.length is not None:
                headers.append(("Content-Length", str(stream.length)))
        method = request.method
        asked = time.perf_counter()
        try:
            with interim.relaying(client, request):
                response = await self.forwarder.open(request, domain, key, method, headers, body)
                upstream_ms = (time.perf_counter() - asked) * 1000  # the access log's upstreamMs
        except UpstreamError as exc:
            if stream is not None and stream.error is not None:  # the client's body failed, not the upstream
                request.keep_alive = False
                if not isinstance(stream.error, BadRequest):
                    raise ConnectionResetError(str(stream.error)) from None
                await self.replies.send_error(client, request, stream.error.status, stream.error.message)
                return
            if stream is not None and not stream.consumed:
                request.keep_alive = False
            await self.replies.send_error(client, request, exc.status, exc.message)
            return
        if stream is not None and not stream.consumed:  # answered before the body was taken: end with it
            request.keep_alive = False
        if invalidation.invalidates(method, response.status):
            await self.invalidate(key)
            for target in invalidation.related_targets(request.host, request.target, response.headers):
                await self.invalidate(
                    keys.cache_key("http", request.host, target, domain.query_mode, domain.query_allow)
                )
        relayed, upstream_cache = accounting.split_x_cache(
            [(n, v) for n, v in response.headers if n.lower() not in NOT_RELAYED]
        )
        relayed.append(("X-Cache", accounting.x_cache(upstream_cache, "PASS", self.replies.node)))
        length, chunks = response.content_length, response.chunks()
        source = response.target.kind  # the origin, or the peer or parent that passed it on
        await self.replies.relay(
            client, request, response.status, relayed, length, chunks, "PASS", started, source, upstream_ms
        )
