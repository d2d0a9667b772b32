"""``edgefleet edge run``: the agent of one edge node.

How it starts, in this order, so that serving never waits for the cloud:

1. open the local view store (``view.db``; a corrupt one is moved aside);
2. start the workload supervisor from its own state files - every workload
   that ran before comes back (or is adopted if it still runs), with the
   cloud unreachable or not;
3. reconcile the supervisor with the Workloads of the local view, if that
   view was ever synced (an empty, never-synced or rebuilt view means "not
   known yet", not "run nothing");
4. serve ``/healthz`` and ``/metrics`` locally;
5. only then dial the hub, forever, with backoff and jitter.

Each batch from the hub is committed to ``view.db`` before it is
acknowledged, and then the supervisor is reconciled in the background (a
graceful stop can take seconds; acks must not wait for it). Reconciliation
is by template *content*, so a resync that changes nothing restarts nothing.

On SIGTERM/SIGINT the agent stops supervising and exits, leaving the
workloads running: restarting the agent (an upgrade, a crash) must not
interrupt service. ``edgefleet edge stop-workloads`` stops them on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

import edgefleet
from edgefleet.api.workloads import Workload, WorkloadTemplate
from edgefleet.edge.hubclient import Backoff, HubClient
from edgefleet.edge.localstore import LocalStore
from edgefleet.edge.server import AgentHttp
from edgefleet.edge.supervisor import Supervisor
from edgefleet.sync.agent import ApplyBatch, LocalState

log = logging.getLogger("edgefleet.edge.agent")

RECONCILE_SETTLE_SECONDS = 0.3


class AgentError(Exception):
    """The agent cannot start (missing join files, bad configuration)."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 7441
    heartbeat_seconds: float = 10.0
    ping_interval: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass(frozen=True, slots=True)
class Identity:
    server: str
    node: str
    site: str


def load_identity(data_dir: Path) -> Identity:
    """``node.yaml`` and ``credential`` written by ``edgefleet edge join``."""
    try:
        data = yaml.safe_load((data_dir / "node.yaml").read_text())
        (data_dir / "credential").stat()
        return Identity(str(data["server"]).rstrip("/"), str(data["node"]), str(data.get("site", "")))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise AgentError(
            f"{data_dir} has no usable node.yaml/credential ({exc}); "
            "join first: edgefleet edge join --server URL --token T --site S --data-dir DIR"
        ) from None


def sync_url(server: str) -> str:
    scheme, _, rest = server.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/edge/v1/sync"


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connected = Gauge("edgefleet_agent_connected", "1 while the hub link is up", registry=self.registry)
        self.synced_revision = Gauge("edgefleet_agent_synced_revision", "Store revision of the local view",
                                     registry=self.registry)
        self.objects = Counter("edgefleet_agent_sync_objects_received", "Objects put or deleted by hub batches",
                               registry=self.registry)
        self.batches = Counter("edgefleet_agent_sync_batches", "Batches committed and acknowledged",
                               registry=self.registry)
        self.connects = Counter("edgefleet_agent_hub_connects", "Successful hub handshakes", registry=self.registry)
        self.workloads = Gauge("edgefleet_agent_workloads", "Workloads by readiness", ["ready"],
                               registry=self.registry)


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.identity = load_identity(options.data_dir)
        self.metrics = AgentMetrics()
        self.local = LocalStore(options.data_dir / "view.db")
        self.supervisor = Supervisor(options.data_dir, node_name=self.identity.node, on_change=self._workloads_changed)
        self.hub = HubClient(
            url=sync_url(self.identity.server),
            credential=self._credential,
            node_name=self.identity.node,
            handler=self,
            heartbeat_seconds=options.heartbeat_seconds,
            ping_interval=options.ping_interval,
            backoff=options.backoff,
        )
        self.http = AgentHttp(metrics=self.metrics.registry, status=self.describe, ready=self._all_ready)
        self._reconcile = asyncio.Event()
        self._last_batch = 0.0
        self._hub_name = ""

    def _credential(self) -> str:
        return (self.options.data_dir / "credential").read_text().strip()

    # LinkHandler -----------------------------------------------------------

    def local_state(self) -> LocalState:
        snapshot = self.local.snapshot()
        return LocalState(epoch=snapshot.epoch, revision=snapshot.revision, holdings=snapshot.holdings,
                          agent_version=edgefleet.__version__)

    async def apply_batch(self, batch: ApplyBatch) -> None:
        put = [(item.key, item.rev, item.object) for item in batch.put]
        await asyncio.to_thread(
            self.local.apply_batch, revision=batch.revision, epoch=batch.epoch, put=put, delete=list(batch.delete),
        )
        self._last_batch = time.monotonic()
        self.metrics.batches.inc()
        self.metrics.objects.inc(len(put) + len(batch.delete))
        self.metrics.synced_revision.set(batch.revision)
        if any(key.startswith("/registry/workloads/") for key in [*(p[0] for p in put), *batch.delete]):
            self._reconcile.set()

    def status_report(self) -> dict[str, Any]:
        snapshot = self.local.snapshot()
        workloads = {
            name: status.model_dump(mode="json", by_alias=True, exclude_none=True)
            for name, status in self.supervisor.statuses().items()
        }
        return {"agentVersion": edgefleet.__version__, "syncedRevision": snapshot.revision,
                "syncedEpoch": snapshot.epoch, "workloads": workloads}

    async def read_logs(self, workload: str, tail: int) -> str:
        return await self.supervisor.read_logs(workload, tail)

    def link_changed(self, connected: bool, hub: str) -> None:
        self._hub_name = hub if connected else ""
        self.metrics.connected.set(1 if connected else 0)
        if connected:
            self.metrics.connects.inc()
            log.info("connected to hub", extra={"hub": hub})
        else:
            log.warning("hub link lost; serving on from local state")

    # workloads -------------------------------------------------------------

    def desired_workloads(self) -> dict[str, WorkloadTemplate]:
        desired: dict[str, WorkloadTemplate] = {}
        for doc in self.local.objects("workloads"):
            try:
                workload = Workload.model_validate(doc)
            except ValidationError as exc:
                log.error("ignoring invalid workload %s: %s", doc.get("metadata", {}).get("name"), exc)
                continue
            desired[workload.name] = workload.spec.template
        return desired

    def _workloads_changed(self) -> None:
        statuses = self.supervisor.statuses().values()
        ready = sum(1 for s in statuses if s.ready)
        self.metrics.workloads.labels("true").set(ready)
        self.metrics.workloads.labels("false").set(len(statuses) - ready)
        self.hub.status_changed()

    def _all_ready(self) -> bool:
        return all(s.ready for s in self.supervisor.statuses().values())

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile.wait()
            # Let a burst of batches (a resync cut into several) land before acting on the view.
            while time.monotonic() - self._last_batch < RECONCILE_SETTLE_SECONDS:  # noqa: ASYNC110
                await asyncio.sleep(RECONCILE_SETTLE_SECONDS)
            self._reconcile.clear()
            try:
                await self.supervisor.apply(self.desired_workloads())
            except Exception:  # one bad reconcile must not stop the agent; the next change retries
                log.exception("workload reconcile failed")

    def describe(self) -> dict[str, Any]:
        snapshot = self.local.snapshot()
        return {
            "node": self.identity.node,
            "site": self.identity.site,
            "connected": self.hub.connected,
            "hub": self._hub_name,
            "epoch": snapshot.epoch,
            "syncedRevision": snapshot.revision,
            "objects": len(snapshot.holdings),
            "workloads": self.status_report()["workloads"],
        }

    # lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        if self.local.recovered_from is not None:
            log.error("the local view store was corrupt and was moved to %s; it is rebuilt from the cloud",
                      self.local.recovered_from)
        await self.supervisor.start()
        if self.local.snapshot().revision > 0:
            await self.supervisor.apply(self.desired_workloads())
        else:
            # A view never synced (or rebuilt after corruption) is empty, not "run nothing":
            # keep running what the supervisor's own state says until the cloud fills the view.
            log.warning("no synced view yet; running the workloads from local state until the cloud answers")
        address = await self.http.start(self.options.listen_host, self.options.listen_port,
                                        self.options.data_dir / "agent.addr")
        log.info("agent running", extra={"node": self.identity.node, "listen": address,
                                         "server": self.identity.server})
        tasks = [asyncio.create_task(self.hub.run()), asyncio.create_task(self._reconcile_loop())]
        try:
            await _until_signalled()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.supervisor.close()
            await self.http.close()
            self.local.close()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(options: AgentOptions) -> None:
    import uvloop

    uvloop.run(Agent(options).run())


async def stop_workloads(data_dir: Path) -> None:
    """Stop every workload of this node gracefully (decommission, tests)."""
    identity = load_identity(data_dir)
    supervisor = Supervisor(data_dir, node_name=identity.node)
    await supervisor.start()
    await supervisor.stop_all()
    await supervisor.close()
