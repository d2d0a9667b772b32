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

``edgefleet cloud`` runs it in-process (``--dns-listen``; ``--no-dns``
disables it); ``edgefleet dns --store URL`` runs it alone against a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.cloud.registry import REGISTRY_PREFIX
from edgefleet.gslb.demand import DemandMeter
from edgefleet.gslb.dns import DnsServer
from edgefleet.gslb.fleet import DEFAULT_ZONE, FleetState
from edgefleet.gslb.geo import GeoDatabase
from edgefleet.gslb.zone import Resolver, Zone
from edgefleet.store.interface import Compacted, Event, EventType, Store, StoreError

log = logging.getLogger("edgefleet.gslb")

KINDS_BY_PLURAL = {"sites": "Site", "nodes": "Node", "domains": "Domain"}


def _split(key: str) -> tuple[str, str] | None:
    """``/registry/<plural>/<name>`` -> (Kind, name) for the kinds the GSLB reads."""
    rest = key[len(REGISTRY_PREFIX):] if key.startswith(REGISTRY_PREFIX) else ""
    plural, _, name = rest.partition("/")
    kind = KINDS_BY_PLURAL.get(plural)
    return (kind, name) if kind and name else None


class StoreFeed:
    """Keeps a FleetState equal to the store (list, then watch; relist when compacted)."""

    def __init__(self, store: Store, fleet: FleetState) -> None:
        self.store = store
        self.fleet = fleet
        self.revision = 0
        self.loaded = asyncio.Event()

    async def load(self) -> None:
        documents: list[dict[str, Any]] = []
        revision = 0  # every kind read at the revision of the first listing: one consistent snapshot
        for plural in KINDS_BY_PLURAL:
            listing = await self.store.list(f"{REGISTRY_PREFIX}{plural}/", revision=revision)
            revision = listing.revision
            documents += [json.loads(kv.value) for kv in listing.items]
        self.fleet.clear()
        for error in self.fleet.load(documents):
            log.warning("gslb: %s", error)
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
            await stream.aclose()  # type: ignore[attr-defined]

    def _apply(self, event: Event) -> None:
        target = _split(event.kv.key)
        if target is None:
            return
        document = None if event.type is EventType.DELETE else json.loads(event.kv.value)
        error = self.fleet.apply(target[0], target[1], document)
        if error is not None:
            log.warning("gslb: %s", error)


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


class GslbService:
    """The fleet state, the geo table, the DNS server and the optional redirector of one process."""

    def __init__(self, store: Store, options: GslbOptions) -> None:
        self.options = options
        self.fleet = FleetState(zone=options.zone)
        self.feed = StoreFeed(store, self.fleet)
        self.geo = GeoDatabase(options.geo_path)
        name_servers = options.name_servers or (f"ns1.{options.zone}",)
        self.zone = Zone(origin=options.zone, ns=name_servers, hostmaster=f"hostmaster.{options.zone}",
                         serial=int(time.time()), glue=dict(options.glue))
        self.resolver = Resolver(self.zone, self.fleet, self.geo)
        self.dns = DnsServer(self.resolver, options.dns_host, options.dns_port)
        self.meter = DemandMeter(options.demand_window)
        self._tasks: list[asyncio.Task[None]] = []
        self._redirect_runner: Any = None
        self.redirect_port = 0

    async def start(self) -> None:
        await self.feed.load()
        self._tasks.append(asyncio.create_task(self.feed.run()))
        await self.dns.start()
        self._tasks.append(asyncio.create_task(self._sample_demand()))
        if self.options.redirect_host is not None:
            await self._start_redirector()
        log.info("gslb serving", extra={"dns": f"{self.options.dns_host}:{self.dns.port}", "zone": self.options.zone,
                                        "redirect": self.redirect_port or None})

    async def _start_redirector(self) -> None:
        from aiohttp import web

        from edgefleet.gslb.redirect import redirect_app

        app = redirect_app(self.fleet, self.geo, zone=self.options.zone, trusted_proxies=self.options.trusted_proxies,
                           node_port=self.options.node_port)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.options.redirect_host, self.options.redirect_port)
        await site.start()
        self._redirect_runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.redirect_port = sockets[0].getsockname()[1] if sockets else self.options.redirect_port

    async def _sample_demand(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for region, count in self.dns.take_demand().items():
                if region:
                    self.meter.record(region, now, count)

    def demand(self) -> dict[str, float]:
        """Queries per second by client region over the demand window."""
        return self.meter.rates(time.time())

    def reload_geo(self) -> None:
        error = self.geo.reload()
        if error:
            log.error("geo table reload refused, the previous table stays: %s", error)
        else:
            log.info("geo table reloaded")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dns.close()
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
    try:
        await service.start()
        print(f"dns listening on {options.dns_host}:{service.dns.port}"
              + (f", redirector on {options.redirect_host}:{service.redirect_port}" if service.redirect_port else ""),
              flush=True)
        await stop.wait()
    finally:
        await service.close()
        await store.close()
