"""The request path of a cache worker: hit, miss, revalidate, collapse, tier, store.

How, per request (the numbers are DESIGN.md's request path):

1. The Host header picks a Domain (:mod:`edgefleet.cache.domains`); none
   gets ``unknownHostStatus`` (421 or 404). Methods other than GET/HEAD, and
   paths under a ``bypass`` rule, are passed to the origin uncached; a
   successful unsafe method invalidates the stored URL (RFC 9111 §4.4).
2. The cache key (scheme, host, path, query per Domain policy) and, with
   Vary, the request's variant find a stored entry, memory tier first.
   :meth:`Proxy.serve_fast` answers fresh plain hits from memory right
   inside ``data_received`` with a precomputed head: no task, no await.
3. Everything else runs in :meth:`Proxy.handle`. A fresh entry is served
   (304 to a matching conditional, 206/416 to Range). A stale one within
   ``stale-while-revalidate`` is served while a background fill revalidates
   it; otherwise it is revalidated first. A miss joins the key's fill or
   starts one (:mod:`edgefleet.cache.fills`): one upstream fetch per key.
   A waiter takes the fill's answer only if it is the variant its own
   request selects (Vary); otherwise it asks again once the fill is done.
   A Range request that misses is answered from slices (``sliceBytes``
   aligned ranges fetched and stored one by one, :meth:`Proxy._send_sliced`),
   so a range of a large object never pulls the whole object upstream.
4. A fill asks, in order, the site peer that owns the key (rendezvous hash,
   unless this node owns it or the request came from a peer), the owner node
   of each parent site, then the origins (weighted, backups last). A failing
   peer or parent is skipped for a while; the next tier is tried. A response
   from a site peer is relayed but not stored: the owner stores it, so each
   object is stored once per site. A request that comes back to a node it
   already passed (its name in ``Via``) goes to the origin and never joins
   that node's fill, which is waiting for it.
5. Upstream failure: a stored entry within ``stale-if-error`` (or the
   Domain's ``serveStaleOnError``) is served stale; else 502 or 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgefleet.cache import conditionals, freshness, keys, ranges, responses, tiers
from edgefleet.cache.config import CacheConfig
from edgefleet.cache.disk import DiskEntry
from edgefleet.cache.domains import DomainTable, ServedDomain
from edgefleet.cache.entries import EntryMeta
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.fills import Fill, FillEntry, FillHead, Fills
from edgefleet.cache.headers import HOP_BY_HOP, connection_listed, format_http_date, get
from edgefleet.cache.http1 import LAST_CHUNK, Request, chunk, error_body, response_head
from edgefleet.cache.locks import NodeLocks
from edgefleet.cache.memory import MemoryEntry
from edgefleet.cache.sendfile import send_file
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage import Storage
from edgefleet.cache.upstream import Target, Upstream, UpstreamResponse

if TYPE_CHECKING:
    from edgefleet.cache.accesslog import AccessLog

log = logging.getLogger("edgefleet.cache")

SAFE_METHODS = frozenset({"GET", "HEAD"})
PASS_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
INVALIDATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
NOT_FORWARDED_CACHEABLE = NOT_FORWARDED | {
    "range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "cache-control",
    "pragma",
}
NOT_STORED = HOP_BY_HOP | {"content-length", "x-cache", "server-timing", "age", "x-edgefleet-hops"}
NOT_RELAYED = HOP_BY_HOP | {"content-length", "server-timing"}
MAX_VARIANT_RETRIES = 2
"""A waiter that met fills of other variants this often is passed to the origin uncollapsed."""
FILL_READ = 256 * 1024

Stored = MemoryEntry | DiskEntry | FillEntry
"""What a response can be answered from: a stored entry, or a finished fill's response."""


@dataclass(slots=True)
class Slice:
    """One slice of a large object as a request got it (see :meth:`Proxy._send_sliced`).

    ``entry`` is the slice (a 206 whose Content-Range places it in the
    object); without it, ``fill``/``head`` hold what upstream answered
    instead (the whole object, an error) and ``cache_status`` is "PASS" when
    that answer is not this request's to use.
    """

    entry: Stored | None
    cache_status: str
    fill: Fill | None = None
    head: FillHead | None = None


class Client(Protocol):
    """What the proxy needs of a client connection (the server's Connection)."""

    peer_ip: str
    transport: Any

    def write(self, data: bytes) -> None: ...
    def writelines(self, data: list[bytes]) -> None: ...
    async def drain(self) -> None: ...


class Proxy:
    """One worker's request handling; shared by all its connections."""

    def __init__(self, config: CacheConfig, storage: Storage, stats: Stats, access_log: AccessLog | None) -> None:
        self.storage = storage
        self.stats = stats
        self.access_log = access_log
        self.fills = Fills()
        self.upstream = Upstream(config.upstream)
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._other_fills: dict[str, asyncio.Future[bool]] = {}
        self.reload(config)

    def reload(self, config: CacheConfig) -> None:
        """Swap domains, peers and parents (requests in flight keep the old ones)."""
        self.config = config
        self.node = config.node
        self.domains = DomainTable(config.domains)
        self.via = f"1.1 {config.node}"
        self.health = tiers.PeerHealth(config.upstream.peer_down_seconds)
        site = config.site
        self.peers = {peer.name: peer.url.rstrip("/") for peer in site.peers} if site else {}
        self.parents = [{p.name: p.url.rstrip("/") for p in parent.nodes} for parent in site.parents] if site else []
        self.memory_limit = config.storage.memory_object_bytes
        self.spool_dir = config.storage.disk.path if config.storage.disk else None
        shared = config.storage.disk is not None and config.workers > 1
        self.locks = NodeLocks(config.storage.disk.path / "locks") if shared and config.storage.disk else None
        self.hit_prefix = f"HIT from {self.node}"
        self.site_self = site.self_name if site else config.node
        self.slice_bytes = config.storage.slice_bytes

    # --- the fast path -----------------------------------------------------

    def serve_fast(self, client: Any, request: Request) -> bool:
        """Answer a fresh, plain, in-memory hit synchronously; False: use :meth:`handle`."""
        if request.method != "GET" or not request.keep_alive:
            return False
        domain = self.domains.lookup(request.host)
        if domain is None or domain.query_mode != "keep":
            return False
        if domain.has_aliases:
            request.host = domain.canonical_for(request.host) or request.host
        entry = self._memory_hit(domain, request)
        if entry is None:
            return False
        now = time.time()
        meta = entry.meta
        if now >= meta.fresh_until or meta.invalidated or meta.no_cache or meta.status != 200:
            return False
        head = entry.head
        if head is None:
            head = entry.head = responses.hit_head(meta, self.node)
        age = int(meta.initial_age + now - meta.response_time)
        client.writelines([head, b"Age: %d\r\n\r\n" % (age if age > 0 else 0), entry.body])
        stats = self.stats
        stats.requests += 1
        stats.hits += 1
        stats.bytes_served += meta.size
        if self.access_log is not None:
            self.access_log.record(request, client.peer_ip, 200, meta.size, "HIT", 0.0)
        return True

    def _memory_hit(self, domain: ServedDomain, request: Request) -> MemoryEntry | None:
        if not request.plain:
            return None
        host = request.host
        key = "http://" + host.lower() + request.target if ":" not in host else self.key_for(domain, request)
        return self.storage.memory.get_plain(key)

    # --- the general path --------------------------------------------------

    async def handle(self, client: Client, request: Request) -> None:
        """Answer any request (see the module docstring)."""
        started = time.perf_counter()
        domain = self.domains.lookup(request.host) if request.host else None
        if domain is None:
            await self.send_error(client, request, self.config.unknown_host_status, "no domain serves this host")
            return
        if domain.has_aliases:  # a CDN zone name: cached and fetched as the Domain's own hostname
            request.host = domain.canonical_for(request.host) or request.host
        path = request.target.partition("?")[0]
        policy = domain.policy_for(path)
        if request.method not in SAFE_METHODS or policy.bypass:
            if request.method not in SAFE_METHODS and request.method not in PASS_METHODS:
                await self.send_error(client, request, 501, f"method {request.method} is not supported")
                return
            await self._pass(client, request, domain, started)
            return
        key = self.key_for(domain, request)
        await self._cached(client, request, domain, key, policy, started)

    def key_for(self, domain: ServedDomain, request: Request) -> str:
        return keys.cache_key("http", request.host, request.target, domain.query_mode, domain.query_allow)

    async def _cached(
        self,
        client: Client,
        request: Request,
        domain: ServedDomain,
        key: str,
        policy: freshness.Policy,
        started: float,
        attempt: int = 0,
    ) -> None:
        entry = self.storage.find(key, lambda vary: keys.variant_key(vary, request.headers))
        now = time.time()
        if entry is not None:
            meta = entry.meta
            use = freshness.use(_timing(meta), now, no_cache=meta.no_cache, invalidated=meta.invalidated)
            if use is freshness.Use.FRESH:
                self.stats.hits += 1
                await self.send_entry(client, request, entry, "HIT", started)
                return
            if use is freshness.Use.STALE_REVALIDATE_ASYNC:
                self.stats.stale_served += 1
                self._revalidate_in_background(request, domain, key, policy, entry)
                await self.send_entry(client, request, entry, "STALE", started)
                return
        elif freshness.only_if_cached(request.headers):
            await self.send_error(client, request, 504, "not cached (only-if-cached)")
            return
        elif self._sliced(request, key):
            await self._send_sliced(client, request, domain, key, policy, started)
            return
        await self._fill_and_send(client, request, domain, key, policy, entry, started, attempt)

    async def _fill_and_send(
        self,
        client: Client,
        request: Request,
        domain: ServedDomain,
        key: str,
        policy: freshness.Policy,
        entry: MemoryEntry | DiskEntry | None,
        started: float,
        attempt: int = 0,
    ) -> None:
        # A request that came back around the tiers must not wait for the fill that sent it: a deadlock.
        looped = tiers.looped(self.node, get(request.headers, "via"))
        fill = None if looped else self.fills.get(key)
        leader = fill is None
        lock: int | None = None
        if fill is None and entry is None and self.locks is not None and not looped:
            lock = self.locks.try_acquire(key)
            if lock is None:
                stored = await self._after_other_worker(key, request)
                if stored is not None:
                    self.stats.collapsed += 1
                    self.stats.hits += 1
                    await self.send_entry(client, request, stored, "HIT", started)
                    return
                fill = self.fills.get(key)
                leader = fill is None
        if fill is None:
            fill = self._start_fill(request, domain, key, policy, entry, lock, shared=not looped)
        else:
            self.stats.collapsed += 1
        try:
            head = await fill.head
        except UpstreamError as exc:
            await self._upstream_failed(client, request, entry, exc, started)
            return
        if not leader and not _serves(head, request):
            await self._after_other_variant(client, request, domain, key, policy, fill, started, attempt)
            return
        if head.entry is not None:
            await self.send_entry(client, request, head.entry, head.cache_status, started, head)
            return
        if not head.shareable and not leader:
            await self._pass(client, request, domain, started)
            return
        self.stats.misses += 1
        await self._send_fill(client, request, fill, head, started)

    async def _after_other_variant(
        self,
        client: Client,
        request: Request,
        domain: ServedDomain,
        key: str,
        policy: freshness.Policy,
        fill: Fill,
        started: float,
        attempt: int,
    ) -> None:
        """The fill this request joined got another variant (Vary): start over once it is done."""
        with contextlib.suppress(UpstreamError):  # its failure is not ours: we ask again
            await fill_done(fill)
        if attempt >= MAX_VARIANT_RETRIES:
            await self._pass(client, request, domain, started)
            return
        await self._cached(client, request, domain, key, policy, started, attempt + 1)

    async def _upstream_failed(
        self,
        client: Client,
        request: Request,
        entry: MemoryEntry | DiskEntry | None,
        error: UpstreamError,
        started: float,
    ) -> None:
        if entry is not None and not entry.meta.must_revalidate and freshness.may_serve_stale_on_error(
            _timing(entry.meta), time.time()
        ):
            self.stats.stale_served += 1
            await self.send_entry(client, request, entry, "STALE", started)
            return
        await self.send_error(client, request, error.status, error.message)

    # --- fills ---------------------------------------------------------------

    def _start_fill(
        self,
        request: Request,
        domain: ServedDomain,
        key: str,
        policy: freshness.Policy,
        entry: MemoryEntry | DiskEntry | None,
        lock: int | None = None,
        *,
        shared: bool = True,
    ) -> Fill:
        fill = Fill(key, self.memory_limit, self.spool_dir)
        if shared:
            self.fills.add(fill)
        self._spawn(self._run_fill(fill, request, domain, policy, entry, lock))
        return fill

    async def _after_other_worker(self, key: str, request: Request) -> MemoryEntry | DiskEntry | None:
        """Another worker is filling ``key``: wait for it, then use what it stored (if fresh)."""
        assert self.locks is not None
        waiting = self._other_fills.get(key)
        if waiting is None:  # the first request here polls the lock; the others wait for it
            waiting = asyncio.ensure_future(self.locks.wait_released(key))
            self._other_fills[key] = waiting
            waiting.add_done_callback(lambda _: self._other_fills.pop(key, None))
        await asyncio.shield(waiting)
        stored = self.storage.find(key, lambda vary: keys.variant_key(vary, request.headers))
        if stored is None or time.time() >= stored.meta.fresh_until or stored.meta.invalidated:
            return None
        return stored

    def _revalidate_in_background(
        self,
        request: Request,
        domain: ServedDomain,
        key: str,
        policy: freshness.Policy,
        entry: MemoryEntry | DiskEntry,
    ) -> None:
        if self.fills.get(key) is None:
            self._start_fill(request, domain, key, policy, entry)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_fill(
        self,
        fill: Fill,
        request: Request,
        domain: ServedDomain,
        policy: freshness.Policy,
        entry: MemoryEntry | DiskEntry | None,
        lock: int | None,
    ) -> None:
        try:
            await self._fetch_into(fill, request, domain, policy, entry)
        except UpstreamError as exc:
            self.stats.upstream_failures += 1
            fill.finish(exc)
        except Exception as exc:
            log.exception("fill of %s failed", fill.key)
            fill.finish(UpstreamError(502, f"internal error while fetching: {type(exc).__name__}"))
        finally:
            if lock is not None:
                NodeLocks.release(lock)
            self.fills.remove(fill)
            if not fill.done:
                fill.finish(UpstreamError(502, "fetch cancelled"))

    async def _fetch_into(
        self,
        fill: Fill,
        request: Request,
        domain: ServedDomain,
        policy: freshness.Policy,
        entry: MemoryEntry | DiskEntry | None,
    ) -> None:
        headers = self._forward_headers(request, cacheable=True)
        if entry is not None:
            headers += conditionals.validation_headers(entry.meta.headers)
        request_time = time.time()
        sent = time.perf_counter()
        response = await self._open(request, domain, fill.key, "GET", headers, None)
        upstream_ms = (time.perf_counter() - sent) * 1000
        self.stats.observe_upstream(upstream_ms / 1000)
        response_time = time.time()
        if response.status == 304 and entry is not None:
            response.release()
            fill.publish(self._revalidated(entry, request, policy, response, response_time, upstream_ms))
            fill.finish()
            return
        if self._stale_instead(fill, response, entry, policy):
            return
        await self._receive(fill, request, response, policy, request_time, response_time, upstream_ms)

    def _stale_instead(
        self, fill: Fill, response: UpstreamResponse, entry: Stored | None, policy: freshness.Policy
    ) -> bool:
        """Upstream answered 5xx: finish the fill with the stored entry if stale-if-error allows it."""
        if response.status < 500 or entry is None or not self._stale_allowed(entry.meta, policy):
            return False
        response.close()
        self.stats.upstream_failures += 1
        fill.publish(FillHead(entry.meta.status, entry.meta.headers, True, entry=entry, cache_status="STALE"))
        fill.finish()
        return True

    def _stale_allowed(self, meta: EntryMeta, policy: freshness.Policy) -> bool:
        return not meta.must_revalidate and freshness.may_serve_stale_on_error(_timing(meta), time.time())

    def _revalidated(
        self,
        entry: MemoryEntry | DiskEntry,
        request: Request,
        policy: freshness.Policy,
        response: UpstreamResponse,
        response_time: float,
        upstream_ms: float,
    ) -> FillHead:
        """A 304 from upstream: the stored entry, with refreshed headers and times, is current."""
        self.stats.revalidated += 1
        old = entry.meta
        merged = conditionals.merge_304(old.headers, response.headers)
        merged = [(n, v) for n, v in merged if n.lower() not in NOT_STORED]
        decision = freshness.evaluate("GET", old.status, request.headers, _with_date(merged, response_time), policy)
        meta = _refreshed(old, merged, decision, response_time)
        self.storage.update_meta(meta)
        if isinstance(entry, MemoryEntry):
            entry.meta = meta
            entry.head = None
        else:
            entry.meta = meta
        return FillHead(meta.status, meta.headers, True, entry=entry, cache_status="REVALIDATED",
                        upstream=response.target.name, upstream_ms=upstream_ms)

    async def _receive(
        self,
        fill: Fill,
        request: Request,
        response: UpstreamResponse,
        policy: freshness.Policy,
        request_time: float,
        response_time: float,
        upstream_ms: float,
        key: str | None = None,
        whole_range: bool = False,
    ) -> None:
        """Stream a response into the fill and store it under ``key`` (default: the fill's).

        ``whole_range``: a 206 whose range is the whole representation, kept as the 200 it equals.
        """
        status = 200 if whole_range else response.status
        headers = _with_date(response.headers, response_time)
        if whole_range:
            headers = [(n, v) for n, v in headers if n.lower() != "content-range"]
        decision = freshness.evaluate("GET", status, request.headers, headers, policy)
        from_peer = response.target.kind == "peer"
        store = decision.storable and not from_peer
        stored_headers = [(n, v) for n, v in headers if n.lower() not in NOT_STORED and n.lower() not in
                          decision.strip_fields]
        initial_age = freshness.initial_age(headers, request_time, response_time)
        meta = _meta(key or fill.key, request, response, stored_headers, decision, initial_age, request_time,
                     response_time, status)
        relayed = [(n, v) for n, v in headers if n.lower() not in NOT_RELAYED and n.lower() != "age"]
        shareable = decision.storable or (from_peer and decision.reason == "")
        fill.publish(FillHead(status, relayed, shareable, content_length=response.content_length,
                              upstream=response.target.name, upstream_ms=upstream_ms, vary=keys.parse_vary(headers),
                              variant=meta.variant, meta=meta,
                              extra={"age": initial_age, "response_time": response_time}))
        writer = self.storage.disk_writer(meta) if store and self._goes_to_disk(response) else None
        async for data in response.chunks():
            self.stats.bytes_upstream += len(data)
            fill.append(data)
            if writer is not None and not writer.write(data):
                writer = None
                self.stats.store_failures += 1
        meta.size = fill.size
        fill.finish()
        if store:
            self._store(fill, meta, writer)

    def _goes_to_disk(self, response: UpstreamResponse) -> bool:
        length = response.content_length
        return self.storage.disk is not None and (length is None or length > self.memory_limit)

    def _store(self, fill: Fill, meta: EntryMeta, writer: Any) -> None:
        body = fill.body()
        try:
            if writer is not None:
                ok = writer.commit(meta)
                if ok and body is not None and len(body) <= self.memory_limit:
                    self.storage.memory.put(MemoryEntry(meta, body))
            elif body is not None:
                ok = self.storage.store_small(meta, body)
            else:
                ok = False
        except OSError as exc:
            log.warning("storing %s failed: %s", meta.key, exc)
            ok = False
        if ok:
            self.stats.stored += 1
        else:
            self.stats.store_failures += 1

    async def _open(
        self,
        request: Request,
        domain: ServedDomain,
        key: str,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> UpstreamResponse:
        """Try each tier in order until one answers with a usable head."""
        last_error: UpstreamError | None = None
        for target in self._targets(request, domain, key):
            self.stats.upstream_requests += 1
            try:
                response = await self.upstream.open(target, method, request.target, self._for(target, headers), body)
            except UpstreamError as exc:
                last_error = exc
                self._failed(target)
                continue
            if response.status >= 500 and target.kind != "origin":
                response.close()
                last_error = UpstreamError(502, f"{target.kind} {target.name} answered {response.status}")
                self._failed(target)
                continue
            if target.kind != "origin":
                self.health.succeeded(target.name)
            return response
        raise last_error or UpstreamError(502, "no upstream to fetch from")

    def _failed(self, target: Target) -> None:
        self.stats.upstream_failures += 1
        if target.kind != "origin":
            self.health.failed(target.name)

    def _targets(self, request: Request, domain: ServedDomain, key: str) -> list[Target]:
        targets: list[Target] = []
        hops, via = get(request.headers, tiers.HOPS_HEADER), get(request.headers, "via")
        forwardable = tiers.may_forward(self.node, hops, via)
        from_peer = get(request.headers, tiers.TIER_HEADER) == "peer"
        if forwardable and not from_peer and len(self.peers) > 1:
            owner = tiers.owner(list(self.peers), key, self.health)
            if owner is not None and owner != self.site_self:
                targets.append(Target("peer", owner, self.peers[owner]))
        if forwardable:
            for parent in self.parents:
                chosen = tiers.owner(list(parent), key, self.health)
                if chosen is not None:
                    targets.append(Target("parent", chosen, parent[chosen]))
        for origin in domain.origin_order(self.rng):
            targets.append(Target("origin", origin.base, origin.base, origin.host_header))
        return targets

    def _forward_headers(self, request: Request, *, cacheable: bool) -> list[tuple[str, str]]:
        dropped = (NOT_FORWARDED_CACHEABLE if cacheable else NOT_FORWARDED) | connection_listed(request.headers)
        headers = [(n, v) for n, v in request.headers if n.lower() not in dropped]
        forwarded_for = get(request.headers, "x-forwarded-for")
        client_ip = request.client
        headers = [(n, v) for n, v in headers if n.lower() not in ("x-forwarded-for", "via")]
        headers.append(("X-Forwarded-For", f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip))
        via = get(request.headers, "via")
        headers.append(("Via", f"{via}, {self.via}" if via else self.via))
        headers.append(("Host", request.host))
        return headers

    def _for(self, target: Target, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if target.kind == "origin":
            out = [(n, v) for n, v in headers if n.lower() not in ("x-edgefleet-tier", "x-edgefleet-hops")]
            if target.host_header:
                out = [(n, v) for n, v in out if n.lower() != "host"] + [("Host", target.host_header)]
            return out
        hops = get(headers, tiers.HOPS_HEADER)
        count = int(hops) + 1 if hops and hops.isdigit() else 1
        out = [(n, v) for n, v in headers if n.lower() not in ("x-edgefleet-tier", "x-edgefleet-hops")]
        return [*out, (tiers.TIER_HEADER, target.kind), (tiers.HOPS_HEADER, str(count))]

    # --- slices of large objects ---------------------------------------------------

    def _sliced(self, request: Request, key: str) -> bool:
        """Whether a Range miss is answered from slices: a GET with a Range we honour, no whole fetch in flight."""
        if request.method != "GET" or self.fills.get(key) is not None:
            return False
        value = get(request.headers, "range")
        return value is not None and ranges.slice_anchor(value) is not None

    async def _send_sliced(
        self, client: Client, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy,
        started: float,
    ) -> None:
        """Answer a Range miss from ``sliceBytes``-aligned slices, fetching only those the ranges cover.

        As nginx's slice module: each slice is fetched with ``Range: bytes=a-b``
        (collapsed per slice, routed to the slice's owner in the site) and
        stored as its own entry, ``<key>#slice=<n>``, with the object's length
        in its Content-Range. The slice holding the first requested byte tells
        the length, so the reply head goes out once it is in; the others are
        fetched as the body is written. A full GET still fills the whole object.
        """
        value = get(request.headers, "range") or ""
        anchor = (ranges.slice_anchor(value) or 0) // self.slice_bytes
        try:
            first = await self._slice(request, domain, key, policy, anchor)
        except UpstreamError as exc:
            await self.send_error(client, request, exc.status, exc.message)
            return
        if first.entry is None:
            await self._not_a_slice(client, request, domain, first, started)
            return
        meta = first.entry.meta
        total = _complete_length(meta)
        if not ranges.if_range_matches(get(request.headers, "if-range"), get(meta.headers, "etag"),
                                       get(meta.headers, "last-modified")):
            await self._fill_and_send(client, request, domain, key, policy, None, started)  # the whole, as a 200
            return
        reply = responses.plan_slices(request.headers, meta.headers, value, total)
        if reply is None:
            await self._fill_and_send(client, request, domain, key, policy, None, started)
            return
        self._count(first.cache_status, reply.status)
        self._write_head(client, request, reply, meta, first.cache_status)
        got = {anchor: first}
        try:
            sent = await self._write_slice_pieces(client, request, domain, key, policy, got, reply.pieces)
        except UpstreamError as exc:
            log.warning("%s %s: a slice failed: %s", request.method, request.target, exc.message)
            request.keep_alive = False  # the head is out: ending the connection is all that is left
            sent = 0
        self._done(request, client, reply.status, sent, first.cache_status, started)

    async def _not_a_slice(
        self, client: Client, request: Request, domain: ServedDomain, answer: Slice, started: float
    ) -> None:
        """Upstream answered the slice request with the whole object or an error: relay that answer."""
        if answer.cache_status == "PASS" or answer.fill is None or answer.head is None:
            await self._pass(client, request, domain, started)
            return
        self.stats.misses += 1
        await self._send_fill(client, request, answer.fill, answer.head, started)

    def _count(self, cache_status: str, status: int) -> None:
        if status == 304:
            self.stats.not_modified += 1
        elif cache_status == "HIT":
            self.stats.hits += 1
        elif cache_status == "STALE":
            self.stats.stale_served += 1
        else:
            self.stats.misses += 1

    def _write_head(
        self, client: Client, request: Request, reply: responses.Reply, meta: EntryMeta, cache_status: str
    ) -> None:
        extra = [
            ("Age", str(freshness.current_age(meta.initial_age, meta.response_time, time.time()))),
            ("X-Cache", f"{cache_status} from {self.node}"),
            ("Server-Timing", f'cache;desc="{cache_status}"'),
        ]
        if not request.keep_alive:
            extra.append(("Connection", "close"))
        client.write(response_head(reply.status, reply.headers + extra))

    async def _write_slice_pieces(
        self, client: Client, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy,
        got: dict[int, Slice], pieces: list[responses.Piece],
    ) -> int:
        """Write the reply's pieces (object positions) from the slices that hold them, fetching them in order."""
        size = self.slice_bytes
        reference = next(iter(got.values())).entry
        assert reference is not None
        sent = 0
        for piece in pieces:
            if isinstance(piece, bytes):
                client.write(piece)
                sent += len(piece)
                continue
            for index in range(piece[0] // size, piece[1] // size + 1):
                entry = await self._slice_entry(request, domain, key, policy, index, got, reference)
                base = index * size
                part = (max(piece[0], base) - base, min(piece[1], base + size - 1) - base)
                sent += await self._write_pieces(client, entry, [part])
        return sent

    async def _slice_entry(
        self, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy, index: int,
        got: dict[int, Slice], reference: Stored,
    ) -> Stored:
        """Slice ``index`` for the body being written; UpstreamError unless it is a slice of the same object.

        ``got`` keeps the first slice and the last one used (pieces come in
        order), so that a large range does not hold every slice it passed.
        """
        answer = got.get(index)
        if answer is None:
            answer = await self._slice(request, domain, key, policy, index)
            for passed in list(got)[1:]:
                del got[passed]
            got[index] = answer
        entry = answer.entry
        if entry is None:
            raise UpstreamError(502, f"slice {index}: upstream did not answer with a range")
        if _complete_length(entry.meta) != _complete_length(reference.meta) or get(
            entry.meta.headers, "etag"
        ) != get(reference.meta.headers, "etag"):
            self.storage.purge([], [key + keys.SLICE_MARK], [], soft=False)  # mixed versions: refetch them all
            raise UpstreamError(502, f"slice {index} belongs to another version of the object")
        return entry

    async def _slice(
        self, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy, index: int
    ) -> Slice:
        """Slice ``index``: stored and fresh, revalidated, or fetched (one fetch per slice in this worker)."""
        slice_key = keys.slice_key(key, index)
        entry = self.storage.find(slice_key, lambda vary: keys.variant_key(vary, request.headers))
        if entry is not None:
            use = freshness.use(_timing(entry.meta), time.time(), no_cache=entry.meta.no_cache,
                                invalidated=entry.meta.invalidated)
            if use is freshness.Use.FRESH:
                return Slice(entry, "HIT")
            if use is freshness.Use.STALE_REVALIDATE_ASYNC:
                if self.fills.get(slice_key) is None:
                    self._start_slice_fill(request, domain, key, policy, index, entry)
                return Slice(entry, "STALE")
        fill = self.fills.get(slice_key)
        leader = fill is None
        if fill is None:
            fill = self._start_slice_fill(request, domain, key, policy, index, entry)
        try:
            return await self._slice_from_fill(fill, request, leader)
        except UpstreamError:
            if entry is not None and self._stale_allowed(entry.meta, policy):
                return Slice(entry, "STALE")
            raise

    async def _slice_from_fill(self, fill: Fill, request: Request, leader: bool) -> Slice:
        head = await fill.head
        if not leader and (not head.shareable or not _serves(head, request)):
            return Slice(None, "PASS")
        if head.entry is not None:
            return Slice(head.entry, head.cache_status)
        if head.status != 206 or head.meta is None:
            return Slice(None, "MISS", fill, head)
        await fill_done(fill)
        return Slice(FillEntry(head.meta, fill), "MISS")

    def _start_slice_fill(
        self, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy, index: int,
        entry: Stored | None,
    ) -> Fill:
        fill = Fill(keys.slice_key(key, index), self.memory_limit, self.spool_dir)
        self.fills.add(fill)
        self._spawn(self._run_slice_fill(fill, request, domain, key, policy, index, entry))
        return fill

    async def _run_slice_fill(
        self, fill: Fill, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy, index: int,
        entry: Stored | None,
    ) -> None:
        try:
            await self._fetch_slice_into(fill, request, domain, key, policy, index, entry)
        except UpstreamError as exc:
            self.stats.upstream_failures += 1
            fill.finish(exc)
        except Exception as exc:
            log.exception("fill of %s failed", fill.key)
            fill.finish(UpstreamError(502, f"internal error while fetching: {type(exc).__name__}"))
        finally:
            self.fills.remove(fill)
            if not fill.done:
                fill.finish(UpstreamError(502, "fetch cancelled"))

    async def _fetch_slice_into(
        self, fill: Fill, request: Request, domain: ServedDomain, key: str, policy: freshness.Policy, index: int,
        entry: Stored | None,
    ) -> None:
        """Fetch one slice with a Range request; a 206 is the slice, anything else is the whole answer."""
        first = index * self.slice_bytes
        headers = self._forward_headers(request, cacheable=True)
        headers.append(("Range", f"bytes={first}-{first + self.slice_bytes - 1}"))
        if isinstance(entry, MemoryEntry | DiskEntry):
            headers += conditionals.validation_headers(entry.meta.headers)
        request_time, sent = time.time(), time.perf_counter()
        response = await self._open(request, domain, fill.key, "GET", headers, None)
        upstream_ms = (time.perf_counter() - sent) * 1000
        self.stats.observe_upstream(upstream_ms / 1000)
        response_time = time.time()
        if response.status == 304 and isinstance(entry, MemoryEntry | DiskEntry):
            response.release()
            fill.publish(self._revalidated(entry, request, policy, response, response_time, upstream_ms))
            fill.finish()
            return
        if self._stale_instead(fill, response, entry, policy):
            return
        if response.status != 206:  # the whole object (Range ignored) or an error: the object's answer
            await self._receive(fill, request, response, policy, request_time, response_time, upstream_ms, key)
            return
        placed = ranges.parse_content_range(get(response.headers, "content-range"))
        if placed is None or placed[0] != first:
            response.close()
            raise UpstreamError(502, f"{response.target.name} did not answer slice {index} with its range")
        whole = placed[0] == 0 and placed[1] == placed[2] - 1  # a small object: one slice is all of it
        await self._receive(fill, request, response, policy, request_time, response_time, upstream_ms,
                            key if whole else None, whole_range=whole)

    # --- pass-through ----------------------------------------------------------

    async def _pass(self, client: Client, request: Request, domain: ServedDomain, started: float) -> None:
        """Forward uncached; an unsafe method that succeeds invalidates the URL."""
        self.stats.bypass += 1
        headers = self._forward_headers(request, cacheable=False)
        body = request.body if request.has_body else None
        method = request.method
        try:
            response = await self._open(request, domain, self.key_for(domain, request), method, headers, body)
        except UpstreamError as exc:
            await self.send_error(client, request, exc.status, exc.message)
            return
        if method in INVALIDATING and response.status < 400:
            self.purge_keys([self.key_for(domain, request)], [], [], soft=False)
        relayed = [(n, v) for n, v in response.headers if n.lower() not in NOT_RELAYED]
        relayed.append(("X-Cache", f"PASS from {self.node}"))
        await self._relay(client, request, response.status, relayed, response.content_length, response.chunks(),
                          "PASS", started)

    # --- writing responses -------------------------------------------------------

    async def send_entry(
        self,
        client: Client,
        request: Request,
        entry: Stored,
        cache_status: str,
        started: float,
        head: FillHead | None = None,
    ) -> None:
        meta = entry.meta
        reply = responses.plan(request.method, request.headers, meta)
        if reply.status == 304:
            self.stats.not_modified += 1
        now = time.time()
        timing = f'cache;desc="{cache_status}"'
        if head is not None and head.upstream:
            timing += f", upstream;dur={head.upstream_ms:.1f}"
        extra = [
            ("Age", str(freshness.current_age(meta.initial_age, meta.response_time, now))),
            ("X-Cache", f"{cache_status} from {self.node}"),
            ("Server-Timing", timing),
        ]
        if not request.keep_alive:
            extra.append(("Connection", "close"))
        client.write(response_head(reply.status, reply.headers + extra))
        sent = await self._write_pieces(client, entry, reply.pieces)
        self._done(request, client, reply.status, sent, cache_status, started)

    async def _write_pieces(self, client: Client, entry: Stored, pieces: list[responses.Piece]) -> int:
        sent = 0
        if isinstance(entry, FillEntry):
            return await _write_fill_pieces(client, entry.fill, pieces)
        if isinstance(entry, MemoryEntry):
            body = memoryview(entry.body)
            for piece in pieces:
                data = piece if isinstance(piece, bytes) else bytes(body[piece[0] : piece[1] + 1])
                client.write(data)
                sent += len(data)
            await client.drain()
            return sent
        fd = entry.open()
        try:
            for piece in pieces:
                if isinstance(piece, bytes):
                    client.write(piece)
                    sent += len(piece)
                    continue
                sent += await send_file(client, fd, entry.body_offset + piece[0], piece[1] - piece[0] + 1)
        finally:
            os.close(fd)
        return sent

    async def _send_fill(self, client: Client, request: Request, fill: Fill, head: FillHead, started: float) -> None:
        if head.shareable and conditionals.not_modified(request.headers, head.headers) and head.status == 200:
            await fill_done(fill)
            self.stats.not_modified += 1
            headers = [*conditionals.headers_for_304(head.headers), ("X-Cache", f"MISS from {self.node}")]
            client.write(response_head(304, headers))
            self._done(request, client, 304, 0, "MISS", started)
            return
        if request.method == "GET" and get(request.headers, "range") is not None and head.status == 200:
            try:
                stored = await self._ranged_after_fill(fill, head, request)
            except UpstreamError as exc:
                await self.send_error(client, request, exc.status, exc.message)
                return
            if stored is not None:
                await self.send_entry(client, request, stored, "MISS", started, head)
                return
        headers = list(head.headers)
        age = int(head.extra.get("age", 0) + time.time() - head.extra.get("response_time", time.time()))
        headers += [("Age", str(max(age, 0))), ("X-Cache", f"MISS from {self.node}"),
                    ("Server-Timing", f'cache;desc="MISS", upstream;dur={head.upstream_ms:.1f}')]
        body: AsyncIterator[bytes] | None = fill.stream() if request.method != "HEAD" else None
        await self._relay(client, request, head.status, headers, head.content_length, body, "MISS", started)

    async def _ranged_after_fill(self, fill: Fill, head: FillHead, request: Request) -> Stored | None:
        """A Range request that missed: wait for the fill, then answer the range from what it got."""
        await fill_done(fill)
        meta = head.meta
        if meta is None:
            return None
        stored = self.storage.find(meta.key, lambda vary: keys.variant_key(vary, request.headers))
        if stored is not None and stored.meta.response_time == meta.response_time:
            return stored
        return FillEntry(meta, fill) if meta.size == fill.size else None  # not stored (a peer's, or refused)

    async def _relay(
        self,
        client: Client,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
        length: int | None,
        body: AsyncIterator[bytes] | None,
        cache_status: str,
        started: float,
    ) -> None:
        chunked = length is None and body is not None and request.version == "1.1" and _has_body(status)
        if length is not None:
            headers = [*headers, ("Content-Length", str(length))]
        elif chunked:
            headers = [*headers, ("Transfer-Encoding", "chunked")]
        elif body is not None and _has_body(status):
            request.keep_alive = False  # HTTP/1.0 client: the body ends when we close
        if not request.keep_alive:
            headers = [*headers, ("Connection", "close")]
        client.write(response_head(status, headers))
        sent = 0
        if body is not None and request.method != "HEAD":
            try:
                sent = await _write_body(client, body, chunked)
            except UpstreamError as exc:  # the head is out: all we can do is end the connection
                log.warning("%s %s: %s", request.method, request.target, exc.message)
                request.keep_alive = False
        self._done(request, client, status, sent, cache_status, started)

    async def send_error(self, client: Client, request: Request, status: int, message: str) -> None:
        self.stats.errors += 1
        headers, body = error_body(status, message, self.node)
        headers.append(("X-Cache", f"ERROR from {self.node}"))
        if not request.keep_alive:
            headers.append(("Connection", "close"))
        client.write(response_head(status, headers) + (body if request.method != "HEAD" else b""))
        self._done(request, client, status, len(body), "ERROR", time.perf_counter())

    def _done(self, request: Request, client: Client, status: int, sent: int, cache: str, started: float) -> None:
        self.stats.requests += 1
        self.stats.bytes_served += sent
        if self.access_log is not None:
            self.access_log.record(request, client.peer_ip, status, sent, cache, time.perf_counter() - started)

    # --- purge and prefetch ------------------------------------------------------

    def purge_keys(self, urls: list[str], prefixes: list[str], tags: list[str], *, soft: bool) -> int:
        count = self.storage.purge(urls, prefixes, tags, soft)
        self.stats.purged += count
        return count

    def key_of_url(self, domain: ServedDomain, url: str) -> str:
        """The cache key of an absolute URL or a path on ``domain``."""
        host, target = self._split_url(domain, url)
        return keys.cache_key("http", host, target, domain.query_mode, domain.query_allow)

    async def prefetch(self, domain_name: str, url: str) -> None:
        """Fetch ``url`` into the cache unless a fresh copy is there; UpstreamError if it fails."""
        domain = self.domains.by_name.get(domain_name)
        if domain is None:
            raise UpstreamError(404, f"domain {domain_name!r} is not served here")
        host, target = self._split_url(domain, url)
        request = Request("GET", target, [("Host", host)], host, True, "1.1")
        key = self.key_for(domain, request)
        policy = domain.policy_for(target.partition("?")[0])
        entry = self.storage.find(key, lambda vary: keys.variant_key(vary, request.headers))
        if entry is not None and time.time() < entry.meta.fresh_until and not entry.meta.invalidated:
            return
        fill = self.fills.get(key) or self._start_fill(request, domain, key, policy, entry)
        head = await fill.head
        await fill_done(fill)
        if head.status >= 400 and head.entry is None:
            raise UpstreamError(502, f"upstream answered {head.status}")

    def _split_url(self, domain: ServedDomain, url: str) -> tuple[str, str]:
        if "://" in url:
            _, _, rest = url.partition("://")
            host, slash, target = rest.partition("/")
            return host, slash + target
        return domain.config.hostnames[0].removeprefix("*."), url if url.startswith("/") else "/" + url

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.upstream.close()

    def spool_path(self) -> Path | None:
        return self.spool_dir


def _serves(head: FillHead, request: Request) -> bool:
    """Whether a fill's answer is the variant ``request`` asks for (RFC 9111 §4.1; ``Vary: *`` is never shared)."""
    if head.entry is not None:
        vary, variant = head.entry.meta.vary, head.entry.meta.variant
    elif head.vary is None:
        return True  # not shareable anyway: the waiter goes to the origin
    else:
        vary, variant = head.vary, head.variant
    return not vary or keys.variant_key(vary, request.headers) == variant


def _complete_length(meta: EntryMeta) -> int:
    """The object's length a stored slice's Content-Range states (its own size if it has none)."""
    placed = ranges.parse_content_range(get(meta.headers, "content-range"))
    return placed[2] if placed is not None else meta.size


async def _write_fill_pieces(client: Client, fill: Fill, pieces: list[responses.Piece]) -> int:
    sent = 0
    for piece in pieces:
        if isinstance(piece, bytes):
            client.write(piece)
            sent += len(piece)
            continue
        for offset in range(piece[0], piece[1] + 1, FILL_READ):
            data = fill.read(offset, min(offset + FILL_READ - 1, piece[1]))
            client.write(data)
            sent += len(data)
            await client.drain()
    return sent


async def fill_done(fill: Fill) -> None:
    """Wait until the fill has its whole body (by reading it to the end)."""
    async for _ in fill.stream():
        pass


async def _write_body(client: Client, body: AsyncIterator[bytes], chunked: bool) -> int:
    sent = 0
    async for data in body:
        if not data:
            continue
        client.write(chunk(data) if chunked else data)
        sent += len(data)
        await client.drain()
    if chunked:
        client.write(LAST_CHUNK)
    return sent


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


def _timing(meta: EntryMeta) -> freshness.Timing:
    return freshness.Timing(meta.fresh_until, meta.stale_while_revalidate_until, meta.stale_if_error_until)


def _with_date(headers: list[tuple[str, str]], now: float) -> list[tuple[str, str]]:
    if any(name.lower() == "date" for name, _ in headers):
        return headers
    return [*headers, ("Date", format_http_date(now))]


def _tags(headers: list[tuple[str, str]]) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("cache-tag", "surrogate-key"):
        value = get(headers, name)
        if value:
            found.extend(tag for tag in value.replace(",", " ").split() if tag)
    return tuple(dict.fromkeys(found))


def _meta(
    key: str,
    request: Request,
    response: UpstreamResponse,
    headers: list[tuple[str, str]],
    decision: freshness.Decision,
    initial_age: float,
    request_time: float,
    response_time: float,
    status: int,
) -> EntryMeta:
    vary = keys.parse_vary(headers) or ()
    timing = freshness.timing(decision, initial_age, response_time)
    return EntryMeta(
        key=key,
        variant=keys.variant_key(vary, request.headers),
        vary=vary,
        status=status,
        reason=response.reason if status == response.status else "",
        headers=headers,
        request_time=request_time,
        response_time=response_time,
        initial_age=initial_age,
        fresh_until=timing.fresh_until,
        stale_while_revalidate_until=timing.stale_while_revalidate_until,
        stale_if_error_until=timing.stale_if_error_until,
        must_revalidate=decision.must_revalidate,
        no_cache=decision.no_cache,
        size=response.content_length or 0,
        tags=_tags(headers),
    )


def _refreshed(
    old: EntryMeta, headers: list[tuple[str, str]], decision: freshness.Decision, response_time: float
) -> EntryMeta:
    """The stored entry after a 304: merged headers, lifetime re-evaluated, a new age baseline."""
    if not decision.storable:  # the 304 made it unstorable (e.g. no-store): keep it, but validate every use
        decision = freshness.Decision(True, "", 0.0, 0.0, 0.0, True, True, frozenset())
    timing = freshness.timing(decision, 0.0, response_time)
    return EntryMeta(
        key=old.key, variant=old.variant, vary=old.vary, status=old.status, reason=old.reason, headers=headers,
        request_time=response_time, response_time=response_time, initial_age=0.0, fresh_until=timing.fresh_until,
        stale_while_revalidate_until=timing.stale_while_revalidate_until,
        stale_if_error_until=timing.stale_if_error_until, must_revalidate=decision.must_revalidate,
        no_cache=decision.no_cache, size=old.size, tags=_tags(headers), invalidated=False,
    )
