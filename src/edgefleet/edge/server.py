"""The agent's local HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics``, ``/status``.

How: a small aiohttp application on a local port (``--listen``, default
127.0.0.1:7441; port 0 picks a free one and the bound address is written to
``<data-dir>/agent.addr`` so tools can find it). It reads the agent's state
through a callback and never blocks on the cloud: ``/healthz`` answers while
the cloud is unreachable, because the node is healthy when it serves, not
when it is connected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class AgentHttp:
    def __init__(
        self,
        *,
        metrics: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        routes: list[web.RouteDef] | None = None,
    ) -> None:
        self._routes = list(routes or [])
        self._metrics = metrics
        self._status = status
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.address = ""

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._prometheus)
        app.router.add_get("/status", self._state)
        app.router.add_routes(self._routes)  # e.g. the artifact origin (edgefleet.edge.artifacts)
        return app

    async def start(self, host: str, port: int, address_file: Path | None = None) -> str:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        self.address = f"{host}:{bound}"
        if address_file is not None:
            address_file.write_text(self.address + "\n")  # noqa: ASYNC240 - once, a few bytes, at start
        return self.address

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = self._ready()
        return web.Response(text="ok" if ready else "workloads not ready", status=200 if ready else 503)

    async def _prometheus(self, _: web.Request) -> web.Response:
        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _state(self, _: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self._status(), default=str), content_type="application/json")
