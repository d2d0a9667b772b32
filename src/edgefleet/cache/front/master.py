"""``edgefleet cache``: the master process, its workers and the local admin endpoint.

How: the master validates the config, starts ``workers`` worker processes
(:mod:`edgefleet.cache.front.worker`), each with a socketpair control channel, and
serves the admin endpoint on ``admin.listen`` with aiohttp:

- ``GET /healthz``: 200 while every worker is up (site peers and the agent
  probe it), 503 otherwise;
- ``GET /status``: hit ratio, bytes, objects, 5xx sent, failed upstream
  fetches and the p99 response time of the last minute as JSON (the agent
  reports it in ``Node.status.cache``; see :mod:`edgefleet.cache.stats`);
- ``GET /metrics``: Prometheus metrics, the workers' counters summed;
  both answer from a snapshot of the workers' counters kept for
  :data:`SNAPSHOT_SECONDS` (a burst of scrapes costs the workers one round
  trip); a request with ``Cache-Control: no-cache`` gets a fresh one (a
  script or test that counts what it just sent);
- ``POST /purge`` and ``POST /prefetch`` (bearer token): applied by every
  worker (purge) or one (prefetch; the disk tier is shared); the answer
  comes after all of them are done, so a purge that returned is in effect.

SIGHUP reloads the config file: domains, peers, parents and upstream
settings change in every worker without dropping a connection or the cache;
a change to ``listen``, ``workers``, ``storage``, ``accessLog`` or
``rateLimit`` is logged as needing a restart. A broken new file is reported and the old config
stays. A worker that dies is restarted with backoff. SIGTERM/SIGINT stop the
workers gracefully. SIGUSR1 makes every worker reopen the access log file
(after a ``mv``), and with ``accessLog.maxBytes`` the master rotates it by
size (:mod:`edgefleet.cache.front.logrotate`).

The master also makes the node's rate-limit table, one shared memory region
every worker maps (:mod:`edgefleet.cache.storage.ratetable`); it holds the
descriptor until it exits, so buckets outlive worker restarts and reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edgefleet.cache import accounting
from edgefleet.cache import stats as stats_module
from edgefleet.cache.config import CacheConfig, load_config, split_listen
from edgefleet.cache.errors import CacheError, ConfigError
from edgefleet.cache.front import edgerules, logrotate, tls
from edgefleet.cache.storage import ratetable

log = logging.getLogger("edgefleet.cache")

SNAPSHOT_SECONDS = 0.2
"""How long ``/status`` and ``/metrics`` reuse the workers' counters."""

MAX_ADMIN_BODY = 1024 * 1024
MAX_URLS = 10_000
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class WorkerHandle:
    """One worker process and its control channel."""

    def __init__(self, index: int, rate_fd: int | None = None) -> None:
        self.index = index
        self.rate_fd = rate_fd  # the node's rate-limit table (module edgefleet.cache.storage.ratetable)
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.restarts = 0
        self._reader: asyncio.Task[None] | None = None  # referenced, so that it is not garbage-collected

    async def start(self, config_path: Path) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "edgefleet.cache.front.worker",
            "--config",
            str(config_path),
            "--index",
            str(self.index),
            "--control-fd",
            str(theirs.fileno()),
        ]
        fds = [theirs.fileno()]
        if self.rate_fd is not None:
            command += ["--rate-table-fd", str(self.rate_fd)]
            fds.append(self.rate_fd)
        self.ready.clear()
        self.process = await asyncio.create_subprocess_exec(*command, pass_fds=fds)
        theirs.close()
        self.reader, self.writer = await asyncio.open_connection(sock=ours, limit=64 * 2**20)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while line := await self.reader.readline():
                message = json.loads(line)
                if message.get("op") == "ready":
                    self.ready.set()
                    continue
                waiter = self.pending.pop(message.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        except (ConnectionError, ValueError):
            pass
        self.ready.clear()
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(CacheError(f"worker {self.index} went away"))
        self.pending.clear()

    async def call(self, message_id: int, op: str, seconds: float = 60.0, **fields: Any) -> Any:
        if self.writer is None or not self.ready.is_set():
            raise CacheError(f"worker {self.index} is not running")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[message_id] = waiter
        self.writer.write(json.dumps({"id": message_id, "op": op, **fields}).encode() + b"\n")
        async with asyncio.timeout(seconds):
            reply = await waiter
        if not reply.get("ok"):
            raise CacheError(f"worker {self.index}: {reply.get('error')}")
        return reply.get("result")


class Master:
    def __init__(self, config_path: Path, config: CacheConfig, load_window: float = accounting.LOAD_WINDOW_SECONDS):
        self.config_path = config_path
        self.config = config
        # one rate-limit table for every worker, kept across worker restarts and reloads
        self.rate_fd = ratetable.create_region(config.rate_limit.slots)
        self.workers = [WorkerHandle(index, self.rate_fd) for index in range(config.workers)]
        self._ids = itertools.count(1)
        self.stopping = asyncio.Event()
        self._stats_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self.registry = CollectorRegistry()
        self._snapshot: dict[str, Any] = {}
        self.registry.register(stats_module.StatsCollector(lambda: self._snapshot))
        # the windowed figures of /status; the load window (--load-window) is its latest LOAD_SLOTS slots
        self.recent = accounting.RecentAccounts(slot_seconds=load_window / accounting.LOAD_SLOTS)
        self._reloads: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()

    @property
    def token(self) -> str | None:
        return self.config.admin.bearer(self.config_path.parent)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        _check_port_free(self.config.listen, "listen")
        self._check_tls()
        self._check_rate_table(self.config)
        logrotate.check_file(self.config, self.config_path.parent)
        log_files = logrotate.LogFiles(self.config, self.config_path.parent, lambda: self.broadcast("reopen"))
        loop.add_signal_handler(signal.SIGUSR1, log_files.reopen_soon)  # after a mv of the access log
        runner = await self._start_admin()
        for worker in self.workers:
            await worker.start(self.config_path)
        await self._wait_ready(30.0)
        print(
            f"edgefleet cache {self.config.node} serving http://{self.config.listen} "
            + (f"and https://{self.config.tls_listen} " if self.config.tls_listen and self.config.certificates else "")
            + f"({len(self.workers)} workers), admin http://{self.config.admin.listen}",
            flush=True,
        )
        watcher = loop.create_task(self._watch_workers())
        sampler = loop.create_task(self._sample_accounts())
        log_files.start()  # rotation by size
        await self.stopping.wait()
        watcher.cancel()
        sampler.cancel()
        await log_files.stop()
        await self._stop_workers()
        await runner.cleanup()
        os.close(self.rate_fd)

    @staticmethod
    def _check_rate_table(config: CacheConfig) -> None:
        """Say so in the log when the rate limits want more keys than the shared table holds."""
        warning = edgerules.rate_table_warning(config)
        if warning is not None:
            log.warning("%s", warning)

    def _check_tls(self) -> None:
        """Before the workers start: the TLS port is free and at least one certificate loads (else CacheError)."""
        if self.config.tls_listen is None or not self.config.certificates:
            return
        _check_port_free(self.config.tls_listen, "tlsListen")
        for problem in tls.check_certificates(self.config, self.config_path.parent):
            log.error("%s; not served", problem)

    async def _wait_ready(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                for worker in self.workers:
                    await worker.ready.wait()
        except TimeoutError:
            raise CacheError("workers did not start; see the log above") from None

    async def _watch_workers(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is not None:
                    await self._restart(worker)

    async def _restart(self, worker: WorkerHandle) -> None:
        assert worker.process is not None
        code = worker.process.returncode
        delay = RESTART_BACKOFF[min(worker.restarts, len(RESTART_BACKOFF) - 1)]
        log.warning("worker %d exited with %s; restarting in %.1fs", worker.index, code, delay)
        worker.restarts += 1
        await asyncio.sleep(delay)
        await worker.start(self.config_path)

    async def _stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(CacheError, TimeoutError):
                await worker.call(next(self._ids), "stop", seconds=2.0)
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                async with asyncio.timeout(15.0):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()

    async def broadcast(self, op: str, **fields: Any) -> list[Any]:
        return list(await asyncio.gather(*(w.call(next(self._ids), op, **fields) for w in self.workers)))

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """Apply the config file again (SIGHUP); reloads run one at a time, in signal order."""
        async with self._reload_lock:
            await self._reload()

    async def _reload(self) -> None:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return
        fixed = ("listen", "workers", "storage", "admin", "access_log", "rate_limit")
        changed = [name for name in fixed if getattr(config, name) != getattr(self.config, name)]
        if changed:
            log.warning("reload: %s changed; that needs a restart (the rest is applied now)", ", ".join(changed))
        document = config.model_dump(mode="json", by_alias=True, exclude_none=True)
        running = self.config.model_dump(mode="json", by_alias=True, exclude_none=True)
        for name in fixed:  # the documents are by alias (accessLog), the fields by Python name (access_log)
            alias = CacheConfig.model_fields[name].alias or name
            document[alias] = running.get(alias)
        try:
            await self.broadcast("reload", config=document)
        except (CacheError, TimeoutError) as exc:
            log.error("reload failed in a worker: %s", exc)
            return
        self.config = config.model_copy(update={name: getattr(self.config, name) for name in fixed})
        self._check_rate_table(self.config)
        log.info("reloaded %s: %d domains", self.config_path, len(config.domains))

    # --- admin endpoint --------------------------------------------------------------

    async def _start_admin(self) -> web.AppRunner:
        app = web.Application(client_max_size=MAX_ADMIN_BODY)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/purge", self._purge)
        app.router.add_post("/prefetch", self._prefetch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_listen(self.config.admin.listen)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise CacheError(f"cannot listen on admin.listen {self.config.admin.listen}: {exc.strerror}") from None
        return runner

    async def _healthz(self, request: web.Request) -> web.Response:
        if all(worker.ready.is_set() for worker in self.workers):
            return web.Response(text="ok\n")
        return web.Response(status=503, text="workers not ready\n")

    async def _snapshot_all(self, request: web.Request) -> dict[str, Any]:
        now = time.monotonic()
        if snapshot_stale(self._stats_cache[0], now, request.headers.get("Cache-Control")):
            self._stats_cache = (now, await self._poll())
        return self._stats_cache[1]

    async def _poll(self) -> dict[str, Any]:
        """Every worker's counters, summed; each worker's per-Domain counts also feed the window."""
        results = await asyncio.gather(
            *(w.call(next(self._ids), "stats", seconds=5.0) for w in self.workers), return_exceptions=True
        )
        for worker, result in zip(self.workers, results, strict=True):
            if isinstance(result, dict):
                pid = worker.process.pid if worker.process is not None else None
                self.recent.observe(worker.index, pid, result.get("accounts") or {})
        return stats_module.merge(r for r in results if isinstance(r, dict))

    async def _sample_accounts(self) -> None:
        """Poll the workers once per window slot, so the window is right whoever asks /status, and when."""
        while True:
            await asyncio.sleep(self.recent.slot_seconds)
            self._stats_cache = (time.monotonic(), await self._poll())  # a worker that fails is left out

    async def _status(self, request: web.Request) -> web.Response:
        total = await self._snapshot_all(request)
        body = stats_module.summary(total, self.recent)
        body["node"] = self.config.node
        body["workers"] = sum(1 for worker in self.workers if worker.ready.is_set())
        return web.json_response(body)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._snapshot = await self._snapshot_all(request)
        data = generate_latest(self.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _authorised(self, request: web.Request) -> web.Response | None:
        token = self.token
        if token is None:
            return _problem(403, "purge and prefetch are disabled: set admin.token or admin.tokenFile in the config")
        sent = request.headers.get("Authorization", "")
        if not sent.startswith("Bearer ") or not hmac.compare_digest(sent[7:].strip(), token):
            return _problem(401, "missing or wrong bearer token (Authorization: Bearer <admin token>)")
        return None

    async def _admin_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The JSON object of an authorised admin request, or the response refusing it."""
        refused = self._authorised(request)
        if refused is not None:
            return refused
        return await _json_object(request)

    async def _purge(self, request: web.Request) -> web.Response:
        body = await self._admin_body(request)
        if isinstance(body, web.Response):
            return body
        problem = _check_lists(body, ("urls", "prefixes", "tags"), required_one=True)
        if problem:
            return _problem(400, problem)
        try:
            results = await self.broadcast(
                "purge",
                domain=body.get("domain"),
                urls=body.get("urls", []),
                prefixes=body.get("prefixes", []),
                tags=body.get("tags", []),
                soft=bool(body.get("soft", False)),
            )
        except (CacheError, TimeoutError) as exc:
            return _problem(503, f"purge not applied everywhere: {exc}")
        return web.json_response({"purged": max((r["purged"] for r in results), default=0)})

    async def _prefetch(self, request: web.Request) -> web.Response:
        body = await self._admin_body(request)
        if isinstance(body, web.Response):
            return body
        problem = _check_lists(body, ("urls",), required_one=True)
        if problem or not isinstance(body.get("domain"), str):
            return _problem(400, problem or "domain: a Domain name is required")
        try:
            result = await self.workers[0].call(
                next(self._ids), "prefetch", seconds=600.0, domain=body["domain"], urls=body["urls"]
            )
        except (CacheError, TimeoutError) as exc:
            return _problem(503, f"prefetch failed: {exc}")
        return web.json_response(result)


def snapshot_stale(taken: float, now: float, cache_control: str | None) -> bool:
    """Whether to ask the workers again: the snapshot taken at ``taken`` is too old, or the client said no-cache."""
    if cache_control is not None and "no-cache" in cache_control.lower():
        return True
    return now - taken > SNAPSHOT_SECONDS


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except (ValueError, web.HTTPRequestEntityTooLarge):
        return _problem(400, "the body must be a JSON object of at most 1 MiB")
    if not isinstance(body, dict):
        return _problem(400, "the body must be a JSON object")
    return body


def _check_lists(body: dict[str, Any], names: tuple[str, ...], *, required_one: bool) -> str | None:
    unknown = set(body) - {*names, "domain", "soft"}
    if unknown:
        return f"unknown fields: {', '.join(sorted(unknown))}"
    for name in names:
        value = body.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            return f"{name}: a list of non-empty strings"
        if len(value) > MAX_URLS:
            return f"{name}: at most {MAX_URLS} entries"
    if required_one and not any(body.get(name) for name in names):
        return f"give at least one of: {', '.join(names)}"
    if "soft" in body and not isinstance(body["soft"], bool):
        return "soft: true or false"
    if body.get("domain") is not None and not isinstance(body["domain"], str):
        return "domain: the name of a Domain (a string)"
    return None


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _check_port_free(address: str, field: str) -> None:
    """Fail early, with the field to change, when another program holds the port."""
    host, port = split_listen(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CacheError(f"cannot listen on {field} {address}: {exc.strerror}; choose another {field}") from None


def run_cache(config_path: Path, load_window: float = accounting.LOAD_WINDOW_SECONDS) -> None:
    """Run the master until SIGTERM/SIGINT (the ``edgefleet cache`` command); ``load_window``: seconds the load
    figures of ``/status`` cover (see :mod:`edgefleet.cache.accounting`)."""
    config = load_config(config_path)
    # The workers log in this format too; without it the master's reload and restart messages are lost.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    import uvloop

    uvloop.run(Master(config_path.resolve(), config, load_window).run())
