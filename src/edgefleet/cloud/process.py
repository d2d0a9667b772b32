"""``edgefleet cloud``: open the store, set up auth, serve the API until stopped.

How: one asyncio loop (uvloop) runs uvicorn's server object, so the store,
the API and background tasks (history compaction) share one loop and shut
down together on SIGINT/SIGTERM. uvicorn's own access log is off: request
counts and latencies are Prometheus metrics, and per-request log lines
would cost more than the requests on the write path.

The first start against an empty store creates an admin token and prints it
once (only its hash is stored). ``--admin-token-file`` also writes it to a
0600 file, for scripts.

Node identity and lifecycle (:func:`start_fleet_tasks`): every replica
follows token deletions (revocations reach its cache and its hub sessions),
and the node lifecycle controller runs on one replica at a time, under a
leader election on ``/system/leader/nodelifecycle``. The purge controller
(Purge and Prefetch progress) likewise, on ``/system/leader/purges``,
reading the fleet from its own replica's hub index. The site activation
controller (``alwaysOn: false`` sites on and off with demand) on
``/system/leader/siteactivation``, reading demand from
``CloudOptions.demand`` (region -> queries per second; none given: zero
demand), the workload controller (revisions, rollouts, Workload.status) on
``/system/leader/workloads``, the domain status controller (traffic and origin offload from the nodes'
reports) on ``/system/leader/domainstatus``, the site status controller (healthy nodes and measured
load of each Site) on ``/system/leader/sitestatus``, the certificate controller (Certificate.status,
expiry Events) on ``/system/leader/certificates``, and the event garbage collector (Events older
than an hour) on ``/system/leader/events``. Scheduled backups (``--backup-dir``) run on
``/system/leader/backups`` (:mod:`edgefleet.cloud.backups`). With the GSLB's ``--geo`` table, every
replica publishes it to the nodes at start and after each SIGHUP reload, idempotently
(:mod:`edgefleet.cloud.geotable`).

TLS (``CloudOptions.tls``, from ``--tls-cert``/``--tls-key``/``--tls-ca``):
uvicorn serves the API, the dashboard and the hub's WebSocket on one TLS
socket (TLS 1.2+, forward-secret AEAD suites); the CA is published at
``/edge/v1/ca`` for joins that pin it by hash (:mod:`edgefleet.tls`), and
the advertised URL is ``https://``. Without it the cloud serves cleartext
HTTP and says so in its log: clients then need ``--insecure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from edgefleet.cloud import backups
from edgefleet.cloud.agentsocket import HubWebSocketProtocol
from edgefleet.cloud.auth import Authenticator, ensure_admin_token, load_tokens_file
from edgefleet.cloud.backups import BackupSchedule
from edgefleet.cloud.balance import BalanceSettings
from edgefleet.cloud.blobs import DEFAULT_MAX_BLOB_BYTES, BlobStore, blob_dir, ensure_fleet_key
from edgefleet.cloud.controllers.certificates import CertificateController, CertificateMetrics
from edgefleet.cloud.controllers.domainstatus import DomainStatusController
from edgefleet.cloud.controllers.latency import LatencyController, no_networks
from edgefleet.cloud.controllers.nodelifecycle import NodeLifecycleController, Thresholds
from edgefleet.cloud.controllers.purges import PurgeController
from edgefleet.cloud.controllers.siteactivation import SiteActivationController, no_demand
from edgefleet.cloud.controllers.sitestatus import SiteStatusController
from edgefleet.cloud.controllers.workloads import ControllerMetrics, WorkloadController
from edgefleet.cloud.draining import DrainingServer
from edgefleet.cloud.events import EventCollector
from edgefleet.cloud.geotable import GeoPublisher, start_file_publisher
from edgefleet.cloud.gslbmetrics import GslbCollector
from edgefleet.cloud.gslbservice import GslbOptions, GslbService
from edgefleet.cloud.hub import Hub, HubLimits, PresenceSettings
from edgefleet.cloud.identity import Identity
from edgefleet.cloud.leader import LeaderElection
from edgefleet.cloud.metricsrelay import RelaySettings
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import ServerSettings, create_app
from edgefleet.cloud.snapshots import IndexSnapshots
from edgefleet.cloud.statuswrites import Intervals
from edgefleet.gslb.networks import SeenNetwork
from edgefleet.store import open_store
from edgefleet.store.interface import Store, StoreError
from edgefleet.sync.messages import MAX_AGENT_MESSAGE_BYTES
from edgefleet.tls import SERVER_CIPHERS, ServerTls

log = logging.getLogger("edgefleet.cloud")


@dataclass(frozen=True, slots=True)
class CloudOptions:
    host: str = "127.0.0.1"
    port: int = 7440
    store_url: str = "sqlite:///./edgefleet-data/store.db"
    tokens_file: Path | None = None
    admin_token_file: Path | None = None
    max_body_bytes: int = 1024 * 1024
    max_watches_per_principal: int = 128
    compact_interval: float = 300.0
    node_thresholds: Thresholds = field(default_factory=Thresholds)
    heartbeat_seconds: float = 10.0
    hub_id: str = ""
    demand: Callable[[], Mapping[str, float]] | None = None
    """DNS demand by client region (queries per second) for the site activation controller; None: the
    embedded GSLB's, or zero without one."""
    gslb: GslbOptions | None = None
    """The embedded GSLB (DNS, optional redirector); None: not run in this process."""
    geo_file: Path | None = None
    """``--geo`` when no GSLB runs here (``--dns-listen off``): still published to the nodes
    (edgefleet.cloud.geotable: the DNS runs apart and the nodes fetch the table from the cloud)."""
    site_activation_period: float = 5.0
    site_status_interval: float = 10.0
    """Seconds between two writes of a Site's load figures (the site status controller's bound)."""
    domain_status_interval: float = 20.0
    """Seconds between two writes of a Domain's traffic figures (the domain status controller's bound)."""
    latency_interval: float = 10.0
    """Seconds between two writes of a Site's latency figures (the latency controller's bound)."""
    advertise_url: str | None = None
    """Base URL agents and the other replicas reach this one at; default http://HOST:PORT unless HOST is a
    wildcard address."""
    hub_limits: HubLimits = field(default_factory=HubLimits)
    status_intervals: Intervals = field(default_factory=Intervals)
    balance: BalanceSettings = field(default_factory=BalanceSettings)
    metrics_relay: RelaySettings = field(default_factory=RelaySettings)
    """The fleet metrics relay's bounds (edgefleet.cloud.metricsrelay)."""
    tls: ServerTls | None = None
    """The certificate to serve the API and hub with; None: cleartext HTTP."""
    backup: BackupSchedule | None = None
    """Scheduled backups (``--backup-dir``); None: none."""
    blob_dir: Path | None = None
    """Artifact blobs (edgefleet.cloud.blobs); None: ``blobs/`` beside a SQLite store, else ./edgefleet-data/blobs."""
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    def advertised(self) -> str | None:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        if self.host in ("0.0.0.0", "::", ""):
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` -> (host, port); ValueError with a hint otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, for example 127.0.0.1:7440")
    return host.strip("[]") or "0.0.0.0", int(port)


def write_secret(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


async def compact_history(store: Store, interval: float) -> None:
    """Every ``interval`` seconds, compact to the revision seen one interval ago.

    So at least one interval of history stays watchable: a client that was
    disconnected for less than that resumes its watch without a relist.
    """
    previous = 0
    while True:
        await asyncio.sleep(interval)
        try:
            if previous > await store.compacted_revision():
                await store.compact(previous)
                log.info("compacted store history", extra={"revision": previous})
            previous = await store.current_revision()
        except StoreError as exc:
            log.warning("history compaction failed: %s", exc)


async def announce_admin_token(store: Store, options: CloudOptions) -> None:
    token = await ensure_admin_token(store)
    if token is None:
        return
    if options.admin_token_file is not None:
        write_secret(options.admin_token_file, token)
    trust = " EDGEFLEET_INSECURE=1" if options.tls is None else ""
    if options.tls is not None and options.tls.ca_file is not None:
        trust = f" EDGEFLEET_CA_FILE={options.tls.ca_file.absolute()}"
    elif options.tls is not None and options.tls.ca_pem is not None:
        trust = " EDGEFLEET_CA_FILE=CA.crt"
    print(
        "\n  An admin token was created. It is shown only this once; keep it safe:\n\n"
        f"    {token}\n\n"
        f"  export EDGEFLEET_SERVER={options.scheme}://{options.host}:{options.port}{trust} EDGEFLEET_TOKEN={token}\n"
        + (
            f"  (the CA's pin, for edge join --ca-hash: {options.tls.ca_hash})\n"
            if options.tls and options.tls.ca_hash
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )


def start_fleet_tasks(
    store: Store,
    registry: Registry,
    identity: Identity,
    thresholds: Thresholds,
    hub: Hub | None = None,
    *,
    demand: Callable[[], Mapping[str, float]] | None = None,
    site_activation_period: float = 5.0,
    workload_period: float = 1.0,
    site_status_interval: float = 10.0,
    domain_status_interval: float = 20.0,
    latency_interval: float = 10.0,
    networks: Callable[[], Iterable[SeenNetwork]] | None = None,
) -> list[asyncio.Task[None]]:
    """Background work for edge nodes: the credential watch and the (elected) controllers.

    ``hub`` (this replica's) gives the node lifecycle controller the fleet's
    liveness and its in-memory index of Nodes, and enables the purge
    controller; ``demand`` feeds the site activation controller (None: zero
    demand).
    """
    shared = None if hub is None else shared_documents(hub)  # one read-only snapshot per kind for every round
    if hub is not None and shared is not None:
        controller = NodeLifecycleController(
            registry, thresholds, liveness=hub.live_nodes, nodes=lambda: shared.documents("nodes")
        )
    else:
        controller = NodeLifecycleController(registry, thresholds)
    election = LeaderElection(store, "nodelifecycle")
    activation = SiteActivationController(
        registry,
        demand or no_demand,
        period=site_activation_period,
        sites=None if shared is None else lambda: shared.documents("sites"),
        nodes=None if shared is None else lambda: shared.documents("nodes"),
        workloads=None if shared is None else lambda: shared.documents("workloads"),
    )
    collector = EventCollector(registry)
    tasks = [
        asyncio.create_task(identity.watch_credentials(), name="credential-watch"),
        asyncio.create_task(election.run(controller.run), name="node-lifecycle"),
        asyncio.create_task(LeaderElection(store, "siteactivation").run(activation.run), name="site-activation"),
        asyncio.create_task(LeaderElection(store, "events").run(collector.run), name="event-gc"),
    ]
    if hub is not None and shared is not None:
        purges = PurgeController(registry, lambda: hub.index)
        tasks.append(asyncio.create_task(LeaderElection(store, "purges").run(purges.run), name="purges"))
        domain_status = DomainStatusController(
            registry,
            lambda: hub.index,
            lambda: shared.documents("domains"),
            period=min(5.0, domain_status_interval / 2),
            min_interval=domain_status_interval,
        )
        tasks.append(
            asyncio.create_task(LeaderElection(store, "domainstatus").run(domain_status.run), name="domain-status")
        )
        site_status = SiteStatusController(
            registry,
            lambda: shared.documents("sites"),
            lambda: shared.documents("nodes"),
            period=min(5.0, site_status_interval / 2),
            min_interval=site_status_interval,
        )
        tasks.append(asyncio.create_task(LeaderElection(store, "sitestatus").run(site_status.run), name="site-status"))
        latency = LatencyController(
            registry,
            shared.documents,
            networks=networks or no_networks,
            period=min(5.0, latency_interval / 2),
            min_interval=latency_interval,
            targets_interval=max(latency_interval, 1.0) * 3,
        )
        tasks.append(asyncio.create_task(LeaderElection(store, "latency").run(latency.run), name="latency"))
        rollouts = WorkloadController(
            registry,
            shared.documents,
            period=workload_period,
            metrics=ControllerMetrics(hub.metrics.registry),
        )
        hub.index_listeners.append(rollouts.wake)
        tasks.append(asyncio.create_task(LeaderElection(store, "workloads").run(rollouts.run), name="workloads"))
        certificates = CertificateController(
            registry,
            documents=shared.documents,
            metrics=CertificateMetrics(hub.metrics.registry),
        )
        tasks.append(
            asyncio.create_task(LeaderElection(store, "certificates").run(certificates.run), name="certificates")
        )
    for task in tasks:
        task.add_done_callback(_report_failure)
    return tasks


def shared_documents(hub: Hub) -> IndexSnapshots:
    """Documents of each kind from the hub's index as the API returns them, shared by the controllers.

    Updated per store event of a kind somebody reads (:mod:`edgefleet.cloud.snapshots`), not copied per
    round: the controllers must not mutate what they read.
    """
    snapshots = IndexSnapshots(lambda: hub.index)
    hub.index_listeners.insert(0, snapshots.changed)  # before the listeners that wake a round
    return snapshots


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait (failures were logged when they happened)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_cloud(options: CloudOptions) -> None:
    store = open_store(options.store_url)
    try:
        static = load_tokens_file(options.tokens_file) if options.tokens_file else None
        if static is None:
            await announce_admin_token(store, options)
        registry = Registry(store)
        authenticator = Authenticator(store, static_tokens=static)
        identity = Identity(registry, authenticator)
        if added := await identity.index_credentials():
            log.info("indexed node credentials by node", extra={"credentials": added})
        gslb = await start_gslb(store, options.gslb)
        hub = Hub(
            registry,
            hub_id=options.hub_id or f"{socket.gethostname()}:{options.port}",
            authenticate=identity.authenticate_node,
            heartbeat_seconds=options.heartbeat_seconds,
            status_intervals=options.status_intervals,
            limits=options.hub_limits,
            presence=PresenceSettings(url=options.advertised(), peer_verify=_peer_verify(options.tls)),
            balance=options.balance,
            demand=gslb.demand if gslb is not None else None,
            relay=options.metrics_relay,
        )
        await hub.start()
        if gslb is not None:  # the DNS counters (answers per site...) on /metrics
            hub.metrics.registry.register(GslbCollector(gslb.dns))
        demand = options.demand or hub.fleet_demand
        identity.on_credential_removed(lambda node: hub.disconnect_node(node, "credential revoked"))
        ca_pem = options.tls.ca_pem if options.tls is not None else None
        settings = ServerSettings(
            max_body_bytes=options.max_body_bytes,
            ca_pem=ca_pem,
            max_watches_per_principal=options.max_watches_per_principal,
            blob_dir=blob_dir(options.blob_dir, options.store_url),
            max_blob_bytes=options.max_blob_bytes,
        )
        await ensure_fleet_key(registry)
        app = create_app(registry, authenticator, settings, identity=identity, hub=hub)
        config = uvicorn.Config(
            app,
            host=options.host,
            port=options.port,
            loop="none",
            http="httptools",
            ws=HubWebSocketProtocol,  # uvicorn's sans-I/O WebSocket plus the hub's direct lane (cloud/agentsocket.py)
            ws_max_size=MAX_AGENT_MESSAGE_BYTES,
            ws_ping_interval=None,  # the hub closes silent sessions itself
            ws_per_message_deflate=False,  # large batches are compressed one by one (messages.COMPRESSION_HEADER)
            access_log=False,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=3,
            **_ssl_options(options.tls),
        )
        config.load()  # builds the TLS context, which is then tightened
        _tighten(config.ssl)
        compactor = asyncio.create_task(compact_history(store, options.compact_interval))
        fleet_tasks = start_fleet_tasks(
            store,
            registry,
            identity,
            options.node_thresholds,
            hub,
            demand=demand,
            site_activation_period=options.site_activation_period,
            site_status_interval=options.site_status_interval,
            domain_status_interval=options.domain_status_interval,
            latency_interval=options.latency_interval,
            networks=gslb.busy_networks if gslb is not None else None,
        )
        if options.backup is not None:
            fleet_tasks.append(backups.start(store, options.store_url, options.backup, hub.metrics.registry))
        if gslb is not None and gslb.options.geo_path is not None:  # the GSLB's table, shipped to every node
            fleet_tasks.append(start_geo_publisher(registry, settings.blob_dir, gslb, hub.metrics.registry))
        elif options.geo_file is not None and settings.blob_dir is not None:  # no GSLB here: the table all the same
            task, _ = await start_file_publisher(
                registry, BlobStore(settings.blob_dir), options.geo_file, hub.metrics.registry
            )
            task.add_done_callback(_report_failure)
            fleet_tasks.append(task)
        log.info(
            "edgefleet cloud serving",
            extra={"listen": f"{options.host}:{options.port}", "store": options.store_url, "scheme": options.scheme},
        )
        if options.tls is None:
            log.warning(
                "serving the API and the hub in cleartext HTTP (no --tls-cert/--tls-key): tokens and "
                "state can be read on the network; clients must pass --insecure"
            )
        try:
            await DrainingServer(config).serve()  # ends open watches at once on a stop (cloud/draining.py)
        finally:
            await hub.close()
            await stop_tasks(fleet_tasks)
            if gslb is not None:
                await gslb.close()
            compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await compactor
    finally:
        await store.close()


def _peer_verify(tls: ServerTls | None) -> ssl.SSLContext | None:
    """The replicas share the CA: each checks the others against it (logs forwarding)."""
    if tls is None or tls.ca_pem is None:
        return None
    return ssl.create_default_context(cadata=tls.ca_pem.decode())


def _ssl_options(tls: ServerTls | None) -> dict[str, Any]:
    """uvicorn's TLS settings for ``tls`` (none for cleartext)."""
    if tls is None:
        return {}
    return {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file), "ssl_ciphers": SERVER_CIPHERS}


def _tighten(context: ssl.SSLContext | None) -> None:
    """TLS 1.2 at least; no session tickets (no client of ours resumes: they only cost bytes on every handshake)."""
    if context is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.num_tickets = 0


async def start_gslb(store: Store, options: GslbOptions | None) -> GslbService | None:
    """Start the embedded GSLB (SIGHUP reloads its geo table); None when disabled."""
    if options is None:
        return None
    service = GslbService(store, options)
    await service.start()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, service.reload_geo)
    return service


def start_geo_publisher(
    registry: Registry, blobs: Path | None, gslb: GslbService, metrics: CollectorRegistry
) -> asyncio.Task[None]:
    """Publish the GSLB's ``--geo`` table to the nodes now and after each reload (:mod:`edgefleet.cloud.geotable`)."""
    assert gslb.options.geo_path is not None and blobs is not None
    publisher = GeoPublisher(registry, BlobStore(blobs), gslb.options.geo_path, metrics)
    loop = asyncio.get_running_loop()
    gslb.geo_listeners.append(lambda: loop.call_soon_threadsafe(publisher.request))
    task = asyncio.create_task(publisher.run(), name="geo-publisher")
    task.add_done_callback(_report_failure)
    return task


def main(options: CloudOptions) -> None:
    """Run the cloud on uvloop until SIGINT/SIGTERM."""
    import uvloop

    uvloop.run(run_cloud(options))
