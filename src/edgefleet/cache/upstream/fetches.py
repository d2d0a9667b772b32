"""The fetch behind each fill: ask upstream, publish the answer to the fill's waiters, store it.

How: :meth:`Fetcher.start` makes a :class:`~edgefleet.cache.upstream.fills.Fill`,
registers it (so that later misses of the key join it instead of asking
upstream again) and runs its fetch as a task of its own, which no client
owns: if every waiter leaves, the object is still fetched and stored. Two
kinds of fetch use it: the whole object (:meth:`Fetcher.start_whole`) and
one slice of a large one (:mod:`edgefleet.cache.front.slices`). Whatever happens,
the task finishes the fill (with an :class:`UpstreamError` if it must:
waiters never hang) and takes it out of the registry.

A fetch goes through :meth:`Fetcher.ask`: conditional when an entry is
stored (its validators added), timed for RFC 9111 §4.2.3 ages. Two answers
end the fill with the stored entry instead of a body: a 304 refreshes it
(merged headers, lifetime re-evaluated, new age baseline: §4.3.4) and a 5xx
within ``stale-if-error`` serves it stale. A 304 whose validators name
another representation (``conditionals.freshens``) refreshes nothing: the
object is asked for again without conditions. A 206 to a whole-object fetch
(an upstream that sent a range nobody asked for) is stored as a 200 when it
holds the whole representation, else relayed to the fill's own request and
never stored (§3.3: an incomplete response never answers a full request).
Every response gets one valid ``Date`` (the time received, when it had none,
an invalid one or several: RFC 9110 §6.6.1) before ages are computed. Any other answer goes to
:meth:`Fetcher.receive`, which publishes the head at once (waiters start
writing while the body still arrives), streams the body into the fill and
into a disk writer when the object is too large for memory or its length is
unknown, and stores it when freshness allows. A response from a site peer is
relayed, not stored: the owner peer stores it, so each object is stored once
per site.

What to do with an answer (revalidated, stale, received; stored or not) is
decided by the pure :mod:`edgefleet.cache.policy.decisions`, with the time
from the injected clock: this module only does it. It also holds what the
request path asks of stored entries and fills: :func:`find` (the variant a
request selects), :func:`serves` (whether a fill's answer is a waiter's
variant) and :func:`fill_done`.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgefleet.cache import accounting
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.policy import conditionals, decisions, freshness, keys, ranges
from edgefleet.cache.policy.domains import ServedDomain
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage.disk import DiskEntry, DiskWriter
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.hot import HotObjects
from edgefleet.cache.storage.locks import NodeLocks
from edgefleet.cache.storage.memory import MemoryEntry
from edgefleet.cache.storage.store import Storage, objects_purged
from edgefleet.cache.upstream import ruled
from edgefleet.cache.upstream.client import INTERIM, UpstreamResponse
from edgefleet.cache.upstream.fills import Fill, FillEntry, FillHead, Fills
from edgefleet.cache.upstream.forwarding import NOT_RELAYED, Fields, Forwarder
from edgefleet.cache.wire.headers import HOP_BY_HOP, format_http_date, get, parse_http_date
from edgefleet.cache.wire.http1 import Request

log = logging.getLogger("edgefleet.cache")

_T = TypeVar("_T")

DISK_COMMITS_IN_THREADS = 2
"""At most this many disk commits of a worker run in threads at once; the next one runs on the loop.

Why: a commit in a thread frees the loop (bench/cache_index_stall.py: loop lateness p99 107 ms -> 8 ms), but
it also removes the backpressure an inline commit gave: the loop kept streaming new misses while their
fills, bodies included, waited for the disk, and a worker under 80 concurrent misses grew 8-14 MiB past its
memory bound (tests/cache/test_memory_bound.py). Past this many, a commit runs inline and holds the loop as
before, so the disk's pace limits the fills again."""

NOT_STORED = HOP_BY_HOP | {
    "content-length",
    "x-cache",
    "server-timing",
    "age",
    "x-edgefleet-hops",
    "proxy-authentication-info",  # the proxy's own field (RFC 9111 §3.1), as Proxy-Authenticate
}

Stored = MemoryEntry | DiskEntry | FillEntry
"""What a response can be answered from: a stored entry, or a finished fill's response."""


@dataclass(slots=True)
class Wanted:
    """A cacheable request, resolved: its Domain, its cache key and the caching policy for its path."""

    request: Request
    domain: ServedDomain
    key: str
    policy: freshness.Policy


@dataclass(slots=True)
class Answer:
    """An upstream response with the times RFC 9111 §4.2.3 ages are computed from."""

    response: UpstreamResponse
    request_time: float
    response_time: float
    upstream_ms: float


class Fetcher:
    """Runs the fills of one worker under one config (see the module docstring)."""

    def __init__(
        self,
        forwarder: Forwarder,
        storage: Storage,
        stats: Stats,
        fills: Fills,
        tasks: set[asyncio.Task[Any]],
        *,
        memory_limit: int,
        spool_dir: Path | None,
        clock: decisions.Clock = time.time,
        disk_work: set[asyncio.Future[Any]] | None = None,
        hot: HotObjects | None = None,
    ) -> None:
        self.forwarder = forwarder
        self.hot = hot  # where small responses relayed from the owner peer are kept briefly
        self.clock = clock
        self.disk_work = disk_work if disk_work is not None else set()
        self.storage = storage
        self.stats = stats
        self.fills = fills
        self.tasks = tasks
        self.memory_limit = memory_limit
        self.spool_dir = spool_dir

    def start(
        self, key: str, fetch: Callable[[Fill], Awaitable[None]], lock: int | None = None, *, shared: bool = True
    ) -> Fill:
        """A new fill for ``key`` whose task runs ``fetch(fill)``; ``shared``: later requests may join it.

        ``lock`` (a node-wide fill lock) is released when the task ends.
        """
        fill = Fill(key, self.memory_limit, self.spool_dir)
        if shared:
            self.fills.add(fill)
        context = contextvars.copy_context()  # the task's 1xx heads go to the fill, which passes them on
        leader = context.get(INTERIM)
        if leader is not None:
            fill.listen(leader)
        context.run(INTERIM.set, fill.hint)
        task = asyncio.get_running_loop().create_task(self._run(fill, fetch, lock), context=context)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return fill

    def start_whole(
        self, wanted: Wanted, entry: MemoryEntry | DiskEntry | None, lock: int | None = None, *, shared: bool = True
    ) -> Fill:
        """A fill of the whole object ``wanted.key`` (revalidating ``entry`` if one is stored)."""
        return self.start(wanted.key, lambda fill: self._fetch_whole(fill, wanted, entry), lock, shared=shared)

    async def _run(self, fill: Fill, fetch: Callable[[Fill], Awaitable[None]], lock: int | None) -> None:
        try:
            await fetch(fill)
        except UpstreamError as exc:  # counted where it failed (edgefleet.cache.upstream.client)
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

    async def _fetch_whole(self, fill: Fill, wanted: Wanted, entry: MemoryEntry | DiskEntry | None) -> None:
        headers = self.forwarder.request_headers(wanted.request, cacheable=True)
        answer = await self.ask(fill, wanted, headers, entry)
        if answer is None:
            return
        if answer.response.status == 206:  # to a request without Range: a misbehaving upstream
            placed = ranges.parse_content_range(get(answer.response.headers, "content-range"))
            if placed is not None and placed[0] == 0 and placed[1] == placed[2] - 1:
                await self.receive(fill, wanted, answer, whole_range=True)  # all of it: the 200 it equals
                return
            # RFC 9111 §3.3: an incomplete response never answers a request for the whole; relayed, not kept
            wanted = dataclasses.replace(wanted, policy=dataclasses.replace(wanted.policy, bypass=True))
        await self.receive(fill, wanted, answer)

    async def ask(
        self, fill: Fill, wanted: Wanted, headers: Fields, entry: MemoryEntry | DiskEntry | None
    ) -> Answer | None:
        """GET ``fill.key`` upstream with ``headers``; None when the stored ``entry`` answered and ended the fill."""
        validators = conditionals.validation_headers(entry.meta.headers) if entry is not None else []
        answer = await self._get(wanted, fill.key, headers + validators)
        response = answer.response
        answered = decisions.on_answer(response.status, entry.meta if entry is not None else None, answer.response_time)
        if entry is None or answered is decisions.Answered.RECEIVE:
            return answer
        if answered is decisions.Answered.REVALIDATED:
            response.release()
            if not conditionals.freshens(entry.meta.headers, response.headers):
                return await self._unconditional(wanted, fill.key, headers)
            fill.publish(await self._revalidated(entry, wanted, answer))
            fill.finish()
            return None
        response.close()  # a 5xx within stale-if-error: the stored entry answers
        fill.publish(FillHead(entry.meta.status, entry.meta.headers, True, entry=entry, cache_status="STALE"))
        fill.finish()
        return None

    async def _get(self, wanted: Wanted, key: str, headers: Fields) -> Answer:
        """One GET upstream, timed for RFC 9111 §4.2.3 ages."""
        request_time, sent = self.clock(), time.perf_counter()
        response = await self.forwarder.open(wanted.request, wanted.domain, key, "GET", headers, None)
        upstream_ms = (time.perf_counter() - sent) * 1000
        self.stats.observe_upstream(upstream_ms / 1000)
        return Answer(response, request_time, self.clock(), upstream_ms)

    async def _unconditional(self, wanted: Wanted, key: str, headers: Fields) -> Answer:
        """A 304 about another representation than the stored one (RFC 9111 §4.3.4): ask again, unconditionally."""
        log.warning("%s: upstream's 304 names another representation than the stored one; fetching it", key)
        return await self._get(wanted, key, headers)

    async def _revalidated(self, entry: MemoryEntry | DiskEntry, wanted: Wanted, answer: Answer) -> FillHead:
        """A 304 from upstream: the stored entry, with refreshed headers and times, is current.

        The disk half of the meta update runs in a thread (module ``storage.store``, "Threads"); the fill
        stays registered meanwhile, so requests for the key wait for the refreshed entry.
        """
        self.stats.revalidated += 1
        old = entry.meta
        meta = _freshened(old, wanted, answer)
        await self._off_loop(self.storage.update_meta_on_disk, meta)
        self.storage.memory.update_meta(meta.key, meta.variant, meta)
        entry.meta = meta
        if isinstance(entry, MemoryEntry):
            entry.head = None
        if old.vary and conditionals.freshens_as_well(old.headers, answer.response.headers):
            await self._freshen_other_variants(old, wanted, answer)
        return FillHead(
            meta.status,
            meta.headers,
            True,
            entry=entry,
            cache_status="REVALIDATED",
            upstream=answer.response.target.name,
            upstream_ms=answer.upstream_ms,
            upstream_cache=accounting.split_x_cache(answer.response.headers)[1],
        )

    async def _freshen_other_variants(self, revalidated: EntryMeta, wanted: Wanted, answer: Answer) -> None:
        """RFC 9111 §4.3.4: a 304 with a strong ETag updates every stored variant with that ETag, not only the
        one the request selected. The disk half runs in a thread (the index is read there), then the memory half."""
        fields = answer.response.headers

        def update(meta: EntryMeta) -> EntryMeta | None:
            if meta.variant == revalidated.variant or not conditionals.freshens_as_well(meta.headers, fields):
                return None
            return _freshened(meta, wanted, answer)

        if self.storage.disk is not None:
            await self._off_loop(self.storage.update_variants_on_disk, revalidated.key, update)
        for stored in self.storage.memory.variants(revalidated.key):
            meta = update(stored.meta)
            if meta is not None:
                self.storage.memory.update_meta(meta.key, meta.variant, meta)

    async def receive(
        self, fill: Fill, wanted: Wanted, answer: Answer, key: str | None = None, *, whole_range: bool = False
    ) -> None:
        """Stream a response into the fill and store it under ``key`` (default: the fill's).

        ``whole_range``: a 206 whose range is the whole representation, kept as the 200 it equals.
        """
        response = answer.response
        status = 200 if whole_range else response.status
        headers = _with_date(response.headers, answer.response_time)
        if whole_range:
            headers = [(n, v) for n, v in headers if n.lower() != "content-range"]
        policy = wanted.policy
        if wanted.request.rules is not None and response.target.kind == "origin":  # once, where it enters the fleet
            headers, ttl, bypass = ruled.origin_response(wanted.request, status, headers)
            if ttl is not None or bypass:
                ttl = ttl if ttl is not None else policy.ttl_override
                policy = dataclasses.replace(policy, ttl_override=ttl, bypass=policy.bypass or bypass)
        decision = freshness.evaluate("GET", status, wanted.request.headers, headers, policy)
        storing = decisions.store_response(
            storable=decision.storable, refusal=decision.reason, from_peer=response.target.kind == "peer"
        )
        meta = self._publish(fill, wanted.request, answer, key or fill.key, status, headers, decision, storing)
        store = storing.store
        writer = self.storage.disk_writer(meta) if store and self._goes_to_disk(response) else None
        writer = await self._stream(fill, response, writer)
        meta.size = fill.size
        fill.finish()
        if self.hot is not None and response.target.kind == "peer" and decision.storable:
            body = fill.body()
            if body is not None:
                self.hot.offer(meta, body, self.clock())
        if store:
            self.fills.storing(fill)
            try:
                await self._store(fill, meta, writer)
            finally:
                self.fills.stored(fill)

    def _publish(
        self,
        fill: Fill,
        request: Request,
        answer: Answer,
        key: str,
        status: int,
        headers: Fields,
        decision: freshness.Decision,
        storing: decisions.Storing,
    ) -> EntryMeta:
        """Give the waiters the response head; the entry it is (or would be) stored as."""
        response = answer.response
        stored_headers = [
            (n, v) for n, v in headers if n.lower() not in NOT_STORED and n.lower() not in decision.strip_fields
        ]
        initial_age = freshness.initial_age(headers, answer.request_time, answer.response_time)
        meta = _meta(key, request, answer, stored_headers, decision, initial_age, status)
        relayed = [(n, v) for n, v in headers if n.lower() not in NOT_RELAYED and n.lower() != "age"]
        fill.publish(
            FillHead(
                status,
                relayed,
                storing.shareable,
                content_length=response.content_length,
                upstream=response.target.name,
                upstream_ms=answer.upstream_ms,
                vary=keys.parse_vary(headers),
                variant=meta.variant,
                meta=meta,
                extra={"age": initial_age, "response_time": answer.response_time},
                source=response.target.kind,
                upstream_cache=accounting.split_x_cache(response.headers)[1],
            )
        )
        return meta

    async def _stream(self, fill: Fill, response: UpstreamResponse, writer: DiskWriter | None) -> DiskWriter | None:
        """Append the body to the fill (and the disk writer); the writer, None if it failed."""
        async for data in response.chunks():
            self.stats.bytes_upstream += len(data)
            fill.append(data)
            if writer is not None and not writer.write(data):
                writer = None
                self.stats.store_failures += 1
        return writer

    def _goes_to_disk(self, response: UpstreamResponse) -> bool:
        length = response.content_length
        return self.storage.disk is not None and (length is None or length > self.memory_limit)

    async def _off_loop(self, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)`` in a thread; it runs to its end even if this task is cancelled (a half-done commit
        must not meet a closed index), and the proxy waits for it on close (``disk_work``)."""
        if len(self.disk_work) >= DISK_COMMITS_IN_THREADS:
            return call(*args)  # the disk is behind: wait for it here, on the loop (see DISK_COMMITS_IN_THREADS)
        work = asyncio.ensure_future(asyncio.to_thread(call, *args))
        self.disk_work.add(work)
        work.add_done_callback(self.disk_work.discard)
        return await asyncio.shield(work)

    async def purge(self, urls_keys: list[str], prefixes: list[str], tags: list[str], *, soft: bool) -> int:
        """``Storage.purge`` with its disk half in a thread, first: a request served meanwhile may still
        promote an object from the disk into memory, and the memory half, after it, removes that copy too."""
        on_disk = await self._off_loop(self.storage.purge_disk, urls_keys, prefixes, tags, soft)
        return objects_purged(on_disk, self.storage.purge_memory(urls_keys, prefixes, tags, soft))

    async def _store(self, fill: Fill, meta: EntryMeta, writer: DiskWriter | None) -> None:
        """Store the fill's response; the disk halves run in a thread (module ``storage.store``, "Threads").

        The fill stays registered until this returns, so a request meanwhile joins it instead of missing.
        """
        body = fill.body()
        try:
            if writer is not None:
                ok = await self._off_loop(writer.commit, meta)
                if ok and body is not None and len(body) <= self.memory_limit:
                    self.storage.memory.put(MemoryEntry(meta, body))
            elif body is not None:
                self.storage.memory.put(MemoryEntry(meta, body))
                disk = self.storage.disk is not None
                ok = await self._off_loop(self.storage.store_on_disk, meta, body) if disk else True
            else:
                ok = False
        except OSError as exc:
            log.warning("storing %s failed: %s", meta.key, exc)
            ok = False
        if ok:
            self.stats.stored += 1
        else:
            self.stats.store_failures += 1


# --- stored entries and fills, as the request path sees them ----------------------


def find(storage: Storage, key: str, request: Request) -> MemoryEntry | DiskEntry | None:
    """The stored entry of ``key`` whose variant ``request`` selects (RFC 9111 §4.1)."""
    return storage.find(key, lambda vary: keys.variant_key(vary, request.headers))


def serves(head: FillHead, request: Request) -> bool:
    """Whether a fill's answer is the variant ``request`` asks for (RFC 9111 §4.1; ``Vary: *`` is never shared)."""
    if head.entry is not None:
        vary, variant = head.entry.meta.vary, head.entry.meta.variant
    elif head.vary is None:
        return True  # not shareable anyway: the waiter goes to the origin
    else:
        vary, variant = head.vary, head.variant
    return not vary or keys.variant_key(vary, request.headers) == variant


async def fill_done(fill: Fill) -> None:
    """Wait until the fill has its whole body (by reading it to the end)."""
    async for _ in fill.stream():
        pass


# --- entry metadata ---------------------------------------------------------------


def _with_date(headers: Fields, now: float) -> Fields:
    """``headers`` with one valid ``Date``: an absent, invalid or repeated one is replaced by ``now``.

    RFC 9110 §6.6.1: a recipient caching a response without Date MUST add one and MAY replace an invalid one;
    ages and ``Expires`` are then computed against when we received it.
    """
    dates = [value for name, value in headers if name.lower() == "date"]
    if len(dates) == 1 and parse_http_date(dates[0]) is not None:
        return headers
    return [(name, value) for name, value in headers if name.lower() != "date"] + [("Date", format_http_date(now))]


def _tags(headers: Fields) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("cache-tag", "surrogate-key"):
        value = get(headers, name)
        if value:
            found.extend(tag for tag in value.replace(",", " ").split() if tag)
    return tuple(dict.fromkeys(found))


def _meta(
    key: str,
    request: Request,
    answer: Answer,
    headers: Fields,
    decision: freshness.Decision,
    initial_age: float,
    status: int,
) -> EntryMeta:
    """The entry a response is stored as: keyed by ``key`` and the variant the request selects."""
    response = answer.response
    vary = keys.parse_vary(headers) or ()
    reason = response.reason if status == response.status else ""
    return _new_meta(
        key,
        keys.variant_key(vary, request.headers),
        vary,
        status,
        reason,
        headers,
        decision,
        request_time=answer.request_time,
        response_time=answer.response_time,
        initial_age=initial_age,
        size=response.content_length or 0,
    )


def _freshened(old: EntryMeta, wanted: Wanted, answer: Answer) -> EntryMeta:
    """``old`` updated by the 304 ``answer`` (RFC 9111 §3.2, §4.3.4): its fields merged, its lifetime re-evaluated."""
    merged = conditionals.merge_304(old.headers, answer.response.headers)
    merged = [(n, v) for n, v in merged if n.lower() not in NOT_STORED]
    with_date = _with_date(merged, answer.response_time)
    decision = freshness.evaluate("GET", old.status, wanted.request.headers, with_date, wanted.policy)
    strip = decision.strip_fields  # RFC 9111 §3.1: fields named by the 304's no-cache="..." or private="..."
    merged = [(n, v) for n, v in merged if n.lower() not in strip]
    return _refreshed(old, merged, decision, answer.response_time)


def _refreshed(old: EntryMeta, headers: Fields, decision: freshness.Decision, response_time: float) -> EntryMeta:
    """The stored entry after a 304: merged headers, lifetime re-evaluated, a new age baseline."""
    if not decision.storable:  # the 304 made it unstorable (e.g. no-store): keep it, but validate every use
        decision = freshness.Decision(True, "", 0.0, 0.0, 0.0, True, True, frozenset())
    return _new_meta(
        old.key,
        old.variant,
        old.vary,
        old.status,
        old.reason,
        headers,
        decision,
        request_time=response_time,
        response_time=response_time,
        initial_age=0.0,
        size=old.size,
    )


def _new_meta(
    key: str,
    variant: str,
    vary: tuple[str, ...],
    status: int,
    reason: str,
    headers: Fields,
    decision: freshness.Decision,
    *,
    request_time: float,
    response_time: float,
    initial_age: float,
    size: int,
) -> EntryMeta:
    """An entry with the deadlines and flags ``decision`` gives a response of ``initial_age`` at ``response_time``."""
    lifetime = freshness.timing(decision, initial_age, response_time)
    return EntryMeta(
        key=key,
        variant=variant,
        vary=vary,
        status=status,
        reason=reason,
        headers=headers,
        request_time=request_time,
        response_time=response_time,
        initial_age=initial_age,
        fresh_until=lifetime.fresh_until,
        stale_while_revalidate_until=lifetime.stale_while_revalidate_until,
        stale_if_error_until=lifetime.stale_if_error_until,
        must_revalidate=decision.must_revalidate,
        no_cache=decision.no_cache,
        size=size,
        tags=_tags(headers),
    )
