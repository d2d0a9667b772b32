"""Backup and restore of stores: the file format, its checks, and restores across backends.

Real stores only: SQLite files in tmp_path and one real etcd member (the
session's ``etcd_server``), each etcd test under a root prefix of its own.
Every refused file is checked to leave the target as it was.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.store.backup import (
    BackupError,
    SqliteFileSource,
    StoreSource,
    backup_to_file,
    read_backup,
    restore,
    verify_backup,
)
from edgefleet.store.backupformat import BackupFormatError, Decoder, Encoder, Header, Record, Trailer
from edgefleet.store.etcd import EtcdStore
from edgefleet.store.interface import Store
from edgefleet.store.sqlite import SqliteStore
from tests.etcd_cluster import EtcdCluster

SITE = json.dumps({"apiVersion": "edgefleet.io/v1", "kind": "Site", "metadata": {"name": "par"}, "spec": {}})
CONTENT = {
    "/registry/sites/par": SITE.encode(),
    "/system/tokens/abc": b'{"hash":"x","role":"admin"}',
    "/system/raw": bytes(range(256)),  # not UTF-8: stored as base64
}


Change = Callable[[list[bytes]], list[bytes]]


async def fill(store: Store) -> None:
    for key, value in CONTENT.items():
        await store.create(key, value)
    lease = await store.grant_lease(60)
    await store.create("/registry/hubs/h1", b'{"kind":"Hub","metadata":{"name":"h1"}}', lease=lease.id)
    await store.update("/system/tokens/abc", CONTENT["/system/tokens/abc"])  # a second revision of one key


async def contents(store: Store) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in (await store.list("")).items}


async def sqlite_backup(tmp_path: Path) -> tuple[Path, str]:
    """A SQLite store filled with CONTENT (plus a leased key), backed up; (backup file, the store's epoch)."""
    store = SqliteStore(tmp_path / "source.db")
    try:
        await fill(store)
        path = tmp_path / "backup.jsonl.gz"
        summary = await backup_to_file(lambda: StoreSource(store, "sqlite"), path)
        assert summary.count == len(CONTENT) and summary.skipped_leased == 1
        return path, store.epoch
    finally:
        await store.close()


def rewrite(path: Path, change: Change, name: str) -> Path:
    """A copy of the backup at ``path`` with its lines changed, as ``name``."""
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    altered = path.with_name(name)
    altered.write_bytes(gzip.compress(b"".join(change(lines))))
    return altered


# -- the format, pure ------------------------------------------------------------


def encode(records: list[tuple[str, bytes]]) -> list[bytes]:
    encoder = Encoder()
    lines = [encoder.header(Header(7, "e1", "sqlite", "2026-12-07T00:00:00Z"))]
    lines += [encoder.record(key, value) for key, value in records]
    return [*lines, encoder.trailer(0)]


def decode(lines: list[bytes]) -> list[Header | Record | Trailer]:
    decoder = Decoder()
    parts = [decoder.line(line) for line in lines]
    decoder.finish()
    return parts


def test_the_format_round_trips_text_and_binary_values() -> None:
    parts = decode(encode([("/a", b"text \xc3\xa9"), ("/b", b"\xff\x00")]))
    assert parts[0] == Header(7, "e1", "sqlite", "2026-12-07T00:00:00Z")
    assert parts[1:3] == [Record("/a", "text é".encode()), Record("/b", b"\xff\x00")]
    assert isinstance(parts[3], Trailer) and parts[3].count == 2
    assert b'"base64"' in encode([("/b", b"\xff")])[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ls: [ls[0], ls[1].replace(b"text", b"TEXT"), *ls[2:]], "checksum mismatch"),
        (lambda ls: [ls[0], *ls[2:]], "counts 2 records"),
        (lambda ls: ls[:-1], "truncated"),
        (lambda ls: [*ls, ls[1]], "after the trailer"),
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], "out of order"),
        (lambda ls: [ls[0].replace(b'"version":1', b'"version":9'), *ls[1:]], "version 9"),
        (lambda ls: [b'{"format":"other"}\n', *ls[1:]], "not an edgefleet backup"),
        (lambda ls: [ls[0], b"not json\n", *ls[2:]], "not a JSON line"),
        (lambda ls: [ls[0], b'{"key":"no-slash","value":""}\n', *ls[2:]], "bad key"),
        (lambda ls: [ls[0], ls[1], ls[2][:-1]], "middle of a line"),
        (lambda ls: [], "empty"),
    ],
)
def test_a_damaged_file_is_refused_with_a_clear_error(change: Change, message: str) -> None:
    lines = encode([("/a", b"text"), ("/b", b"more")])
    with pytest.raises(BackupFormatError, match=message):
        decode(change(lines))


def test_a_registry_record_must_be_a_resource_named_like_its_key() -> None:
    lines = encode([("/registry/sites/par", SITE.encode())])
    decode(lines)
    wrong = encode([("/registry/sites/lyon", SITE.encode())])
    with pytest.raises(BackupFormatError, match=r"metadata\.name"):
        decode(wrong)
    with pytest.raises(BackupFormatError, match="not JSON"):
        decode(encode([("/registry/sites/par", b"{oops")]))


# -- SQLite ----------------------------------------------------------------------


async def test_sqlite_round_trip_keeps_every_unleased_key_and_starts_a_new_epoch(tmp_path: Path) -> None:
    path, epoch = await sqlite_backup(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "a backup holds secrets"
    header, trailer = verify_backup(path)
    assert header.epoch == epoch and header.source == "sqlite" and trailer.skipped_leased == 1
    summary = await restore(path, f"sqlite:///{tmp_path}/target.db")
    assert summary.count == len(CONTENT) and summary.epoch != epoch
    target = SqliteStore(tmp_path / "target.db")
    try:
        assert await contents(target) == CONTENT, "every key, no leased one"
        assert target.epoch == summary.epoch
    finally:
        await target.close()
    assert stat.S_IMODE(os.stat(tmp_path / "target.db").st_mode) == 0o600
    assert [name for name in os.listdir(tmp_path) if "restore" in name] == [], "no temporary file left"


async def test_the_file_source_reads_one_snapshot_beside_a_running_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "live.db")  # holds the file's lock, as the cloud does
    try:
        await fill(store)
        revision = await store.current_revision()
        summary = await backup_to_file(lambda: SqliteFileSource(tmp_path / "live.db"), tmp_path / "b.gz")
        await store.create("/registry/sites/later", b"{}")  # after the backup: not in it
    finally:
        await store.close()
    assert summary.revision == revision and summary.count == len(CONTENT) and summary.skipped_leased == 1
    assert [r.key for r in _records(tmp_path / "b.gz")] == sorted(CONTENT)


def _records(path: Path) -> list[Record]:
    return [item for item in read_backup(path) if isinstance(item, Record)]


async def test_a_damaged_backup_changes_nothing_in_the_target(tmp_path: Path) -> None:
    path, _ = await sqlite_backup(tmp_path)
    tampered = rewrite(path, lambda ls: [*ls[:3], ls[3].replace(b"admin", b"owner"), *ls[4:]], "t.gz")
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    no_trailer = rewrite(path, lambda ls: ls[:-1], "n.gz")
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(os.urandom(300))
    for bad, message in [
        (tampered, "checksum mismatch"),
        (truncated, "not a complete gzip"),
        (no_trailer, "truncated"),
        (garbage, "not a complete gzip"),
    ]:
        with pytest.raises(BackupFormatError, match=message):
            await restore(bad, f"sqlite:///{tmp_path}/target.db", force=True)
        assert not (tmp_path / "target.db").exists(), f"{bad.name} touched the target"


async def test_a_non_empty_target_is_refused_unless_forced(tmp_path: Path) -> None:
    path, _ = await sqlite_backup(tmp_path)
    existing = SqliteStore(tmp_path / "target.db")
    await existing.create("/registry/other/x", b"{}")
    old_epoch = existing.epoch
    with pytest.raises(BackupError, match="in use"):
        await restore(path, f"sqlite:///{tmp_path}/target.db", force=True)  # its cloud still runs
    await existing.close()
    with pytest.raises(BackupError, match=r"not empty.*--force"):
        await restore(path, f"sqlite:///{tmp_path}/target.db")
    summary = await restore(path, f"sqlite:///{tmp_path}/target.db", force=True)
    target = SqliteStore(tmp_path / "target.db")
    try:
        assert await contents(target) == CONTENT, "replaced, not mixed"
        assert target.epoch == summary.epoch != old_epoch
    finally:
        await target.close()


# -- across backends, with a real etcd ----------------------------------------------------------


@pytest.mark.etcd
async def test_sqlite_to_etcd_and_back(tmp_path: Path, etcd_server: EtcdCluster) -> None:
    path, sqlite_epoch = await sqlite_backup(tmp_path)
    url = f"{etcd_server.url}/dr-{uuid.uuid4().hex[:8]}"
    into_etcd = await restore(path, url)
    assert into_etcd.epoch != sqlite_epoch
    with pytest.raises(BackupError, match="not empty"):
        await restore(path, url)
    store = EtcdStore(etcd_server.endpoints, root="/" + url.rsplit("/", 1)[1])
    try:
        assert await contents(store) == CONTENT and store.epoch == into_etcd.epoch
        await store.create("/registry/sites/added", b"{}")
        back = tmp_path / "from-etcd.gz"
        summary = await backup_to_file(lambda: StoreSource(store, "etcd"), back)
        assert summary.count == len(CONTENT) + 1
    finally:
        await store.close()
    with pytest.raises(BackupFormatError, match="not a resource"):
        await restore(back, f"sqlite:///{tmp_path}/back.db")  # "{}" is no resource: refused whole
    assert not (tmp_path / "back.db").exists()
    forced = await restore(path, url, force=True)
    assert forced.epoch not in (into_etcd.epoch, sqlite_epoch), "a forced restore starts a new epoch too"
    reopened = EtcdStore(etcd_server.endpoints, root="/" + url.rsplit("/", 1)[1])
    try:
        assert await contents(reopened) == CONTENT, "the forced restore replaced what was there"
    finally:
        await reopened.close()
    etcd_file = tmp_path / "etcd-ok.gz"
    source = EtcdStore(etcd_server.endpoints, root="/" + url.rsplit("/", 1)[1])
    try:
        await backup_to_file(lambda: StoreSource(source, "etcd"), etcd_file)
    finally:
        await source.close()
    into_sqlite = await restore(etcd_file, f"sqlite:///{tmp_path}/from-etcd.db")
    target = SqliteStore(tmp_path / "from-etcd.db")
    try:
        assert await contents(target) == CONTENT and target.epoch == into_sqlite.epoch
    finally:
        await target.close()


@pytest.mark.parametrize("source_kind", ["file", "store"])
async def test_a_backup_reads_one_revision_while_writes_go_on(tmp_path: Path, source_kind: str) -> None:
    store = SqliteStore(tmp_path / "live.db")
    try:
        await asyncio.gather(*(store.create(f"/k/{i:05}", b"v0") for i in range(1200)))  # several pages
        source = SqliteFileSource(tmp_path / "live.db") if source_kind == "file" else StoreSource(store, "sqlite")
        await source.begin()
        pages = source.pages()
        first = await anext(pages)
        for i in range(300):  # between two pages: updates spread over every page, and new keys
            await store.update(f"/k/{i * 4:05}", b"v1")
            await store.create(f"/new/{i:05}", b"new")
        rest = [kv async for page in pages for kv in page]
        await source.end()
        assert await store.current_revision() == source.revision + 600
    finally:
        await store.close()
    read = {kv.key: kv.value for kv in [*first, *rest]}
    assert len(first) < 1200 and read == {f"/k/{i:05}": b"v0" for i in range(1200)}, "the state at one revision"
