"""Rendezvous (highest random weight) hashing: which member of a set owns a key.

How: every member gets a 64-bit score for the key (blake2b of
``member \\0 key``) and members are ranked by score, highest first. A key's
owner changes only when that owner leaves the set, and then the next-highest
takes over, so every other key stays where it was.

Why one module, at the top of the package and pure: the cache tiers
(:mod:`edgefleet.cache.upstream.tiers`, which peer of a site stores an
object) and the GSLB (:mod:`edgefleet.gslb.policy`, which node a 302 sends a
client to) must agree on the owner of a cache key, and both layers may import
a pure top-level helper (docs/architecture.md, "Layering"). Why blake2b:
stable across processes and Python versions (``hash()`` is salted per
process) and fast enough, about 0.5 µs per (member, key) pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["rank", "score"]


def score(member: str, key: str) -> int:
    """The rendezvous weight of ``member`` for ``key``: an unsigned 64-bit integer."""
    digest = hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(members: Iterable[str], key: str) -> list[str]:
    """``members`` in order of preference for ``key`` (owner first; equal scores by name)."""
    return sorted(members, key=lambda member: (-score(member, key), member))
