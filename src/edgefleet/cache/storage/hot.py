"""Hot objects: small responses a non-owner relayed from its site's owner peer, kept briefly in memory.

Why: inside a site each key is stored once, on its owner (rendezvous
hashing); every other node relays it from the owner, so each request for a
hot object at a non-owner pays a hop. A worker keeps the small ones it
relayed for at most ``seconds`` (``storage.hotObjects``), so the hop is paid
once per interval per worker, not per request.

How it stays honest:

- a hot copy is the owner's response as the owner sent it, with its
  ``Age``: its freshness is computed as for any stored response and then
  capped at ``seconds`` from when it arrived (:meth:`HotObjects.offer` caps
  every deadline, stale ones too), so it is never served beyond what the
  owner's copy allowed, and never stale: past its deadline it is dropped
  and the next request goes to the owner again;
- only fresh, plain-storable responses of status 200 with a whole body
  of at most ``maxObjectBytes`` are kept, under their key and variant
  (``Vary`` is matched as in the memory tier);
- a purge that reaches this node (a Purge, or an unsafe method's
  invalidation) removes matching hot copies, soft purges too: a copy is
  cheap to fetch again;
- a hot hit is this node serving from its own memory, and says so:
  ``X-Cache: HIT from <this node>``, counted as ``local``.

It reuses the memory tier (:class:`~edgefleet.cache.storage.memory.MemoryTier`:
a byte-bounded LRU with variant, tag and prefix indexes) with its own
budget, apart from the node's storage: a hot copy is never written to disk,
never revalidated, and never evicts what the node owns. No I/O, no clock:
the caller passes ``now``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from edgefleet.cache.policy.keys import SLICE_MARK
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.memory import MemoryEntry, MemoryTier

VariantOf = Callable[[tuple[str, ...]], str]


class HotObjects:
    """One worker's hot copies (see the module docstring); ``enabled`` is False when any limit is 0."""

    def __init__(self, max_bytes: int, max_object_bytes: int, seconds: float) -> None:
        self.seconds = seconds
        self.enabled = max_bytes > 0 and max_object_bytes > 0 and seconds > 0
        self.tier = MemoryTier(max_bytes, max_object_bytes)

    def offer(self, meta: EntryMeta, body: bytes, now: float) -> bool:
        """Keep a response relayed from the owner peer, if it qualifies; True if kept."""
        if not self.enabled or not _qualifies(meta, body, now):
            return False
        until = min(meta.fresh_until, now + self.seconds)
        capped = dataclasses.replace(
            meta, fresh_until=until, stale_while_revalidate_until=until, stale_if_error_until=until
        )
        entry = MemoryEntry(capped, body)
        self.tier.put(entry)
        return any(kept is entry for kept in self.tier.variants(meta.key))

    def get_plain(self, key: str) -> MemoryEntry | None:
        """The hot copy of ``key`` without Vary (the hit fast path checks its freshness itself)."""
        return self.tier.get_plain(key)

    def find(self, key: str, variant_of: VariantOf, now: float) -> MemoryEntry | None:
        """The fresh hot copy the request selects (``variant_of``: its secondary key per Vary); expired ones go."""
        matches = [entry for entry in self.tier.variants(key) if variant_of(entry.meta.vary) == entry.meta.variant]
        if not matches:
            return None
        entry = max(matches, key=lambda e: e.meta.response_time)
        if now >= entry.meta.fresh_until or entry.meta.invalidated:
            self.tier.remove(key)
            return None
        return self.tier.get(key, entry.meta.variant)

    def purge(self, keys: Sequence[str], prefixes: Sequence[str], tags: Sequence[str]) -> int:
        """Remove the hot copies a purge matches (soft or not); how many."""
        removed = sum(self.tier.remove(key) for key in keys)
        removed += sum(self.tier.remove_prefix(prefix) for prefix in prefixes)
        return removed + sum(self.tier.remove_tag(tag) for tag in tags)

    def stats(self) -> dict[str, int]:
        return {"hot_bytes": self.tier.bytes_used, "hot_objects": len(self.tier)}


def _qualifies(meta: EntryMeta, body: bytes, now: float) -> bool:
    return (
        meta.status == 200
        and now < meta.fresh_until
        and not meta.no_cache
        and not meta.invalidated
        and len(body) == meta.size
        and SLICE_MARK not in meta.key
    )
