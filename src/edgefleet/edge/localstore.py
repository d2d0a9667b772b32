"""The node's local copy of its view: one SQLite file, written before every ack.

How: ``objects(key, rev, object)`` holds the projected documents the cloud
sent, ``meta`` holds the store ``epoch`` and the ``revision`` the view is
complete up to. A batch from the hub is applied in one transaction with
``synchronous=FULL``, so when the agent acknowledges it the batch survives a
power cut; the cloud therefore never needs to resend an acknowledged batch.

Why SQLite: it is the autonomy store. A node that reboots while the cloud is
unreachable reads its workloads from here. A file that does not open or
fails ``PRAGMA quick_check`` is moved aside (``view.db.corrupt-<time>``) and
a fresh empty one is used: the agent then rebuilds its view from the cloud
when it is reachable, and meanwhile the workload supervisor still runs what
it ran, from its own state files.

The file (and its ``-wal`` and ``-shm``) has mode 0600 whatever the umask:
the view holds the Secrets the node's workloads reference, and workloads
running as another user must not read it (see :mod:`edgefleet.edge.users`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.api.documents import JSONObject as Document

log = logging.getLogger("edgefleet.edge.localstore")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, rev INTEGER NOT NULL, object TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    epoch: str
    revision: int
    holdings: dict[str, int]


class LocalStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.recovered_from: Path | None = None
        self._conn = self._open_checked()

    def _open_checked(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error(
                "local view store %s is corrupt (%s); moved to %s, rebuilding from the cloud", self.path, exc, aside
            )
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            self.recovered_from = aside
            return self._open()

    def _restrict(self) -> None:
        """The file and its WAL and shared-memory files: mode 0600 (the view holds the node's Secrets)."""
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for path in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)

    def _open(self) -> sqlite3.Connection:
        self._restrict()  # SQLite creates -wal and -shm with the main file's mode
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self._conn.close()

    def _meta(self, name: str, default: str) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default

    def snapshot(self) -> Snapshot:
        holdings = {str(k): int(r) for k, r in self._conn.execute("SELECT key, rev FROM objects")}
        return Snapshot(self._meta("epoch", ""), int(self._meta("revision", "0")), holdings)

    def apply_batch(
        self,
        *,
        revision: int,
        epoch: str,
        put: Iterable[tuple[str, int, Document]],
        delete: Iterable[str],
    ) -> None:
        """Apply one batch atomically and durably (before the agent acks it)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM objects WHERE key = ?", ((k,) for k in delete))
            conn.executemany(
                "INSERT OR REPLACE INTO objects (key, rev, object) VALUES (?, ?, ?)",
                ((k, r, json.dumps(o, separators=(",", ":"))) for k, r, o in put),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                (("revision", str(revision)), ("epoch", epoch)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def objects(self, plural: str) -> list[Document]:
        """Every held object of one kind (by URL plural), in key order."""
        prefix = f"/registry/{plural}/"
        rows = self._conn.execute(
            "SELECT object FROM objects WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix + "\uffff")
        )
        return [json.loads(row[0]) for row in rows]

    def get(self, key: str) -> Document | None:
        row = self._conn.execute("SELECT object FROM objects WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None
