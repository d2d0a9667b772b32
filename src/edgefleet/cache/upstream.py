"""Fetching from site peers, parent sites and origins over pooled keep-alive connections.

How: one aiohttp ``ClientSession`` per worker keeps a connection pool per
upstream host (``keepalivePerHost``). :meth:`Upstream.open` sends one request
to one :class:`Target` and returns an :class:`UpstreamResponse` as soon as
the response head has arrived; the body is read chunk by chunk with
:meth:`UpstreamResponse.chunks`, so a fill can stream to clients while it
stores. Connect and response-head timeouts, and an idle timeout between
body chunks, turn into :class:`~edgefleet.cache.errors.UpstreamError` with
502 (refused, reset, bad response) or 504 (timed out).

Why aiohttp and not our own client: the miss path is not the hot path, and
aiohttp's pool, its HTTP/1.1 parser (llhttp, as our server side) and its
timeouts are maintained and well tested. Content decoding is turned off:
the cache stores and forwards bytes exactly as the origin sent them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from yarl import URL

from edgefleet.cache.config import UpstreamConfig
from edgefleet.cache.errors import UpstreamError

READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: ``kind`` is peer, parent or origin."""

    kind: str
    name: str
    base: str
    host_header: str | None = None


class UpstreamResponse:
    """A response whose head has arrived; read the body with :meth:`chunks`."""

    def __init__(self, target: Target, response: aiohttp.ClientResponse, idle_timeout: float) -> None:
        self.target = target
        self.status = response.status
        self.reason = response.reason or ""
        self.headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.raw_headers]
        self._response = response
        self._idle_timeout = idle_timeout

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
                yield data
        except TimeoutError:
            raise UpstreamError(504, f"{self.target.kind} {self.target.name} stalled sending the body") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(502, f"{self.target.kind} {self.target.name} broke off the body: {exc}") from None
        finally:
            self.release()

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        """Drop the connection (a body we will not read to the end)."""
        self._response.close()


class Upstream:
    """The worker's client for every upstream."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def open(
        self,
        target: Target,
        method: str,
        request_target: str,
        headers: list[tuple[str, str]],
        body: bytes | None = None,
    ) -> UpstreamResponse:
        """Send the request; return once the response head is in."""
        url = URL(target.base + request_target, encoded=True)
        connect = self.config.peer_timeout if target.kind != "origin" else self.config.connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=self.config.idle_body_timeout)
        try:
            async with asyncio.timeout(self.config.response_timeout):
                response = await self._client().request(
                    method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
                )
        except TimeoutError:
            raise UpstreamError(504, f"{target.kind} {target.name} did not answer in time") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(502, f"{target.kind} {target.name} failed: {_describe(exc)}") from None
        return UpstreamResponse(target, response, self.config.idle_body_timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."
