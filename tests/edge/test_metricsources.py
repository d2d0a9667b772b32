"""What an agent answers to the metrics relay: its own registry, a cache's /metrics (bounded), clear errors."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from edgefleet.edge.cacheconfig import AdminEndpoint
from edgefleet.edge.metricsources import MetricSources, MetricsSourceError


async def test_the_agent_target_is_its_registry_and_unknown_targets_name_the_known_ones() -> None:
    registry = CollectorRegistry()
    Gauge("edgefleet_agent_connected", "up", registry=registry).set(1)
    sources = MetricSources(registry, lambda: {})
    assert "edgefleet_agent_connected 1.0" in await sources.read("agent", 10_000)
    for target, message in (("cache", "no ready cache"), ("cache/other", "it has agent, cache")):
        try:
            await sources.read(target, 10_000)
        except MetricsSourceError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{target} answered")


async def test_a_cache_is_scraped_with_its_token_and_read_only_up_to_the_bound(unused_tcp_port: int) -> None:
    seen: list[str] = []

    async def metrics(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(text="x 1\n" * 100_000)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    endpoint = AdminEndpoint(f"http://127.0.0.1:{unused_tcp_port}", "secret")
    sources = MetricSources(CollectorRegistry(), lambda: {"edge-cache": endpoint})
    try:
        text = await sources.read("cache", 1000)
        assert len(text) <= 1001 and text.startswith("x 1\n")
        assert (await sources.read("cache/edge-cache", 10)).startswith("x 1")
        assert seen == ["Bearer secret", "Bearer secret"]
    finally:
        await sources.close()
        await runner.cleanup()
