"""The disk tier: layout, checks on read, recovery on open, eviction, full disks, several processes."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from edgefleet.cache.errors import StorageError
from edgefleet.cache.storage import disk as disk_module
from edgefleet.cache.storage.disk import HEADER, HEADER_SIZE, MAGIC, DiskEntry, DiskTier, DiskWriter
from edgefleet.cache.storage.entries import EntryMeta, entry_id
from tests.cache.test_memory import meta_for


class Clock:
    """A settable wall clock, so that LRU order does not depend on timer resolution."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tier(tmp_path: Path, clock: Clock) -> Iterator[DiskTier]:
    with DiskTier(tmp_path / "cache", max_bytes=1 << 24, clock=clock, touch_interval=3600) as opened:
        yield opened


def store(
    tier: DiskTier, key: str, body: bytes, variant: str = "", *, vary: tuple[str, ...] = (), tags: tuple[str, ...] = ()
) -> EntryMeta:
    """Stream ``body`` in two chunks with a provisional size of 0, as the proxy does before it knows the length."""
    meta = meta_for(key, variant, vary=vary, tags=tags)
    writer = tier.writer(meta)
    assert writer.write(body[: len(body) // 2]) and writer.write(body[len(body) // 2 :])
    assert writer.commit(meta)
    return replace(meta, size=len(body))


def body_of(entry: DiskEntry) -> bytes:
    fd = entry.open()
    try:
        return os.pread(fd, entry.size, entry.body_offset)
    finally:
        os.close(fd)


def files_under(path: Path) -> list[Path]:
    return sorted(item for item in (path / "objects").rglob("*") if item.is_file())


def test_written_object_is_found_with_its_meta_and_body(tier: DiskTier) -> None:
    meta = store(tier, "http://a/x.js", b"console.log(1)\n" * 100, tags=("js",))
    entry = tier.lookup("http://a/x.js", "")
    assert entry is not None
    with entry:
        assert entry.meta == meta and entry.meta.size == 1500 == entry.size
        assert body_of(entry) == b"console.log(1)\n" * 100
        assert entry.path == tier.path / "objects" / meta.id[:2] / meta.id
    assert tier.lookup("http://a/x.js", "gzip") is None
    assert tier.lookup("http://a/other", "") is None
    assert tier.count() == 1 and tier.bytes_used() == entry.path.stat().st_size


def test_file_layout_is_header_meta_body(tier: DiskTier) -> None:
    store(tier, "http://a/x", b"BODY")
    raw = (tier.path / "objects" / entry_id("http://a/x", "")[:2] / entry_id("http://a/x", "")).read_bytes()
    magic, meta_length, body_length, digest = HEADER.unpack_from(raw)
    assert (magic, body_length, HEADER_SIZE) == (MAGIC, 4, 48)
    meta_bytes = raw[HEADER_SIZE : HEADER_SIZE + meta_length]
    assert hashlib.sha256(meta_bytes).digest() == digest
    assert EntryMeta.from_json(meta_bytes).key == "http://a/x"
    assert raw[HEADER_SIZE + meta_length :] == b"BODY"


def test_a_meta_that_outgrows_its_reservation_is_still_stored_whole(tier: DiskTier) -> None:
    provisional = meta_for("http://a/big-meta", headers=[])
    writer = tier.writer(provisional)
    writer.write(b"b" * 10_000)
    final = replace(provisional, headers=[(f"X-Field-{n}", "v" * 50) for n in range(100)], size=10_000)
    assert writer.commit(final)
    entry = tier.lookup("http://a/big-meta", "")
    assert entry is not None
    with entry:
        assert entry.meta == final and body_of(entry) == b"b" * 10_000
    assert [path.suffix for path in files_under(tier.path)] == [""]


def test_the_index_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    with DiskTier(tmp_path, 1 << 20, clock=clock) as first:
        store(first, "http://a/x", b"kept", tags=("t",))
        used = first.bytes_used()
    with DiskTier(tmp_path, 1 << 20, clock=clock) as second:
        entry = second.lookup("http://a/x", "")
        assert entry is not None and entry.read_body() == b"kept"
        entry.close()
        assert (second.count(), second.bytes_used()) == (1, used)
        assert second.remove_tag("t") == 1
        assert second.lookup("http://a/x", "") is None


def test_variants_come_from_the_index(tier: DiskTier) -> None:
    vary = ("accept-encoding",)
    store(tier, "http://a/x", b"g", "gzip", vary=vary)
    store(tier, "http://a/x", b"b", "br", vary=vary)
    store(tier, "http://a/xy", b"other")
    assert sorted(meta.variant for meta in tier.variants("http://a/x")) == ["br", "gzip"]
    assert tier.variants("http://a/none") == []
    store(tier, "http://a/x", b"plain")  # the origin dropped Vary: the old variant set goes
    assert [meta.variant for meta in tier.variants("http://a/x")] == [""]
    assert tier.count() == 2 and len(files_under(tier.path)) == 2


def test_a_second_commit_of_the_same_entry_replaces_the_first(tier: DiskTier) -> None:
    store(tier, "http://a/x", b"one", tags=("old",))
    store(tier, "http://a/x", b"second", tags=("new",))
    entry = tier.lookup("http://a/x", "")
    assert entry is not None and entry.read_body() == b"second"
    entry.close()
    assert tier.count() == 1 and tier.bytes_used() == entry.path.stat().st_size
    assert tier.remove_tag("old") == 0 and tier.remove_tag("new") == 1


def test_commit_with_the_meta_of_another_entry_is_a_bug(tier: DiskTier) -> None:
    writer = tier.writer(meta_for("http://a/x"))
    writer.write(b"x")
    with pytest.raises(StorageError):
        writer.commit(meta_for("http://a/y"))
    assert files_under(tier.path) == [] and tier.count() == 0


def test_abort_leaves_nothing(tier: DiskTier) -> None:
    writer = tier.writer(meta_for("http://a/x"))
    writer.write(b"x" * 1000)
    writer.abort()
    assert not writer.write(b"more") and not writer.commit(meta_for("http://a/x"))
    assert files_under(tier.path) == [] and tier.lookup("http://a/x", "") is None


# --- damaged files are misses, and are removed -------------------------------------


def object_file(tier: DiskTier, key: str) -> Path:
    return tier.object_path(entry_id(key, ""))


def flip_meta_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 5] ^= 0x01
    path.write_bytes(bytes(raw))


def truncate_body(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 1)


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(300))


def wrong_magic(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"XXXX"
    path.write_bytes(bytes(raw))


def too_short(path: Path) -> None:
    path.write_bytes(b"EFC1")


@pytest.mark.parametrize("damage", [flip_meta_byte, truncate_body, garbage, wrong_magic, too_short])
def test_a_damaged_object_is_a_miss_and_is_removed(tier: DiskTier, damage: Callable[[Path], None]) -> None:
    store(tier, "http://a/x", b"x" * 5000)
    store(tier, "http://a/y", b"y" * 10)
    path = object_file(tier, "http://a/x")
    damage(path)
    assert tier.lookup("http://a/x", "") is None
    assert not path.exists()
    assert tier.count() == 1 and tier.bytes_used() == object_file(tier, "http://a/y").stat().st_size


def test_an_object_filed_under_another_entry_is_a_miss(tier: DiskTier) -> None:
    store(tier, "http://a/x", b"x")
    store(tier, "http://a/y", b"y")
    object_file(tier, "http://a/x").replace(object_file(tier, "http://a/y"))
    assert tier.lookup("http://a/y", "") is None
    assert not object_file(tier, "http://a/y").exists()


def test_variants_skip_and_remove_damaged_objects(tier: DiskTier) -> None:
    vary = ("accept-encoding",)
    store(tier, "http://a/x", b"g", "gzip", vary=vary)
    store(tier, "http://a/x", b"b", "br", vary=vary)
    garbage(tier.object_path(entry_id("http://a/x", "gzip")))
    assert [meta.variant for meta in tier.variants("http://a/x")] == ["br"]
    assert tier.count() == 1


# --- full disks ------------------------------------------------------------------


def test_a_full_disk_stops_the_writer_and_leaves_nothing(tier: DiskTier, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = tier.writer(meta_for("http://a/x"))
    assert writer.write(b"first chunk fits")

    def no_space(self: DiskWriter, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DiskWriter, "_write", no_space)
    assert not writer.write(b"second chunk does not")
    monkeypatch.undo()
    assert not writer.write(b"later chunks are ignored")
    assert not writer.commit(meta_for("http://a/x"))
    assert files_under(tier.path) == []
    assert tier.count() == 0 and tier.lookup("http://a/x", "") is None


def test_a_full_disk_while_moving_an_outgrown_meta_leaves_nothing(
    tier: DiskTier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_module, "copy_range", no_space)
    provisional = meta_for("http://a/x", headers=[])
    writer = tier.writer(provisional)
    assert writer.write(b"x" * 1000)
    assert not writer.commit(replace(provisional, headers=[("X-Long", "v" * 5000)]))
    assert files_under(tier.path) == [] and tier.count() == 0


def test_a_short_write_is_retried(tier: DiskTier, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = DiskWriter._write
    monkeypatch.setattr(DiskWriter, "_write", lambda self, data: real_write(self, data[:3]))
    store(tier, "http://a/x", b"0123456789")
    entry = tier.lookup("http://a/x", "")
    assert entry is not None and entry.read_body() == b"0123456789"
    entry.close()


# --- updates and purges ------------------------------------------------------------


def test_update_meta_keeps_the_body_and_a_reader_keeps_what_it_checked(tier: DiskTier) -> None:
    meta = store(tier, "http://a/x", b"the body" * 1000, tags=("a",))
    before = tier.lookup("http://a/x", "")
    assert before is not None
    updated = replace(meta, headers=[*meta.headers, ("X-Revalidated", "yes" * 200)], tags=("b",), size=0)
    assert tier.update_meta("http://a/x", "", updated)
    after = tier.lookup("http://a/x", "")
    assert after is not None
    assert after.meta == replace(updated, size=8000) and after.read_body() == b"the body" * 1000
    assert after.body_offset != before.body_offset
    assert before.read_body() == b"the body" * 1000  # the old inode, still whole
    before.close()
    after.close()
    assert tier.bytes_used() == after.path.stat().st_size
    assert tier.remove_tag("a") == 0 and tier.remove_tag("b") == 1
    assert not tier.update_meta("http://a/x", "", updated)
    assert files_under(tier.path) == []


def fill_for_purges(tier: DiskTier) -> None:
    store(tier, "http://a/img/1.png", b"1", tags=("img", "all"))
    store(tier, "http://a/img/2.png", b"2", "gzip", vary=("accept-encoding",), tags=("img",))
    store(tier, "http://a/img/2.png", b"2", "br", vary=("accept-encoding",), tags=("img",))
    store(tier, "http://a/js/app.js", b"3", tags=("all",))
    store(tier, "http://a/img", b"4")
    store(tier, "http://a/imh/5.png", b"5")


def test_hard_purges_remove_files_and_rows(tier: DiskTier) -> None:
    fill_for_purges(tier)
    assert tier.remove("http://a/img/2.png") == 2
    assert tier.remove_prefix("http://a/img/") == 1
    assert tier.remove_tag("all") == 1
    assert tier.remove_prefix("http://a/zzz") == 0
    assert sorted(path.name for path in files_under(tier.path)) == sorted(
        [entry_id("http://a/img", ""), entry_id("http://a/imh/5.png", "")]
    )
    assert tier.count() == 2
    assert tier.remove_prefix("") == 2 and tier.bytes_used() == 0


def test_soft_purges_mark_objects_for_revalidation(tier: DiskTier) -> None:
    fill_for_purges(tier)
    assert tier.invalidate("http://a/img/2.png") == 2
    assert tier.invalidate_prefix("http://a/img/") == 3
    assert tier.invalidate_tag("all") == 2
    assert tier.invalidate("http://nowhere/") == 0
    marked = {
        meta.key: meta.invalidated for key in ("http://a/img/1.png", "http://a/img") for meta in tier.variants(key)
    }
    assert marked == {"http://a/img/1.png": True, "http://a/img": False}
    entry = tier.lookup("http://a/js/app.js", "")
    assert entry is not None and entry.meta.invalidated and entry.read_body() == b"3"
    entry.close()
    assert tier.count() == 6


# --- access times, eviction --------------------------------------------------------------


def last_access(tier: DiskTier, key: str) -> float:
    with sqlite3.connect(tier.path / "index.db") as conn:
        row = conn.execute("SELECT last_access FROM objects WHERE id = ?", (entry_id(key, ""),)).fetchone()
    conn.close()
    return float(row[0])


def test_hits_are_written_to_the_index_in_batches(tier: DiskTier, clock: Clock) -> None:
    store(tier, "http://a/x", b"x")
    clock.now = 2000.0
    entry = tier.lookup("http://a/x", "")
    assert entry is not None
    entry.close()
    assert last_access(tier, "http://a/x") == 1000.0  # not on every hit
    tier.flush()
    assert last_access(tier, "http://a/x") == 2000.0


def test_eviction_is_least_recently_used_by_bytes_across_a_restart(tmp_path: Path, clock: Clock) -> None:
    with DiskTier(tmp_path, 1 << 30, clock=clock) as probe:
        store(probe, "http://a/probe", b"x" * 1000)
        object_size = probe.bytes_used()
    limit = 3 * object_size + object_size // 2
    with DiskTier(tmp_path, limit, clock=clock) as first:
        first.remove("http://a/probe")
        for n, key in enumerate(["http://a/a", "http://a/b", "http://a/c"]):
            clock.now = 1000.0 + n
            store(first, key, b"x" * 1000)
        clock.now = 1010.0
        hit = first.lookup("http://a/a", "")
        assert hit is not None
        hit.close()
    with DiskTier(tmp_path, limit, clock=clock) as second:  # the hit was flushed on close
        clock.now = 1020.0
        store(second, "http://a/d", b"x" * 1000)
        assert second.lookup("http://a/b", "") is None
        assert all(object_file(second, f"http://a/{name}").exists() for name in "acd")  # (a lookup would touch)
        assert second.bytes_used() <= limit and second.evictions == 1
        store(second, "http://a/big", b"x" * 2000)
        assert second.lookup("http://a/c", "") is None and second.lookup("http://a/a", "") is None
        assert second.bytes_used() <= limit and second.evictions == 3
    with DiskTier(tmp_path, object_size, clock=clock) as smaller:  # a lower limit applies on open
        assert smaller.count() == 1 and smaller.lookup("http://a/big", "") is None
        assert len(files_under(tmp_path)) == 1


def test_evict_returns_the_metas_it_removed(tier: DiskTier) -> None:
    meta = store(tier, "http://a/x", b"x" * 100)
    tier.max_bytes = 0
    assert tier.evict() == [meta]
    assert tier.count() == 0 and files_under(tier.path) == []


# --- recovery on open -----------------------------------------------------------------------


def test_open_removes_dead_part_files_but_not_live_ones(tmp_path: Path) -> None:
    with DiskTier(tmp_path, 1 << 20) as first:
        live = first.writer(meta_for("http://a/live"))
        live.write(b"streaming")
        dead = tmp_path / "objects" / "ab" / f"{'ab' * 32}.1234.part"
        dead.parent.mkdir(exist_ok=True)
        dead.write_bytes(b"half an object")
        with DiskTier(tmp_path, 1 << 20):  # another worker starting up
            pass
        assert not dead.exists()
        assert live.commit(meta_for("http://a/live"))
        assert [path.suffix for path in files_under(tmp_path)] == [""]


def test_open_drops_rows_whose_file_is_gone(tmp_path: Path) -> None:
    with DiskTier(tmp_path, 1 << 20) as first:
        store(first, "http://a/x", b"x")
        store(first, "http://a/y", b"y")
    object_file(first, "http://a/x").unlink()
    with DiskTier(tmp_path, 1 << 20) as second:
        assert second.count() == 1
        assert second.bytes_used() == object_file(second, "http://a/y").stat().st_size


def test_open_indexes_files_without_rows_and_removes_bad_ones(tmp_path: Path) -> None:
    with DiskTier(tmp_path, 1 << 20) as first:
        store(first, "http://a/x", b"x", tags=("t",))
        store(first, "http://a/y", b"y")
    with sqlite3.connect(tmp_path / "index.db") as conn:
        conn.execute("DELETE FROM objects")  # as if we crashed between the rename and the commit
    conn.close()
    garbage(object_file(first, "http://a/y"))
    stray = tmp_path / "objects" / "zz"
    stray.mkdir()
    (stray / "notes.txt").write_text("not ours")
    with DiskTier(tmp_path, 1 << 20) as second:
        assert second.count() == 1 and second.bytes_used() == object_file(second, "http://a/x").stat().st_size
        assert [path.name for path in files_under(tmp_path)] == [entry_id("http://a/x", "")]
        assert second.remove_tag("t") == 1


def test_methods_refuse_a_tier_that_is_not_open(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 1 << 20)
    with pytest.raises(StorageError):
        tier.writer(meta_for("http://a/x"))
    with pytest.raises(StorageError):
        tier.count()


# --- several processes on one directory ---------------------------------------------------------


def _body(worker: int, round_: int) -> bytes:
    return hashlib.sha256(f"{worker}/{round_}".encode()).digest() * (10 + (worker * 31 + round_ * 17) % 300)


def _hammer(path: str, worker: int, rounds: int, limit: int) -> list[str]:
    """Write and read shared keys; return every inconsistency seen."""
    problems = []
    with DiskTier(Path(path), limit, touch_interval=0.0) as tier:
        for round_ in range(rounds):
            key = f"http://demo.example/{round_ % 15}"
            body = _body(worker, round_)
            digest = hashlib.sha256(body).hexdigest()
            meta = meta_for(key, headers=[("X-Digest", digest)], tags=(f"w{worker}",))
            writer = tier.writer(meta)
            for start in range(0, len(body), 4096):
                writer.write(body[start : start + 4096])
            if not writer.commit(meta):
                problems.append(f"commit failed for {key}")
            entry = tier.lookup(f"http://demo.example/{(round_ * 7) % 15}", "")
            if entry is not None:
                with entry:
                    if hashlib.sha256(entry.read_body()).hexdigest() != dict(entry.meta.headers)["X-Digest"]:
                        problems.append(f"torn object {entry.meta.key}")
            if round_ % 25 == 0:
                tier.remove_tag(f"w{1 - worker}")
    return problems


def test_two_processes_share_one_directory(tmp_path: Path) -> None:
    limit = 60_000
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [pool.submit(_hammer, str(tmp_path), worker, 150, limit) for worker in (0, 1)]
        assert [future.result(timeout=60) for future in futures] == [[], []]
    with DiskTier(tmp_path, limit) as tier:
        with sqlite3.connect(tmp_path / "index.db") as conn:
            rows = conn.execute("SELECT id, key, size FROM objects").fetchall()
            totals = conn.execute("SELECT bytes, objects FROM totals").fetchone()
        conn.close()
        files = {path.name: path.stat().st_size for path in files_under(tmp_path)}
        assert files == {object_id: size for object_id, _, size in rows}
        assert totals == (sum(files.values()), len(files)) and 0 < tier.bytes_used() <= limit
        for _, key, _ in rows:
            entry = tier.lookup(key, "")
            assert entry is not None
            with entry:
                assert hashlib.sha256(entry.read_body()).hexdigest() == dict(entry.meta.headers)["X-Digest"]
