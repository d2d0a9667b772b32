"""Serve a worker's request path from the test's own event loop, on a loopback port.

How: :func:`serving` puts a :class:`~edgefleet.cache.front.proxy.Proxy` behind the worker's own
connection set (:func:`edgefleet.cache.front.worker.connection_set`) on ``127.0.0.1:0`` and yields an
``httpx.AsyncClient`` to it; on exit it closes the connections, the proxy (which waits for disk stores
still in their thread) and the disk tier. Why: the test can then hold what a process hides, the
proxy's clock above all (``test_clocked.py``), while requests still go over real sockets to a real
origin process. Only the process plumbing (master, control channel, signals) is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from edgefleet.cache.config import CacheConfig
from edgefleet.cache.front.proxy import Proxy
from edgefleet.cache.front.worker import connection_set


@asynccontextmanager
async def serving(proxy: Proxy, config: CacheConfig) -> AsyncIterator[httpx.AsyncClient]:
    connections = connection_set(config, proxy)
    server = await asyncio.get_running_loop().create_server(connections.factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.close()
        for conn in list(connections.open):
            conn.close()
        await proxy.close()
        if proxy.storage.disk is not None:
            proxy.storage.disk.close()
