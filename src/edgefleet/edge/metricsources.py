"""What the agent answers to the cloud's metrics relay: its own Prometheus text and its caches'.

How: the hub sends a ``metrics-request`` (target and a byte bound, see
:mod:`edgefleet.sync.messages`) over the node's link;
:class:`MetricSources` produces the text. ``agent`` is this agent's own
registry, rendered in-process (what ``GET /metrics`` on the agent's local
endpoint serves); ``cache`` is the first ready built-in cache (by workload
name, the one whose counters go into ``Node.status.cache``) and
``cache/<workload>`` a named one: their admin endpoint's ``GET /metrics``,
scraped on the node itself. A scrape reads at most one byte more than the
bound, so a huge answer never sits in the agent's memory; the session cuts
the text after its last whole line and marks it truncated.

Why the link and not a direct scrape: edge nodes sit behind NAT and
firewalls; the link they dial out already exists (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest

from edgefleet.edge.cacheconfig import AdminEndpoint

SCRAPE_TIMEOUT = 5.0
"""Seconds a local cache scrape may take (the hub's own timeout is a little longer)."""

AGENT_TARGET = "agent"
CACHE_TARGET = "cache"


class MetricsSourceError(Exception):
    """A target this node does not have, or a cache that does not answer (sent back as the reply's error)."""


class MetricSources:
    """The metrics-request answerer of one agent (see the module docstring)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        caches: Callable[[], dict[str, AdminEndpoint]],
    ) -> None:
        """``caches()``: the admin endpoints of the node's ready built-in caches, by workload name."""
        self._registry = registry
        self._caches = caches
        self._session: aiohttp.ClientSession | None = None

    async def read(self, target: str, max_bytes: int) -> str:
        """The Prometheus text of ``target`` (at most ``max_bytes`` + 1 bytes of it); MetricsSourceError if none."""
        if target == AGENT_TARGET:
            return generate_latest(self._registry).decode("utf-8")
        return await self._scrape(self._endpoint(target), max_bytes)

    def _endpoint(self, target: str) -> AdminEndpoint:
        caches = self._caches()
        if target == CACHE_TARGET:
            if not caches:
                raise MetricsSourceError("this node runs no ready cache")
            return caches[min(caches)]
        kind, _, name = target.partition("/")
        if kind == CACHE_TARGET and name in caches:
            return caches[name]
        known = ", ".join([AGENT_TARGET, CACHE_TARGET, *(f"cache/{n}" for n in sorted(caches))])
        raise MetricsSourceError(f"no metrics target {target!r} on this node; it has {known}")

    async def _scrape(self, endpoint: AdminEndpoint, max_bytes: int) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        headers = {"Authorization": f"Bearer {endpoint.token}"}
        try:
            async with self._session.get(endpoint.url + "/metrics", headers=headers, timeout=timeout) as response:
                if response.status != 200:
                    raise MetricsSourceError(f"the cache answered HTTP {response.status}")
                chunks: list[bytes] = []
                size = 0
                while size <= max_bytes:
                    chunk = await response.content.read(max_bytes + 1 - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MetricsSourceError(f"the cache does not answer: {exc or type(exc).__name__}") from None
        return b"".join(chunks).decode("utf-8", errors="replace")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["AGENT_TARGET", "CACHE_TARGET", "MetricSources", "MetricsSourceError"]
