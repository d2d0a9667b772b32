"""The entry model and the memory tier: LRU by bytes, purges, soft purge, and a model-based check."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.cache.errors import StorageError
from edgefleet.cache.storage.entries import EntryMeta, entry_id
from edgefleet.cache.storage.memory import MemoryEntry, MemoryTier, meta_charge


def meta_for(
    key: str,
    variant: str = "",
    *,
    vary: tuple[str, ...] = (),
    size: int = 0,
    tags: tuple[str, ...] = (),
    headers: list[tuple[str, str]] | None = None,
    response_time: float = 1000.0,
) -> EntryMeta:
    """A plausible stored-response meta (shared by the cache storage tests)."""
    return EntryMeta(
        key=key,
        variant=variant,
        vary=vary,
        status=200,
        reason="OK",
        headers=headers if headers is not None else [("Content-Type", "text/plain"), ("ETag", '"v1"')],
        request_time=response_time - 0.1,
        response_time=response_time,
        initial_age=0.0,
        fresh_until=response_time + 60,
        stale_while_revalidate_until=response_time + 90,
        stale_if_error_until=response_time + 600,
        must_revalidate=False,
        no_cache=False,
        size=size,
        tags=tags,
    )


def entry_for(
    key: str, body: bytes, variant: str = "", *, vary: tuple[str, ...] = (), tags: tuple[str, ...] = ()
) -> MemoryEntry:
    return MemoryEntry(meta_for(key, variant, size=len(body), vary=vary, tags=tags), body)


# --- entries -------------------------------------------------------------------


def test_entry_id_is_the_sha256_of_key_nul_variant() -> None:
    assert entry_id("http://a/x", "gzip") == hashlib.sha256(b"http://a/x\0gzip").hexdigest()
    assert entry_id("http://a/x", "") != entry_id("http://a/x", "gzip")
    assert meta_for("http://a/x", "gzip").id == entry_id("http://a/x", "gzip")


def test_meta_survives_json() -> None:
    meta = meta_for("http://a/\u00e9?q=1", "br", vary=("accept-encoding",), size=7, tags=("t1", "t2"))
    meta.headers.append(("X-Odd", "caf\udce9"))  # a surrogateescape-decoded byte
    meta.invalidated = True
    back = EntryMeta.from_json(meta.to_json())
    assert back == meta
    assert isinstance(back.vary, tuple) and isinstance(back.headers[0], tuple)


def test_meta_json_may_carry_padding_and_unknown_fields() -> None:
    meta = meta_for("http://a/x")
    assert EntryMeta.from_json(meta.to_json() + b"    ") == meta
    extended = meta.to_json()[:-1] + b',"future":1}'
    assert EntryMeta.from_json(extended) == meta


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"key": "x"}',
        b"\xff\xfe",
    ],
)
def test_malformed_meta_is_a_storage_error(data: bytes) -> None:
    with pytest.raises(StorageError):
        EntryMeta.from_json(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "200"),
        ("status", True),
        ("size", -1),
        ("must_revalidate", 1),
        ("fresh_until", "soon"),
        ("vary", "accept"),
        ("headers", [["only-name"]]),
        ("headers", [["name", 5]]),
        ("tags", [1]),
    ],
)
def test_mistyped_field_is_a_storage_error(field: str, value: object) -> None:
    fields = json.loads(meta_for("http://a/x").to_json())
    fields[field] = value
    with pytest.raises(StorageError, match=field):
        EntryMeta.from_json(json.dumps(fields).encode())


# --- the LRU -------------------------------------------------------------------


def sized_tier(objects: int, body_size: int = 1000) -> MemoryTier:
    """A tier that holds exactly ``objects`` entries made by ``entry_for(key, body_size bytes)``."""
    charge = entry_for("http://a/0", b"x" * body_size).charge
    return MemoryTier(max_bytes=objects * charge + charge // 2, max_object_bytes=body_size * 2)


def test_get_returns_what_put_stored() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 16)
    entry = entry_for("http://a/x", b"hello")
    assert tier.put(entry) == []
    assert tier.get("http://a/x", "") is entry
    assert tier.get("http://a/x", "gzip") is None
    assert tier.get("http://a/y", "") is None
    assert len(tier) == 1
    assert tier.bytes_used == entry.charge == 5 + meta_charge(entry.meta)


def test_least_recently_used_goes_first() -> None:
    tier = sized_tier(3)
    for name in "abc":
        tier.put(entry_for(f"http://a/{name}", b"x" * 1000))
    tier.get("http://a/a", "")
    evicted = tier.put(entry_for("http://a/d", b"x" * 1000))
    assert [meta.key for meta in evicted] == ["http://a/b"]
    assert tier.get("http://a/b", "") is None
    assert all(tier.get(f"http://a/{name}", "") for name in "acd")
    assert tier.evictions == 1
    assert tier.bytes_used <= tier.max_bytes


def test_one_big_entry_evicts_several_small_ones() -> None:
    tier = sized_tier(4)
    for name in "abcd":
        tier.put(entry_for(f"http://a/{name}", b"x" * 1000))
    evicted = tier.put(entry_for("http://a/big", b"x" * 1900))
    assert [meta.key for meta in evicted] == ["http://a/a", "http://a/b"]
    assert len(tier) == 3


def test_objects_over_the_object_limit_are_refused() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=100)
    assert tier.put(entry_for("http://a/x", b"x" * 101)) == []
    assert tier.get("http://a/x", "") is None
    assert tier.bytes_used == 0
    tier.put(entry_for("http://a/x", b"x" * 100))
    assert tier.get("http://a/x", "") is not None


def test_an_entry_larger_than_the_whole_tier_is_refused_without_flushing_it() -> None:
    tier = MemoryTier(max_bytes=2000, max_object_bytes=1 << 20)
    tier.put(entry_for("http://a/small", b"x"))
    assert tier.put(entry_for("http://a/huge", b"x" * 5000)) == []
    assert tier.get("http://a/small", "") is not None


def test_replacing_an_entry_charges_it_once() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 16)
    tier.put(entry_for("http://a/x", b"x" * 10))
    newer = entry_for("http://a/x", b"y" * 20)
    tier.put(newer)
    assert len(tier) == 1
    assert tier.bytes_used == newer.charge
    assert tier.get("http://a/x", "") is newer


def test_variants_of_a_key_and_a_vary_change_drops_the_old_set() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 16)
    tier.put(entry_for("http://a/x", b"g", "gzip", vary=("accept-encoding",)))
    tier.put(entry_for("http://a/x", b"i", "identity", vary=("accept-encoding",)))
    tier.put(entry_for("http://a/y", b"other"))
    assert sorted(entry.meta.variant for entry in tier.variants("http://a/x")) == ["gzip", "identity"]
    tier.put(entry_for("http://a/x", b"plain"))  # the origin stopped sending Vary
    assert [entry.body for entry in tier.variants("http://a/x")] == [b"plain"]
    assert tier.variants("http://a/none") == []
    assert tier.bytes_used == sum(entry.charge for key in ("http://a/x", "http://a/y") for entry in tier.variants(key))


# --- purges --------------------------------------------------------------------


def filled_tier() -> MemoryTier:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 16)
    tier.put(entry_for("http://a/img/1.png", b"1", tags=("img", "all")))
    tier.put(entry_for("http://a/img/2.png", b"2", "gzip", vary=("accept-encoding",), tags=("img",)))
    tier.put(entry_for("http://a/img/2.png", b"2", "br", vary=("accept-encoding",), tags=("img",)))
    tier.put(entry_for("http://a/js/app.js", b"3", tags=("all",)))
    tier.put(entry_for("http://b/img/3.png", b"4"))
    return tier


def test_remove_takes_every_variant_of_a_key() -> None:
    tier = filled_tier()
    assert tier.remove("http://a/img/2.png") == 2
    assert tier.variants("http://a/img/2.png") == []
    assert tier.remove("http://a/img/2.png") == 0
    assert len(tier) == 3


def test_remove_prefix() -> None:
    tier = filled_tier()
    assert tier.remove_prefix("http://a/img/") == 3
    assert tier.get("http://a/js/app.js", "") is not None
    assert tier.get("http://b/img/3.png", "") is not None
    assert tier.remove_prefix("http://a/img/") == 0


def test_remove_tag_keeps_the_tag_index_in_step() -> None:
    tier = filled_tier()
    assert tier.remove_tag("img") == 3
    assert tier.remove_tag("all") == 1  # 1.png (also tagged all) is already gone
    assert tier.remove_tag("img") == 0
    assert [entry.meta.key for entry in tier.variants("http://b/img/3.png")] == ["http://b/img/3.png"]
    assert len(tier) == 1


def test_evicted_entries_leave_the_tag_index() -> None:
    tier = sized_tier(1)
    tier.put(entry_for("http://a/1", b"x" * 1000, tags=("t",)))
    tier.put(entry_for("http://a/2", b"x" * 1000))
    assert tier.remove_tag("t") == 0
    assert len(tier) == 1


def test_soft_purge_marks_entries_and_drops_their_head() -> None:
    tier = filled_tier()
    entry = tier.get("http://a/js/app.js", "")
    assert entry is not None
    entry.head = b"HTTP/1.1 200 OK\r\n\r\n"
    old_meta = entry.meta
    used = tier.bytes_used
    assert tier.invalidate("http://a/js/app.js") == 1
    assert entry.meta.invalidated and entry.head is None
    assert not old_meta.invalidated  # metas are values: a response in flight keeps its own
    assert tier.invalidate_prefix("http://a/img/") == 3
    assert tier.invalidate_tag("all") == 2
    assert tier.invalidate("http://nowhere/") == 0
    assert [e.meta.invalidated for e in tier.variants("http://b/img/3.png")] == [False]
    assert len(tier) == 5 and tier.bytes_used == used


def test_update_meta_replaces_meta_tags_and_head() -> None:
    tier = filled_tier()
    entry = tier.get("http://a/img/1.png", "")
    assert entry is not None
    entry.head = b"old head"
    refreshed = replace(entry.meta, tags=("fresh",), invalidated=False, fresh_until=9999.0)
    assert tier.update_meta("http://a/img/1.png", "", refreshed)
    now = tier.get("http://a/img/1.png", "")
    assert now is not None and now.meta.fresh_until == 9999.0 and now.head is None and now.body == b"1"
    assert tier.remove_tag("all") == 1  # only app.js still carries it
    assert tier.remove_tag("fresh") == 1
    assert not tier.update_meta("http://a/img/1.png", "", refreshed)
    with pytest.raises(ValueError):
        tier.update_meta("http://a/js/app.js", "other", refreshed)


# --- against a model -------------------------------------------------------------

KEYS = ["http://a/1", "http://a/2", "http://b/1"]
VARIANTS = ["", "gzip"]
TAGS = ["t1", "t2"]

operations = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(KEYS),
        st.sampled_from(VARIANTS),
        st.integers(0, 700),
        st.sets(st.sampled_from(TAGS)),
    ),
    st.tuples(st.just("get"), st.sampled_from(KEYS), st.sampled_from(VARIANTS)),
    st.tuples(st.just("remove"), st.sampled_from(KEYS)),
    st.tuples(st.just("remove_prefix"), st.sampled_from(["http://a/", "http://b/", "http://"])),
    st.tuples(st.just("remove_tag"), st.sampled_from(TAGS)),
)


def _key_is_not(key: str, entry: MemoryEntry) -> bool:
    return entry.meta.key != key


def _key_lacks_prefix(prefix: str, entry: MemoryEntry) -> bool:
    return not entry.meta.key.startswith(prefix)


def _lacks_tag(tag: str, entry: MemoryEntry) -> bool:
    return tag not in entry.meta.tags


class ModelLRU:
    """The obvious, slow statement of what MemoryTier must do."""

    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes, self.max_object_bytes = max_bytes, max_object_bytes
        self.entries: OrderedDict[tuple[str, str], MemoryEntry] = OrderedDict()

    def put(self, entry: MemoryEntry) -> list[str]:
        if len(entry.body) > self.max_object_bytes or entry.charge > self.max_bytes:
            return []
        meta = entry.meta
        for pair in [p for p, e in self.entries.items() if p[0] == meta.key and e.meta.vary != meta.vary]:
            del self.entries[pair]
        self.entries.pop((meta.key, meta.variant), None)
        self.entries[(meta.key, meta.variant)] = entry
        evicted = []
        while sum(e.charge for e in self.entries.values()) > self.max_bytes:
            evicted.append(self.entries.popitem(last=False)[1].meta.key)
        return evicted

    def remove_where(self, keep: Callable[[MemoryEntry], bool]) -> int:
        doomed = [pair for pair, entry in self.entries.items() if not keep(entry)]
        for pair in doomed:
            del self.entries[pair]
        return len(doomed)


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=60))
def test_memory_tier_behaves_like_the_model(ops: list[tuple[Any, ...]]) -> None:
    tier = MemoryTier(max_bytes=3000, max_object_bytes=600)
    model = ModelLRU(3000, 600)
    for op in ops:
        name = op[0]
        if name == "put":
            _, key, variant, size, tags = op
            vary = ("accept-encoding",) if variant else ()
            entry = entry_for(key, b"x" * size, variant, vary=vary, tags=tuple(sorted(tags)))
            assert [m.key for m in tier.put(entry)] == model.put(entry)
        elif name == "get":
            found = tier.get(op[1], op[2])
            assert found is model.entries.get((op[1], op[2]))
            if found is not None:
                model.entries.move_to_end((op[1], op[2]))
        elif name == "remove":
            assert tier.remove(op[1]) == model.remove_where(partial(_key_is_not, op[1]))
        elif name == "remove_prefix":
            assert tier.remove_prefix(op[1]) == model.remove_where(partial(_key_lacks_prefix, op[1]))
        else:
            assert tier.remove_tag(op[1]) == model.remove_where(partial(_lacks_tag, op[1]))
        assert list(tier._lru) == list(model.entries)
        assert tier.bytes_used == sum(e.charge for e in model.entries.values()) <= tier.max_bytes
        for key in KEYS:
            assert sorted(e.meta.variant for e in tier.variants(key)) == sorted(v for k, v in model.entries if k == key)
