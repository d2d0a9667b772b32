"""The request path of a cache worker: hit, miss, revalidate, collapse, tier, store.

How, per request (the steps of docs/architecture.md, "Request path"):

1. The Host header picks a Domain (:mod:`edgefleet.cache.policy.domains`); none
   gets ``unknownHostStatus`` (421 or 404). Host and target are already
   canonical (:mod:`edgefleet.cache.wire.targets`, in the parser), so rules,
   keys and the request sent upstream see one spelling. Tier header fields
   are kept only from the fleet's addresses (:class:`~edgefleet.cache.upstream.tiers.TierTrust`).
   Methods other than GET/HEAD, and paths under a ``bypass`` rule, are
   passed to the origin uncached (:mod:`edgefleet.cache.front.passthrough`); a
   successful unsafe method invalidates the stored URL (RFC 9111 §4.4) softly:
   marked stale, so the next request revalidates it.
2. The cache key (scheme, host, path, query per Domain policy) and, with
   Vary, the request's variant find a stored entry, memory tier first.
   :meth:`Proxy.serve_fast` answers fresh plain hits from memory right
   inside ``data_received`` with a precomputed head: no task, no await.
3. Everything else runs in :meth:`Proxy.handle`. A fresh entry is served
   (304 to a matching conditional, 206/416 to Range). A stale one within
   ``stale-while-revalidate`` is served while a background fill revalidates
   it; otherwise it is revalidated first. A miss joins the key's fill or
   starts one (:mod:`edgefleet.cache.upstream.fills`, :mod:`edgefleet.cache.upstream.fetches`):
   one upstream fetch per key, and with several workers sharing a disk tier
   one per node (a node-wide lock; the other workers wait, then read what
   was stored). A waiter takes the fill's answer only if it is the variant
   its own request selects (Vary); otherwise it asks again once the fill is
   done. A Range request that misses is answered from slices
   (:mod:`edgefleet.cache.front.slices`), so a range of a large object never
   pulls the whole object upstream.
4. A fill asks, in order, the site peer that owns the key, the owner node of
   each parent site, then the origins (:mod:`edgefleet.cache.upstream.forwarding`). A
   response from a site peer is relayed but not stored: the owner stores it,
   so each object is stored once per site. A request that comes back to a
   node it already passed (its name in ``Via``) goes to the origin and never
   joins that node's fill, which is waiting for it.
5. Upstream failure: a stored entry within ``stale-if-error`` (or the
   Domain's ``serveStaleOnError``) is served stale; else 502 or 504.

Edge rules (:mod:`edgefleet.cache.front.edgerules`): a Domain with rules runs their request phase
once per request, on the node the client reached, before the lookup (step 2 on the fast path, else
at the start of step 1's Domain checks): a synthetic answer ends the request; a rewrite, key
additions and cache overrides shape the key and the policy; a peer's or parent's request carries
that node's decision instead. A Domain without rules pays one attribute test.

Each step's decision (hit, stale, fill, join or start a fill, serve stale
on error) is a pure function of :mod:`edgefleet.cache.policy.decisions`,
given the entry and ``now`` from the clock the worker injects (``time.time``;
a fake clock in tests): this class looks things up, asks, and does what the
answer says.

Replies are written by :mod:`edgefleet.cache.front.replies`. Why collaborators
built per config: :meth:`Proxy.reload` builds the forwarder, fetcher,
replies, pass-through and slices afresh from the new config, so a fill or a
slice reply in flight finishes with the settings it started with, while the
fills, tasks and upstream connections, which outlive a config, stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from typing import TYPE_CHECKING, Any

from edgefleet.cache.config import CacheConfig, split_listen
from edgefleet.cache.errors import BadRequest, UpstreamError
from edgefleet.cache.front import edgerules, interim, responses
from edgefleet.cache.front.passthrough import Passthrough
from edgefleet.cache.front.redirects import send_https_redirect
from edgefleet.cache.front.replies import Client, Replies
from edgefleet.cache.front.slices import Slices
from edgefleet.cache.policy import decisions, freshness, keys
from edgefleet.cache.policy.decisions import fast_hit  # a global: the hit path saves an attribute lookup
from edgefleet.cache.policy.domains import DomainTable, ServedDomain
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage.disk import DiskEntry
from edgefleet.cache.storage.hot import HotObjects
from edgefleet.cache.storage.locks import NodeLocks
from edgefleet.cache.storage.memory import MemoryEntry
from edgefleet.cache.storage.ratetable import BucketTable
from edgefleet.cache.storage.store import Storage
from edgefleet.cache.upstream import ruled, tiers
from edgefleet.cache.upstream.client import Upstream
from edgefleet.cache.upstream.fetches import Fetcher, Wanted, fill_done, find, serves
from edgefleet.cache.upstream.fills import Fill, Fills
from edgefleet.cache.upstream.forwarding import Forwarder, fleet_addresses
from edgefleet.cache.wire.headers import get
from edgefleet.cache.wire.http1 import Request
from edgefleet.cache.wire.targets import canonical_host, canonical_target

if TYPE_CHECKING:
    from edgefleet.cache.front.accesslog import AccessLog

SAFE_METHODS = frozenset({"GET", "HEAD"})
PASS_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_VARIANT_RETRIES = 2
"""A waiter that met fills of other variants this often is passed to the origin uncollapsed."""

__all__ = ["Client", "Proxy"]


class Proxy:
    """One worker's request handling; shared by all its connections."""

    def __init__(
        self,
        config: CacheConfig,
        storage: Storage,
        stats: Stats,
        access_log: AccessLog | None,
        clock: decisions.Clock = time.time,
        rate_table: BucketTable | None = None,
    ) -> None:
        self.clock = clock
        self.rate_table = rate_table  # the node's rate-limit buckets (None: per process; module edgerules)
        self.storage = storage
        self.stats = stats
        self.access_log = access_log
        self.fills = Fills()
        self.upstream = Upstream(config.upstream, stats, split_listen(config.listen)[0])
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._disk_work: set[asyncio.Future[Any]] = set()  # stores running in threads (fetches._off_loop)
        self._other_fills: dict[str, asyncio.Future[bool]] = {}
        self.tier_clients: set[str] = set()  # addresses that sent tier requests (see _check_fleet)
        hot = config.storage.hot_objects  # storage is fixed for the life of the process
        self.hot = HotObjects(hot.max_bytes, hot.max_object_bytes, hot.seconds)
        self.geo = edgerules.GeoCache()  # the edge rules' geo table, read once per file (module edgerules)
        self.reload(config)

    def reload(self, config: CacheConfig) -> None:
        """Swap domains, tiers and limits: new collaborators from ``config`` (see the module docstring)."""
        domains = DomainTable(config.domains)
        previous = getattr(self, "domains", None)
        edgerules.attach(domains, config, previous, self.geo, self.rate_table)  # ConfigError: nothing changed
        self.config = config
        self.node = config.node
        self.domains = domains
        self.hit_heads = edgerules.HitHeads(config.node)
        self.https_port = split_listen(config.tls_listen)[1] if config.tls_listen else 443  # redirectHttp
        self.stats.accounts.retain(self.domains.by_name)
        self.counters = {name: self.stats.accounts.slot(name) for name in self.domains.by_name}
        disk = config.storage.disk
        self.locks = NodeLocks(disk.path / "locks") if disk is not None and config.workers > 1 else None
        self.trust = tiers.TierTrust(fleet_addresses(config))
        self.tier_clients.update(tiers.plain_addresses(fleet_addresses(config)))  # the rest is learnt: _check_fleet
        forwarder = Forwarder(config, self.upstream, self.stats, self.rng)
        self.fetcher = Fetcher(
            forwarder,
            self.storage,
            self.stats,
            self.fills,
            self._tasks,
            memory_limit=config.storage.memory_object_bytes,
            spool_dir=disk.path if disk is not None else None,
            clock=self.clock,
            disk_work=self._disk_work,
            hot=self.hot if self.hot.enabled and config.site is not None else None,
        )
        self.replies = Replies(config.node, self.storage, self.stats, self.access_log, self.clock, self.domains)
        self.passthrough = Passthrough(forwarder, self.replies, self.stats, self._invalidate)
        self.slices = Slices(config.storage.slice_bytes, self.fetcher, self.replies, self.passthrough)

    # --- the fast path -----------------------------------------------------

    def serve_fast(self, client: Any, request: Request) -> bool:
        """Answer a fresh, plain, in-memory hit synchronously; False: use :meth:`handle`."""
        if request.method != "GET":
            return False
        domain = self.domains.lookup(request.host)
        if domain is None or domain.query_mode != "keep":
            return False
        if domain.redirect_http and client.tls_version is None:  # handle() redirects it to https
            return False
        if domain.has_aliases:
            request.host = domain.canonical_for(request.host) or request.host
        if domain.program is not None:
            return self._serve_fast_ruled(client, request, domain)
        entry = self._memory_hit(domain, request)
        if entry is None:
            return False
        now = self.clock()
        meta = entry.meta
        if not fast_hit(meta, now):
            return False
        head = entry.head
        if head is None:
            head = entry.head = responses.hit_head(meta, self.node)
        self._write_fast_hit(client, request, domain, entry, head, now)
        return True

    def _serve_fast_ruled(self, client: Any, request: Request, domain: ServedDomain) -> bool:
        """The fast path of a Domain with edge rules: the request phase, then a plain memory hit if that is all.

        The decision stays on the request (``request.rules``), so :meth:`handle` does not run the rules again.
        A peer's request (it carries the decision of the node the client reached) goes to :meth:`handle`.
        """
        if client.peer_ip in self.tier_clients and tiers.asked_by_tier(request.headers):
            return False
        now = self.clock()
        applied = edgerules.evaluate(domain, request, client, now)
        outcome = applied.outcome
        assert outcome is not None and applied.program is not None and applied.info is not None
        if outcome.respond is not None or applied.bypass or not request.plain:
            return False
        key = "http://" + request.host + request.target + ruled.key_suffix(applied.key_extra)  # both canonical
        entry = self.storage.memory.get_plain(key)
        if entry is None and self.hot.enabled:
            entry = self.hot.get_plain(key)
        if entry is None:
            return False
        meta = entry.meta
        if not fast_hit(meta, now):
            return False
        head = entry.head
        if head is None:
            head = entry.head = responses.hit_head(meta, self.node)
        if applied.program.has_client_phase:
            ops = applied.client_ops
            if ops is None:
                ops = applied.program.on_client_response(applied.info, outcome, meta.status, meta.headers).headers
            if ops:
                head = self.hit_heads.head(head, meta.status, meta.headers, meta.size, ops)
        self._write_fast_hit(client, request, domain, entry, head, now)
        return True

    def _write_fast_hit(
        self, client: Any, request: Request, domain: ServedDomain, entry: MemoryEntry, head: bytes, now: float
    ) -> None:
        meta = entry.meta
        age = int(meta.initial_age + now - meta.response_time)
        end = b"\r\n" if request.keep_alive else b"Connection: close\r\n\r\n"  # the server closes after it
        client.writelines([head, b"Age: %d\r\n%s" % (age if age > 0 else 0, end), entry.body])
        stats = self.stats
        stats.requests += 1
        stats.hits += 1
        stats.bytes_served += meta.size
        counters = self.counters[domain.name]
        counters.local += 1
        counters.bytes += meta.size
        if client.peer_ip in self.tier_clients and tiers.asked_by_tier(request.headers):  # another cache asks
            counters.tier_requests += 1
            counters.tier_bytes += meta.size
        if self.access_log is not None:
            self.access_log.record(request, client, 200, meta.size, "HIT", 0.0)

    def _memory_hit(self, domain: ServedDomain, request: Request) -> MemoryEntry | None:
        if not request.plain:
            return None
        key = "http://" + request.host + request.target  # both canonical
        entry = self.storage.memory.get_plain(key)
        if entry is None and self.hot.enabled:
            entry = self.hot.get_plain(key)
        return entry

    # --- the general path --------------------------------------------------

    def check_head(self, method: str, host: str) -> None:
        """Before a request body is read: BadRequest unless a Domain serves ``host`` and ``method`` is served."""
        if self.domains.lookup(host) is None:
            raise BadRequest(self.config.unknown_host_status, "no domain serves this host")
        if method not in SAFE_METHODS and method not in PASS_METHODS:
            raise BadRequest(501, f"method {method} is not supported")

    async def handle(self, client: Client, request: Request) -> None:
        """Answer any request (see the module docstring)."""
        started = time.perf_counter()
        domain = self.domains.lookup(request.host) if request.host else None
        if domain is None:
            status = self.config.unknown_host_status
            await self.replies.send_error(client, request, status, "no domain serves this host")
            return
        self._check_fleet(request)
        if domain.redirect_http and client.tls_version is None and not request.from_fleet:
            send_https_redirect(self.replies, client, request, self.https_port)
            return
        if domain.has_aliases:  # a CDN zone name: cached and fetched as the Domain's own hostname
            request.host = domain.canonical_for(request.host) or request.host
        if domain.program is not None and self._answered_by_rules(client, request, domain, started):
            return
        path = request.target.partition("?")[0]
        policy = domain.policy_for(path)
        applied = request.rules
        if applied is not None and (applied.ttl is not None or applied.bypass):  # the rules' cache overrides
            ttl = applied.ttl if applied.ttl is not None else policy.ttl_override
            policy = dataclasses.replace(policy, ttl_override=ttl, bypass=policy.bypass or applied.bypass)
        if request.method not in SAFE_METHODS or policy.bypass:
            if request.method not in SAFE_METHODS and request.method not in PASS_METHODS:
                await self.replies.send_error(client, request, 501, f"method {request.method} is not supported")
                return
            await self.passthrough.send(client, request, domain, self.key_for(domain, request), started)
            return
        await self._cached(client, Wanted(request, domain, self.key_for(domain, request), policy), started)

    def _answered_by_rules(self, client: Client, request: Request, domain: ServedDomain, started: float) -> bool:
        """Run (or take from a trusted tier) the request phase of the Domain's rules; True: a rule answered."""
        applied = request.rules
        if applied is None:
            if request.from_fleet and request.tier:  # the node the client reached ran them (module edgerules)
                ruled.carried(domain, request)
                return False
            applied = edgerules.evaluate(domain, request, client, self.clock())
        answer = applied.outcome.respond if applied.outcome is not None else None
        if answer is None:
            return False
        edgerules.send_synthetic(self.replies, client, request, answer, started)
        return True

    def _check_fleet(self, request: Request) -> None:
        """Tier header fields count only from the fleet: stripped from anyone else's request (module tiers).

        Whoever sends the tier field, its request is counted as another cache's (``request.tier``), trusted or
        not (a standalone cache may not list its child sites' nodes). Those clients are remembered (bounded), so that
        the hit fast path looks for the field only in their requests.
        """
        request.from_fleet = self.trust.trusts(request.client)
        request.tier = tiers.asked_by_tier(request.headers)
        if request.tier and len(self.tier_clients) < tiers.MAX_TRUST_MEMO:
            self.tier_clients.add(request.client)
        if not request.from_fleet and any(name[:12].lower() == tiers.FLEET_PREFIX for name, _ in request.headers):
            request.headers = tiers.strip_fleet_fields(request.headers)
            self.stats.tier_fields_stripped += 1

    def key_for(self, domain: ServedDomain, request: Request) -> str:
        key = keys.cache_key("http", request.host, request.target, domain.query_mode, domain.query_allow)
        applied = request.rules
        return key + ruled.key_suffix(applied.key_extra) if applied is not None and applied.key_extra else key

    async def _cached(self, client: Client, wanted: Wanted, started: float, attempt: int = 0) -> None:
        request = wanted.request
        entry = find(self.storage, wanted.key, request)
        if entry is None and self.hot.enabled:
            hot = self.hot.find(wanted.key, lambda vary: keys.variant_key(vary, request.headers), self.clock())
            if hot is not None:  # a copy of the owner's, still fresh (module storage.hot)
                self.stats.hits += 1
                await self.replies.send_entry(client, request, hot, "HIT", started)
                return
        lookup = decisions.on_lookup(
            entry.meta if entry is not None else None,
            self.clock(),
            only_if_cached=entry is None and freshness.only_if_cached(request.headers),
            sliced=entry is None and self.slices.applies(request, wanted.key),
        )
        if lookup is decisions.Lookup.HIT and entry is not None:
            self.stats.hits += 1
            await self.replies.send_entry(client, request, entry, "HIT", started)
        elif lookup is decisions.Lookup.STALE and entry is not None:
            self.stats.stale_served += 1
            if self.fills.get(wanted.key) is None:  # revalidate in the background
                self.fetcher.start_whole(wanted, entry)
            await self.replies.send_entry(client, request, entry, "STALE", started)
        elif lookup is decisions.Lookup.NOT_CACHED:
            await self.replies.send_error(client, request, 504, "not cached (only-if-cached)")
        elif lookup is decisions.Lookup.SLICES:
            if not await self.slices.send(client, wanted, started):
                await self._fill_and_send(client, wanted, None, started)  # the whole, as a 200
        else:
            await self._fill_and_send(client, wanted, entry, started, attempt)

    async def _fill_and_send(
        self, client: Client, wanted: Wanted, entry: MemoryEntry | DiskEntry | None, started: float, attempt: int = 0
    ) -> None:
        """Join the key's fill or start one (or, another worker filling it, wait and use what it stored)."""
        # A request that came back around the tiers must not wait for the fill that sent it: a deadlock.
        looped = wanted.request.from_fleet and tiers.looped(self.node, get(wanted.request.headers, "via"))
        fill = None if looped else self.fills.get(wanted.key)
        if fill is None and entry is None and not looped:
            fill = self._being_stored(wanted)
        collapse = decisions.collapse(
            fill_running=fill is not None, stored=entry is not None, node_locks=self.locks is not None, looped=looped
        )
        leader = fill is None
        lock: int | None = None
        if collapse is decisions.Collapse.TRY_NODE_LOCK and self.locks is not None:
            lock = self.locks.try_acquire(wanted.key)
            if lock is None:
                stored = await self._after_other_worker(wanted.key, wanted.request)
                if stored is not None:
                    self.stats.collapsed += 1
                    self.stats.hits += 1
                    await self.replies.send_entry(client, wanted.request, stored, "HIT", started)
                    return
                fill = self.fills.get(wanted.key)
                leader = fill is None
        if fill is None:
            with interim.relaying(client, wanted.request):  # the fill's task relays 1xx heads to this client
                fill = self.fetcher.start_whole(wanted, entry, lock, shared=not looped)
        else:
            self.stats.collapsed += 1
            interim.join(fill, client, wanted.request)  # the 1xx heads the fill relays reach this client too
        await self._send_from_fill(client, wanted, entry, fill, leader, started, attempt)

    def _being_stored(self, wanted: Wanted) -> Fill | None:
        """A finished fill of this variant whose store is still running: its answer, not a second fetch."""
        fill = self.fills.being_stored(wanted.key)
        if fill is None or not fill.head.done() or fill.head.cancelled() or fill.head.exception() is not None:
            return None
        return fill if serves(fill.head.result(), wanted.request) else None

    async def _send_from_fill(
        self,
        client: Client,
        wanted: Wanted,
        entry: MemoryEntry | DiskEntry | None,
        fill: Fill,
        leader: bool,
        started: float,
        attempt: int,
    ) -> None:
        """Answer from the fill's head: its entry, its streamed body, or (not ours to take) otherwise."""
        request = wanted.request
        try:
            head = await fill.head
        except UpstreamError as exc:
            await self._upstream_failed(client, request, entry, exc, started)
            return
        if not leader and not serves(head, request):
            await self._after_other_variant(client, wanted, fill, started, attempt)
            return
        if head.entry is not None:
            await self.replies.send_entry(client, request, head.entry, head.cache_status, started, head)
            return
        if not head.shareable and not leader:
            await self.passthrough.send(client, request, wanted.domain, wanted.key, started)
            return
        self.stats.misses += 1
        await self.replies.send_fill(client, request, fill, head, started)

    async def _after_other_variant(
        self, client: Client, wanted: Wanted, fill: Fill, started: float, attempt: int
    ) -> None:
        """The fill this request joined got another variant (Vary): start over once it is done."""
        with contextlib.suppress(UpstreamError):  # its failure is not ours: we ask again
            await fill_done(fill)
        if attempt >= MAX_VARIANT_RETRIES:
            await self.passthrough.send(client, wanted.request, wanted.domain, wanted.key, started)
            return
        await self._cached(client, wanted, started, attempt + 1)

    async def _upstream_failed(
        self,
        client: Client,
        request: Request,
        entry: MemoryEntry | DiskEntry | None,
        error: UpstreamError,
        started: float,
    ) -> None:
        if entry is not None and decisions.stale_on_error(entry.meta, self.clock()):
            self.stats.stale_served += 1
            await self.replies.send_entry(client, request, entry, "STALE", started)
            return
        await self.replies.send_error(client, request, error.status, error.message)

    async def _after_other_worker(self, key: str, request: Request) -> MemoryEntry | DiskEntry | None:
        """Another worker is filling ``key``: wait for it, then use what it stored (if fresh)."""
        assert self.locks is not None
        waiting = self._other_fills.get(key)
        if waiting is None:  # the first request here polls the lock; the others wait for it
            waiting = asyncio.ensure_future(self.locks.wait_released(key))
            self._other_fills[key] = waiting
            waiting.add_done_callback(lambda _: self._other_fills.pop(key, None))
        await asyncio.shield(waiting)
        stored = find(self.storage, key, request)
        if stored is None or not decisions.is_fresh(stored.meta, self.clock()):
            return None
        return stored

    # --- purge and prefetch ------------------------------------------------------

    async def purge_keys(self, urls: list[str], prefixes: list[str], tags: list[str], *, soft: bool) -> int:
        count = await self.fetcher.purge(urls, prefixes, tags, soft=soft)  # the disk half in a thread
        self.hot.purge(urls, prefixes, tags)  # copies of what owners hold: not counted as objects purged
        self.stats.purged += count
        return count

    async def _invalidate(self, key: str) -> None:
        """After a successful unsafe method: mark the stored URL stale (the next request revalidates it).

        Soft, not a removal: any client may POST, and a removal would let it throw away stored objects
        (and their stale-if-error copies) at will; a revalidation costs the origin a conditional GET.
        """
        await self.purge_keys([key], [], [], soft=True)

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
        wanted = Wanted(request, domain, self.key_for(domain, request), domain.policy_for(target.partition("?")[0]))
        entry = find(self.storage, wanted.key, request)
        if entry is not None and decisions.is_fresh(entry.meta, self.clock()):
            return
        fill = self.fills.get(wanted.key) or self.fetcher.start_whole(wanted, entry)
        head = await fill.head
        await fill_done(fill)
        if head.status >= 400 and head.entry is None:
            raise UpstreamError(502, f"upstream answered {head.status}")

    def _split_url(self, domain: ServedDomain, url: str) -> tuple[str, str]:
        """(canonical host, canonical target) of a purged or prefetched URL, as a request's would be."""
        if "://" in url:
            _, _, rest = url.partition("://")
            host, slash, target = rest.partition("/")
            return canonical_host(host), canonical_target(slash + target)
        path = url if url.startswith("/") else "/" + url
        return domain.config.hostnames[0].removeprefix("*."), canonical_target(path)

    async def close(self) -> None:
        """Cancel fills, let stores already in a thread finish (the caller closes the disk tier next)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._disk_work, return_exceptions=True)
        await self.upstream.close()
