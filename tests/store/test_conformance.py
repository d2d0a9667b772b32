"""The store contract, run against every backend (``backend`` fixture: sqlite, etcd).

Each test states one promise of ``edgefleet.store.interface``. Revisions are
compared with each other, never with constants, because the etcd backend
shares its revision counter with other tenants of the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edgefleet.store.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    InvalidKey,
    KeyValue,
    LeaseNotFound,
    NotFound,
    Store,
    StoreError,
)
from tests.store.storekit import Stores, next_events, next_progress

# -- create / get / update / delete -------------------------------------------


async def test_create_get_update_delete(store: Store) -> None:
    created = await store.create("/registry/sites/a", b"one")
    assert created.value == b"one"
    assert created.create_revision == created.mod_revision
    assert created.version == 1
    assert await store.get("/registry/sites/a") == created

    updated = await store.update("/registry/sites/a", b"two", expected_revision=created.mod_revision)
    assert updated.value == b"two"
    assert updated.create_revision == created.create_revision
    assert updated.mod_revision > created.mod_revision
    assert await store.get("/registry/sites/a") == updated

    deleted = await store.delete("/registry/sites/a", expected_revision=updated.mod_revision)
    assert deleted.value == b"two"  # the last value
    assert deleted.mod_revision > updated.mod_revision
    assert await store.get("/registry/sites/a") is None
    assert await store.current_revision() >= deleted.mod_revision


async def test_create_of_existing_key_raises_already_exists(store: Store) -> None:
    await store.create("/k", b"1")
    with pytest.raises(AlreadyExists):
        await store.create("/k", b"2")
    existing = await store.get("/k")
    assert existing is not None
    assert existing.value == b"1"


async def test_update_or_delete_of_missing_key_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update("/missing", b"x")
    with pytest.raises(NotFound):
        await store.delete("/missing")
    kv = await store.create("/gone", b"x")
    await store.delete("/gone")
    with pytest.raises(NotFound):
        await store.update("/gone", b"y")
    assert kv.key == "/gone"


async def test_stale_expected_revision_raises_conflict(store: Store) -> None:
    first = await store.create("/c", b"1")
    second = await store.update("/c", b"2", expected_revision=first.mod_revision)
    with pytest.raises(Conflict) as update_conflict:
        await store.update("/c", b"3", expected_revision=first.mod_revision)
    assert (update_conflict.value.expected, update_conflict.value.actual) == (first.mod_revision, second.mod_revision)
    with pytest.raises(Conflict):
        await store.delete("/c", expected_revision=first.mod_revision)
    assert (await store.get("/c")) == second

    await store.delete("/c")
    with pytest.raises(Conflict) as deleted_conflict:
        await store.update("/c", b"4", expected_revision=second.mod_revision)
    assert deleted_conflict.value.actual == 0


async def test_update_without_expected_revision_overwrites(store: Store) -> None:
    await store.create("/u", b"1")
    updated = await store.update("/u", b"2")
    assert updated.value == b"2"
    assert updated.version == 2


async def test_revisions_strictly_increase_and_are_shared_across_keys(store: Store) -> None:
    revisions = []
    for i in range(5):
        revisions.append((await store.create(f"/a/{i}", b"x")).mod_revision)
        revisions.append((await store.create(f"/b/{i}", b"x")).mod_revision)
        revisions.append((await store.update(f"/a/{i}", b"y")).mod_revision)
    assert revisions == sorted(set(revisions))
    assert await store.current_revision() == revisions[-1]


async def test_version_counts_changes_and_restarts_after_delete(store: Store) -> None:
    kv = await store.create("/v", b"0")
    for i in range(1, 4):
        kv = await store.update("/v", str(i).encode())
        assert kv.version == i + 1
    await store.delete("/v")
    recreated = await store.create("/v", b"again")
    assert recreated.version == 1
    assert recreated.create_revision == recreated.mod_revision > kv.mod_revision


async def test_values_are_opaque_bytes(store: Store) -> None:
    for key, value in [("/empty", b""), ("/binary", bytes(range(256))), ("/big", b"x" * 100_000)]:
        await store.create(key, value)
        stored = await store.get(key)
        assert stored is not None
        assert stored.value == value


async def test_invalid_keys_are_rejected(store: Store) -> None:
    for key in ["", "relative", "/nul\x00"]:
        with pytest.raises(InvalidKey):
            await store.create(key, b"x")
        with pytest.raises(InvalidKey):
            await store.get(key)
    with pytest.raises(InvalidKey):
        await store.list("no-slash")


# -- list ---------------------------------------------------------------------


async def test_list_by_prefix_does_not_match_similar_keys(store: Store) -> None:
    for key in [
        "/registry/sites/a",
        "/registry/sites/b",
        "/registry/sites-x/c",
        "/registry/sitesz",
        "/registry/site",
        "/other/sites/d",
    ]:
        await store.create(key, key.encode())
    result = await store.list("/registry/sites/")
    assert [kv.key for kv in result.items] == ["/registry/sites/a", "/registry/sites/b"]
    assert result.revision == await store.current_revision()
    assert not result.more
    everything = await store.list("")
    assert len(everything.items) == 6
    assert [kv.key for kv in everything.items] == sorted(kv.key for kv in everything.items)


async def test_list_skips_deleted_keys_and_shows_latest_values(store: Store) -> None:
    await store.create("/l/a", b"1")
    await store.create("/l/b", b"1")
    await store.update("/l/a", b"2")
    await store.delete("/l/b")
    result = await store.list("/l/")
    assert [(kv.key, kv.value, kv.version) for kv in result.items] == [("/l/a", b"2", 2)]


async def test_list_at_an_old_revision_shows_the_state_then(store: Store) -> None:
    a1 = await store.create("/old/a", b"a1")
    b1 = await store.create("/old/b", b"b1")
    await store.update("/old/a", b"a2")
    await store.delete("/old/b")
    await store.create("/old/c", b"c1")

    then = await store.list("/old/", revision=b1.mod_revision)
    assert then.revision == b1.mod_revision
    assert [(kv.key, kv.value) for kv in then.items] == [("/old/a", b"a1"), ("/old/b", b"b1")]
    earlier = await store.list("/old/", revision=a1.mod_revision)
    assert [kv.key for kv in earlier.items] == ["/old/a"]
    now = await store.list("/old/")
    assert [(kv.key, kv.value) for kv in now.items] == [("/old/a", b"a2"), ("/old/c", b"c1")]


async def test_list_at_a_future_revision_raises(store: Store) -> None:
    kv = await store.create("/f", b"x")
    with pytest.raises(FutureRevision):
        await store.list("/", revision=kv.mod_revision + 1000)


async def test_list_pagination_with_limit_and_start_after(store: Store) -> None:
    keys = [f"/page/{i:02d}" for i in range(10)]
    for key in keys:
        await store.create(key, b"x")
    await store.create("/pagez", b"outside")
    first = await store.list("/page/", limit=4)
    assert [kv.key for kv in first.items] == keys[:4]
    assert first.more
    seen = [kv.key for kv in first.items]
    page = first
    while page.more:
        page = await store.list("/page/", revision=first.revision, start_after=seen[-1], limit=4)
        assert page.revision == first.revision
        seen += [kv.key for kv in page.items]
    assert seen == keys
    exact = await store.list("/page/", limit=10)
    assert len(exact.items) == 10
    assert not exact.more
    beyond = await store.list("/page/", start_after="/pagez")  # past the prefix's range
    assert (beyond.items, beyond.more) == ([], False)


async def test_pagination_at_a_fixed_revision_ignores_later_writes(store: Store) -> None:
    for i in range(4):
        await store.create(f"/fixed/{i}", b"x")
    first = await store.list("/fixed/", limit=2)
    await store.create("/fixed/9", b"late")
    await store.delete("/fixed/3")
    rest = await store.list("/fixed/", revision=first.revision, start_after="/fixed/1")
    assert [kv.key for kv in rest.items] == ["/fixed/2", "/fixed/3"]


# -- watch --------------------------------------------------------------------


async def test_watch_from_a_past_revision_replays_everything_in_order(store: Store) -> None:
    start = await store.current_revision()
    written: list[KeyValue] = []
    written.append(await store.create("/w/a", b"a1"))
    written.append(await store.create("/w/b", b"b1"))
    written.append(await store.update("/w/a", b"a2"))
    written.append(await store.delete("/w/b"))
    await store.create("/elsewhere", b"not watched")
    written.append(await store.create("/w/b", b"b2"))

    async with contextlib.aclosing(store.watch("/w/", start)) as watch:
        events = await next_events(watch, len(written))
    assert [e.revision for e in events] == [kv.mod_revision for kv in written]
    assert [e.type for e in events] == [EventType.PUT, EventType.PUT, EventType.PUT, EventType.DELETE, EventType.PUT]
    assert [e.created for e in events] == [True, True, False, False, True]
    assert [e.kv for e in events] == written
    deletion = events[3]
    assert deletion.kv.value == b"b1"  # the last value
    assert deletion.prev is not None
    assert deletion.prev.value == b"b1"
    assert events[2].prev is not None
    assert events[2].prev.value == b"a1"
    assert events[0].prev is None
    assert events[4].prev is None


async def test_watch_from_the_middle_of_history(store: Store) -> None:
    kvs = [await store.create(f"/mid/{i}", b"x") for i in range(6)]
    async with contextlib.aclosing(store.watch("/mid/", kvs[2].mod_revision)) as watch:
        events = await next_events(watch, 3)
    assert [e.kv.key for e in events] == ["/mid/3", "/mid/4", "/mid/5"]


async def test_watch_goes_live_without_gaps_or_duplicates(store: Store) -> None:
    before = await store.create("/live/0", b"x")
    async with contextlib.aclosing(store.watch("/live/", before.mod_revision - 1)) as watch:
        first = await next_events(watch, 1)
        writer = asyncio.create_task(_write_keys(store, "/live/", range(1, 31)))
        events = first + await next_events(watch, 30)
        written = await writer
    revisions = [e.revision for e in events]
    assert revisions == [before.mod_revision] + [kv.mod_revision for kv in written]
    assert len(set(revisions)) == len(revisions)


async def _write_keys(store: Store, prefix: str, numbers: range) -> list[KeyValue]:
    written = []
    for i in numbers:
        written.append(await store.create(f"{prefix}{i}", b"x"))
        if i % 5 == 0:
            await asyncio.sleep(0.01)  # let the watcher catch up and go live
    return written


async def test_concurrent_writes_reach_watchers_in_revision_order(store: Store) -> None:
    start = await store.current_revision()
    async with contextlib.aclosing(store.watch("/conc/", start)) as watch:
        written = await asyncio.gather(*(store.create(f"/conc/{i}", b"x") for i in range(40)))
        events = await next_events(watch, 40)
    assert [e.revision for e in events] == sorted(kv.mod_revision for kv in written)


async def test_watch_yields_progress_when_idle(store: Store) -> None:
    kv = await store.create("/idle/a", b"x")
    await store.create("/busy/b", b"x")  # outside the prefix, still a revision
    async with contextlib.aclosing(store.watch("/idle/", kv.mod_revision - 1)) as watch:
        assert (await next_events(watch, 1))[0].kv == kv
        progress = await next_progress(watch)
    assert progress.revision >= kv.mod_revision


async def test_watch_after_compaction_raises_compacted(store: Store) -> None:
    kvs = [await store.create("/cmp", b"0")]
    kvs += [await store.update("/cmp", str(i).encode()) for i in range(1, 5)]
    await store.create("/cmp2", b"x")
    keep = kvs[3].mod_revision
    await store.compact(keep)
    assert await store.compacted_revision() == keep

    with pytest.raises(Compacted) as raised:
        async with contextlib.aclosing(store.watch("/", kvs[1].mod_revision)) as watch:
            await next_events(watch, 1)
    assert raised.value.compacted_revision == keep

    async with contextlib.aclosing(store.watch("/", keep - 1)) as watch:
        events = await next_events(watch, 3)
    assert [e.kv.value for e in events] == [b"3", b"4", b"x"]


async def test_list_at_a_compacted_revision_raises_compacted(store: Store) -> None:
    a = await store.create("/lc/a", b"1")
    await store.create("/lc/b", b"1")
    b_gone = await store.delete("/lc/b")
    a2 = await store.update("/lc/a", b"2")
    await store.create("/lc/c", b"1")
    await store.compact(a2.mod_revision)

    with pytest.raises(Compacted) as raised:
        await store.list("/lc/", revision=a.mod_revision)
    assert raised.value.compacted_revision == a2.mod_revision
    at_compaction = await store.list("/lc/", revision=a2.mod_revision)
    assert [(kv.key, kv.value) for kv in at_compaction.items] == [("/lc/a", b"2")]
    assert b_gone.mod_revision < a2.mod_revision
    now = await store.list("/lc/")
    assert [kv.key for kv in now.items] == ["/lc/a", "/lc/c"]


async def test_compaction_keeps_unchanged_keys_readable(store: Store) -> None:
    old = await store.create("/keep/old", b"kept")
    for i in range(5):
        await store.create(f"/keep/new{i}", b"x")
    await store.compact(await store.current_revision())
    assert await store.get("/keep/old") == old
    assert len((await store.list("/keep/")).items) == 6
    await store.compact(old.mod_revision)  # at or below the compacted revision: no-op
    with pytest.raises(FutureRevision):
        await store.compact(await store.current_revision() + 100)


# -- leases -------------------------------------------------------------------


async def test_lease_expiry_deletes_its_keys_with_events(store: Store) -> None:
    lease = await store.grant_lease(1)
    assert lease.ttl >= 1
    start = await store.current_revision()
    a = await store.create("/lease/a", b"a", lease=lease.id)
    b = await store.create("/lease/b", b"b", lease=lease.id)
    await store.create("/lease/c", b"c")  # no lease: stays
    assert a.lease == lease.id
    async with contextlib.aclosing(store.watch("/lease/", start)) as watch:
        events = await next_events(watch, 5, within=lease.ttl + 5)
    deletions = [e for e in events if e.type is EventType.DELETE]
    assert sorted(e.kv.key for e in deletions) == ["/lease/a", "/lease/b"]
    assert {e.kv.value for e in deletions} == {b"a", b"b"}
    assert min(e.revision for e in deletions) > b.mod_revision
    assert [kv.key for kv in (await store.list("/lease/")).items] == ["/lease/c"]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease.id)


async def test_keepalive_extends_a_lease(store: Store) -> None:
    lease = await store.grant_lease(2)
    await store.create("/ka", b"x", lease=lease.id)
    for _ in range(5):  # 2.5s in all, beyond the TTL
        await asyncio.sleep(0.5)
        assert await store.keepalive(lease.id) == lease.ttl
    assert await store.get("/ka") is not None


async def test_revoke_deletes_keys_and_forgets_the_lease(store: Store) -> None:
    lease = await store.grant_lease(60)
    await store.create("/rv/a", b"x", lease=lease.id)
    kv = await store.create("/rv/b", b"x")
    await store.update("/rv/b", b"y", lease=lease.id)
    await store.revoke_lease(lease.id)
    assert (await store.list("/rv/")).items == []
    assert kv.lease == 0
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease.id)
    with pytest.raises(LeaseNotFound):
        await store.revoke_lease(lease.id)


async def test_update_without_lease_detaches_the_key(store: Store) -> None:
    lease = await store.grant_lease(60)
    await store.create("/detach", b"x", lease=lease.id)
    await store.update("/detach", b"y")  # lease=0: no longer attached
    await store.revoke_lease(lease.id)
    assert await store.get("/detach") is not None


async def test_unknown_lease_raises_lease_not_found(store: Store) -> None:
    with pytest.raises(LeaseNotFound):
        await store.create("/nl", b"x", lease=123456789)
    await store.create("/nl", b"x")
    with pytest.raises(LeaseNotFound):
        await store.update("/nl", b"y", lease=123456789)
    with pytest.raises(LeaseNotFound):
        await store.keepalive(123456789)
    assert (await store.get("/nl")) is not None


# -- concurrency ----------------------------------------------------------------


async def test_concurrent_updates_with_one_expected_revision_have_one_winner(
    store: Store,
) -> None:
    kv = await store.create("/race", b"0")

    async def attempt(i: int) -> KeyValue | None:
        try:
            return await store.update("/race", str(i).encode(), expected_revision=kv.mod_revision)
        except Conflict:
            return None

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get("/race") == winners[0]


async def test_concurrent_read_modify_write_loses_no_update(store: Store) -> None:
    await store.create("/counter", b"0")
    won_at: list[int] = []

    async def increment() -> None:
        while True:
            current = await store.get("/counter")
            assert current is not None
            try:
                kv = await store.update(
                    "/counter", str(int(current.value) + 1).encode(), expected_revision=current.mod_revision
                )
            except Conflict:
                continue
            won_at.append(kv.mod_revision)
            return

    await asyncio.gather(*(increment() for _ in range(50)))
    final = await store.get("/counter")
    assert final is not None
    assert final.value == b"50"
    assert final.version == 51
    assert len(set(won_at)) == 50


# -- close --------------------------------------------------------------------


async def test_close_ends_watches_and_refuses_further_use(store: Store) -> None:
    kv = await store.create("/c/a", b"x")
    watch = store.watch("/c/", kv.mod_revision - 1)
    assert isinstance(await anext(watch), Event)
    pending = asyncio.ensure_future(anext(watch))  # Watch.__anext__ is typed Awaitable, not a coroutine
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await pending
    with pytest.raises(StoreError, match="closed"):
        await store.create("/c/b", b"x")


# -- epoch ----------------------------------------------------------------------


async def test_epoch_is_stable_across_reopen(stores: Stores, store: Store) -> None:
    await store.create("/e", b"x")
    epoch = store.epoch
    assert epoch
    await store.close()
    reopened = stores.open()
    assert reopened.epoch == epoch
    assert (await reopened.get("/e")) is not None


async def test_another_store_has_another_epoch(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = stores.open()
    other = Stores(stores.backend, tmp_path_factory.mktemp("other"), stores.etcd)
    try:
        assert other.open().epoch != first.epoch
    finally:
        await other.close_all()
