"""The node's rate-limit buckets in shared memory: one table for every worker, like nginx's ``limit_req`` zone.

Why: with ``workers: N`` the kernel spreads a client's connections over the workers; buckets kept per
worker would let a client spread over N connections get N times the configured rate. This table makes
the limit exact per node.

How: the master makes one region per cache process (:func:`create_region`: a ``memfd``, sized from the
config's ``rateLimit.slots``) and passes its file descriptor to every worker it starts
(``--rate-table-fd``); it keeps the descriptor for its whole life, so the buckets survive a worker's
restart and a config reload. A worker started alone makes a private one (:meth:`BucketTable.private`).

Layout: a 64-byte header (magic, number of sets, ways, a 32-byte random secret the master draws), then
``sets`` sets of :data:`WAYS` slots; a slot is (tag: u64, tokens: f64, last: f64), 24 bytes. A key's
64-bit tag is BLAKE2b keyed with the secret over the bucket's identity (Domain, rule, action, rate and
burst) and the key (client address or header value): the tag picks the set (``tag % sets``) and names
the bucket in it. The secret makes the placement unpredictable, so a client cannot choose keys that all
fall into one set to evict someone's bucket on purpose; a changed rate or burst is a new identity (fresh
buckets, as :meth:`Program.adopt_state` does in one process). A key not in its set takes an empty slot
(tag 0) or evicts the set's least recently used bucket (the earliest ``last``), counted in
``rate_limit_evictions``. Memory is ``64 + 24 * slots`` bytes whatever the number of clients.

Concurrency: each take locks its set with a POSIX byte-range lock (``fcntl.lockf`` on byte ``set`` of
the descriptor; blocking), reads the clock, reads the set, decides with the pure
:func:`~edgefleet.cache.policy.rules.ratelimit.take_token` and writes one slot, then unlocks. Sets are
independent, so workers contend only on the same set. The kernel drops a dead worker's locks, so a worker
killed mid-take cannot wedge the others; a slot half written by it is clamped on the next read (tokens
kept within ``[0, burst]``). Two syscalls per take are the cost (``bench/ratelimit_take.py``); only
requests that reach a rate-limit action pay it, and a cache of ``workers: 1`` (the master starts a
worker again only after the previous one exited) and a private table take no lock at all.

Clock: ``time.monotonic`` (CLOCK_MONOTONIC, one clock for every process of the machine, never stepped
by NTP), read inside the lock so that writes are ordered in time; the ``now`` a caller passes is not
used.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable

from edgefleet.cache.errors import ConfigError
from edgefleet.cache.policy.rules.ratelimit import Limiter, LimiterFactory, pick_way, take_token

MAGIC = b"EFRATE01"
WAYS = 8
"""Slots per set: a key can live in any of them (set-associative)."""
DEFAULT_SLOTS = 262_144
MIN_SLOTS = 64
MAX_SLOTS = 4_194_304
"""At most 96 MiB of shared memory."""
HEADER = struct.Struct("<8sII32s")
HEADER_BYTES = 64
SLOT = struct.Struct("<Qdd")
SET = struct.Struct("<" + "Qdd" * WAYS)
SECRET_BYTES = 32
TAG_MEMO = 4096
"""Tags kept per rate-limit action and worker (cleared when full): a returning client skips the hash."""
MEMO_KEY_CHARS = 64
"""Only keys up to this long are memoised (any address is; a long header value is hashed each time)."""

__all__ = ["BucketTable", "SharedLimiter", "create_region", "region_bytes"]


def region_bytes(slots: int) -> int:
    """Bytes of a region of at least ``slots`` slots (rounded up to whole sets)."""
    return HEADER_BYTES + _sets(slots) * WAYS * SLOT.size


def _sets(slots: int) -> int:
    return max(1, -(-min(max(slots, MIN_SLOTS), MAX_SLOTS) // WAYS))


def create_region(slots: int) -> int:
    """A new, zeroed region for ``slots`` buckets with a fresh secret: its descriptor (close-on-exec; give it
    to a child with ``pass_fds``). The caller owns it and closes it when no worker needs the table any more."""
    fd = _anonymous_file()
    try:
        os.ftruncate(fd, region_bytes(slots))
        os.pwrite(fd, HEADER.pack(MAGIC, _sets(slots), WAYS, os.urandom(SECRET_BYTES)), 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def _anonymous_file() -> int:
    """An unnamed file in memory: a memfd, else an unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("edgefleet-ratelimit", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="edgefleet-ratelimit-")
    os.unlink(path)
    return fd


class BucketTable:
    """One process's view of a shared region (module docstring); a take locks the key's set (if ``locked``)."""

    def __init__(
        self, fd: int, *, owned: bool = False, locked: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Map the region behind ``fd`` (ConfigError if it is not one); ``owned``: close ``fd`` in :meth:`close`;
        ``locked``: False only when no other process can use the region at the same time (``workers: 1``)."""
        try:
            size = os.fstat(fd).st_size
            self._map = mmap.mmap(fd, size)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the rate-limit table (fd {fd}) cannot be mapped: {exc}") from None
        magic, sets, ways, secret = HEADER.unpack(self._map[: HEADER.size].ljust(HEADER.size, b"\0"))
        if magic != MAGIC or ways != WAYS or sets < 1 or size < HEADER_BYTES + sets * WAYS * SLOT.size:
            self._map.close()
            raise ConfigError(f"fd {fd} is not an edgefleet rate-limit table (restart the cache)")
        self._fd = fd
        self._owned = owned
        self._locked = locked
        self._sets: int = sets
        self._secret: bytes = secret
        self._clock = clock
        self.limited = 0
        """Requests refused by this process (429s of rate-limit actions)."""
        self.evictions = 0
        """Buckets this process evicted from a full set to make room for another key."""

    @classmethod
    def private(cls, slots: int = DEFAULT_SLOTS, clock: Callable[[], float] = time.monotonic) -> BucketTable:
        """A table of this process only (a worker run without a master, tests): no locks."""
        return cls(create_region(slots), owned=True, locked=False, clock=clock)

    @property
    def slots(self) -> int:
        return self._sets * WAYS

    def limiters_for(self, domain: str) -> LimiterFactory:
        """The factory a Domain's rules compile with (``CompileEnv.limiters``): buckets named by Domain too."""

        def make(identity: str, rate: float, burst: float, size: int) -> Limiter:
            return SharedLimiter(self, f"{domain}\0{identity}\0{float(rate)!r}\0{float(burst)!r}", rate, burst)

        return make

    def take(self, tag: int, rate: float, burst: float) -> int | None:
        """Take a token from the bucket tagged ``tag``: None when allowed, else the seconds to wait (>= 1)."""
        index = tag % self._sets
        if not self._locked:
            return self._take(index, tag, rate, burst)
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, index)
        try:
            return self._take(index, tag, rate, burst)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, index)

    def _take(self, index: int, tag: int, rate: float, burst: float) -> int | None:
        """:meth:`take` in set ``index``, which this process has to itself (locked, or no other process)."""
        offset = HEADER_BYTES + index * SET.size
        now = self._clock()
        values = SET.unpack_from(self._map, offset)
        tags = values[0::3]
        way, found = pick_way(tags, values[2::3], tag)
        if found:
            tokens, last = _clamped(values[3 * way + 1], values[3 * way + 2], burst, now)
        else:
            if tags[way]:
                self.evictions += 1
            tokens, last = burst, now
        tokens, last, wait = take_token(tokens, last, now, rate, burst)
        SLOT.pack_into(self._map, offset + way * SLOT.size, tag, tokens, last)
        if wait is not None:
            self.limited += 1
        return wait

    def hasher(self, identity: str) -> hashlib.blake2b:
        """BLAKE2b keyed with the table's secret, fed with ``identity``: copy it and add a key to get its tag."""
        return hashlib.blake2b(identity.encode("utf-8", "surrogateescape") + b"\0", digest_size=8, key=self._secret)

    def occupied(self) -> int:
        """Slots holding a bucket (a scan of the whole table, without locks: for tests and tools)."""
        return sum(
            1
            for index in range(self._sets)
            for tag in SET.unpack_from(self._map, HEADER_BYTES + index * SET.size)[0::3]
            if tag
        )

    def stats(self) -> dict[str, int]:
        """This process's counters, for the worker's stats snapshot (summed over workers by the master)."""
        return {"rate_limited": self.limited, "rate_limit_evictions": self.evictions}

    def close(self) -> None:
        self._map.close()
        if self._owned:
            os.close(self._fd)


def _clamped(tokens: float, last: float, burst: float, now: float) -> tuple[float, float]:
    """A stored bucket made sane (a torn write): tokens within [0, burst] (NaN: 0), a time not after now."""
    if not 0.0 <= tokens <= burst:
        tokens = burst if tokens > burst else 0.0
    if not last <= now:  # also NaN; the clock is read under the lock, so only a torn write gets here
        last = now
    return tokens, last


class SharedLimiter:
    """One rate-limit action's buckets in a :class:`BucketTable` (a :class:`Limiter`)."""

    __slots__ = ("_hasher", "_table", "_tags", "burst", "rate")

    def __init__(self, table: BucketTable, identity: str, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._table = table
        self._hasher = table.hasher(identity)
        self._tags: dict[str, int] = {}
        self.rate = rate
        self.burst = float(burst)

    def take(self, key: str, now: float) -> int | None:
        """Take a token for ``key`` (``now`` is not used: the table reads the machine's monotonic clock)."""
        tags = self._tags
        tag = tags.get(key)
        if tag is None:
            digest = self._hasher.copy()
            digest.update(key.encode("utf-8", "surrogateescape"))
            tag = int.from_bytes(digest.digest(), "little") or 1  # 0 marks an empty slot
            if len(key) <= MEMO_KEY_CHARS:
                if len(tags) >= TAG_MEMO:
                    tags.clear()
                tags[key] = tag
        return self._table.take(tag, self.rate, self.burst)

    def adopt(self, other: Limiter) -> None:
        """Nothing to carry: the buckets stay in the table under the same identity."""
