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

A streamed body the upstream answered without taking (a 401 to an
``Expect: 100-continue`` whose 100 it had already sent, say) is read and
dropped if it is on its way and at most :data:`DRAIN_LIMIT` bytes, and the
connection carries on; one the client still holds back, or a longer one,
ends the connection after the answer (``Connection: close``).
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
from edgefleet.cache.wire.bodies import BodyFailed, BodyStream
from edgefleet.cache.wire.http1 import Request

DRAIN_LIMIT = 1 << 20
"""At most this much of a body that no upstream took is read and dropped to keep the connection; more: closed."""


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
        draining = stream is not None and not stream.consumed and stream.drainable(DRAIN_LIMIT)
        if stream is not None and not stream.consumed and not draining:  # answered before the body was taken
            request.keep_alive = False  # and the client holds it back, or it is long: end with it
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
        if draining and stream is not None and not stream.consumed:
            await self._drain(request, stream)

    @staticmethod
    async def _drain(request: Request, stream: BodyStream) -> None:
        """The client was told 100 (or did not wait) and is sending a body no upstream took: read and drop it,
        rather than close on it (a close with its bytes unread resets the connection, and the client may lose
        the answer it was sent)."""
        try:
            await stream.drain()
        except BodyFailed:
            request.keep_alive = False
