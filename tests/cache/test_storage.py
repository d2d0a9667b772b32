"""The storage facade: Vary matching across tiers, promotion, writes to both tiers, purges, stats."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edgefleet.cache.storage.disk import DiskEntry, DiskTier, DiskWriter
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.memory import MemoryEntry, MemoryTier
from edgefleet.cache.storage.store import Storage
from tests.cache.test_memory import meta_for

ACCEPT_ENCODING = ("accept-encoding",)


def request(**fields: str) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in fields.items()}


def variant_of_request(headers: dict[str, str]) -> Callable[[tuple[str, ...]], str]:
    """The secondary key of a request for a given Vary list (a stand-in for the lead's keys module)."""

    def variant_of(vary: tuple[str, ...]) -> str:
        return "\n".join(f"{name}={headers.get(name, '')}" for name in vary)

    return variant_of


def key_for(vary: tuple[str, ...], **fields: str) -> str:
    return "\n".join(f"{name}={request(**fields).get(name, '')}" for name in vary)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskTier]:
    with DiskTier(tmp_path, 1 << 24) as opened:
        yield opened


@pytest.fixture
def storage(disk: DiskTier) -> Storage:
    return Storage(MemoryTier(max_bytes=1 << 20, max_object_bytes=1000), disk)


def stored(storage: Storage, key: str, body: bytes, vary: tuple[str, ...] = (), **fields: str) -> None:
    meta = meta_for(key, key_for(vary, **fields), vary=vary, size=len(body), tags=("t",))
    assert storage.store_small(meta, body)


def find(storage: Storage, key: str, **fields: str) -> MemoryEntry | DiskEntry | None:
    return storage.find(key, variant_of_request(request(**fields)))


def test_store_small_writes_both_tiers(storage: Storage, disk: DiskTier) -> None:
    stored(storage, "http://a/x", b"hello")
    assert storage.memory.get("http://a/x", "") is not None
    entry = disk.lookup("http://a/x", "")
    assert entry is not None and entry.read_body() == b"hello"
    entry.close()
    found = find(storage, "http://a/x")
    assert isinstance(found, MemoryEntry) and found.body == b"hello"
    assert find(storage, "http://a/y") is None


def test_the_variant_matching_the_request_is_found(storage: Storage) -> None:
    stored(storage, "http://a/x", b"gzipped", ACCEPT_ENCODING, accept_encoding="gzip")
    stored(storage, "http://a/x", b"plain", ACCEPT_ENCODING, accept_encoding="identity")
    found = find(storage, "http://a/x", accept_encoding="gzip")
    assert isinstance(found, MemoryEntry) and found.body == b"gzipped"
    found = find(storage, "http://a/x", accept_encoding="identity")
    assert isinstance(found, MemoryEntry) and found.body == b"plain"
    assert find(storage, "http://a/x", accept_encoding="br") is None
    assert find(storage, "http://a/x") is None


def test_a_disk_hit_is_promoted_to_memory(storage: Storage) -> None:
    stored(storage, "http://a/x", b"gz", ACCEPT_ENCODING, accept_encoding="gzip")
    stored(storage, "http://a/x", b"br", ACCEPT_ENCODING, accept_encoding="br")
    storage.memory.remove("http://a/x")  # as after a restart: only the disk has them
    found = find(storage, "http://a/x", accept_encoding="br")
    assert isinstance(found, MemoryEntry) and found.body == b"br"
    assert [entry.body for entry in storage.memory.variants("http://a/x")] == [b"br"]
    again = find(storage, "http://a/x", accept_encoding="br")
    assert again is storage.memory.get("http://a/x", found.meta.variant)
    miss_in_memory = find(storage, "http://a/x", accept_encoding="gzip")
    assert isinstance(miss_in_memory, MemoryEntry) and miss_in_memory.body == b"gz"


def test_a_large_disk_hit_stays_on_disk(storage: Storage, disk: DiskTier) -> None:
    meta = meta_for("http://a/video", size=5000)
    writer = disk.writer(meta)
    writer.write(b"v" * 5000)
    assert writer.commit(meta)
    found = find(storage, "http://a/video")
    assert isinstance(found, DiskEntry) and found.read_body() == b"v" * 5000
    found.close()
    assert len(storage.memory) == 0


def test_a_plain_object_on_disk_needs_no_index_query(
    storage: Storage, disk: DiskTier, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored(storage, "http://a/x", b"plain")
    stored(storage, "http://a/v", b"varied", ACCEPT_ENCODING, accept_encoding="gzip")
    storage.memory.remove_prefix("http://a/")
    asked: list[str] = []
    real_variants = disk.variants

    def variants(key: str) -> list[EntryMeta]:
        asked.append(key)
        return real_variants(key)

    monkeypatch.setattr(disk, "variants", variants)
    assert isinstance(find(storage, "http://a/x"), MemoryEntry)
    assert asked == []
    assert isinstance(find(storage, "http://a/v", accept_encoding="gzip"), MemoryEntry)
    assert asked == ["http://a/v"]


def test_without_a_disk_tier(tmp_path: Path) -> None:
    storage = Storage(MemoryTier(1 << 20, 1000), None)
    assert storage.store_small(meta_for("http://a/x", size=1), b"x")
    assert isinstance(find(storage, "http://a/x"), MemoryEntry)
    assert storage.disk_writer(meta_for("http://a/y")) is None
    assert storage.purge(["http://a/x"], [], [], soft=False) == 1
    assert storage.stats() == {
        "memory_bytes": 0,
        "memory_objects": 0,
        "disk_bytes": 0,
        "disk_objects": 0,
        "evictions": 0,
    }


def test_store_small_on_a_full_disk_keeps_the_memory_copy(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(self: DiskWriter, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DiskWriter, "_write", no_space)
    assert not storage.store_small(meta_for("http://a/x", size=1), b"x")
    assert storage.memory.get("http://a/x", "") is not None
    assert storage.stats()["disk_objects"] == 0


def fill(storage: Storage) -> None:
    stored(storage, "http://a/img/1.png", b"1")
    stored(storage, "http://a/img/2.png", b"2", ACCEPT_ENCODING, accept_encoding="gzip")
    stored(storage, "http://a/img/2.png", b"2", ACCEPT_ENCODING, accept_encoding="br")
    stored(storage, "http://a/js/app.js", b"3")
    stored(storage, "http://b/x", b"4")


def test_hard_purge_empties_both_tiers(storage: Storage, disk: DiskTier) -> None:
    fill(storage)
    storage.memory.remove("http://a/js/app.js")  # only on disk now
    assert storage.purge(["http://a/js/app.js"], ["http://a/img/"], [], soft=False) == 4
    assert len(storage.memory) == 1 and disk.count() == 1
    assert storage.purge([], [], ["t"], soft=False) == 1
    assert len(storage.memory) == 0 and disk.count() == 0


def test_soft_purge_marks_both_tiers(storage: Storage, disk: DiskTier) -> None:
    fill(storage)
    assert storage.purge([], ["http://a/"], [], soft=True) == 4
    assert all(entry.meta.invalidated for entry in storage.memory.variants("http://a/img/2.png"))
    assert all(meta.invalidated for meta in disk.variants("http://a/img/2.png"))
    assert not any(meta.invalidated for meta in disk.variants("http://b/x"))
    storage.memory.remove("http://a/img/1.png")
    promoted = find(storage, "http://a/img/1.png")
    assert isinstance(promoted, MemoryEntry) and promoted.meta.invalidated


def test_update_meta_reaches_both_tiers(storage: Storage, disk: DiskTier) -> None:
    stored(storage, "http://a/x", b"body")
    found = find(storage, "http://a/x")
    assert isinstance(found, MemoryEntry)
    refreshed = replace(found.meta, fresh_until=12345.0)
    storage.update_meta(refreshed)
    memory_entry = storage.memory.get("http://a/x", "")
    disk_entry = disk.lookup("http://a/x", "")
    assert memory_entry is not None and memory_entry.meta.fresh_until == 12345.0
    assert disk_entry is not None and disk_entry.meta.fresh_until == 12345.0 and disk_entry.read_body() == b"body"
    disk_entry.close()


def test_stats_count_both_tiers(storage: Storage, disk: DiskTier) -> None:
    fill(storage)
    stats = storage.stats()
    assert stats["memory_objects"] == 5 and stats["disk_objects"] == 5
    assert stats["memory_bytes"] == storage.memory.bytes_used > 0
    assert stats["disk_bytes"] == disk.bytes_used() > 0
    assert stats["evictions"] == 0
