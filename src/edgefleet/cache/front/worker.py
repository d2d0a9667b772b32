"""A cache worker process: one event loop serving the shared port.

How: the master starts ``python -m edgefleet.cache.front.worker --config F
--index I --control-fd N``. The worker binds the listen address itself with
``SO_REUSEPORT`` (the kernel spreads new connections over the workers), opens
its own memory tier and the shared disk tier, and serves until the master
says stop or its control channel closes (the master is gone: a worker never
outlives it).

The control channel is a socketpair carrying JSON lines: the master sends
``{"id": n, "op": ...}`` and the worker answers ``{"id": n, "ok": true,
"result": ...}`` or ``{"id": n, "ok": false, "error": "..."}``. Operations:
``stats``, ``purge``, ``prefetch``, ``reload`` (a validated config
document), ``reopen`` (the access log file again, after a rename) and
``stop`` (graceful: stop accepting, finish what is in flight, up to
``grace`` seconds). The worker's first line is ``{"op": "ready"}``.

``--rate-table-fd N`` is the node's rate-limit table the master shares with every worker
(:mod:`edgefleet.cache.storage.ratetable`); without it the worker makes a private one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from edgefleet.cache.config import CacheConfig, load_config, parse_config, split_listen
from edgefleet.cache.errors import CacheError, UpstreamError
from edgefleet.cache.front.accesslog import open_access_log
from edgefleet.cache.front.proxy import Proxy
from edgefleet.cache.front.server import ConnectionLimits, ConnectionSet
from edgefleet.cache.front.tls import TlsFront
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage.disk import DiskTier
from edgefleet.cache.storage.memory import MemoryTier
from edgefleet.cache.storage.ratetable import BucketTable
from edgefleet.cache.storage.store import Storage
from edgefleet.cache.upstream.ruled import KEY_MARK
from edgefleet.cache.wire.http1 import Limits
from edgefleet.cache.wire.targets import canonical_host

log = logging.getLogger("edgefleet.cache")

MAX_CONTROL_LINE = 64 * 2**20


def listen_socket(address: str) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, so that every worker can bind the same port."""
    host, port = split_listen(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


HOUSEKEEPING_SECONDS = 1.0
"""How often a worker sweeps idle connections and writes disk access times (the access log flushes itself)."""
TOUCH_FALLBACK_SECONDS = 10.0
"""Access times are written by housekeeping, in a thread; a hit writes them itself (on the loop) only
when housekeeping has not for this long (bench/cache_index_stall.py: such a write can stall the loop)."""


def build_storage(config: CacheConfig) -> Storage:
    memory = MemoryTier(config.storage.memory_bytes, config.storage.memory_object_bytes)
    disk = None
    if config.storage.disk is not None:
        disk = DiskTier(
            config.storage.disk.path, config.storage.disk.max_bytes, touch_interval=TOUCH_FALLBACK_SECONDS
        ).open()
    return Storage(memory, disk)


def connection_set(config: CacheConfig, proxy: Proxy) -> ConnectionSet:
    """The connections of one worker serving ``proxy`` with ``config``'s limits (tests serve a proxy so too)."""
    limits = config.limits
    return ConnectionSet(
        proxy,
        Limits(
            limits.max_url_bytes,
            limits.max_header_bytes,
            limits.max_headers,
            limits.max_body_bytes,
            limits.max_upload_bytes,
        ),
        ConnectionLimits(
            limits.idle_timeout,
            limits.header_timeout,
            limits.body_timeout,
            limits.max_pipeline,
            limits.max_connections,
            limits.max_connections_per_client,
        ),
    )


class Worker:
    def __init__(
        self, config: CacheConfig, index: int, config_dir: Path | None = None, rate_table: BucketTable | None = None
    ) -> None:
        self.config = config
        self.index = index
        self.stats = Stats()
        self.storage = build_storage(config)
        self.access_log = open_access_log(config, config_dir or Path.cwd(), self.stats, self._domain_name)
        self.rate_table = rate_table or BucketTable.private(config.rate_limit.slots)  # alone: a private table
        self.proxy = Proxy(config, self.storage, self.stats, self.access_log, rate_table=self.rate_table)
        self.connections = connection_set(config, self.proxy)
        # TLS beside the plain port (module edgefleet.cache.front.tls); relative certificate paths: to config_dir
        self.tls = TlsFront(
            self.stats, self.connections, config_dir or Path.cwd(), listen_socket, config.limits.header_timeout
        )
        self.stopping = asyncio.Event()
        self._answers: set[asyncio.Task[None]] = set()  # referenced until done, so not garbage-collected

    async def serve(self, control: socket.socket | None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.connections.factory, sock=listen_socket(self.config.listen))
        await self.tls.apply(self.config, self.proxy.domains, starting=True)
        housekeeping = loop.create_task(self._housekeeping())
        channel = loop.create_task(self._control(control)) if control is not None else None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_log)  # a SIGUSR1 to the process group must not kill
        if self.access_log is not None:
            self.access_log.start()
        await self.stopping.wait()
        server.close()
        self.tls.close()
        await self._drain(grace=10.0)
        housekeeping.cancel()
        if channel is not None:
            channel.cancel()
        await self.proxy.close()
        if self.access_log is not None:
            await self.access_log.stop()
        if self.storage.disk is not None:
            self.storage.disk.close()

    def _reopen_log(self) -> None:
        """SIGUSR1 (a worker run alone, or the whole process group): reopen the access log."""
        if self.access_log is not None:
            self.access_log.reopen()

    def _domain_name(self, host: str) -> str | None:
        """The name of the Domain serving ``host`` (the access log's ``domain``)."""
        domain = self.proxy.domains.lookup(host)
        return domain.name if domain is not None else None

    async def _drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        self.connections.close_idle()
        while self.connections.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.connections.close_idle()
        for conn in list(self.connections.open):
            conn.close()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.connections.sweep(time.monotonic())
            if self.storage.disk is not None:
                await asyncio.to_thread(self.storage.disk.flush)

    # --- the control channel ------------------------------------------------------

    async def _control(self, control: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=control, limit=MAX_CONTROL_LINE)
        writer.write(b'{"op": "ready"}\n')
        try:
            while line := await reader.readline():
                message = json.loads(line)
                task = asyncio.get_running_loop().create_task(self._answer(message, writer))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
        except (ConnectionError, ValueError) as exc:
            log.warning("worker %d: control channel broke: %s", self.index, exc)
        self.stopping.set()  # the master is gone

    async def _answer(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        reply: dict[str, Any] = {"id": message.get("id")}
        try:
            reply["result"] = await self._operate(message)
            reply["ok"] = True
        except (CacheError, KeyError, ValueError, TypeError) as exc:
            reply.update(ok=False, error=str(exc))
        writer.write(json.dumps(reply).encode() + b"\n")

    async def _operate(self, message: dict[str, Any]) -> Any:
        op = message.get("op")
        if op == "stats":
            return self.stats.snapshot(self.storage.stats() | self.proxy.hot.stats() | self.rate_table.stats())
        if op == "purge":
            return await self.purge(message)
        if op == "prefetch":
            return await self.prefetch(message["domain"], list(message["urls"]))
        if op == "reload":
            config = parse_config(message["config"])
            await asyncio.to_thread(self.proxy.geo.preload, config)  # a new geo table loads off the loop
            self.proxy.reload(config)
            await self.tls.apply(config, self.proxy.domains)
            return {"domains": len(config.domains)}
        if op == "reopen":  # the access log's file was renamed (SIGUSR1 to the master, or maxBytes)
            self._reopen_log()
            return None
        if op == "stop":
            self.stopping.set()
            return None
        raise ValueError(f"unknown control operation {op!r}")

    async def purge(self, message: dict[str, Any]) -> dict[str, int]:
        domain_name = message.get("domain")
        keys_, prefixes = [], []
        for domain in self.proxy.domains.by_name.values():
            if domain_name and domain.name != domain_name:
                continue
            hosts = [host for host in domain.config.hostnames if not host.startswith("*.")]
            for url in message.get("urls", []):
                found = _keys_for(self.proxy, domain, url, hosts)
                keys_ += found
                if domain.program is not None:  # the URL's variants by edge rules: <key>#rules=... (module ruled)
                    prefixes += [key + KEY_MARK for key in found]
            for prefix in message.get("prefixes", []):
                prefixes += _keys_for(self.proxy, domain, prefix, hosts, prefix=True)
        tags, soft = list(message.get("tags", [])), bool(message.get("soft"))
        count = await self.proxy.purge_keys(keys_, prefixes, tags, soft=soft)
        return {"purged": count}

    async def prefetch(self, domain: str, urls: list[str]) -> dict[str, Any]:
        results = await asyncio.gather(*(self.proxy.prefetch(domain, url) for url in urls), return_exceptions=True)
        failed = [
            {"url": url, "error": result.message if isinstance(result, UpstreamError) else str(result)}
            for url, result in zip(urls, results, strict=True)
            if isinstance(result, BaseException)
        ]
        return {"fetched": len(urls) - len(failed), "failed": failed}


def _keys_for(proxy: Proxy, domain: Any, url: str, hosts: list[str], prefix: bool = False) -> list[str]:
    """Cache keys (or key prefixes) of ``url``: itself if absolute, else on every hostname of the domain."""
    if "://" in url:
        return [proxy.key_of_url(domain, url) if not prefix else _prefix_key(url)]
    path = url if url.startswith("/") else "/" + url
    if prefix:
        return [f"http://{host}{path}" for host in hosts]
    return [proxy.key_of_url(domain, f"http://{host}{path}") for host in hosts]


def _prefix_key(url: str) -> str:
    rest = url.partition("://")[2]
    host, slash, path = rest.partition("/")
    return f"http://{canonical_host(host)}{slash}{path}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One edgefleet cache worker (started by `edgefleet cache`).")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--control-fd", type=int, default=-1)
    parser.add_argument("--rate-table-fd", type=int, default=-1, help="the master's shared rate-limit table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    control = socket.socket(fileno=args.control_fd) if args.control_fd >= 0 else None
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        try:
            shared = args.rate_table_fd >= 0  # workers: 1 has the table to itself (no lock needed)
            rate_table = BucketTable(args.rate_table_fd, locked=config.workers > 1) if shared else None
            uvloop.run(_run(config, args.index, control, args.config.resolve().parent, rate_table))
        except CacheError as exc:  # e.g. no certificate loads, tlsListen taken: said by the master too
            log.error("worker %d cannot serve: %s", args.index, exc)
            os._exit(1)
    os._exit(0)


async def _run(
    config: CacheConfig, index: int, control: socket.socket | None, config_dir: Path, rate_table: BucketTable | None
) -> None:
    worker = Worker(config, index, config_dir, rate_table)
    await worker.serve(control)


if __name__ == "__main__":
    main()
