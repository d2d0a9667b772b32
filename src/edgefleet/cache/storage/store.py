"""The two storage tiers behind one facade: what the proxy calls.

Finding a response (RFC 9111 section 4.1). A primary key may hold several
variants, each stored with the ``Vary`` field names of its response and the
secondary key computed from the request that fetched it. ``find`` asks the
caller to compute the *current* request's secondary key for each stored
``vary`` tuple (``variant_of``) and keeps the variants whose key matches;
of several matches the most recent response wins. The memory tier is asked
first, then the disk tier. A disk hit small enough for memory is read whole
and promoted, so the next hit on it costs no system call.

The disk lookup first tries the variant "" directly (one ``open``, no
SQLite): most responses have no ``Vary``, and the tiers keep one ``Vary``
set per key, so if that object exists and matches it is the answer. Only
otherwise does it list the key's variants through the index.

Writes. Small bodies known in full go to both tiers (``store_small``);
streamed bodies go to the disk through ``disk_writer`` (the lead's fill
code decides which). Purges apply to both tiers; the count reported per
purged key, prefix or tag is the larger of the two tiers' counts, since the
memory tier mostly mirrors the disk one.

Several worker processes share one disk tier but each has its own memory
tier: a purge must be applied in every worker (the disk half is idempotent).

Threads. The memory tier belongs to the event loop. The disk tier may be
called from threads (see :mod:`.disk`): the fetcher runs the disk half of a
store (``store_on_disk``, a writer's ``commit``) in a thread, because it
takes the index's cross-process write lock and may evict
(``bench/cache_index_stall.py`` measured stores on the loop stalling it by
up to 1.7 s under contention from another worker). So do the disk halves
of a 304's meta update (``update_meta_on_disk``, ``update_variants_on_disk``) and of purges
(``purge_disk``): the disk half first, then the memory half on the loop, so
that a request served meanwhile cannot promote a purged disk object back
into memory. Lookups stay on the loop:
a plain hit opens a file and reads no SQLite, and a miss does one indexed
read on a WAL reader, which never waits for writers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from edgefleet.cache.errors import StorageError
from edgefleet.cache.storage.disk import DiskEntry, DiskTier, DiskWriter
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.memory import MemoryEntry, MemoryTier

log = logging.getLogger(__name__)

VariantOf = Callable[[tuple[str, ...]], str]


class _Purgeable(Protocol):
    def remove(self, key: str) -> int: ...
    def remove_prefix(self, prefix: str) -> int: ...
    def remove_tag(self, tag: str) -> int: ...
    def invalidate(self, key: str) -> int: ...
    def invalidate_prefix(self, prefix: str) -> int: ...
    def invalidate_tag(self, tag: str) -> int: ...


def _purge_one(tier: _Purgeable, kind: str, target: str, soft: bool) -> int:
    if kind == "key":
        return tier.invalidate(target) if soft else tier.remove(target)
    if kind == "prefix":
        return tier.invalidate_prefix(target) if soft else tier.remove_prefix(target)
    return tier.invalidate_tag(target) if soft else tier.remove_tag(target)


def _purge_tier(
    tier: _Purgeable, urls_keys: Sequence[str], prefixes: Sequence[str], tags: Sequence[str], soft: bool
) -> list[int]:
    targets = [("key", t) for t in urls_keys] + [("prefix", t) for t in prefixes] + [("tag", t) for t in tags]
    return [_purge_one(tier, kind, target, soft) for kind, target in targets]


def objects_purged(on_disk: Sequence[int], in_memory: Sequence[int]) -> int:
    """Objects a purge hit: per target the larger of the two tiers' counts (memory mostly mirrors the disk)."""
    if not on_disk:
        return sum(in_memory)
    return sum(max(disk, memory) for disk, memory in zip(on_disk, in_memory, strict=True))


def _most_recent_match(metas: Sequence[EntryMeta], variant_of: VariantOf) -> list[EntryMeta]:
    """The metas the request matches, most recent response first."""
    wanted: dict[tuple[str, ...], str] = {}
    matches = []
    for meta in metas:
        if meta.vary not in wanted:
            wanted[meta.vary] = variant_of(meta.vary)
        if wanted[meta.vary] == meta.variant:
            matches.append(meta)
    return sorted(matches, key=lambda meta: meta.response_time, reverse=True)


class Storage:
    """The memory tier in front of an optional shared disk tier (see the module docstring)."""

    def __init__(self, memory: MemoryTier, disk: DiskTier | None) -> None:
        self.memory = memory
        self.disk = disk

    def find(self, key: str, variant_of: VariantOf) -> MemoryEntry | DiskEntry | None:
        """The stored response matching the request, or None. A ``DiskEntry`` must be closed."""
        in_memory = self._find_in_memory(key, variant_of)
        if in_memory is not None or self.disk is None:
            return in_memory
        on_disk = self._find_on_disk(self.disk, key, variant_of)
        return self._promoted(on_disk) if on_disk is not None else None

    def _find_in_memory(self, key: str, variant_of: VariantOf) -> MemoryEntry | None:
        stored = self.memory.variants(key)
        if not stored:
            return None
        matches = _most_recent_match([entry.meta for entry in stored], variant_of)
        return self.memory.get(key, matches[0].variant) if matches else None

    def _find_on_disk(self, disk: DiskTier, key: str, variant_of: VariantOf) -> DiskEntry | None:
        plain = disk.lookup(key, "")
        if plain is not None:
            if variant_of(plain.meta.vary) == "":
                return plain
            plain.close()
        for meta in _most_recent_match(disk.variants(key), variant_of):
            entry = disk.lookup(key, meta.variant)
            if entry is not None:
                return entry
        return None

    def _promoted(self, entry: DiskEntry) -> MemoryEntry | DiskEntry | None:
        if entry.size > self.memory.max_object_bytes:
            return entry
        with entry:
            try:
                body = entry.read_body()
            except (OSError, StorageError) as exc:
                log.warning("storage: cannot read %s for promotion: %s", entry.path, exc)
                return None
        promoted = MemoryEntry(entry.meta, body)
        self.memory.put(promoted)
        return promoted

    def store_small(self, meta: EntryMeta, body: bytes) -> bool:
        """Store a complete body in both tiers; False if the disk refused it (full, error)."""
        self.memory.put(MemoryEntry(meta, body))
        return self.store_on_disk(meta, body)

    def store_on_disk(self, meta: EntryMeta, body: bytes) -> bool:
        """The disk half of :meth:`store_small` (True without a disk tier); safe to call from a thread."""
        if self.disk is None:
            return True
        writer = self.disk.writer(meta)
        if writer.write(body) and writer.commit(meta):
            return True
        writer.abort()
        return False

    def disk_writer(self, meta: EntryMeta) -> DiskWriter | None:
        """A streaming disk writer, or None without a disk tier."""
        return self.disk.writer(meta) if self.disk is not None else None

    def update_meta(self, meta: EntryMeta) -> None:
        """Replace a stored response's meta in both tiers (after a 304 revalidation)."""
        self.memory.update_meta(meta.key, meta.variant, meta)
        self.update_meta_on_disk(meta)

    def update_meta_on_disk(self, meta: EntryMeta) -> None:
        """The disk half of :meth:`update_meta`; safe to call from a thread."""
        if self.disk is not None:
            self.disk.update_meta(meta.key, meta.variant, meta)

    def update_variants_on_disk(self, key: str, update: Callable[[EntryMeta], EntryMeta | None]) -> int:
        """Replace the meta of each stored variant of ``key`` that ``update`` maps to a new one (a 304 that
        names several, RFC 9111 §4.3.4); safe to call from a thread. How many were updated."""
        if self.disk is None:
            return 0
        updated = 0
        for meta in self.disk.variants(key):
            new = update(meta)
            if new is not None and self.disk.update_meta(key, meta.variant, new):
                updated += 1
        return updated

    def purge(self, urls_keys: Sequence[str], prefixes: Sequence[str], tags: Sequence[str], soft: bool) -> int:
        """Remove (or, ``soft``, mark for revalidation) by key, key prefix and tag; returns objects hit.

        Both tiers, here; the request path runs :meth:`purge_disk` in a thread, then :meth:`purge_memory`
        (``Fetcher.purge``), and adds the two with :func:`objects_purged` as this does.
        """
        on_disk = self.purge_disk(urls_keys, prefixes, tags, soft)
        return objects_purged(on_disk, self.purge_memory(urls_keys, prefixes, tags, soft))

    def purge_memory(
        self, urls_keys: Sequence[str], prefixes: Sequence[str], tags: Sequence[str], soft: bool
    ) -> list[int]:
        """The memory half of :meth:`purge`: objects hit per target (keys, then prefixes, then tags)."""
        return _purge_tier(self.memory, urls_keys, prefixes, tags, soft)

    def purge_disk(
        self, urls_keys: Sequence[str], prefixes: Sequence[str], tags: Sequence[str], soft: bool
    ) -> list[int]:
        """The disk half of :meth:`purge` (no counts without a disk tier); safe to call from a thread."""
        return [] if self.disk is None else _purge_tier(self.disk, urls_keys, prefixes, tags, soft)

    def stats(self) -> dict[str, int]:
        disk = self.disk
        return {
            "memory_bytes": self.memory.bytes_used,
            "memory_objects": len(self.memory),
            "disk_bytes": disk.bytes_used() if disk is not None else 0,
            "disk_objects": disk.count() if disk is not None else 0,
            "evictions": self.memory.evictions + (disk.evictions if disk is not None else 0),
        }
