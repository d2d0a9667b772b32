"""The single writer of the SQLite log: group commit on a dedicated thread.

How: callers on the event loop put ``(operation, future)`` pairs on a
thread-safe queue. The writer thread takes everything that is pending (up to
``max_batch``), opens one ``BEGIN IMMEDIATE`` transaction, applies each
operation in order (each write gets its own revision and is checked against
its own precondition: a failed precondition fails that operation only),
expires due leases in the same transaction, and commits once. The batch's
results and events go back to the loop in one ``deliver(batch)`` call, which
resolves the futures and fans the events out in revision order.

Why: with ``synchronous=FULL`` every commit costs an fsync of the WAL, which
dominates a write (milliseconds against microseconds of SQL). One fsync per
batch instead of per write multiplies throughput by the number of
concurrent writers, while each acknowledged write is still on disk. A
single writer also makes revisions trivially gap-free and ordered.

The writer also reaps leases: it sleeps on the queue no longer than until
the next lease expiry (at most a second, to survive wall-clock jumps), and
every transaction starts by deleting the keys of expired leases, each
deletion being an ordinary event. Expiry times are wall-clock, so leases
also expire across restarts.

If SQLite fails (disk full, I/O error), or anything else goes wrong while
applying a batch, the transaction is rolled back, every operation of the
batch fails with ``StoreError`` and in-memory state is reloaded from the
database; the thread itself never dies, so no caller waits forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgefleet.store.interface import (
    AlreadyExists,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    KeyValue,
    Lease,
    LeaseNotFound,
    NotFound,
    StoreError,
)
from edgefleet.store.sqlite_log import KV_COLUMNS, Meta, kv_from_row, read_meta

# The most a writer sleeps while leases exist: bounds the damage of a
# wall-clock jump on lease expiry.
MAX_REAP_INTERVAL = 1.0

_INSERT = (
    "INSERT INTO log (rev, key, create_rev, prev_rev, deleted, value, lease, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_NEWEST = f"SELECT {KV_COLUMNS}, deleted FROM log WHERE key = ? ORDER BY rev DESC LIMIT 1"
# Keep rows >= R and, below R, only each key's newest row if it is live.
_COMPACT = (
    "DELETE FROM log WHERE rev < :r AND (deleted = 1 OR rev < "
    "(SELECT MAX(n.rev) FROM log AS n WHERE n.key = log.key AND n.rev < :r))"
)


@dataclass(frozen=True, slots=True)
class Create:
    key: str
    value: bytes
    lease: int


@dataclass(frozen=True, slots=True)
class Update:
    key: str
    value: bytes
    expected: int
    lease: int


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    expected: int


@dataclass(frozen=True, slots=True)
class Compact:
    revision: int


@dataclass(frozen=True, slots=True)
class GrantLease:
    ttl: int


@dataclass(frozen=True, slots=True)
class KeepAlive:
    lease_id: int


@dataclass(frozen=True, slots=True)
class RevokeLease:
    lease_id: int


Operation = Create | Update | Delete | Compact | GrantLease | KeepAlive | RevokeLease
Request = tuple[Operation, "asyncio.Future[Any]"]


@dataclass(slots=True)
class Batch:
    """What one commit produced: a result (value or exception) per request, and events."""

    results: list[tuple[asyncio.Future[Any], object]]
    events: list[Event]
    revision: int


class LogWriter:
    """Owns the write connection; applies queued operations in group commits."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        meta: Meta,
        deliver: Callable[[Batch], None],
        on_exit: Callable[[], None],
        max_batch: int = 1000,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.revision = meta.revision
        self._clock = clock
        self._conn = conn
        self._compacted = meta.compacted
        self._deliver = deliver
        self._on_exit = on_exit
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._leases = self._load_leases()
        self._events: list[Event] = []
        self._thread = threading.Thread(target=self._run, name="edgefleet-sqlite-writer", daemon=True)

    # -- control, from the store ------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, operation: Operation, future: asyncio.Future[Any]) -> None:
        self._queue.put((operation, future))

    def stop(self) -> None:
        """Finish what is queued, then exit the thread (and close the connection)."""
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def close_unstarted(self) -> None:
        self._conn.close()

    def reap_expired(self) -> Batch:
        """One synchronous transaction expiring due leases (at open, before the thread runs)."""
        return self._apply([])

    # -- the thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            running = True
            while running:
                requests, running = self._take()
                batch = self._apply(requests)
                if batch.results or batch.events:
                    self._deliver(batch)
        finally:
            self._conn.close()
            self._on_exit()

    def _take(self) -> tuple[list[Request], bool]:
        """Everything pending (at least one request unless a lease is due); False on stop."""
        try:
            item = self._queue.get(timeout=self._until_next_expiry())
        except queue.Empty:
            return [], True
        requests: list[Request] = []
        while item is not None:
            requests.append(item)
            if len(requests) >= self._max_batch:
                return requests, True
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return requests, True
        return requests, False

    def _until_next_expiry(self) -> float | None:
        if not self._leases:
            return None
        soonest = min(expires for _, expires in self._leases.values())
        return min(max(soonest - self._clock(), 0.0), MAX_REAP_INTERVAL)

    def _apply(self, requests: list[Request]) -> Batch:
        start = self.revision
        self._events = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._expire_leases(self._clock())
            results = [(future, self._run_operation(op)) for op, future in requests]
            if self.revision != start:
                self._set_meta("revision", self.revision)
            self._conn.execute("COMMIT")
        except Exception as exc:
            # sqlite3.Error is the disk (full, I/O); anything else is our bug.
            # Either way: nothing of the batch applied, its callers are told,
            # and the thread goes on serving the next batch.
            self._recover(start)
            error = StoreError(f"SQLite write failed, nothing of this batch applied: {exc!r}")
            return Batch([(future, error) for _, future in requests], [], self.revision)
        return Batch(results, self._events, self.revision)

    def _recover(self, revision: int) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self.revision = revision
        self._compacted = read_meta(self._conn).compacted
        self._leases = self._load_leases()

    def _run_operation(self, op: Operation) -> object:
        """The operation's result, or the StoreError that fails it (and only it)."""
        try:
            match op:
                case Create():
                    return self._create(op)
                case Update():
                    return self._update(op)
                case Delete():
                    return self._delete(self._current(op.key, op.expected))
                case Compact():
                    self._compact(op.revision)
                    return None
                case GrantLease():
                    return self._grant(op.ttl)
                case KeepAlive():
                    return self._keepalive(op.lease_id)
                case RevokeLease():
                    self._revoke(op.lease_id)
                    return None
        except StoreError as exc:
            return exc

    # -- keys -------------------------------------------------------------------

    def _newest(self, key: str) -> tuple[KeyValue | None, int]:
        """The key's live value (None if absent or deleted) and its newest row's revision."""
        row = self._conn.execute(_NEWEST, (key,)).fetchone()
        if row is None:
            return None, 0
        kv = kv_from_row(row[:-1])
        return (None if row[-1] else kv), kv.mod_revision

    def _current(self, key: str, expected: int) -> KeyValue:
        live, _ = self._newest(key)
        if expected and (live is None or live.mod_revision != expected):
            raise Conflict(key, expected, live.mod_revision if live else 0)
        if live is None:
            raise NotFound(f"{key}: not found")
        return live

    def _create(self, op: Create) -> KeyValue:
        live, newest = self._newest(op.key)
        if live is not None:
            raise AlreadyExists(f"{op.key}: already exists")
        self._check_lease(op.lease)
        revision = self.revision + 1
        kv = KeyValue(op.key, op.value, revision, revision, 1, op.lease)
        self._append(kv, prev_rev=newest, deleted=False)
        self._events.append(Event(EventType.PUT, kv, None))
        return kv

    def _update(self, op: Update) -> KeyValue:
        current = self._current(op.key, op.expected)
        self._check_lease(op.lease)
        kv = KeyValue(op.key, op.value, current.create_revision, self.revision + 1, current.version + 1, op.lease)
        self._append(kv, prev_rev=current.mod_revision, deleted=False)
        self._events.append(Event(EventType.PUT, kv, current))
        return kv

    def _delete(self, current: KeyValue) -> KeyValue:
        kv = dataclasses.replace(current, mod_revision=self.revision + 1)
        self._append(kv, prev_rev=current.mod_revision, deleted=True)
        self._events.append(Event(EventType.DELETE, kv, current))
        return kv

    def _append(self, kv: KeyValue, *, prev_rev: int, deleted: bool) -> None:
        self._conn.execute(
            _INSERT,
            (kv.mod_revision, kv.key, kv.create_revision, prev_rev, int(deleted), kv.value, kv.lease, kv.version),
        )
        self.revision = kv.mod_revision

    def _compact(self, revision: int) -> None:
        if revision > self.revision:
            raise FutureRevision(f"cannot compact at {revision}: store is at {self.revision}")
        if revision <= self._compacted:
            return
        self._conn.execute(_COMPACT, {"r": revision})
        self._set_meta("compacted", revision)
        self._compacted = revision

    def _set_meta(self, name: str, value: int) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))

    # -- leases -----------------------------------------------------------------

    def _load_leases(self) -> dict[int, tuple[int, float]]:
        rows = self._conn.execute("SELECT id, ttl, expires_at FROM leases").fetchall()
        return {lease_id: (ttl, expires) for lease_id, ttl, expires in rows}

    def _check_lease(self, lease_id: int) -> None:
        if lease_id and lease_id not in self._leases:
            raise LeaseNotFound(f"lease {lease_id} not found (expired or revoked?)")

    def _grant(self, ttl: int) -> Lease:
        ttl = max(ttl, 1)  # like etcd, a TTL below the minimum is raised to it
        lease_id = secrets.randbits(62) + 1
        while lease_id in self._leases:
            lease_id = secrets.randbits(62) + 1
        expires = self._clock() + ttl
        self._conn.execute("INSERT INTO leases (id, ttl, expires_at) VALUES (?, ?, ?)", (lease_id, ttl, expires))
        self._leases[lease_id] = (ttl, expires)
        return Lease(lease_id, ttl)

    def _keepalive(self, lease_id: int) -> int:
        self._check_lease(lease_id)
        ttl, _ = self._leases[lease_id]
        expires = self._clock() + ttl
        self._conn.execute("UPDATE leases SET expires_at = ? WHERE id = ?", (expires, lease_id))
        self._leases[lease_id] = (ttl, expires)
        return ttl

    def _revoke(self, lease_id: int) -> None:
        self._check_lease(lease_id)
        self._drop_lease(lease_id)

    def _expire_leases(self, now: float) -> None:
        for lease_id in [i for i, (_, expires) in self._leases.items() if expires <= now]:
            self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        """Delete the keys attached to the lease (one event each), then the lease."""
        rows = self._conn.execute(
            "SELECT DISTINCT key FROM log WHERE lease = ? AND deleted = 0 ORDER BY key",
            (lease_id,),
        ).fetchall()
        for (key,) in rows:
            live, _ = self._newest(key)
            if live is not None and live.lease == lease_id:
                self._delete(live)
        self._conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        del self._leases[lease_id]
