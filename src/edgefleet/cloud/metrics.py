"""Prometheus metrics of the API server, and the ASGI middleware that counts requests.

How: one ``CollectorRegistry`` per server (not the global one), so several
servers in one test process do not clash. Requests are labelled by route
template (``/apis/edgefleet.io/v1/sites/{name}``), never by raw path, so a
client cannot blow up the label cardinality. The store revision and watcher
count are read when Prometheus scrapes.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgefleet_api_requests",
            "API requests by method, route template and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgefleet_api_request_duration_seconds",
            "API request latency until the response head is sent (watches: until it starts)",
            ["method", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.watchers = Gauge("edgefleet_api_watchers", "Open watch streams", ["kind"], registry=self.registry)
        self.multiplexed_watches = Gauge(
            "edgefleet_api_multiplexed_watches",
            "Open multiplexed watch streams (GET /apis/edgefleet.io/v1/watch; their kinds count in watchers too)",
            registry=self.registry,
        )
        self.store_revision = Gauge("edgefleet_store_revision", "Current store revision", registry=self.registry)
        self.store_compacted_revision = Gauge(
            "edgefleet_store_compacted_revision",
            "Oldest revision still in the store's history",
            registry=self.registry,
        )


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request and times it to the response head."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def send_and_observe(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                self.metrics.latency.labels(scope["method"], route_template(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            self.metrics.requests.labels(scope["method"], route_template(scope), str(code)).inc()
