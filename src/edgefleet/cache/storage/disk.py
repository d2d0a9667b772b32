"""The disk tier: one file per object plus a shared SQLite index.

Layout under the tier's directory::

    objects/<id[:2]>/<id>          one object: header + meta JSON + body
    objects/<id[:2]>/<id>.<r>.part an object being written (never read)
    index.db                       SQLite (WAL): one row per object, tag rows, totals
    reconcile.lock                 flock taken by the process reconciling on open

``<id>`` is ``entry_id(key, variant)``. An object file starts with a
48-byte header, ``struct`` format ``>4sIQ32s``: the magic ``b"EFC1"``, the
meta length, the body length and the sha256 of the meta bytes. The meta
JSON may end in spaces (padding, see below); the body follows it.

Reading. ``lookup`` goes to the file named by the id, never to SQLite: one
``open``, one ``pread`` of the first 4 KiB, one ``fstat``. It checks the
magic, the meta hash, that the file size is exactly header + meta + body and
that the meta names the requested key, so a torn, truncated or foreign file
is detected before a byte of it is served; such a file is deleted with its
row and the lookup is a miss. The returned ``DiskEntry`` keeps the file
descriptor it checked: what was validated is what gets served, even if the
object is replaced or deleted meanwhile (POSIX keeps an unlinked inode alive
while a descriptor is open). Hits record the access time in a dict that is
written to SQLite at most once per ``touch_interval`` (and by ``flush``),
with a short busy timeout so that a hit never waits long on another process.

Writing. A ``DiskWriter`` streams the body into a ``.part`` file, after a
gap reserved for the meta (the size of the provisional meta plus slack). On
``commit`` the final meta is padded with spaces to the reserved length and
written with the header into the gap, so nothing is copied; a meta that
grew past the reservation is written to a fresh part file and the body is
moved over with ``copy_file_range``. Then the part is renamed over
``<id>``: readers see the old object or the new one, never half of one.
Nothing is fsynced: after a power cut a cache may lose objects, and the
checks above turn any damage into misses.

Index. Renames and unlinks of object files happen inside an ``IMMEDIATE``
SQLite transaction, together with the row changes they go with. The SQLite
write lock is shared by every process using the directory, so "file +
row" changes are atomic with respect to each other across processes: two
commits of the same id serialise (last rename wins; the upsert is
idempotent), and an eviction can never unlink a file that a concurrent
commit has just indexed. Triggers keep a one-row ``totals`` table in step,
so ``bytes_used`` never scans. Eviction picks rows by ``last_access``.

Purges. Removing or invalidating a key also reaches the slices of the
object (keys ``<key>#slice=<n>``, see :mod:`edgefleet.cache.policy.keys`): one
more range scan of the key index.

Recovery. ``open`` reconciles the index with the files (one process at a
time, under ``reconcile.lock``; the others skip it): rows whose file is gone
are dropped, valid files without a row (a crash between rename and commit)
are indexed from their meta, invalid ones removed, and ``.part`` files no
live writer holds are removed. A writer holds an ``flock`` on its part file
for its whole life, which is how reconciliation tells a dead writer's
leftover from a part another process is writing right now (PIDs are reused
across restarts in containers; locks die with their owner).

Threads. One write connection guarded by a lock; reads use one connection
per thread (WAL readers never wait for writers). ``DiskWriter`` objects are
each used by one thread at a time.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from edgefleet.cache.errors import StorageError
from edgefleet.cache.policy.keys import MAX_VARIANTS, SLICE_MARK
from edgefleet.cache.storage.entries import EntryMeta, entry_id

log = logging.getLogger(__name__)

MAGIC = b"EFC1"
HEADER = struct.Struct(">4sIQ32s")
HEADER_SIZE = HEADER.size
MAX_META_BYTES = 4 * 1024 * 1024  # a security limit: a header claiming more is corrupt
_FIRST_READ = 4096
_META_SLACK = 256
_FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})
_ID_NAME = re.compile(r"[0-9a-f]{64}")
_BATCH = 256
_BUSY_TIMEOUT_MS = 5000
_TOUCH_BUSY_TIMEOUT_MS = 20

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    variant TEXT NOT NULL,
    vary TEXT NOT NULL,
    size INTEGER NOT NULL,
    tags TEXT NOT NULL,
    stored_at REAL NOT NULL,
    last_access REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_key ON objects (key);
CREATE INDEX IF NOT EXISTS objects_by_access ON objects (last_access);
CREATE TABLE IF NOT EXISTS object_tags (
    tag TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (tag, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS object_tags_by_id ON object_tags (id);
CREATE TABLE IF NOT EXISTS totals (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    bytes INTEGER NOT NULL,
    objects INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS objects_added AFTER INSERT ON objects BEGIN
    UPDATE totals SET bytes = bytes + NEW.size, objects = objects + 1;
END;
CREATE TRIGGER IF NOT EXISTS objects_removed AFTER DELETE ON objects BEGIN
    UPDATE totals SET bytes = bytes - OLD.size, objects = objects - 1;
    DELETE FROM object_tags WHERE id = OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS objects_resized AFTER UPDATE OF size ON objects BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size;
END;
COMMIT;
"""

_UPSERT = """
INSERT INTO objects (id, key, variant, vary, size, tags, stored_at, last_access)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    key = excluded.key, variant = excluded.variant, vary = excluded.vary, size = excluded.size,
    tags = excluded.tags, stored_at = excluded.stored_at, last_access = excluded.last_access
"""


class CorruptObject(StorageError):
    """An object file failed its checks; it is deleted and treated as a miss."""


# --- the file format -------------------------------------------------------


def pack_header(meta_bytes: bytes, body_length: int) -> bytes:
    return HEADER.pack(MAGIC, len(meta_bytes), body_length, hashlib.sha256(meta_bytes).digest())


def read_object_head(fd: int) -> tuple[EntryMeta, int, int]:
    """Check an object file and return ``(meta, body_offset, body_length)``.

    Reads the header and the meta, not the body. Raises ``CorruptObject``.
    """
    first = os.pread(fd, _FIRST_READ, 0)
    if len(first) < HEADER_SIZE:
        raise CorruptObject("short header")
    magic, meta_length, body_length, digest = HEADER.unpack_from(first)
    if magic != MAGIC or meta_length > MAX_META_BYTES:
        raise CorruptObject("bad magic or meta length")
    body_offset = HEADER_SIZE + meta_length
    if os.fstat(fd).st_size != body_offset + body_length:
        raise CorruptObject("file size does not match its header")
    meta_bytes = first[HEADER_SIZE:body_offset]
    if len(meta_bytes) < meta_length:
        meta_bytes += read_exactly(fd, meta_length - len(meta_bytes), HEADER_SIZE + len(meta_bytes))
    if hashlib.sha256(meta_bytes).digest() != digest:
        raise CorruptObject("meta hash mismatch")
    meta = EntryMeta.from_json(meta_bytes)
    if meta.size != body_length:
        raise CorruptObject("meta size does not match the body length")
    return meta, body_offset, body_length


def read_exactly(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset`` (pread loops on short reads); CorruptObject at EOF."""
    chunks = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 24), offset)
        if not chunk:
            raise CorruptObject("unexpected end of file")
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def copy_range(source: int, source_offset: int, target: int, target_offset: int, length: int) -> None:
    """Copy bytes between files in the kernel where it can (copy_file_range), else by pread/pwrite."""
    while length > 0:
        try:
            done = os.copy_file_range(source, target, min(length, 1 << 30), source_offset, target_offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            done = _copy_by_hand(source, source_offset, target, target_offset, min(length, 1 << 20))
        if done == 0:
            raise CorruptObject("source ended before the copy did")
        length -= done
        source_offset += done
        target_offset += done


def _copy_by_hand(source: int, source_offset: int, target: int, target_offset: int, length: int) -> int:
    chunk = os.pread(source, length, source_offset)
    view = memoryview(chunk)
    while view:
        written = os.pwrite(target, view, target_offset)
        view = view[written:]
        target_offset += written
    return len(chunk)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def unlink_quietly(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


# --- what lookup returns ----------------------------------------------------


class DiskEntry:
    """A checked object on disk, holding the descriptor it was checked through.

    ``open()`` returns a new descriptor (a ``dup``; the caller closes it) to
    serve ``size`` body bytes from ``body_offset`` with ``os.pread`` or
    ``os.sendfile``. ``close()`` (or garbage collection) releases the
    entry's own descriptor.
    """

    __slots__ = ("_fd", "_file", "body_offset", "meta", "size")

    def __init__(self, meta: EntryMeta, file: str, body_offset: int, size: int, fd: int) -> None:
        self.meta = meta
        self._file = file
        self.body_offset = body_offset
        self.size = size
        self._fd = fd

    @property
    def path(self) -> Path:
        return Path(self._file)

    def open(self) -> int:
        return os.dup(self.fileno())

    def fileno(self) -> int:
        """The entry's own descriptor (valid until ``close``; do not close it)."""
        if self._fd < 0:
            raise StorageError("disk entry already closed")
        return self._fd

    def read_body(self) -> bytes:
        """The whole body (for promotion of small objects to memory)."""
        if self._fd < 0:
            raise StorageError("disk entry already closed")
        return read_exactly(self._fd, self.size, self.body_offset)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> DiskEntry:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiskEntry({self.meta.key!r}, {self.meta.variant!r}, {self.size} bytes)"


# --- the index ----------------------------------------------------------------


class _Index:
    """The SQLite side: one write connection under a lock, one read connection per thread."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._lock = threading.RLock()
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._db_path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in [self._writer, *self._readers]:
                conn.close()
            self._readers.clear()

    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def transaction(self, busy_timeout_ms: int = _BUSY_TIMEOUT_MS, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE write transaction (cross-process write lock held throughout)."""
        if not self._lock.acquire(blocking=wait):
            raise StorageError("index busy in this process")
        try:
            yield from self._in_transaction(busy_timeout_ms)
        finally:
            self._lock.release()

    def _in_transaction(self, busy_timeout_ms: int) -> Iterator[sqlite3.Connection]:
        conn = self._writer
        if busy_timeout_ms != _BUSY_TIMEOUT_MS:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            if busy_timeout_ms != _BUSY_TIMEOUT_MS:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def upsert_row(conn: sqlite3.Connection, meta: EntryMeta, file_size: int, stamp: float, replace: bool = True) -> None:
    object_id = meta.id
    row = (object_id, meta.key, meta.variant, ",".join(meta.vary), file_size, json.dumps(meta.tags), stamp, stamp)
    if replace:
        conn.execute(_UPSERT, row)
    elif conn.execute("INSERT OR IGNORE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row).rowcount == 0:
        return
    set_tags(conn, object_id, meta.tags)


def set_tags(conn: sqlite3.Connection, object_id: str, tags: Iterable[str]) -> None:
    conn.execute("DELETE FROM object_tags WHERE id = ?", (object_id,))
    conn.executemany("INSERT OR IGNORE INTO object_tags VALUES (?, ?)", [(tag, object_id) for tag in tags])


def ids_for_key(conn: sqlite3.Connection, key: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM objects WHERE key = ?", (key,))]


def ids_of_object(conn: sqlite3.Connection, key: str) -> list[str]:
    """Ids of ``key``'s variants and of its slices (``<key>#slice=<n>``): what a purge of the URL removes."""
    return ids_for_key(conn, key) + ids_with_prefix(conn, key + SLICE_MARK)


def ids_with_prefix(conn: sqlite3.Connection, prefix: str) -> list[str]:
    # Keys compare as UTF-8 bytes, i.e. in code point order: every key with
    # the prefix sorts at or after it, contiguously; stop at the first one without.
    found = []
    for object_id, key in conn.execute("SELECT id, key FROM objects WHERE key >= ? ORDER BY key", (prefix,)):
        if not key.startswith(prefix):
            break
        found.append(object_id)
    return found


def ids_with_tag(conn: sqlite3.Connection, tag: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM object_tags WHERE tag = ?", (tag,))]


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT bytes, objects FROM totals").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


# --- writing --------------------------------------------------------------------


class DiskWriter:
    """Streams one object's body to a part file; ``commit`` publishes it (module docstring)."""

    def __init__(self, tier: DiskTier, meta: EntryMeta) -> None:
        self._fd = -1
        self._part: Path | None = None
        self._tier = tier
        self._id = meta.id
        provisional = len(meta.to_json())
        self._reserved = provisional + max(_META_SLACK, provisional // 4)
        self.written = 0
        try:
            self._part, self._fd = tier._create_part(self._id)
            os.lseek(self._fd, HEADER_SIZE + self._reserved, os.SEEK_SET)
        except OSError as exc:
            self._fail(exc)

    @property
    def failed(self) -> bool:
        return self._fd < 0

    def write(self, chunk: bytes) -> bool:
        """Append body bytes; False once the disk is full or the writer failed (chunks then ignored)."""
        if self._fd < 0:
            return False
        view = memoryview(chunk)
        try:
            while view:
                view = view[self._write(view) :]
        except OSError as exc:
            self._fail(exc)
            return False
        self.written += len(chunk)
        return True

    def _write(self, data: memoryview) -> int:
        """The one place body bytes reach the file (a seam for tests)."""
        return os.write(self._fd, data)

    def commit(self, meta: EntryMeta) -> bool:
        """Publish the object with its final meta (``size`` set to the bytes written); False if not stored."""
        if self._fd < 0 or self._part is None:
            return False
        if meta.id != self._id:
            self.abort()
            raise StorageError(f"commit of {meta.key!r} {meta.variant!r} on a writer opened for another entry")
        meta = dataclasses.replace(meta, size=self.written) if meta.size != self.written else meta
        try:
            self._seal(meta, self._part)
            # Still holding the part's lock: reconciliation elsewhere must not take it for a leftover.
            self._tier._install(self._part, meta)
        except (OSError, sqlite3.Error, StorageError) as exc:
            self._fail(exc)
            return False
        self._part = None
        self._discard()
        return True

    def abort(self) -> None:
        """Drop the part file; further writes and commits are refused."""
        self._discard()

    def _seal(self, meta: EntryMeta, part: Path) -> None:
        meta_bytes = meta.to_json()
        if len(meta_bytes) <= self._reserved:
            padded = meta_bytes + b" " * (self._reserved - len(meta_bytes))
            pwrite_all(self._fd, pack_header(padded, self.written) + padded, 0)
            return
        # The meta outgrew its reservation: write it to a new part, move the body over.
        old_fd = self._fd
        self._part, self._fd = self._tier._create_part(self._id)  # on failure, _fail drops the old part
        try:
            pwrite_all(self._fd, pack_header(meta_bytes, self.written) + meta_bytes, 0)
            copy_range(old_fd, HEADER_SIZE + self._reserved, self._fd, HEADER_SIZE + len(meta_bytes), self.written)
        finally:
            os.close(old_fd)
            unlink_quietly(part)

    def _fail(self, exc: BaseException) -> None:
        full = isinstance(exc, OSError) and exc.errno in _FULL_DISK
        log.log(logging.INFO if full else logging.WARNING, "disk tier: not storing %s: %s", self._id, exc)
        self._discard()

    def _discard(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        part, self._part = self._part, None
        if part is not None:
            unlink_quietly(part)

    def __del__(self) -> None:
        self._discard()


# --- the tier ----------------------------------------------------------------------


class DiskTier:
    """Objects in files under ``path``, indexed in SQLite, bounded by ``max_bytes`` of files."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
        touch_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.objects_dir = self.path / "objects"
        self._objects = str(self.objects_dir)
        self.max_bytes = max_bytes
        self.evictions = 0
        self._clock = clock
        self._touch_interval = touch_interval
        self._touches: dict[str, float] = {}
        self._touch_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._index_db: _Index | None = None

    # lifecycle

    def open(self) -> DiskTier:
        """Create the layout if needed, open the index and reconcile it with the files."""
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self._index_db = self._open_index()
        self._reconcile()
        if self.bytes_used() > self.max_bytes:
            self.evict()
        return self

    def _open_index(self, attempts: int = 20) -> _Index:
        """The index, retried while another process creates it.

        Two processes (a cache's workers) opening a new index at once can get "database is locked" at
        once, not after the busy timeout: SQLite does not call the busy handler when switching a new
        database to WAL. A few short retries cover that moment; any other error is raised at once.
        """
        for attempt in range(attempts):
            try:
                return _Index(self.path / "index.db")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise StorageError(f"cannot open the disk index in {self.path}: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open the disk index in {self.path}: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._index_db is not None:
            self.flush()
            self._index_db.close()
            self._index_db = None

    def __enter__(self) -> DiskTier:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def _index(self) -> _Index:
        if self._index_db is None:
            raise StorageError("disk tier is not open")
        return self._index_db

    def object_path(self, object_id: str) -> Path:
        return Path(self._object_file(object_id))

    def _object_file(self, object_id: str) -> str:
        # A string, not a Path: this runs on every lookup and pathlib costs microseconds.
        return f"{self._objects}/{object_id[:2]}/{object_id}"

    # reading

    def lookup(self, key: str, variant: str) -> DiskEntry | None:
        """The checked object for ``(key, variant)``, or None (absent, or corrupt and now removed)."""
        object_id = entry_id(key, variant)
        entry = self._read_entry(object_id, expected=(key, variant))
        if entry is not None:
            self._touch(object_id)
        return entry

    def variants(self, key: str) -> list[EntryMeta]:
        """Metas of every stored variant of a primary key."""
        metas = []
        for object_id in ids_for_key(self._index.reader(), key):
            entry = self._read_entry(object_id)
            if entry is not None:
                metas.append(entry.meta)
                entry.close()
        return metas

    def _read_entry(
        self, object_id: str, conn: sqlite3.Connection | None = None, expected: tuple[str, str] | None = None
    ) -> DiskEntry | None:
        """Open and check one object; a corrupt one is removed (inside ``conn``'s transaction if given).

        ``expected`` is the ``(key, variant)`` the id was made from, when the caller knows it.
        """
        path = self._object_file(object_id)
        fd = self._open_object(path)
        if fd < 0:
            return None
        try:
            meta, body_offset, size = read_object_head(fd)
            named = (meta.key, meta.variant) == expected if expected is not None else meta.id == object_id
            if not named:
                raise CorruptObject("object names another entry")
        except (OSError, StorageError) as exc:
            self._remove_corrupt(object_id, Path(path), fd, exc, conn)
            return None
        return DiskEntry(meta, path, body_offset, size, fd)

    def _open_object(self, path: str) -> int:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            log.warning("disk tier: cannot open %s: %s", path, exc)
            return -1

    def _remove_corrupt(
        self, object_id: str, path: Path, fd: int, reason: BaseException, conn: sqlite3.Connection | None
    ) -> None:
        log.warning("disk tier: removing corrupt object %s: %s", path, reason)
        try:
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if conn is not None:
            self._drop_corrupt(conn, object_id, path, inode)
            return
        try:
            with self._index.transaction() as own:
                self._drop_corrupt(own, object_id, path, inode)
        except (OSError, sqlite3.Error, StorageError) as exc:
            log.warning("disk tier: cannot drop the index row of %s: %s", object_id, exc)

    @staticmethod
    def _drop_corrupt(conn: sqlite3.Connection, object_id: str, path: Path, inode: int) -> None:
        # Only if the name still holds the inode we checked: it may have been replaced since.
        with suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()
        conn.execute("DELETE FROM objects WHERE id = ?", (object_id,))

    # access times

    def _touch(self, object_id: str) -> None:
        with self._touch_lock:
            self._touches[object_id] = self._clock()
        if time.monotonic() - self._last_flush >= self._touch_interval:
            self._flush_touches(wait=False)

    def flush(self) -> None:
        """Write pending access times to the index."""
        self._flush_touches(wait=True)

    def _flush_touches(self, wait: bool) -> None:
        self._last_flush = time.monotonic()
        with self._touch_lock:
            touches, self._touches = self._touches, {}
        if not touches:
            return
        rows = [(stamp, object_id, stamp) for object_id, stamp in touches.items()]
        busy_ms = _BUSY_TIMEOUT_MS if wait else _TOUCH_BUSY_TIMEOUT_MS
        try:
            with self._index.transaction(busy_ms, wait) as conn:
                conn.executemany("UPDATE objects SET last_access = ? WHERE id = ? AND last_access < ?", rows)
        except (sqlite3.Error, StorageError) as exc:
            log.debug("disk tier: access times not written yet: %s", exc)
            with self._touch_lock:
                for object_id, stamp in touches.items():
                    self._touches.setdefault(object_id, stamp)

    # writing

    def writer(self, meta: EntryMeta) -> DiskWriter:
        """A streaming writer for the object ``meta`` describes (provisional meta; final at commit)."""
        if self._index_db is None:
            raise StorageError("disk tier is not open")
        return DiskWriter(self, meta)

    def _create_part(self, object_id: str) -> tuple[Path, int]:
        """A new locked part file. The lock tells reconciliation in other processes that a writer is alive."""
        directory = self.objects_dir / object_id[:2]
        directory.mkdir(exist_ok=True)
        while True:
            part = directory / f"{object_id}.{secrets.token_hex(6)}.part"
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # readable: a relocation copies from it
            fcntl.flock(fd, fcntl.LOCK_EX)
            with suppress(FileNotFoundError):
                if os.stat(part).st_ino == os.fstat(fd).st_ino:
                    return part, fd
            # A reconciling process took it for a leftover between our open and our lock.
            os.close(fd)

    def _install(self, part: Path, meta: EntryMeta) -> None:
        """Rename a sealed part into place and index it, atomically with respect to other processes."""
        final = self.object_path(meta.id)
        file_size = part.stat().st_size
        with self._index.transaction() as conn:
            os.replace(part, final)
            try:
                upsert_row(conn, meta, file_size, self._clock())
                self._drop_other_vary(conn, meta)
                self._bound_variants(conn, meta)
            except BaseException:
                unlink_quietly(final)
                raise
        if self.bytes_used() > self.max_bytes:
            self.evict()

    def _drop_other_vary(self, conn: sqlite3.Connection, meta: EntryMeta) -> None:
        # The latest response of a key says what it varies on; variants stored under another Vary go.
        rows = conn.execute("SELECT id FROM objects WHERE key = ? AND vary != ?", (meta.key, ",".join(meta.vary)))
        self._delete(conn, [row[0] for row in rows])

    def _bound_variants(self, conn: sqlite3.Connection, meta: EntryMeta) -> None:
        # At most MAX_VARIANTS per key (policy.keys says why): the least recently used beyond it go.
        if not meta.vary:
            return
        rows = conn.execute(
            "SELECT id FROM objects WHERE key = ? AND id != ? ORDER BY last_access DESC LIMIT -1 OFFSET ?",
            (meta.key, meta.id, MAX_VARIANTS - 1),
        )
        self._delete(conn, [row[0] for row in rows])

    def update_meta(self, key: str, variant: str, meta: EntryMeta) -> bool:
        """Replace the meta of a stored object, keeping its body; False if it is not stored."""
        object_id = entry_id(key, variant)
        if meta.id != object_id:
            raise StorageError(f"update_meta of {key!r} {variant!r} with the meta of another entry")
        entry = self._read_entry(object_id)
        if entry is None:
            return False
        with entry:
            try:
                return self._rewrite(entry, dataclasses.replace(meta, size=entry.size))
            except (OSError, sqlite3.Error, StorageError) as exc:
                log.warning("disk tier: cannot update the meta of %s: %s", object_id, exc)
                return False

    def _rewrite(self, entry: DiskEntry, meta: EntryMeta) -> bool:
        meta_bytes = meta.to_json()
        part, fd = self._create_part(meta.id)
        try:
            pwrite_all(fd, pack_header(meta_bytes, entry.size) + meta_bytes, 0)
            copy_range(entry.fileno(), entry.body_offset, fd, HEADER_SIZE + len(meta_bytes), entry.size)
            file_size = os.fstat(fd).st_size
            return self._replace_if_unchanged(part, entry, meta, file_size)
        finally:
            os.close(fd)
            unlink_quietly(part)

    def _replace_if_unchanged(self, part: Path, entry: DiskEntry, meta: EntryMeta, file_size: int) -> bool:
        with self._index.transaction() as conn:
            if not self._still_stored(conn, entry):
                return False  # removed or replaced while we copied: theirs is newer
            os.replace(part, entry.path)
            update = "UPDATE objects SET size = ?, tags = ? WHERE id = ?"
            conn.execute(update, (file_size, json.dumps(meta.tags), meta.id))
            set_tags(conn, meta.id, meta.tags)
        return True

    @staticmethod
    def _still_stored(conn: sqlite3.Connection, entry: DiskEntry) -> bool:
        try:
            current = entry.path.stat().st_ino
        except FileNotFoundError:
            return False
        indexed = conn.execute("SELECT 1 FROM objects WHERE id = ?", (entry.meta.id,)).fetchone()
        return current == os.fstat(entry.fileno()).st_ino and indexed is not None

    # removal and purge

    def remove(self, key: str) -> int:
        return self._remove_selected(lambda conn: ids_of_object(conn, key))

    def remove_prefix(self, prefix: str) -> int:
        return self._remove_selected(lambda conn: ids_with_prefix(conn, prefix))

    def remove_tag(self, tag: str) -> int:
        return self._remove_selected(lambda conn: ids_with_tag(conn, tag))

    def invalidate(self, key: str) -> int:
        return self._invalidate_all(ids_of_object(self._index.reader(), key))

    def invalidate_prefix(self, prefix: str) -> int:
        return self._invalidate_all(ids_with_prefix(self._index.reader(), prefix))

    def invalidate_tag(self, tag: str) -> int:
        return self._invalidate_all(ids_with_tag(self._index.reader(), tag))

    def _remove_selected(self, select: Callable[[sqlite3.Connection], list[str]]) -> int:
        with self._index.transaction() as conn:
            object_ids = select(conn)
            self._delete(conn, object_ids)
        return len(object_ids)

    def _invalidate_all(self, object_ids: Iterable[str]) -> int:
        count = 0
        for object_id in object_ids:
            entry = self._read_entry(object_id)
            if entry is None:
                continue
            with entry:
                meta = entry.meta
            marked = dataclasses.replace(meta, invalidated=True)
            if meta.invalidated or self.update_meta(meta.key, meta.variant, marked):
                count += 1
        return count

    def _delete(self, conn: sqlite3.Connection, object_ids: list[str], want_metas: bool = False) -> list[EntryMeta]:
        """Unlink objects and drop their rows, inside the caller's transaction."""
        metas = []
        for object_id in object_ids:
            if want_metas:
                entry = self._read_entry(object_id, conn)
                if entry is not None:
                    metas.append(entry.meta)
                    entry.close()
            unlink_quietly(self.object_path(object_id))
        conn.executemany("DELETE FROM objects WHERE id = ?", [(object_id,) for object_id in object_ids])
        return metas

    # eviction and accounting

    def evict(self) -> list[EntryMeta]:
        """Remove least recently used objects until the files fit ``max_bytes``; returns their metas."""
        self.flush()
        evicted: list[EntryMeta] = []
        while True:
            with self._index.transaction() as conn:
                victims = self._pick_victims(conn, totals(conn)[0] - self.max_bytes)
                evicted += self._delete(conn, victims, want_metas=True)
            if len(victims) < _BATCH:
                break
        self.evictions += len(evicted)
        return evicted

    def _pick_victims(self, conn: sqlite3.Connection, excess: int) -> list[str]:
        victims: list[str] = []
        if excess <= 0:
            return victims
        for object_id, size in conn.execute("SELECT id, size FROM objects ORDER BY last_access LIMIT ?", (_BATCH,)):
            victims.append(object_id)
            excess -= size
            if excess <= 0:
                break
        return victims

    def bytes_used(self) -> int:
        return totals(self._index.reader())[0]

    def count(self) -> int:
        return totals(self._index.reader())[1]

    # recovery

    def _reconcile(self) -> None:
        lock_fd = os.open(self.path / "reconcile.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process is reconciling this directory right now
            indexed = {row[0] for row in self._index.reader().execute("SELECT id FROM objects")}
            on_disk = self._scan_objects()
            self._drop_rows_without_files(indexed - on_disk)
            self._index_orphans(sorted(on_disk - indexed))
        finally:
            os.close(lock_fd)

    def _scan_objects(self) -> set[str]:
        """Ids of the object files; removes dead writers' part files and foreign files on the way."""
        found: set[str] = set()
        with os.scandir(self.objects_dir) as directories:
            for directory in directories:
                if directory.is_dir(follow_symlinks=False):
                    found |= self._scan_directory(directory.path)
        return found

    def _scan_directory(self, directory: str) -> set[str]:
        found: set[str] = set()
        with os.scandir(directory) as items:
            for item in items:
                if _ID_NAME.fullmatch(item.name):
                    found.add(item.name)
                elif item.name.endswith(".part"):
                    self._remove_dead_part(Path(item.path))
                else:
                    log.warning("disk tier: removing foreign file %s", item.path)
                    unlink_quietly(Path(item.path))
        return found

    def _remove_dead_part(self, part: Path) -> None:
        try:
            fd = os.open(part, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Unlinked while we hold the lock, so a writer that created it can see it lost it.
            log.info("disk tier: removing leftover %s", part)
            unlink_quietly(part)
        except BlockingIOError:
            pass  # a live writer holds it
        finally:
            os.close(fd)

    def _drop_rows_without_files(self, object_ids: set[str]) -> None:
        with self._index.transaction() as conn:
            gone = [object_id for object_id in object_ids if not self.object_path(object_id).exists()]
            conn.executemany("DELETE FROM objects WHERE id = ?", [(object_id,) for object_id in gone])

    def _index_orphans(self, object_ids: list[str]) -> None:
        for start in range(0, len(object_ids), _BATCH):
            with self._index.transaction() as conn:
                for object_id in object_ids[start : start + _BATCH]:
                    self._index_orphan(conn, object_id)

    def _index_orphan(self, conn: sqlite3.Connection, object_id: str) -> None:
        entry = self._read_entry(object_id, conn)
        if entry is None:
            return
        with entry:
            stat = os.fstat(entry.fileno())
            upsert_row(conn, entry.meta, stat.st_size, stat.st_mtime, replace=False)
