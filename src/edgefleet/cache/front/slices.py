"""Range requests for large objects, answered from slices so that a range never pulls the whole object.

How (as nginx's slice module): a GET with a Range that misses is answered
from ``sliceBytes``-aligned slices. Each slice is fetched with ``Range:
bytes=a-b`` (collapsed per slice like any fill, and routed to the slice's
owner in the site, since its key differs) and stored as its own entry,
``<key>#slice=<n>``, whose Content-Range states the object's length. The
slice holding the first requested byte tells that length, so the reply head
goes out once it is in; the other slices are fetched, in order, as the body
is written, and only the first one and the current one are held.

A slice is used like any stored entry: fresh, served stale while it
revalidates, revalidated, or served stale when upstream fails. Slices of one
reply must be of one version of the object (same length, ETag and
Last-Modified: ``ranges.same_representation``, RFC 9111 §3.4); on a
mix, every slice of the key is purged and the connection ends, since the
head is already out. An upstream that ignores the Range and sends the whole
object (or an error) is answered as a plain miss; an ``If-Range`` that does
not match, or ranges the slices cannot answer, make the whole object answer
instead (``False`` from :meth:`Slices.send`). A full GET still fills the
whole object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from edgefleet.cache import accounting
from edgefleet.cache.errors import UpstreamError
from edgefleet.cache.front import responses
from edgefleet.cache.front.passthrough import Passthrough
from edgefleet.cache.front.replies import Client, Replies, write_pieces, write_ranges
from edgefleet.cache.policy import decisions, keys, ranges
from edgefleet.cache.storage.disk import DiskEntry
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.memory import MemoryEntry
from edgefleet.cache.upstream.fetches import Fetcher, Stored, Wanted, fill_done, find, serves
from edgefleet.cache.upstream.fills import Fill, FillEntry, FillHead
from edgefleet.cache.wire.headers import get
from edgefleet.cache.wire.http1 import Request

log = logging.getLogger("edgefleet.cache")


@dataclass(slots=True)
class Slice:
    """One slice of a large object as a request got it.

    ``entry`` is the slice (a 206 whose Content-Range places it in the
    object); without it, ``fill``/``head`` hold what upstream answered
    instead (the whole object, an error) and ``cache_status`` is "PASS" when
    that answer is not this request's to use.
    """

    entry: Stored | None
    cache_status: str
    fill: Fill | None = None
    head: FillHead | None = None


class Slices:
    """Answers one worker's Range misses from slices (see the module docstring)."""

    def __init__(self, slice_bytes: int, fetcher: Fetcher, replies: Replies, passthrough: Passthrough) -> None:
        self.slice_bytes = slice_bytes
        self.fetcher = fetcher
        self.replies = replies
        self.passthrough = passthrough
        self.storage = fetcher.storage
        self.stats = fetcher.stats
        self.clock = fetcher.clock

    def applies(self, request: Request, key: str) -> bool:
        """Whether a Range miss is answered from slices: a GET with a Range we honour, no whole fetch in flight."""
        if request.method != "GET" or self.fetcher.fills.get(key) is not None:
            return False
        value = get(request.headers, "range")
        return value is not None and ranges.slice_anchor(value) is not None

    async def send(self, client: Client, wanted: Wanted, started: float) -> bool:
        """Answer a Range miss from the slices its ranges cover; False: the whole object must answer instead."""
        request = wanted.request
        value = get(request.headers, "range") or ""
        anchor = (ranges.slice_anchor(value) or 0) // self.slice_bytes
        try:
            first = await self._slice(wanted, anchor)
        except UpstreamError as exc:
            await self.replies.send_error(client, request, exc.status, exc.message)
            return True
        if first.entry is None:
            await self._not_a_slice(client, wanted, first, started)
            return True
        reply = _plan(request, first.entry.meta, value)
        if reply is None:
            return False
        self._count(first.cache_status, reply.status)
        self.replies.write_head(client, request, reply, first.entry.meta, first.cache_status)
        write_range = partial(self._write_range, client, wanted, {anchor: first}, first.entry)
        try:
            sent = await write_ranges(client, reply.pieces, write_range)
        except UpstreamError as exc:
            log.warning("%s %s: a slice failed: %s", request.method, request.target, exc.message)
            request.keep_alive = False  # the head is out: ending the connection is all that is left
            sent = 0
        self.replies.done(request, client, reply.status, sent, first.cache_status, started)
        return True

    async def _not_a_slice(self, client: Client, wanted: Wanted, answer: Slice, started: float) -> None:
        """Upstream answered the slice request with the whole object or an error: relay that answer."""
        if answer.cache_status == "PASS" or answer.fill is None or answer.head is None:
            await self.passthrough.send(client, wanted.request, wanted.domain, wanted.key, started)
            return
        self.stats.misses += 1
        await self.replies.send_fill(client, wanted.request, answer.fill, answer.head, started)

    def _count(self, cache_status: str, status: int) -> None:
        if status == 304:
            self.stats.not_modified += 1
        elif cache_status == "HIT":
            self.stats.hits += 1
        elif cache_status == "STALE":
            self.stats.stale_served += 1
        else:
            self.stats.misses += 1

    async def _write_range(
        self, client: Client, wanted: Wanted, got: dict[int, Slice], reference: Stored, first: int, last: int
    ) -> int:
        """Write the object's bytes ``first..last`` from the slices that hold them, fetching them in order."""
        size = self.slice_bytes
        sent = 0
        for index in range(first // size, last // size + 1):
            entry = await self._slice_entry(wanted, index, got, reference)
            base = index * size
            part = (max(first, base) - base, min(last, base + size - 1) - base)
            sent += await write_pieces(client, entry, [part])
        return sent

    async def _slice_entry(self, wanted: Wanted, index: int, got: dict[int, Slice], reference: Stored) -> Stored:
        """Slice ``index`` for the body being written; UpstreamError unless it is a slice of the same object.

        ``got`` keeps the first slice and the last one used (pieces come in
        order), so that a large range does not hold every slice it passed.
        """
        answer = got.get(index)
        if answer is None:
            answer = await self._slice(wanted, index)
            for passed in list(got)[1:]:
                del got[passed]
            got[index] = answer
        entry = answer.entry
        if entry is None:
            raise UpstreamError(502, f"slice {index}: upstream did not answer with a range")
        if not ranges.same_representation(
            entry.meta.headers, complete_length(entry.meta), reference.meta.headers, complete_length(reference.meta)
        ):
            await self.fetcher.purge([], [wanted.key + keys.SLICE_MARK], [], soft=False)  # mixed versions: refetch all
            raise UpstreamError(502, f"slice {index} belongs to another version of the object")
        return entry

    async def _slice(self, wanted: Wanted, index: int) -> Slice:
        """Slice ``index``: stored and fresh, revalidated, or fetched (one fetch per slice in this worker)."""
        slice_key = keys.slice_key(wanted.key, index)
        entry = find(self.storage, slice_key, wanted.request)
        if entry is not None:
            lookup = decisions.on_lookup(entry.meta, self.clock())
            if lookup is decisions.Lookup.HIT:
                return Slice(entry, "HIT")
            if lookup is decisions.Lookup.STALE:
                if self.fetcher.fills.get(slice_key) is None:
                    self._start_fill(wanted, index, entry)
                return Slice(entry, "STALE")
        fill = self.fetcher.fills.get(slice_key)
        leader = fill is None
        if fill is None:
            fill = self._start_fill(wanted, index, entry)
        try:
            return await _from_fill(fill, wanted.request, leader)
        except UpstreamError:
            if entry is not None and decisions.stale_on_error(entry.meta, self.clock()):
                return Slice(entry, "STALE")
            raise

    def _start_fill(self, wanted: Wanted, index: int, entry: MemoryEntry | DiskEntry | None) -> Fill:
        slice_key = keys.slice_key(wanted.key, index)
        return self.fetcher.start(slice_key, lambda fill: self._fetch(fill, wanted, index, entry))

    async def _fetch(self, fill: Fill, wanted: Wanted, index: int, entry: MemoryEntry | DiskEntry | None) -> None:
        """Fetch one slice with a Range request; a 206 is the slice, anything else is the whole answer."""
        first = index * self.slice_bytes
        headers = self.fetcher.forwarder.request_headers(wanted.request, cacheable=True)
        headers.append(("Range", f"bytes={first}-{first + self.slice_bytes - 1}"))
        answer = await self.fetcher.ask(fill, wanted, headers, entry)
        if answer is None:
            return
        response = answer.response
        if response.status != 206:  # the whole object (Range ignored) or an error: the object's answer
            await self.fetcher.receive(fill, wanted, answer, wanted.key)
            return
        placed = ranges.parse_content_range(get(response.headers, "content-range"))
        if placed is None or placed[0] != first:
            response.close()
            raise UpstreamError(502, f"{response.target.name} did not answer slice {index} with its range")
        whole = placed[0] == 0 and placed[1] == placed[2] - 1  # a small object: one slice is all of it
        await self.fetcher.receive(fill, wanted, answer, wanted.key if whole else None, whole_range=whole)


async def _from_fill(fill: Fill, request: Request, leader: bool) -> Slice:
    head = await fill.head
    if not leader and (not head.shareable or not serves(head, request)):
        return Slice(None, "PASS")
    if head.entry is not None:
        return Slice(head.entry, head.cache_status)
    fetched = accounting.fetched_status(head.source)  # MISS (origin), PEER or PARENT
    if head.status != 206 or head.meta is None:
        return Slice(None, fetched, fill, head)
    await fill_done(fill)
    return Slice(FillEntry(head.meta, fill), fetched)


def _plan(request: Request, meta: EntryMeta, value: str) -> responses.Reply | None:
    """The reply to the Range ``value`` from slices of the object ``meta`` is a slice of; None: send the whole."""
    if not ranges.if_range_matches(
        get(request.headers, "if-range"), get(meta.headers, "etag"), get(meta.headers, "last-modified")
    ):
        return None
    return responses.plan_slices(request.headers, meta.headers, value, complete_length(meta))


def complete_length(meta: EntryMeta) -> int:
    """The object's length a stored slice's Content-Range states (its own size if it has none)."""
    placed = ranges.parse_content_range(get(meta.headers, "content-range"))
    return placed[2] if placed is not None else meta.size
