"""The SQLite log: schema, connections and the read queries.

How (the kine layout): table ``log`` is append-only; every change is one row
``(rev, key, create_rev, prev_rev, deleted, value, lease, version)`` whose
``rev`` is the store revision of the change. A deletion is a row with
``deleted = 1`` that keeps the key's last value, lease and version, so that
a DELETE event read back from history carries the last value, as the
interface requires. The state at revision R is, per key, the newest row with
``rev <= R`` unless that row is a deletion. ``prev_rev`` points at the
key's previous row, which gives update events their ``prev`` value.

``meta`` holds the current revision (kept there, not derived from
``MAX(rev)``, because compaction may delete the newest row), the compacted
revision and the store epoch (a random UUID drawn when the file is
created). ``leases`` holds each lease's TTL and wall-clock expiry, so that
leases expire across restarts.

Reads here are single indexed queries: the ``(key, rev)`` index serves both
``get`` (seek to the key, newest row) and prefix lists in key order (scan
the key range, keep the row that is the newest at R), which is also what
lets a paginated list stop after ``limit`` keys instead of grouping the
whole range.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgefleet.store.interface import Event, EventType, KeyValue
from edgefleet.store.keys import prefix_end

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        TEXT    NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER NOT NULL,
    deleted    INTEGER NOT NULL,
    value      BLOB    NOT NULL,
    lease      INTEGER NOT NULL,
    version    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE INDEX IF NOT EXISTS log_lease ON log (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    id         INTEGER PRIMARY KEY,
    ttl        INTEGER NOT NULL,
    expires_at REAL    NOT NULL
);
"""

# Columns that make a KeyValue, in the order kv_from_row expects.
KV_COLUMNS = "key, value, create_rev, rev, version, lease"

# Aliases, because LogReader.list shadows the builtin inside the class.
KeyValues = list[KeyValue]
Events = list[Event]


@dataclass(frozen=True, slots=True)
class Meta:
    revision: int
    compacted: int
    epoch: str


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, fsync on commit.

    ``check_same_thread=False`` because the store opens its connections in
    the caller's thread and hands the writing one to the writer thread; each
    connection is still used by one thread at a time.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so an acknowledged write
    # survives a crash of the process and of the machine.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def init_schema(conn: sqlite3.Connection) -> None:
    """Create the tables and the meta rows of a new file; leave an existing file as is."""
    conn.executescript(SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    defaults = {
        "schema": SCHEMA_VERSION,
        "revision": 0,
        "compacted": 0,
        "epoch": uuid.uuid4().hex,
    }
    conn.executemany("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", defaults.items())
    conn.execute("COMMIT")


def read_meta(conn: sqlite3.Connection) -> Meta:
    values = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    return Meta(int(values["revision"]), int(values["compacted"]), str(values["epoch"]))


def kv_from_row(row: tuple[str, bytes, int, int, int, int]) -> KeyValue:
    key, value, create_rev, rev, version, lease = row
    return KeyValue(key, value, create_rev, rev, version, lease)


def key_range(prefix: str, column: str = "key") -> tuple[str, list[str]]:
    """SQL condition and parameters selecting keys that start with ``prefix``."""
    end = prefix_end(prefix)
    if end is None:
        return f"{column} >= ?", [prefix]
    return f"{column} >= ? AND {column} < ?", [prefix, end]


class LogReader:
    """Read queries on the log, for one connection used by one thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str, revision: int) -> KeyValue | None:
        row = self._conn.execute(
            f"SELECT {KV_COLUMNS}, deleted FROM log WHERE key = ? AND rev <= ? ORDER BY rev DESC LIMIT 1",
            (key, revision),
        ).fetchone()
        if row is None or row[-1]:
            return None
        return kv_from_row(row[:-1])

    def list(self, prefix: str, revision: int, start_after: str, limit: int) -> tuple[KeyValues, bool]:
        """Live keys at ``revision`` under ``prefix`` after ``start_after``; and whether more."""
        condition, params = key_range(prefix, "l.key")
        # Walk the (key, rev) index in key order and keep each key's newest
        # row at `revision`; LIMIT stops the walk after the page.
        sql = (
            f"SELECT {KV_COLUMNS} FROM log AS l WHERE {condition} AND l.key > ? "
            "AND l.rev = (SELECT MAX(rev) FROM log WHERE key = l.key AND rev <= ?) "
            "AND l.deleted = 0 ORDER BY l.key"
        )
        args: list[object] = [*params, start_after, revision]
        if limit > 0:
            sql += " LIMIT ?"
            args.append(limit + 1)
        rows = self._conn.execute(sql, args).fetchall()
        more = limit > 0 and len(rows) > limit
        if more:
            rows = rows[:limit]
        return [kv_from_row(r) for r in rows], more

    def history(self, prefix: str, after: int, until: int, limit: int) -> Events:
        """Events under ``prefix`` in ``(after, until]``, oldest first, ``limit`` at most."""
        condition, params = key_range(prefix, "l.key")
        rows = self._conn.execute(
            "SELECT l.rev, l.key, l.create_rev, l.prev_rev, l.deleted, l.value, l.lease, "
            "l.version, p.value, p.lease, p.version "
            "FROM log AS l LEFT JOIN log AS p ON p.rev = l.prev_rev "
            f"WHERE l.rev > ? AND l.rev <= ? AND {condition} ORDER BY l.rev LIMIT ?",
            [after, until, *params, limit],
        ).fetchall()
        return [event_from_history(row) for row in rows]


HistoryRow = tuple[int, str, int, int, int, bytes, int, int, bytes | None, int | None, int | None]


def event_from_history(row: HistoryRow) -> Event:
    rev, key, create_rev, prev_rev, deleted, value, lease, version = row[:8]
    p_value, p_lease, p_version = row[8:]
    if deleted:
        # A deletion row keeps the last value: prev is that value at prev_rev.
        prev = KeyValue(key, value, create_rev, prev_rev, version, lease)
        return Event(EventType.DELETE, KeyValue(key, value, create_rev, rev, version, lease), prev)
    kv = KeyValue(key, value, create_rev, rev, version, lease)
    if create_rev == rev or p_value is None or p_lease is None or p_version is None:
        # A creation has no prev (the row before it, if any, is a deletion).
        return Event(EventType.PUT, kv, None)
    prev = KeyValue(key, p_value, create_rev, prev_rev, p_version, p_lease)
    return Event(EventType.PUT, kv, prev)
