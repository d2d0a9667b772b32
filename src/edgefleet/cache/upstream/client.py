"""Fetching from site peers, parent sites and origins over pooled keep-alive connections.

How: one aiohttp ``ClientSession`` per worker keeps a connection pool per
upstream host (``keepalivePerHost``). :meth:`Upstream.open` sends one request
to one :class:`Target` and returns an :class:`UpstreamResponse` as soon as
the response head has arrived; the body is read chunk by chunk with
:meth:`UpstreamResponse.chunks`, so a fill can stream to clients while it
stores. Connect and response-head timeouts, and an idle timeout between
body chunks, turn into :class:`~edgefleet.cache.errors.UpstreamError` with
502 (refused, reset, bad response) or 504 (timed out).

Every failed request is counted here, where all of them pass, once each
(:meth:`~edgefleet.cache.stats.Stats.upstream_failed`): one that raised, one
whose head is a 5xx (a final answer from an origin, too) and one whose body
stalled or broke off after a head below 500.

Requests to site peers and parents leave from the cache's listen address
(a session of their own, bound to it; unless the cache listens on a
wildcard address): they trust tier header fields by the sender's address
(:class:`~edgefleet.cache.upstream.tiers.TierTrust`), which must be the one their
config names this node by, even on a host whose kernel would pick another
(several test nodes on 127.0.0.x).

Interim (1xx) responses (RFC 9110 §15.2). aiohttp reads and drops the 1xx
heads that come before the final one; :class:`_Response` (the session's
``response_class``) sees each of them first: a 103 Early Hints (or another
1xx but 100 and 101) goes to the :data:`INTERIM` sink of the request, if it
has one (the front end relays them to an HTTP/1.1 client ahead of its
answer); their fields are never part of the final response, so never stored.
A 100 is the upstream's answer to a forwarded ``Expect: 100-continue``. A
streamed body whose client holds it back for a 100 is sent with
``expect100`` (aiohttp sends the head, then waits for a 1xx before the
body); the upstream's 100 is relayed to the client at once
(:data:`HELD_BODY`, :meth:`~edgefleet.cache.wire.bodies.BodyStream.go_ahead`),
and so is our own when the body is first read. RFC 9110 §10.1.1: a
client need not wait for ever, and an HTTP/1.0 origin never says 100, so
after :data:`CONTINUE_WAIT` seconds the body goes anyway. A final answer
that comes before any 100 (401, 413, 417...) is returned with no body
sent; its connection is closed, never pooled: the upstream may still
expect the body. More than
:data:`MAX_INTERIM_RESPONSES` before the final head (a hostile origin
streaming 1xx forever to hold the fetch) is a 502, as is a 101: nothing asked
to switch protocols (``Upgrade`` is hop-by-hop, never forwarded).

Why aiohttp and not our own client: the miss path is not the hot path, and
aiohttp's pool, its HTTP/1.1 parser (llhttp, as our server side) and its
timeouts are maintained and well tested. Content decoding is turned off:
the cache stores and forwards bytes exactly as the origin sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from edgefleet.cache.accounting import DomainCounters
from edgefleet.cache.config import UpstreamConfig
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.stats import Stats
from edgefleet.cache.wire.bodies import BodyStream

READ_CHUNK = 256 * 1024
MAX_INTERIM_RESPONSES = 10
"""More 1xx heads than this before the final one: the upstream is broken or hostile (502)."""

CONTINUE_WAIT = 1.0
"""Seconds to wait for an upstream's 100 (Continue) before sending a held-back body anyway (as curl does)."""

InterimSink = Callable[[int, list[tuple[str, str]]], None]
"""Takes one interim response (status, fields) as it arrives, before the final head."""

INTERIM: contextvars.ContextVar[InterimSink | None] = contextvars.ContextVar("interim_sink", default=None)
"""Where the 1xx heads of the upstream requests made in this context go (a fill task inherits it)."""


HELD_BODY: contextvars.ContextVar[BodyStream | None] = contextvars.ContextVar("held_body", default=None)
"""The streamed body of the request being sent, while its client holds it back for a 100 (Continue)."""


class InterimFlood(aiohttp.ClientError):
    """The upstream sent more than MAX_INTERIM_RESPONSES 1xx heads."""


class _Response(aiohttp.ClientResponse):
    """aiohttp's response, showing the 1xx heads its ``start`` skips to the request's :data:`INTERIM` sink."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        if protocol is None:
            return await super().start(connection)
        read = protocol.read
        sink = INTERIM.get()
        body = HELD_BODY.get()
        seen = 0

        async def read_head() -> Any:
            nonlocal seen
            message, payload = await read()
            if message.code == 101:  # ends aiohttp's loop as if final; what follows must never be read as
                protocol.force_close()  # the answer to the next request on this connection: it is not reused
            elif 100 <= message.code < 200:
                seen += 1
                if seen > MAX_INTERIM_RESPONSES:
                    raise InterimFlood(f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")
                if message.code == 100:
                    if body is not None:  # the client asked it (RFC 9110 §15.2: a proxy forwards it): relayed at
                        body.go_ahead()  # once, not when aiohttp gets round to the body (it may never, see above)
                elif sink is not None:
                    sink(message.code, [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.raw_headers])
            return message, payload

        protocol.read = read_head  # type: ignore[method-assign]
        held = self._continue  # the body waits for a 1xx (expect100); aiohttp forgets it once one came
        timer = None if held is None else asyncio.get_running_loop().call_later(CONTINUE_WAIT, _go_ahead, held)
        try:
            return await super().start(connection)
        finally:
            del protocol.read
            if timer is not None:
                timer.cancel()
            if held is not None and not held.done():  # a final answer before the body: the upstream may still
                protocol.force_close()  # wait for it, so the connection never carries another request


def _go_ahead(held: asyncio.Future[bool]) -> None:
    """No 100 came in time: send the body anyway (RFC 9110 §10.1.1)."""
    if not held.done():
        held.set_result(True)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: ``kind`` is peer, parent or origin."""

    kind: str
    name: str
    base: str
    host_header: str | None = None


class UpstreamResponse:
    """A response whose head has arrived; read the body with :meth:`chunks`."""

    def __init__(self, target: Target, response: aiohttp.ClientResponse, idle_timeout: float, stats: Stats) -> None:
        self.target = target
        self.status = response.status
        self.reason = response.reason or ""
        self.headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.raw_headers]
        self._response = response
        self._idle_timeout = idle_timeout
        self._stats = stats
        self.counters: DomainCounters | None = None  # set for an origin's response: its body is origin bytes

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; UpstreamError if the upstream stalls or breaks off."""
        content = self._response.content
        try:
            while True:
                async with asyncio.timeout(self._idle_timeout):
                    data = await content.readany()
                if not data:
                    return
                if self.counters is not None:
                    self.counters.origin_bytes += len(data)
                yield data
        except TimeoutError:
            raise self._broken(504, "stalled sending the body") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._broken(502, f"broke off the body: {exc}") from None
        finally:
            self.release()

    def _broken(self, status: int, what: str) -> UpstreamError:
        """The error of a body that failed, counted unless the 5xx head was (a request fails once)."""
        if self.status < 500:
            self._stats.upstream_failed(self.target.kind)
        return UpstreamError(status, f"{self.target.kind} {self.target.name} {what}")

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        """Drop the connection (a body we will not read to the end)."""
        self._response.close()


class Upstream:
    """The worker's client for every upstream."""

    def __init__(self, config: UpstreamConfig, stats: Stats, source: str | None = None) -> None:
        self.config = config
        self.stats = stats
        self.source = source if source and _is_specific_ip(source) else None
        self._session: aiohttp.ClientSession | None = None
        self._fleet_session: aiohttp.ClientSession | None = None

    def _client(self, kind: str) -> aiohttp.ClientSession:
        """The session for a target of ``kind``: peers and parents get one bound to ``source`` (see the docstring)."""
        if kind == "origin" or self.source is None:
            if self._session is None or self._session.closed:
                self._session = _session(None)
            return self._session
        if self._fleet_session is None or self._fleet_session.closed:
            self._fleet_session = _session(self.source)
        return self._fleet_session

    async def open(
        self,
        target: Target,
        method: str,
        request_target: str,
        headers: list[tuple[str, str]],
        body: bytes | BodyStream | None = None,
    ) -> UpstreamResponse:
        """Send the request; return once the response head is in (UpstreamError if none came)."""
        try:
            response = await self._request(target, method, request_target, headers, body)
        except UpstreamError:
            if not (isinstance(body, BodyStream) and body.error is not None):  # the client's body failed, not it
                self.stats.upstream_failed(target.kind)
            raise
        if response.status < 200:  # a 101 ends aiohttp's 1xx loop: nothing asked to switch protocols
            response.close()
            self.stats.upstream_failed(target.kind)
            raise UpstreamError(502, f"{target.kind} {target.name} answered {response.status} to a plain request")
        if response.status >= 500:
            self.stats.upstream_failed(target.kind)
        return UpstreamResponse(target, response, self.config.idle_body_timeout, self.stats)

    async def _request(
        self,
        target: Target,
        method: str,
        request_target: str,
        headers: list[tuple[str, str]],
        body: bytes | BodyStream | None,
    ) -> aiohttp.ClientResponse:
        url = URL(target.base + request_target, encoded=True)
        connect = self.config.peer_timeout if target.kind != "origin" else self.config.connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=self.config.idle_body_timeout)
        try:
            async with asyncio.timeout(self.config.response_timeout) as deadline:
                data = body if not isinstance(body, BodyStream) else self._paced(body, deadline)
                held = isinstance(body, BodyStream) and body.awaiting_continue  # forward the expectation
                token = HELD_BODY.set(body if held and isinstance(body, BodyStream) else None)
                try:
                    return await self._client(target.kind).request(
                        method, url, headers=headers, data=data, allow_redirects=False, timeout=timeout, expect100=held
                    )
                finally:
                    HELD_BODY.reset(token)
        except TimeoutError:
            raise UpstreamError(504, f"{target.kind} {target.name} did not answer in time") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(502, f"{target.kind} {target.name} failed: {_describe(exc)}") from None

    async def _paced(self, body: BodyStream, deadline: asyncio.Timeout) -> AsyncIterator[bytes]:
        """A streamed body, with the response timeout moved along: none while the client's next piece is due
        (its ``bodyTimeout`` counts then), ``idleBodyTimeout`` for the upstream to take each piece, and
        ``responseTimeout`` for the head once all of it was sent. A large upload is not cut off by its size."""
        loop = asyncio.get_running_loop()
        _reschedule(deadline, None)
        async for data in body.chunks():
            _reschedule(deadline, loop.time() + self.config.idle_body_timeout)
            yield data
            _reschedule(deadline, None)
        _reschedule(deadline, loop.time() + self.config.response_timeout)

    async def close(self) -> None:
        for session in (self._session, self._fleet_session):
            if session is not None:
                await session.close()


def _session(source: str | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=60, local_addr=(source, 0) if source else None
    )
    return aiohttp.ClientSession(
        connector=connector,
        response_class=_Response,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def _reschedule(deadline: asyncio.Timeout, when: float | None) -> None:
    """Move ``deadline`` unless it is over (the head came before the whole body was sent)."""
    with contextlib.suppress(RuntimeError):
        deadline.reschedule(when)


def _is_specific_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."
