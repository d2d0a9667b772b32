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

Which hub servers it dials: the ``servers`` of ``node.yaml`` (written by
``edgefleet edge join --server URL [--server URL ...]``), unless the local
view holds the ClusterInfo ``default`` (see :mod:`edgefleet.api.clusterinfo`):
then its ``spec.servers``. The list is computed at start from the local view
store, so an agent restarted while the cloud is unreachable dials the last
list it received, and again after every batch that touches a ClusterInfo;
a new list is handed to the hub client (:meth:`HubClient.set_servers`),
which keeps the current connection and uses the list for its next dial.
Nothing is written besides the view itself. ``/status`` shows the list
(``servers``) and the server of the current session (``server``).

TLS: the agent trusts the CA ``edge join`` pinned (``ca.crt`` in its
directory) alone, for every dial (:mod:`edgefleet.edge.hubclient`). A
cleartext ``http://`` server is dialled only if join was given
``--insecure`` (``insecure: true`` in ``node.yaml``): otherwise the agent
refuses to start with such a ``node.yaml``, and ignores such entries of a
ClusterInfo (a compromised admin token must not downgrade the fleet).

Each batch from the hub is committed to ``view.db`` before it is
acknowledged, and then the supervisor is reconciled in the background (a
graceful stop can take seconds; acks must not wait for it). Reconciliation
is by template *content*, so a resync that changes nothing restarts nothing.

The built-in cache workload (``builtin: cache``, see
:mod:`edgefleet.edge.cacheconfig`) gets two more loops, woken by view
changes and workload state changes and run at least every status period:
one keeps each cache's ``cache.yaml`` equal to what the view says (rewrite,
then SIGHUP, never a restart) and polls its admin ``/status`` into
``Node.status.cache``; the other sends the view's open Purges and
Prefetches to the cache's admin endpoint, once each, and reports them in
``Node.status.purges`` / ``prefetches`` (see :mod:`edgefleet.edge.cachetasks`).

Artifacts (``template.artifacts``, see :mod:`edgefleet.edge.artifacts`): the
agent fetches them through its own cache (the internal Domain it adds to every
cache config, whose origin is this agent's ``/artifact-origin``), verifies and
keeps them by digest, before the supervisor stops an old revision; it serves
as that origin for the caches of its node, prefetches the Artifacts an
``edgefleet.io/prefetch-sites`` annotation selects for its site, and
collects the blobs no desired Workload uses after each reconcile. The GSLB's geo
table travels the same way (:mod:`edgefleet.edge.geotable`): fetched when the
cloud publishes one, kept in ``<data>/geo/`` and rendered as the caches'
``geoTable``, so edge rules place clients as the GSLB does.

Elastic sites (:mod:`edgefleet.edge.elastic`): while the node's own Site
is Inactive in the view, the reconcile holds its ``builtin: cache``
workloads at zero (graceful stop, disk tier kept, ``ScaledDown``); a batch
that touches a Site reconciles again, so the caches start when the site is
Activating.

The peer prober (:mod:`edgefleet.edge.peerhealth`) probes the cache of
every other node of the site every ``--peer-probe-period`` seconds, cloud
link or not, and reports its verdicts in ``Node.status.peerVotes``; a
changed verdict asks the hub client for a status report at once.
The latency prober (:mod:`edgefleet.edge.latency`) measures RTTs to the
ProbeTargets of the view every ``--latency-probe-period`` seconds and
reports their medians in ``Node.status.latency`` (the GSLB's latency policy).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

import edgefleet
from edgefleet.api.clusterinfo import DEFAULT_NAME as CLUSTER_INFO_NAME
from edgefleet.api.clusterinfo import check_server_url, normalise_servers
from edgefleet.api.domains import CDN_ZONE
from edgefleet.api.secrets import secret_value
from edgefleet.api.workloads import Workload, WorkloadTemplate
from edgefleet.cache.errors import CacheError
from edgefleet.edge import elastic
from edgefleet.edge.artifacts import FLEET_SECRET, ORIGIN_PREFIX, ArtifactManager, internal_domain
from edgefleet.edge.backoff import HUB_DIAL, Backoff
from edgefleet.edge.cacheconfig import (
    ADMIN_PORT_NAME,
    DEFAULT_ADMIN_PORT,
    DEFAULT_HTTP_PORT,
    HTTP_PORT_NAME,
    RELOAD_AFTER_SECONDS,
    AdminEndpoint,
    BuiltinCache,
    host_port,
    template_port,
)
from edgefleet.edge.cachetasks import LEDGER_FILE, CacheAdmin, CacheTasks, tasks_from_view
from edgefleet.edge.geotable import NodeGeoTable
from edgefleet.edge.hubclient import HubClient
from edgefleet.edge.hubclient import sync_url as sync_url  # re-exported: callers used it from here
from edgefleet.edge.latency import DEFAULT_PERIOD as LATENCY_PERIOD
from edgefleet.edge.latency import LatencyProber, Target, probe_targets
from edgefleet.edge.localstore import LocalStore
from edgefleet.edge.metricsources import MetricSources
from edgefleet.edge.peerhealth import DEFAULT_PERIOD, PeerProber, PeerTarget, PeerVotes, peer_targets
from edgefleet.edge.server import AgentHttp
from edgefleet.edge.supervisor import Running, Supervisor
from edgefleet.edge.users import DEFAULT_WORKLOAD_USER, UserPolicy
from edgefleet.sync.agent import ApplyBatch, LocalState
from edgefleet.tls import TlsError, node_trust

log = logging.getLogger("edgefleet.edge.agent")

RECONCILE_SETTLE_SECONDS = 0.3
ARTIFACT_RETRY_SECONDS = 30.0
"""A Workload revision whose artifacts failed is tried again after this long (the old revision runs on)."""
CACHE_VIEW_KINDS = ("nodes", "sites", "domains", "certificates", "secrets")
"""What a built-in cache's config is rendered from (secrets: the token-auth keys of the Domains' edge rules)."""
TASK_KINDS = ("purges", "prefetches")
CLUSTER_INFO_KEY = f"/registry/clusterinfos/{CLUSTER_INFO_NAME}"


class AgentError(Exception):
    """The agent cannot start (missing join files, bad configuration)."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 7441
    heartbeat_seconds: float = 10.0
    ping_interval: float = 10.0
    backoff: Backoff = HUB_DIAL
    peer_probe_period: float = DEFAULT_PERIOD
    latency_probe_period: float = LATENCY_PERIOD
    probe_source: str | None = None
    """Local address latency probes are sent from (None: the system picks)."""
    cdn_zone: str = CDN_ZONE
    workload_user: str = DEFAULT_WORKLOAD_USER
    """Who workloads without runAsUser run as, when the agent runs as root (see :mod:`edgefleet.edge.users`)."""


@dataclass(frozen=True, slots=True)
class Identity:
    servers: tuple[str, ...]
    """The hub servers ``edge join`` was given (normalised base URLs, at least one)."""
    node: str
    site: str
    insecure: bool = False
    """``edge join --insecure``: cleartext http:// servers are allowed."""

    @property
    def server(self) -> str:
        return self.servers[0]


def load_identity(data_dir: Path) -> Identity:
    """``node.yaml`` and ``credential`` written by ``edgefleet edge join``.

    ``servers`` (a list) is read, falling back to ``[server]`` for a node
    joined by an older version.
    """
    try:
        data = yaml.safe_load((data_dir / "node.yaml").read_text())
        (data_dir / "credential").stat()
        listed = data.get("servers") or [data["server"]]
        if not isinstance(listed, list):
            raise TypeError("servers must be a list of URLs")
        servers = normalise_servers(str(server) for server in listed)
        identity = Identity(tuple(servers), str(data["node"]), str(data.get("site", "")), data.get("insecure") is True)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise AgentError(
            f"{data_dir} has no usable node.yaml/credential ({exc}); "
            "join first: edgefleet edge join --server URL --token T --site S --data-dir DIR"
        ) from None
    try:
        trust = node_trust(data_dir, identity.insecure)
        for server in identity.servers:
            trust.check_url(server, how="`edgefleet edge join --insecure --force` (or join an https:// cloud)")
        trust.ssl_context()  # an unreadable ca.crt is an error now, not at every dial
    except TlsError as exc:
        raise AgentError(f"{data_dir / 'node.yaml'}: {exc}") from None
    return identity


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connected = Gauge("edgefleet_agent_connected", "1 while the hub link is up", registry=self.registry)
        self.synced_revision = Gauge(
            "edgefleet_agent_synced_revision", "Store revision of the local view", registry=self.registry
        )
        self.objects = Counter(
            "edgefleet_agent_sync_objects_received", "Objects put or deleted by hub batches", registry=self.registry
        )
        self.batches = Counter(
            "edgefleet_agent_sync_batches", "Batches committed and acknowledged", registry=self.registry
        )
        self.connects = Counter("edgefleet_agent_hub_connects", "Successful hub handshakes", registry=self.registry)
        self.workloads = Gauge("edgefleet_agent_workloads", "Workloads by readiness", ["ready"], registry=self.registry)


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.identity = load_identity(options.data_dir)
        self.metrics = AgentMetrics()
        self.local = LocalStore(options.data_dir / "view.db")
        self.cache = BuiltinCache(self.identity.node, zone=options.cdn_zone)
        self.users = UserPolicy.for_agent(options.workload_user)
        self.artifacts = ArtifactManager(
            options.data_dir / "artifacts",
            view=self.local.objects,
            secret=lambda: self.local.get(f"/registry/secrets/{FLEET_SECRET}"),
            cache_url=self._local_cache_url,
            cloud=self._cloud_access,
            registry=self.metrics.registry,
        )
        self.supervisor = Supervisor(
            options.data_dir,
            node_name=self.identity.node,
            on_change=self._workloads_changed,
            builtins={"cache": self.cache},
            users=self.users,
            secrets=self._secret_value,
            artifacts=self.artifacts,
        )
        self.cache_tasks = CacheTasks(options.data_dir / LEDGER_FILE, CacheAdmin())
        self.geo = NodeGeoTable(  # the GSLB's geo table for the caches' edge rules (edge.geotable)
            options.data_dir / "geo", self.artifacts, self.local.objects, self._geo_changed,
            registry=self.metrics.registry,
        )  # fmt: skip
        self.cache.geo_table = self.geo.path
        self.metric_sources = MetricSources(self.metrics.registry, self._cache_endpoints)
        servers, origin = self.desired_servers()
        log.info("hub servers: %s (from %s)", ", ".join(servers), origin)
        self.hub = HubClient(
            servers=servers,
            credential=self._credential,
            node_name=self.identity.node,
            handler=self,
            heartbeat_seconds=options.heartbeat_seconds,
            ping_interval=options.ping_interval,
            backoff=options.backoff,
            trust=node_trust(options.data_dir, self.identity.insecure),
            metrics=self.metric_sources.read,
        )
        self.peer_votes = PeerVotes()
        self.peer_prober = PeerProber(
            self.peer_votes, self._peer_targets, self.hub.status_changed, period=options.peer_probe_period
        )
        self.latency = LatencyProber(
            self._latency_targets,
            self.hub.status_changed,
            period=options.latency_probe_period,
            source=options.probe_source,
        )
        self.http = AgentHttp(
            metrics=self.metrics.registry, status=self.describe, ready=self._all_ready, routes=self.artifacts.routes()
        )
        self._reconcile = asyncio.Event()
        self._cache_wake = asyncio.Event()
        self._tasks_wake = asyncio.Event()
        self._cache_stats: dict[str, Any] | None = None
        self._task_report: dict[str, list[dict[str, Any]]] = {"purges": [], "prefetches": []}
        self._next_task_due: float | None = None
        self._last_batch = 0.0
        self._hub_name = ""
        self._latency_reported = False
        self._prefetch: asyncio.Future[None] | None = None

    def _credential(self) -> str:
        return (self.options.data_dir / "credential").read_text().strip()

    def _site_labels(self) -> dict[str, str]:
        """This node's Site labels from the view, plus the implicit edgefleet.io/site."""
        site = self.local.get(f"/registry/sites/{self.identity.site}") or {}
        metadata = site.get("metadata") if isinstance(site, dict) else None
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        return {**(labels if isinstance(labels, dict) else {}), "edgefleet.io/site": self.identity.site}

    def _local_cache_url(self) -> str | None:
        """Base URL of this node's ready built-in cache (artifacts are fetched through it), or None."""
        ready = [r for r in self._running_caches().values() if r.ready]
        if not ready:
            return None
        port = template_port(ready[0].template, HTTP_PORT_NAME, DEFAULT_HTTP_PORT)
        return f"http://{host_port(self.cache.probe_host(), port)}"

    def _cloud_access(self) -> tuple[str, str, Any]:
        """(server, node credential, TLS verification) for fetching blobs from the cloud directly."""
        server = self.hub.server
        verify: Any = True
        if server.startswith("https://"):
            verify = node_trust(self.options.data_dir, self.identity.insecure).ssl_context()
        return server, self._credential(), verify

    def _secret_value(self, name: str, key: str) -> str | None:
        """A value of a Secret of the local view (for env valueFrom.secretRef)."""
        return secret_value(self.local.get(f"/registry/secrets/{name}"), key)

    # LinkHandler -----------------------------------------------------------

    def local_state(self) -> LocalState:
        snapshot = self.local.snapshot()
        return LocalState(
            epoch=snapshot.epoch,
            revision=snapshot.revision,
            holdings=snapshot.holdings,
            agent_version=edgefleet.__version__,
        )

    async def apply_batch(self, batch: ApplyBatch) -> None:
        put = [(item.key, item.rev, item.object) for item in batch.put]
        await asyncio.to_thread(
            self.local.apply_batch,
            revision=batch.revision,
            epoch=batch.epoch,
            put=put,
            delete=list(batch.delete),
        )
        self._last_batch = time.monotonic()
        self.metrics.batches.inc()
        self.metrics.objects.inc(len(put) + len(batch.delete))
        self.metrics.synced_revision.set(batch.revision)
        kinds = {key.split("/")[2] for key in [*(p[0] for p in put), *batch.delete] if key.count("/") >= 3}
        if kinds & set(CACHE_VIEW_KINDS):
            self.cache.update_view(self._cache_view())  # before a reconcile may start a cache from it
            self._cache_wake.set()
        if "workloads" in kinds or "sites" in kinds:  # sites: an elastic site's phase scales its caches
            self._reconcile.set()
        if kinds & {"workloads", *TASK_KINDS}:
            self._tasks_wake.set()
        if "clusterinfos" in kinds:
            self.follow_servers()
        if "artifacts" in kinds:
            self._prefetch = asyncio.ensure_future(self.artifacts.prefetch(self._site_labels()))
            self.geo.view_changed()

    def status_report(self) -> dict[str, Any]:
        workloads = {
            name: status.model_dump(mode="json", by_alias=True, exclude_none=True)
            for name, status in self.supervisor.statuses().items()
        }
        # No syncedRevision: the hub takes it from the batches this node acknowledged, so a report
        # stays byte-identical across pushes (and an identical report costs the hub nothing).
        report = {
            "agentVersion": edgefleet.__version__,
            "workloads": workloads,
            **self._task_report,
            "peerVotes": self._reported_votes(),
        }
        if self._cache_stats is not None:
            report["cache"] = self._cache_stats
        conditions = self.cache.conditions()  # RulesReady: a Secret the edge rules name is missing (edge.rulestatus)
        if conditions:
            report["conditions"] = conditions
        latency = self.latency.report()
        if latency or self._latency_reported:  # once reported, an empty map clears the stored figures
            report["latency"] = latency
            self._latency_reported = True
        return report

    def _reported_votes(self) -> dict[str, dict[str, bool]]:
        """Verdicts only: the cloud stamps when a verdict changed, so a report of confirmed votes stays
        byte-identical and costs the hub nothing (times from the agent's clock are not trusted anyway)."""
        return {peer: {"healthy": vote["healthy"]} for peer, vote in self.peer_votes.votes(time.time()).items()}

    async def read_logs(self, workload: str, tail: int) -> str:
        return await self.supervisor.read_logs(workload, tail)

    def link_changed(self, connected: bool, hub: str) -> None:
        self._hub_name = hub if connected else ""
        self.metrics.connected.set(1 if connected else 0)
        if connected:
            self.metrics.connects.inc()
            log.info("connected to hub", extra={"hub": hub, "server": self.hub.server})
        else:
            log.warning("hub link lost; serving on from local state")

    # hub servers -------------------------------------------------------------

    def desired_servers(self) -> tuple[list[str], str]:
        """(the servers to dial, where the list comes from): ClusterInfo ``default`` of the view, else node.yaml.

        Read leniently (a ClusterInfo from a newer cloud may carry fields
        this agent does not know): its ``spec.servers`` that are valid URLs,
        if any are.
        """
        doc = self.local.get(CLUSTER_INFO_KEY)
        spec = doc.get("spec") if isinstance(doc, dict) else None
        listed = spec.get("servers") if isinstance(spec, dict) else None
        servers: list[str] = []
        for item in listed if isinstance(listed, list) else []:
            try:
                url = check_server_url(item)
                node_trust(self.options.data_dir, self.identity.insecure).check_url(url, how="edge join --insecure")
            except (ValueError, TlsError) as exc:
                log.error("ignoring server %r of ClusterInfo %s: %s", item, CLUSTER_INFO_NAME, exc)
                continue
            if url not in servers:
                servers.append(url)
        if servers:
            return servers, f"ClusterInfo {CLUSTER_INFO_NAME}"
        return list(self.identity.servers), "node.yaml"

    def follow_servers(self) -> None:
        """Hand the hub client the current list; the connection it has is kept."""
        servers, origin = self.desired_servers()
        if self.hub.set_servers(servers):
            log.info(
                "hub servers changed to %s (from %s); the current connection is kept, the next dial uses them",
                ", ".join(servers),
                origin,
            )

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

    def _scaled_down(self, desired: dict[str, WorkloadTemplate]) -> dict[str, str]:
        """The elastic workloads held at zero while this node's Site is Inactive, by the view's last word."""
        own = self.local.get(f"/registry/nodes/{self.identity.node}") or {}
        site = str((own.get("spec") or {}).get("site") or self.identity.site)
        return elastic.scaled_down(site, self.local.get(f"/registry/sites/{site}"), desired)

    def _workloads_changed(self) -> None:
        statuses = self.supervisor.statuses().values()
        ready = sum(1 for s in statuses if s.ready)
        self.metrics.workloads.labels("true").set(ready)
        self.metrics.workloads.labels("false").set(len(statuses) - ready)
        self.hub.status_changed()
        self._cache_wake.set()  # a cache that became ready may be due a reload, and its tasks can go
        self._tasks_wake.set()

    def _all_ready(self) -> bool:
        return all(s.ready or s.state == "ScaledDown" for s in self.supervisor.statuses().values())

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile.wait()
            # Let a burst of batches (a resync cut into several) land before acting on the view.
            while time.monotonic() - self._last_batch < RECONCILE_SETTLE_SECONDS:  # noqa: ASYNC110
                await asyncio.sleep(RECONCILE_SETTLE_SECONDS)
            self._reconcile.clear()
            try:
                desired = self.desired_workloads()
                await self.supervisor.apply(desired, scaled_down=self._scaled_down(desired))
                await asyncio.to_thread(self.artifacts.collect, desired.values())
            except Exception:  # one bad reconcile must not stop the agent; the next change retries
                log.exception("workload reconcile failed")
            if self.supervisor.failed_updates():  # artifacts that failed: try again after a while
                asyncio.get_running_loop().call_later(ARTIFACT_RETRY_SECONDS, self._reconcile.set)

    # the built-in cache -----------------------------------------------------

    def _cache_view(self) -> list[dict[str, Any]]:
        return [doc for plural in CACHE_VIEW_KINDS for doc in self.local.objects(plural)]

    def _geo_changed(self) -> None:
        """The node switched geo tables (edge.geotable): render it into the caches' configs now."""
        self.cache.geo_table = self.geo.path
        self._cache_wake.set()

    def _running_caches(self) -> dict[str, Running]:
        return {name: r for name, r in self.supervisor.running().items() if r.template.builtin == "cache"}

    async def _cache_loop(self) -> None:
        """Keep each built-in cache's config current and poll its counters, at least every status period."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cache_wake.wait(), timeout=self.hub.heartbeat_seconds)
            self._cache_wake.clear()
            try:
                await self._cache_round()
            except Exception:  # one bad round must not stop the loop; the next wake retries
                log.exception("cache config round failed")

    async def _cache_round(self) -> None:
        self.cache.update_view(self._cache_view())
        caches = self._running_caches()
        for name, running in caches.items():
            try:
                text = await asyncio.to_thread(self.cache.sync, name, running.template, running.workdir)
            except (CacheError, OSError) as exc:
                log.warning("workload %s: cannot write its cache config: %s", name, exc)
                continue
            due = self._may_reload(running) and self.cache.reload_due(name, running.pid, text)
            if due and self.supervisor.signal(name, signal.SIGHUP):
                self.cache.reloaded(name, running.pid, text)
                log.info("workload %s: sent SIGHUP to pid %d to load its new config", name, running.pid)
        if self.cache.conditions_changed(caches):
            self.hub.status_changed()  # a Secret of the edge rules went missing, or came: said at once
        endpoint = self._cache_endpoint(caches)
        stats = await self.cache_tasks.admin.status(endpoint) if endpoint else None
        if stats is not None and self._cache_stats is None:
            self.hub.status_changed()  # a cache's first figures go now: `get sites` shows its site's load
        self._cache_stats = stats

    @staticmethod
    def _may_reload(running: Running) -> bool:
        """Only a process past its start-up handles SIGHUP (before, the signal would kill it)."""
        settled = running.template.health_probe is not None or time.time() - running.started_at > RELOAD_AFTER_SECONDS
        return running.ready and settled

    def _cache_endpoint(self, caches: dict[str, Running]) -> AdminEndpoint | None:
        """The admin endpoint of the first ready built-in cache (by workload name)."""
        return next((e for name, r in caches.items() if r.ready and (e := self.cache.endpoint(name))), None)

    def _cache_endpoints(self) -> dict[str, AdminEndpoint]:
        """The admin endpoints of the ready built-in caches, by workload name (the metrics relay's targets)."""
        caches = self._running_caches()
        return {name: e for name, r in caches.items() if r.ready and (e := self.cache.endpoint(name))}

    def _cache_expected(self) -> bool:
        """Whether this node runs (or will run) a cache; unknown (so True) before the view was ever synced."""
        if self._running_caches() or self.local.snapshot().revision == 0:
            return True
        return any(template.builtin == "cache" for template in self.desired_workloads().values())

    async def _tasks_loop(self) -> None:
        """Send the view's open Purges and Prefetches to the cache, once each, retrying with backoff."""
        while True:
            timeout = self.hub.heartbeat_seconds
            if self._next_task_due is not None:
                timeout = min(timeout, max(0.05, self._next_task_due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tasks_wake.wait(), timeout=timeout)
            self._tasks_wake.clear()
            try:
                await self._tasks_round()
            except Exception:  # one bad round must not stop the loop; the next wake retries
                log.exception("purge/prefetch round failed")

    async def _tasks_round(self) -> None:
        tasks = tasks_from_view(self.local.objects("purges"), self.local.objects("prefetches"))
        endpoint = self._cache_endpoint(self._running_caches())
        expected = endpoint is not None or not tasks or self._cache_expected()  # the last one reads the view
        await self.cache_tasks.run(tasks, endpoint, cache_expected=expected, now=time.time())
        self._next_task_due = self.cache_tasks.ledger.next_due(tasks)
        report = self.cache_tasks.ledger.report(tasks)
        if report != self._task_report:
            self._task_report = report
            self.hub.status_changed()

    # peer health --------------------------------------------------------------

    def _peer_targets(self) -> list[PeerTarget]:
        """The site's other nodes, probed on the admin port of this node's cache template (none: no probes)."""
        template = self._cache_template()
        if template is None:
            return []
        nodes = self.local.objects("nodes")
        own = next((n for n in nodes if (n.get("metadata") or {}).get("name") == self.identity.node), None)
        site = (own or {}).get("spec", {}).get("site") or self.identity.site
        return peer_targets(
            nodes, self.identity.node, site, template_port(template, ADMIN_PORT_NAME, DEFAULT_ADMIN_PORT)
        )

    def _latency_targets(self) -> list[Target]:
        """The ProbeTargets of the view; site targets on the admin port of this node's cache template."""
        template = self._cache_template()
        port = template_port(template, ADMIN_PORT_NAME, DEFAULT_ADMIN_PORT) if template is not None else None
        nodes = self.local.objects("nodes")
        own = next((n for n in nodes if (n.get("metadata") or {}).get("name") == self.identity.node), None)
        site = (own or {}).get("spec", {}).get("site") or self.identity.site
        return probe_targets(self.local.objects("probetargets"), site, port)

    def _cache_template(self) -> WorkloadTemplate | None:
        """The built-in cache's template: of the running cache, else of the view (peers run the same one)."""
        running = self._running_caches()
        if running:
            return running[min(running)].template
        desired = {name: t for name, t in self.desired_workloads().items() if t.builtin == "cache"}
        return desired[min(desired)] if desired else None

    def describe(self) -> dict[str, Any]:
        snapshot = self.local.snapshot()
        return {
            "node": self.identity.node,
            "site": self.identity.site,
            "connected": self.hub.connected,
            "hub": self._hub_name,
            "server": self.hub.server,
            "servers": self.hub.servers,
            "epoch": snapshot.epoch,
            "syncedRevision": snapshot.revision,
            "objects": len(snapshot.holdings),
            "workloads": self.status_report()["workloads"],
            "cache": self._cache_stats,
            "peerVotes": self.peer_votes.votes(time.time()),
            "latency": self.latency.report(),
            "geoTable": self.geo.describe(),
        }

    # lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        if self.local.recovered_from is not None:
            log.error(
                "the local view store was corrupt and was moved to %s; it is rebuilt from the cloud",
                self.local.recovered_from,
            )
        self.cache.update_view(self._cache_view())
        if not self.users.switch:
            log.warning(
                "the agent does not run as root: workloads run as its user %s (uid %d) and can read its "
                "credential; run the agent as root to run them as %s (see docs/security.md)",
                self.users.agent.name,
                self.users.agent.uid,
                self.options.workload_user,
            )
        await self.supervisor.start()
        if self.local.snapshot().revision > 0:
            desired = self.desired_workloads()
            await self.supervisor.apply(desired, scaled_down=self._scaled_down(desired))
        else:
            # A view never synced (or rebuilt after corruption) is empty, not "run nothing":
            # keep running what the supervisor's own state says until the cloud fills the view.
            log.warning("no synced view yet; running the workloads from local state until the cloud answers")
        address = await self.http.start(
            self.options.listen_host, self.options.listen_port, self.options.data_dir / "agent.addr"
        )
        self.cache.internal_domains = [internal_domain(f"http://{address}{ORIGIN_PREFIX}")]
        self._cache_wake.set()
        log.info("agent running", extra={"node": self.identity.node, "listen": address, "servers": self.hub.servers})
        tasks = [
            asyncio.create_task(loop())
            for loop in (
                self.hub.run,
                self._reconcile_loop,
                self._cache_loop,
                self._tasks_loop,
                self.peer_prober.run,
                self.latency.run,
                self.geo.run,
            )
        ]
        try:
            await _until_signalled()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.supervisor.close()
            await self.cache_tasks.admin.close()
            await self.artifacts.close()
            await self.metric_sources.close()
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
    supervisor = Supervisor(data_dir, node_name=identity.node, users=UserPolicy.for_agent())
    await supervisor.start()
    await supervisor.stop_all()
    await supervisor.close()
