"""The GSLB as a service: a store-fed fleet state behind the DNS server and the 302 redirector.

How: :class:`StoreFeed` lists the Sites, Nodes and Domains once and then
follows the store's watch from that revision, applying each change to a
:class:`~edgefleet.gslb.fleet.FleetState` (so a change shows in answers as
soon as the watch delivers it, well within a second; nothing polls). A
compacted or broken watch relists and carries on. :class:`GslbService`
owns the feed, the geo table (SIGHUP or :meth:`reload_geo` re-reads it; a
bad file keeps the old table), the DNS server and, when asked, the HTTP
redirector, and turns the DNS server's per-region query counts into the
demand rates the site activation controller reads.

``edgefleet cloud`` runs it in-process (``--dns-listen``; ``--dns-listen off``
disables it); ``edgefleet dns --store URL`` runs it alone against a store
and, with ``--geo``, warns while the nodes place clients with another table
than its own (:class:`~edgefleet.cloud.geotable.GeoAgreement`: the cloud
publishes the table, from its own ``--geo``).

Why the DNS server has a thread of its own (:class:`DnsThread`, with its own
event loop): in ``edgefleet cloud`` the main event loop also runs the API
and the hub, and DNS is what anyone on the Internet can send work to. On
one loop, a burst of expensive queries (issue 12: crafted compression
pointers, 50 a second) froze ``/healthz`` for seconds. Now the DNS loop only
competes for the interpreter lock, which Python hands over every few
milliseconds, so the API and the hub keep answering whatever the DNS
traffic. What the server reads is confined to its thread, never shared
with the main loop: it has its *own* :class:`~edgefleet.gslb.fleet.FleetState`
(and resolver, caches, demand counts), fed by the main loop's store watch
through ``loop.call_soon_threadsafe`` (each change is a callback run on the
DNS thread, in watch order; the documents are fresh from ``json.loads`` and
read-only), so no lock is needed and no reader sees a half-applied change.
The geo table is shared: a reload swaps one reference, and a table is
immutable but for its lookup memo (single dict operations, atomic under the
interpreter lock). The demand meter is the one object both threads touch:
the DNS thread records into it once a second, the site activation
controller reads it, under a lock. The redirector (HTTP, on the main loop)
keeps its own FleetState, fed by the same watch.

Measured latency (issue 15): the resolver reads its latency matrix from
the Sites' ``status.latency`` in its own FleetState
(:meth:`~edgefleet.gslb.fleet.FleetState.latency`), so a new matrix moves the
fleet generation and the precomputed decisions are rebuilt like for any
fleet change. The DNS thread also hands the sender addresses and the EDNS
Client Subnets of the queries it counted as demand, once a second, to two
:class:`~edgefleet.gslb.networks.NetworkCounter` (under the meter lock), and
:meth:`GslbService.busy_networks` gives the latency controller the busiest
resolver networks and EDNS Client Subnets to publish as probe targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgefleet.api.documents import StoredDocument
from edgefleet.cloud.registry import REGISTRY_PREFIX
from edgefleet.gslb.demand import DEMAND_PER_SENDER, DemandMeter
from edgefleet.gslb.dns import DnsServer
from edgefleet.gslb.fleet import DEFAULT_ZONE, FleetState
from edgefleet.gslb.geo import GeoDatabase
from edgefleet.gslb.networks import MIN_COUNT, TOP_N, NetworkCounter, SeenNetwork
from edgefleet.gslb.rrl import RrlSettings
from edgefleet.gslb.zone import Resolver, Zone
from edgefleet.store.interface import Compacted, Event, EventType, Store, StoreError

log = logging.getLogger("edgefleet.gslb")

KINDS_BY_PLURAL = {"sites": "Site", "nodes": "Node", "domains": "Domain"}


def _split(key: str) -> tuple[str, str] | None:
    """``/registry/<plural>/<name>`` -> (Kind, name) for the kinds the GSLB reads."""
    rest = key[len(REGISTRY_PREFIX) :] if key.startswith(REGISTRY_PREFIX) else ""
    plural, _, name = rest.partition("/")
    kind = KINDS_BY_PLURAL.get(plural)
    return (kind, name) if kind and name else None


class FleetSink(Protocol):
    """Where the feed sends what it reads: a whole listing, then one change at a time."""

    def replace_all(self, documents: Sequence[StoredDocument]) -> None: ...

    def apply(self, kind: str, name: str, document: StoredDocument | None) -> None: ...


class LocalFleet:
    """A FleetState fed on the calling thread; bad documents are logged (when ``log_errors``)."""

    def __init__(self, fleet: FleetState, *, log_errors: bool = True) -> None:
        self.fleet = fleet
        self.log_errors = log_errors

    def replace_all(self, documents: Sequence[StoredDocument]) -> None:
        self.fleet.clear()
        self._log(self.fleet.load(documents))

    def apply(self, kind: str, name: str, document: StoredDocument | None) -> None:
        error = self.fleet.apply(kind, name, document)
        self._log([error] if error else [])

    def _log(self, errors: list[str]) -> None:
        if self.log_errors:
            for error in errors:
                log.warning("gslb: %s", error)


class StoreFeed:
    """Keeps FleetStates equal to the store (list, then watch; relist when compacted)."""

    def __init__(self, store: Store, sinks: Sequence[FleetSink]) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.revision = 0
        self.loaded = asyncio.Event()

    async def load(self) -> None:
        documents: list[StoredDocument] = []
        revision = 0  # every kind read at the revision of the first listing: one consistent snapshot
        for plural in KINDS_BY_PLURAL:
            listing = await self.store.list(f"{REGISTRY_PREFIX}{plural}/", revision=revision)
            revision = listing.revision
            documents += [json.loads(kv.value) for kv in listing.items]
        for sink in self.sinks:
            sink.replace_all(documents)
        self.revision = revision
        self.loaded.set()

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except (Compacted, StoreError) as exc:
                log.warning("gslb watch ended (%s); relisting", exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(StoreError):
                    await self.load()

    async def _follow(self) -> None:
        stream = self.store.watch(REGISTRY_PREFIX, self.revision)
        try:
            async for item in stream:
                if isinstance(item, Event):
                    self._apply(item)
                self.revision = max(self.revision, item.revision)
        finally:
            await stream.aclose()

    def _apply(self, event: Event) -> None:
        target = _split(event.kv.key)
        if target is None:
            return
        document = None if event.type is EventType.DELETE else json.loads(event.kv.value)
        for sink in self.sinks:
            sink.apply(target[0], target[1], document)


class DnsThread:
    """The DNS server on a thread and event loop of its own, with its own fleet state (module docstring).

    It is a :class:`FleetSink`: the main loop's feed calls :meth:`replace_all`
    and :meth:`apply`, which only post the change to the DNS thread.
    """

    def __init__(
        self,
        resolver: Resolver,
        server: DnsServer,
        meter: DemandMeter,
        meter_lock: threading.Lock,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        networks: NetworkCounter | None = None,
        subnets: NetworkCounter | None = None,
    ) -> None:
        self.resolver = resolver
        self.networks = networks
        """Decayed query counts per resolver network (latency probe targets), under ``meter_lock``."""
        self.subnets = subnets
        """Decayed query counts per EDNS Client Subnet (latency probe targets too), under ``meter_lock``."""
        self.server = server
        self.meter = meter
        self.meter_lock = meter_lock
        self.loop = loop_factory()
        self._local = LocalFleet(resolver.fleet)
        self._thread = threading.Thread(target=self._run, name="edgefleet-dns", daemon=True)
        self._sampler: asyncio.Task[None] | None = None

    # --- fed from the main loop ----------------------------------------------------------------------

    def replace_all(self, documents: Sequence[StoredDocument]) -> None:
        self._post(self._local.replace_all, documents)

    def apply(self, kind: str, name: str, document: StoredDocument | None) -> None:
        self._post(self._local.apply, kind, name, document)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
            self.loop.call_soon_threadsafe(callback, *args)

    # --- life cycle (called from the main loop) -------------------------------------------------------

    def launch(self) -> None:
        """Start the thread and its loop (changes posted from now on are applied there, in order)."""
        if not self._thread.is_alive():
            self._thread.start()

    async def start(self) -> None:
        """Start the server on the thread (after the changes posted so far); errors (a busy port) are raised here."""
        self.launch()
        await self._on_thread(self._start())

    async def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                await self._on_thread(self._close())
            await self._stop_thread()

    async def _on_thread(self, coroutine: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def _stop_thread(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    # --- on the DNS thread ------------------------------------------------------------------------------

    async def _start(self) -> None:
        await self.server.start()
        self._sampler = asyncio.create_task(self._sample_demand())

    async def _close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await self.server.close()

    async def _sample_demand(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            taken = self.server.take_demand()
            senders = self.server.take_senders()
            subnets = self.server.take_client_subnets()
            with self.meter_lock:
                for region, count in taken.items():
                    if region:
                        self.meter.record(region, now, count)
                if self.networks is not None:
                    self.networks.record(senders, now)
                if self.subnets is not None:
                    self.subnets.record(subnets, now)


@dataclass(frozen=True, slots=True)
class GslbOptions:
    """Where and how the GSLB serves."""

    dns_host: str = "127.0.0.1"
    dns_port: int = 5353
    zone: str = DEFAULT_ZONE
    name_servers: tuple[str, ...] = ()
    glue: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    geo_path: Path | None = None
    redirect_host: str | None = None
    redirect_port: int = 0
    node_port: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    demand_window: int = 60
    rrl: RrlSettings = field(default_factory=RrlSettings)
    demand_per_sender: int = DEMAND_PER_SENDER
    probe_networks: int = TOP_N
    """Resolver networks, and as many EDNS Client Subnets, published as latency probe targets (0: none)."""
    probe_min_queries: float = MIN_COUNT
    """Decayed queries a resolver network needs before it is published as a probe target."""


class GslbService:
    """The geo table, the DNS server (on its own thread) and the optional redirector of one process."""

    def __init__(self, store: Store, options: GslbOptions) -> None:
        self.options = options
        self.geo = GeoDatabase(options.geo_path)
        self._geo_reload_lock = threading.Lock()
        self.geo_listeners: list[Callable[[], object]] = []
        """Called from the reload thread after each successful geo reload (the cloud publishes the table)."""
        name_servers = options.name_servers or (f"ns1.{options.zone}",)
        self.zone = Zone(
            origin=options.zone,
            ns=name_servers,
            hostmaster=f"hostmaster.{options.zone}",
            serial=int(time.time()),
            glue=dict(options.glue),
        )
        self.meter = DemandMeter(options.demand_window)
        self.networks = NetworkCounter(min_count=options.probe_min_queries, top_n=options.probe_networks)
        self.subnets = NetworkCounter(min_count=options.probe_min_queries, top_n=options.probe_networks, subnets=True)
        self._meter_lock = threading.Lock()
        resolver = Resolver(self.zone, FleetState(zone=options.zone), self.geo)
        server = DnsServer(
            resolver, options.dns_host, options.dns_port, rrl=options.rrl, demand_per_sender=options.demand_per_sender
        )
        self.dns_thread = DnsThread(
            resolver,
            server,
            self.meter,
            self._meter_lock,
            _event_loop_factory(),
            networks=self.networks,
            subnets=self.subnets,
        )
        self.fleet: FleetState | None = None
        """The redirector's fleet state, on the main loop (None without a redirector)."""
        sinks: list[FleetSink] = [self.dns_thread]
        if options.redirect_host is not None:
            self.fleet = FleetState(zone=options.zone)
            sinks.append(LocalFleet(self.fleet, log_errors=False))  # the DNS thread logs bad documents
        self.feed = StoreFeed(store, sinks)
        self._tasks: list[asyncio.Task[None]] = []
        self._redirect_runner: Any = None
        self.redirect_port = 0

    @property
    def dns(self) -> DnsServer:
        """The DNS server (its metrics may be read from any thread; call nothing else on it)."""
        return self.dns_thread.server

    async def start(self) -> None:
        """Load the fleet, then serve (DNS answers from the first query on); on failure, stop what started."""
        try:
            self.dns_thread.launch()
            await self.feed.load()
            await self.dns_thread.start()
            self._tasks.append(asyncio.create_task(self.feed.run()))
            if self.options.redirect_host is not None:
                await self._start_redirector()
        except BaseException:
            await self.close()
            raise
        log.info(
            "gslb serving",
            extra={
                "dns": f"{self.options.dns_host}:{self.dns.port}",
                "udp_io": self.dns.udp_io.path,  # recvmmsg (batched) or recvfrom (the extension is not built)
                "zone": self.options.zone,
                "redirect": self.redirect_port or None,
            },
        )

    async def _start_redirector(self) -> None:
        from aiohttp import web

        from edgefleet.gslb.redirect import redirect_app

        assert self.fleet is not None
        app = redirect_app(
            self.fleet,
            self.geo,
            zone=self.options.zone,
            trusted_proxies=self.options.trusted_proxies,
            node_port=self.options.node_port,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.options.redirect_host, self.options.redirect_port)
        await site.start()
        self._redirect_runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.redirect_port = sockets[0].getsockname()[1] if sockets else self.options.redirect_port

    def demand(self) -> dict[str, float]:
        """Queries per second by client region over the demand window."""
        with self._meter_lock:
            return self.meter.rates(time.time())

    def busy_networks(self) -> list[SeenNetwork]:
        """The busiest resolver networks, then the busiest Client Subnets (each a bounded top-N with decay; a
        network in both is a resolver's), for the latency controller's probe targets."""
        with self._meter_lock:
            now = time.time()
            resolvers = self.networks.top(now)
            subnets = self.subnets.top(now)
        known = {seen.network for seen in resolvers}
        return resolvers + [seen for seen in subnets if seen.network not in known]

    def reload_geo(self) -> threading.Thread:
        """Re-read the geo table in a thread of its own; the DNS server swaps to it when it is loaded.

        Why a thread: a geo database of a million ranges takes seconds to read,
        and the signal handler calling this runs on the API's event loop. The
        DNS thread keeps answering from the old table meanwhile (it competes
        only for the interpreter lock); reloads run one at a time.
        """
        thread = threading.Thread(target=self._reload_geo, name="geo-reload", daemon=True)
        thread.start()
        return thread

    def _reload_geo(self) -> None:
        with self._geo_reload_lock:
            started = time.monotonic()
            error = self.geo.reload()
        if error:
            log.error("geo table reload refused, the previous table stays: %s", error)
            return
        log.info("geo table reloaded in %.1f s", time.monotonic() - started)
        for listener in self.geo_listeners:
            listener()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dns_thread.close()
        if self._redirect_runner is not None:
            await self._redirect_runner.cleanup()


async def run_gslb(store_url: str, options: GslbOptions) -> None:
    """``edgefleet dns``: the GSLB alone, until SIGINT/SIGTERM; SIGHUP reloads the geo table."""
    import signal

    from edgefleet.store import open_store

    store = open_store(store_url)
    service = GslbService(store, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_geo)
    agreement: asyncio.Task[None] | None = None
    try:
        await service.start()
        print(
            f"dns listening on {options.dns_host}:{service.dns.port}"
            + (f", redirector on {options.redirect_host}:{service.redirect_port}" if service.redirect_port else ""),
            flush=True,
        )
        if options.geo_path is not None:  # the nodes get their table from the cloud: warn if it is another
            agreement = _check_geo_agreement(store, service, options.geo_path)
        await stop.wait()
    finally:
        if agreement is not None:
            agreement.cancel()
        await service.close()
        await store.close()


def _check_geo_agreement(store: Store, service: GslbService, path: Path) -> asyncio.Task[None]:
    """``edgefleet dns --geo``: warn while the nodes use another table (edgefleet.cloud.geotable.GeoAgreement)."""
    from edgefleet.cloud.geotable import GeoAgreement
    from edgefleet.cloud.registry import Registry

    agreement = GeoAgreement(Registry(store), path)
    loop = asyncio.get_running_loop()
    service.geo_listeners.append(lambda: loop.call_soon_threadsafe(agreement.request))
    return asyncio.create_task(agreement.run(), name="geo-agreement")


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loops when it is installed (as the cloud's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
