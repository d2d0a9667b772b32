"""Back up a store to a file and restore a file into a store (the I/O around :mod:`.backupformat`).

Backup: one consistent snapshot at one revision, while the cloud runs.

* **SQLite** (:class:`SqliteFileSource`): the cloud holds the store file's
  lock, so the backup does not open a :class:`~edgefleet.store.sqlite.SqliteStore`;
  it reads the file on a read-only connection inside *one* read transaction
  (WAL mode lets it run beside the cloud's writer without blocking it): the
  meta revision and every live key at that revision, page by page, all from
  the same snapshot.
* **etcd**, and any open :class:`~edgefleet.store.interface.Store` (the
  cloud's scheduled backups use the store they already hold):
  :class:`StoreSource` notes the current revision, then lists every key in
  pages pinned at that revision. If history is compacted past it meanwhile
  (``Compacted``) the backup starts again at a newer revision.

The file is written under a temporary name in the target's directory, with
mode 0600 from the start, fsynced, then renamed: a backup file either is
complete or does not exist under its name.

Restore (:func:`restore`): the whole file is checked first (format, key
order, counts, checksum); a bad file changes nothing. A target holding any
key is refused unless ``force``. Then:

* **SQLite**: the records go into a new file next to the target (a new file
  has a new epoch), which replaces the target by a rename once complete,
  while holding the target's lock: a running cloud on the target makes the
  restore fail before anything is touched, and a failed restore leaves the
  target as it was.
* **etcd**: the deployment's keys and its epoch marker are erased (with
  ``force``; a new epoch either way), the store is reopened, which draws a
  new epoch, and the records are created, many at a time.

Agents see the new epoch at their next handshake and reconcile by content:
objects whose content did not change are not sent again and workloads are not
restarted (``sync/__init__.py``, case 2 of the handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import os
import sqlite3
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from edgefleet.store import open_store
from edgefleet.store.backupformat import (
    MAX_LINE_BYTES,
    BackupFormatError,
    Decoder,
    Encoder,
    Header,
    Record,
    Trailer,
)
from edgefleet.store.interface import Compacted, KeyValue, Store, StoreError
from edgefleet.store.sqlite_log import LogReader, read_meta

PAGE = 500
"""Keys read per page (etcd range or SQLite query)."""
WRITERS = 64
"""Records written to the target at once (the SQLite writer commits them in groups; etcd pipelines them)."""
SNAPSHOT_ATTEMPTS = 3
PRIVATE_MODE = 0o600


class Sink(Protocol):
    """Where a backup is written: a binary file or stream."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> object: ...


Progress = Callable[[int, int | None], None]
"""Called with (keys done, total keys or None when unknown)."""


class BackupError(StoreError):
    """A backup or restore failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    path: str
    revision: int
    epoch: str
    count: int
    skipped_leased: int
    size: int


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    count: int
    backup_revision: int
    backup_epoch: str
    epoch: str
    """The restored store's (new) epoch."""


# -- sources ---------------------------------------------------------------------


class StoreSource:
    """Pages of every key of an open store, at one revision."""

    def __init__(self, store: Store, source: str) -> None:
        self.store = store
        self.source = source
        self.revision = 0
        self.total: int | None = None

    @property
    def epoch(self) -> str:
        return self.store.epoch

    async def begin(self) -> None:
        self.revision = await self.store.current_revision()

    async def pages(self) -> AsyncIterator[list[KeyValue]]:
        after = ""
        while True:
            result = await self.store.list("", revision=self.revision, start_after=after, limit=PAGE)
            if result.items:
                yield result.items
                after = result.items[-1].key
            if not result.more:
                return

    async def end(self) -> None:
        return None


class SqliteFileSource:
    """Pages of every key of a SQLite store file, read in one read-only transaction beside a running cloud."""

    source = "sqlite"

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise BackupError(f"{path}: no such SQLite store file; check the path in --store")
        self.path = path
        self.revision = 0
        self.epoch = ""
        self.total: int | None = None
        self._conn: sqlite3.Connection | None = None

    async def begin(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("BEGIN")  # one read transaction: every read below sees the same snapshot
            meta = read_meta(conn)
            self.revision, self.epoch = meta.revision, meta.epoch
            row = conn.execute(
                "SELECT COUNT(*) FROM log AS l WHERE l.rev = (SELECT MAX(rev) FROM log WHERE key = l.key "
                "AND rev <= ?) AND l.deleted = 0",
                (self.revision,),
            ).fetchone()
            self.total = int(row[0])
        except (sqlite3.Error, KeyError, ValueError) as exc:
            raise BackupError(f"{self.path}: cannot read the SQLite store: {exc}") from exc
        self._conn = conn

    async def pages(self) -> AsyncIterator[list[KeyValue]]:
        assert self._conn is not None, "begin() first"
        reader = LogReader(self._conn)
        after = ""
        while True:
            try:
                items, more = reader.list("", self.revision, after, PAGE)
            except sqlite3.Error as exc:
                raise BackupError(f"{self.path}: read failed: {exc}") from exc
            if items:
                yield items
                after = items[-1].key
            if not more:
                return
            await asyncio.sleep(0)

    async def end(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


Source = StoreSource | SqliteFileSource


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (as :func:`~edgefleet.store.open_store` reads it), else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path.endswith("/"):
        return None
    return Path(path)


# -- backup ----------------------------------------------------------------------


async def write_backup(
    source: Source, out: Sink, progress: Progress | None = None, *, created: str | None = None
) -> tuple[Header, Trailer]:
    """Write one snapshot of ``source`` to ``out`` (gzip'd); (header, trailer) as written."""
    await source.begin()
    try:
        encoder = Encoder()
        header = Header(source.revision, source.epoch, source.source, created or _now())
        skipped = done = 0
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as packed:
            packed.write(encoder.header(header))
            async for page in source.pages():
                for kv in page:
                    if kv.lease:
                        skipped += 1
                    else:
                        packed.write(encoder.record(kv.key, kv.value))
                done += len(page)
                if progress is not None:
                    progress(done, source.total)
            packed.write(encoder.trailer(skipped))
        return header, Trailer(encoder.count, skipped, encoder.digest)
    finally:
        await source.end()


async def backup_to_file(
    source_factory: Callable[[], Source], path: Path, progress: Progress | None = None, *, created: str | None = None
) -> BackupSummary:
    """A snapshot written to ``path`` atomically (temporary file, fsync, rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(SNAPSHOT_ATTEMPTS):
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
            with os.fdopen(fd, "wb") as handle:
                header, trailer = await write_backup(source_factory(), handle, progress, created=created)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            _fsync_directory(path.parent)
        except Compacted:
            if attempt + 1 == SNAPSHOT_ATTEMPTS:
                raise BackupError("the store's history kept being compacted during the backup; try again") from None
            continue
        except OSError as exc:
            raise BackupError(f"cannot write {path}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        size = os.stat(path).st_size
        return BackupSummary(str(path), header.revision, header.epoch, trailer.count, trailer.skipped_leased, size)
    raise AssertionError("unreachable")


async def backup_to_stream(source: Source, out: IO[bytes], progress: Progress | None = None) -> BackupSummary:
    """A snapshot written to a stream (``-o -``): no retry, since what was written cannot be taken back."""
    counting = _Counting(out)
    header, trailer = await write_backup(source, counting, progress)
    return BackupSummary("-", header.revision, header.epoch, trailer.count, trailer.skipped_leased, counting.size)


class _Counting:
    """A write-only stream that counts the bytes passed to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


# -- reading and restore -------------------------------------------------------------


def read_backup(path: Path) -> Iterator[Header | Record | Trailer]:
    """Every part of the backup at ``path``, checked as it is read (BackupFormatError at the first problem)."""
    decoder = Decoder()
    try:
        with gzip.open(path, "rb") as packed:
            while line := packed.readline(MAX_LINE_BYTES + 1):
                yield decoder.line(line)
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BackupFormatError(
            f"{path}: not a complete gzip'd edgefleet backup ({exc or 'the file ends early'}); "
            "this backup cannot be restored"
        ) from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc}") from exc
    decoder.finish()


def verify_backup(path: Path) -> tuple[Header, Trailer]:
    """Read the whole backup and check it; (header, trailer). Nothing is written anywhere."""
    header: Header | None = None
    trailer: Trailer | None = None
    for item in read_backup(path):
        if isinstance(item, Header):
            header = item
        elif isinstance(item, Trailer):
            trailer = item
    assert header is not None and trailer is not None  # read_backup raises otherwise
    return header, trailer


async def restore(path: Path, url: str, *, force: bool = False, progress: Progress | None = None) -> RestoreSummary:
    """Check the backup at ``path`` whole, then write it into the (empty, unless ``force``) store at ``url``."""
    header, trailer = verify_backup(path)
    target = sqlite_path(url)
    if target is not None:
        epoch = await _restore_sqlite(path, target, force, trailer.count, progress)
    elif url.startswith("etcd://"):
        epoch = await _restore_etcd(path, url, force, trailer.count, progress)
    else:
        open_store(url)  # raises InvalidStoreURL with the accepted forms
        raise BackupError(f"cannot restore into {url!r}")
    return RestoreSummary(trailer.count, header.revision, header.epoch, epoch)


NOT_EMPTY = (
    "{target} is not empty ({what}); restoring would mix two stores. Restore into an empty store, "
    "or pass --force to replace everything in it"
)


async def _restore_sqlite(path: Path, target: Path, force: bool, total: int, progress: Progress | None) -> str:
    from edgefleet.store.sqlite import SqliteStore

    target.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock_sqlite(target)
    temporary = target.with_name(f".{target.name}.restore-{uuid.uuid4().hex[:8]}")
    try:
        if not force and _sqlite_has_keys(target):
            raise BackupError(NOT_EMPTY.format(target=target, what="it holds keys"))
        store = SqliteStore(temporary)
        try:
            await _write_records(store, path, total, progress)
            epoch = store.epoch
        finally:
            await store.close()
        _checkpoint(temporary)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{target}{suffix}")
        os.replace(temporary, target)
        _fsync_directory(target.parent)
        return epoch
    except (sqlite3.Error, OSError) as exc:
        raise BackupError(f"cannot restore into {target}: {exc}") from exc
    finally:
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in ("-wal", "-shm", "-journal", ".lock"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        os.close(lock_fd)


async def _restore_etcd(path: Path, url: str, force: bool, total: int, progress: Progress | None) -> str:
    from edgefleet.store.etcd import EtcdStore

    store = open_store(url)
    assert isinstance(store, EtcdStore)
    try:
        existing = await store.list("", limit=1)
        if existing.items and not force:
            raise BackupError(NOT_EMPTY.format(target=url, what=f"it holds {existing.items[0].key} and more"))
        await store.erase()  # its keys and its epoch marker: reopening draws a new epoch
    finally:
        await store.close()
    store = open_store(url)
    try:
        await _write_records(store, path, total, progress)
        return store.epoch
    finally:
        await store.close()


async def _write_records(store: Store, path: Path, total: int, progress: Progress | None) -> None:
    """Create every record of the (already verified) backup, ``WRITERS`` at a time."""
    done = 0
    chunk: list[Record] = []

    async def flush() -> None:
        nonlocal done
        await asyncio.gather(*(store.create(record.key, record.value) for record in chunk))
        done += len(chunk)
        chunk.clear()
        if progress is not None:
            progress(done, total)

    try:
        for item in read_backup(path):
            if isinstance(item, Record):
                chunk.append(item)
                if len(chunk) >= WRITERS:
                    await flush()
        await flush()
    except BackupFormatError as exc:
        raise BackupError(f"{exc} (the file changed while it was being restored; restore again with --force)") from exc


def _lock_sqlite(target: Path) -> int:
    """The store's own lock (``<file>.lock``, as SqliteStore takes it): a running cloud fails the restore first."""
    lock_path = target.with_name(target.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BackupError(
            f"{target} is in use (lock {lock_path} is held): stop the cloud that uses it before restoring into it"
        ) from None
    return fd


def _sqlite_has_keys(target: Path) -> bool:
    if not target.exists() or target.stat().st_size == 0:
        return False
    try:
        conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT 1 FROM log AS l WHERE l.rev = (SELECT MAX(rev) FROM log WHERE key = l.key) "
                "AND l.deleted = 0 LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{target} exists but is not an edgefleet store ({exc}); pass --force to replace it") from exc
    return row is not None


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the file, so that the file alone is the store before it is renamed."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
