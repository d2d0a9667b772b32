"""The memory tier: a byte-bounded LRU of whole responses.

How. One ``OrderedDict`` maps ``(key, variant)`` to a ``MemoryEntry`` in
least- to most-recently-used order: ``get`` moves the entry to the end,
``put`` appends and then pops from the front until the charged bytes fit
``max_bytes``. Both are O(1). Two side indexes are kept in step with it on
every insert and removal: primary key -> its variants (``variants`` answers
Vary matching without a scan) and tag -> entry keys (purge by tag touches
only the tagged entries). Purge by prefix scans the primary keys; purges are
rare and the tier holds at most a few hundred thousand keys.

Charge. An entry costs ``len(body)`` plus an estimate of what its meta
occupies in the Python heap, so that a flood of tiny objects cannot exceed
the budget by an order of magnitude. Bodies over ``max_object_bytes`` are
refused: they belong to the disk tier, and one of them would flush the
whole LRU.

Vary changes. When a new response for a key varies on a different field
set than the ones already stored, the stored ones are dropped: the origin's
latest answer defines how the resource varies (RFC 9111 section 4.1 prefers
the most recent response), and stale variant sets would otherwise linger.

Variants are bounded: a key holds at most ``MAX_VARIANTS`` of them; storing
one more drops the key's oldest variant (by response time: finding the least
recently used one would scan the LRU; ``keys.MAX_VARIANTS`` says why).

Slices. The slices of a large object (keys ``<key>#slice=<n>``) belong to
the object: removing or invalidating ``key`` reaches them too, through a
third side index, object key -> its slice keys, so that purging an
ordinary key costs no scan.

Soft purge replaces ``meta`` by a copy marked ``invalidated`` and clears the
cached response ``head``; metas are treated as values, never mutated in
place, because a response being served may still hold the old one.

No I/O, no locks: the tier is used from the server's event loop only.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable

from edgefleet.cache.policy.keys import MAX_VARIANTS, SLICE_MARK
from edgefleet.cache.storage.entries import EntryMeta

# Rough Python-heap cost of an entry beyond its body: the objects, the
# dict slots, the strings of its meta. An estimate, not an accounting.
_ENTRY_OVERHEAD = 512
_FIELD_OVERHEAD = 100

EntryKey = tuple[str, str]


def meta_charge(meta: EntryMeta) -> int:
    """Estimated heap bytes of a meta (everything but the body)."""
    fields = sum(len(name) + len(value) + _FIELD_OVERHEAD for name, value in meta.headers)
    tags = sum(len(tag) + _FIELD_OVERHEAD for tag in meta.tags)
    return _ENTRY_OVERHEAD + 2 * len(meta.key) + len(meta.variant) + fields + tags


class MemoryEntry:
    """A response held in memory; ``head`` is the server's cached serialised head."""

    __slots__ = ("body", "charge", "head", "meta")

    def __init__(self, meta: EntryMeta, body: bytes, head: bytes | None = None) -> None:
        self.meta = meta
        self.body = body
        self.head = head
        self.charge = len(body) + meta_charge(meta)

    def __repr__(self) -> str:
        return f"MemoryEntry({self.meta.key!r}, {self.meta.variant!r}, {len(self.body)} bytes)"


class MemoryTier:
    """Byte-bounded LRU of ``MemoryEntry`` (see the module docstring)."""

    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self.bytes_used = 0
        self.evictions = 0
        self._lru: OrderedDict[EntryKey, MemoryEntry] = OrderedDict()
        self._by_key: dict[str, dict[str, MemoryEntry]] = {}
        self._by_tag: dict[str, set[EntryKey]] = {}
        self._slices_of: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, key: str, variant: str) -> MemoryEntry | None:
        """The entry for ``(key, variant)``, marked most recently used."""
        entry_key = (key, variant)
        entry = self._lru.get(entry_key)
        if entry is not None:
            self._lru.move_to_end(entry_key)
        return entry

    def get_plain(self, key: str) -> MemoryEntry | None:
        """The entry of ``key`` if it is its only one and has no Vary (the hit fast path), marked used."""
        stored = self._by_key.get(key)
        if stored is None or len(stored) != 1:
            return None
        entry = stored.get("")
        if entry is None or entry.meta.vary:
            return None
        self._lru.move_to_end((key, ""))
        return entry

    def variants(self, key: str) -> list[MemoryEntry]:
        """Every stored variant of a primary key (LRU order untouched)."""
        stored = self._by_key.get(key)
        return list(stored.values()) if stored else []

    def put(self, entry: MemoryEntry) -> list[EntryMeta]:
        """Store ``entry`` (replacing its key pair); returns the metas evicted to make room."""
        if len(entry.body) > self.max_object_bytes or entry.charge > self.max_bytes:
            return []
        meta = entry.meta
        self._discard((meta.key, meta.variant))
        self._drop_other_vary(meta)
        self._bound_variants(meta.key)
        self._link(entry)
        return self._evict_to_fit()

    def update_meta(self, key: str, variant: str, meta: EntryMeta) -> bool:
        """Replace the meta of a stored entry (after revalidation); False if absent."""
        if (meta.key, meta.variant) != (key, variant):
            raise ValueError(f"update_meta of {key!r} {variant!r} with the meta of another entry")
        entry = self._lru.get((key, variant))
        if entry is None:
            return False
        self._unlink((key, variant), entry)
        self._link(MemoryEntry(meta, entry.body))
        self._lru.move_to_end((key, variant))
        self._evict_to_fit()
        return True

    def remove(self, key: str) -> int:
        return self._remove_all(self._keys_of(key))

    def remove_prefix(self, prefix: str) -> int:
        return self._remove_all(self._keys_with_prefix(prefix))

    def remove_tag(self, tag: str) -> int:
        return self._remove_all(list(self._by_tag.get(tag, ())))

    def invalidate(self, key: str) -> int:
        return self._invalidate_all(self._keys_of(key))

    def invalidate_prefix(self, prefix: str) -> int:
        return self._invalidate_all(self._keys_with_prefix(prefix))

    def invalidate_tag(self, tag: str) -> int:
        return self._invalidate_all(list(self._by_tag.get(tag, ())))

    def _keys_of(self, key: str) -> list[EntryKey]:
        """The entries of ``key``: its variants and its slices' (see the module docstring)."""
        found = [(key, variant) for variant in self._by_key.get(key, ())]
        for sliced in self._slices_of.get(key, ()):
            found += [(sliced, variant) for variant in self._by_key.get(sliced, ())]
        return found

    def _keys_with_prefix(self, prefix: str) -> list[EntryKey]:
        return [(key, variant) for key, stored in self._by_key.items() if key.startswith(prefix) for variant in stored]

    def _remove_all(self, entry_keys: Iterable[EntryKey]) -> int:
        return sum(self._discard(entry_key) is not None for entry_key in entry_keys)

    def _invalidate_all(self, entry_keys: Iterable[EntryKey]) -> int:
        count = 0
        for entry_key in entry_keys:
            entry = self._lru.get(entry_key)
            if entry is not None:
                # Same tags and (nearly) same charge: swap the meta, keep the LRU position.
                entry.meta = dataclasses.replace(entry.meta, invalidated=True)
                entry.head = None
                count += 1
        return count

    def _drop_other_vary(self, meta: EntryMeta) -> None:
        stored = self._by_key.get(meta.key)
        if stored:
            stale = [variant for variant, old in stored.items() if old.meta.vary != meta.vary]
            self._remove_all((meta.key, variant) for variant in stale)

    def _bound_variants(self, key: str) -> None:
        """Make room for one more variant of ``key``: drop its oldest ones past MAX_VARIANTS - 1."""
        stored = self._by_key.get(key)
        if stored is None or len(stored) < MAX_VARIANTS:
            return
        # The oldest responses go: O(MAX_VARIANTS), where the LRU position would cost a scan of the whole tier.
        by_age = sorted(stored.values(), key=lambda entry: entry.meta.response_time)
        excess = [entry.meta.variant for entry in by_age[: len(stored) - MAX_VARIANTS + 1]]
        self._remove_all((key, variant) for variant in excess)
        self.evictions += len(excess)

    def _evict_to_fit(self) -> list[EntryMeta]:
        evicted = []
        while self.bytes_used > self.max_bytes and self._lru:
            entry_key, entry = self._lru.popitem(last=False)
            self._unlink(entry_key, entry, in_lru=False)
            evicted.append(entry.meta)
        self.evictions += len(evicted)
        return evicted

    def _discard(self, entry_key: EntryKey) -> MemoryEntry | None:
        entry = self._lru.get(entry_key)
        if entry is not None:
            self._unlink(entry_key, entry)
        return entry

    def _link(self, entry: MemoryEntry) -> None:
        meta = entry.meta
        entry_key = (meta.key, meta.variant)
        self._lru[entry_key] = entry
        self._by_key.setdefault(meta.key, {})[meta.variant] = entry
        if SLICE_MARK in meta.key:
            self._slices_of.setdefault(meta.key.partition(SLICE_MARK)[0], set()).add(meta.key)
        for tag in meta.tags:
            self._by_tag.setdefault(tag, set()).add(entry_key)
        self.bytes_used += entry.charge

    def _unlink_slice(self, key: str) -> None:
        base = key.partition(SLICE_MARK)[0]
        slices = self._slices_of[base]
        slices.discard(key)
        if not slices:
            del self._slices_of[base]

    def _unlink(self, entry_key: EntryKey, entry: MemoryEntry, in_lru: bool = True) -> None:
        if in_lru:
            del self._lru[entry_key]
        key, variant = entry_key
        stored = self._by_key[key]
        del stored[variant]
        if not stored:
            del self._by_key[key]
            if SLICE_MARK in key:
                self._unlink_slice(key)
        for tag in entry.meta.tags:
            tagged = self._by_tag[tag]
            tagged.discard(entry_key)
            if not tagged:
                del self._by_tag[tag]
        self.bytes_used -= entry.charge
