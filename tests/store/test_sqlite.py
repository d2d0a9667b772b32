"""SqliteStore promises beyond the shared contract: durability, one owner, slow watchers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import stat
import sys
import time
from pathlib import Path

import pytest

import edgefleet
from edgefleet.store.interface import (
    AlreadyExists,
    EventType,
    StoreError,
    WatchTooSlow,
)
from edgefleet.store.sqlite import SqliteStore
from tests.store.storekit import next_events

SRC = str(Path(edgefleet.__file__).resolve().parents[1])

# The child writes with 8 coroutines and prints each key once its create
# returned, i.e. once the store acknowledged it.
CHILD = """
import asyncio, sys
from edgefleet.store.sqlite import SqliteStore

async def main(path):
    store = SqliteStore(path)
    async def writer(w):
        i = 0
        while True:
            key = f"/kill/{w}/{i}"
            await store.create(key, key.encode())
            sys.stdout.write(key + "\\n")
            sys.stdout.flush()
            i += 1
    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "store.db", progress_interval=0.2)


async def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "store.db"  # parents are created
    store = SqliteStore(path)
    a = await store.create("/r/a", b"1")
    await store.update("/r/a", b"2")
    await store.create("/r/b", b"1")
    await store.delete("/r/b")
    await store.compact(a.mod_revision + 1)
    revision = await store.current_revision()
    await store.close()

    reopened = SqliteStore(path)
    try:
        assert await reopened.current_revision() == revision
        assert await reopened.compacted_revision() == a.mod_revision + 1
        items = (await reopened.list("/r/")).items
        assert [(kv.key, kv.value, kv.version) for kv in items] == [("/r/a", b"2", 2)]
        assert (await reopened.create("/r/c", b"1")).mod_revision == revision + 1
    finally:
        await reopened.close()


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            while len(acknowledged) < 500:
                line = await child.stdout.readline()
                if not line:
                    break
                acknowledged.append(line.decode().strip())
        child.send_signal(signal.SIGKILL)
        rest, errors = await child.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    assert child.returncode == -signal.SIGKILL, errors.decode()
    # Lines the child printed before it died were acknowledged too; a torn last line was not.
    acknowledged += [line for line in rest.decode().split("\n")[:-1] if line]
    assert len(acknowledged) >= 500

    store = SqliteStore(path)
    try:
        present = {kv.key for kv in (await store.list("/kill/")).items}
        missing = [key for key in acknowledged if key not in present]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        await store.create("/after-crash", b"x")
    finally:
        await store.close()


async def test_a_failed_precondition_fails_only_its_own_write(sqlite_store: SqliteStore) -> None:
    try:
        results = await asyncio.gather(
            sqlite_store.create("/batch/x", b"1"),
            sqlite_store.create("/batch/x", b"2"),
            sqlite_store.create("/batch/y", b"3"),
            return_exceptions=True,
        )
        assert isinstance(results[1], AlreadyExists)
        assert [kv.value for kv in (await sqlite_store.list("/batch/")).items] == [b"1", b"3"]
    finally:
        await sqlite_store.close()


async def test_a_slow_watcher_is_ended_without_blocking_others(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", watch_queue_size=10)
    try:
        first = await store.create("/slow/0", b"x")
        async with (
            contextlib.aclosing(store.watch("/slow/", first.mod_revision - 1)) as slow,
            contextlib.aclosing(store.watch("/slow/", first.mod_revision - 1)) as fast,
        ):
            await next_events(slow, 1)  # the slow watcher is live now, then stops reading
            await next_events(fast, 1)
            fast_events = asyncio.create_task(next_events(fast, 50))
            written = [await store.create(f"/slow/{i}", b"x") for i in range(1, 51)]
            assert [e.revision for e in await fast_events] == [kv.mod_revision for kv in written]
            with pytest.raises(WatchTooSlow) as raised:
                await next_events(slow, 1)
        assert raised.value.last_revision == first.mod_revision
        async with contextlib.aclosing(store.watch("/slow/", raised.value.last_revision)) as again:
            caught_up = await next_events(again, 50)
        assert [e.revision for e in caught_up] == [kv.mod_revision for kv in written]
    finally:
        await store.close()


async def test_a_lease_expires_while_the_store_is_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    lease = await store.grant_lease(1)
    leased = await store.create("/lease/a", b"x", lease=lease.id)
    await store.close()

    reopened = SqliteStore(tmp_path / "store.db", clock=lambda: time.time() + 1.2)  # reopened 1.2 s later
    try:
        assert await reopened.get("/lease/a") is None
        async with contextlib.aclosing(reopened.watch("/", leased.mod_revision)) as watch:
            [deletion] = await next_events(watch, 1)
        assert deletion.type is EventType.DELETE
        assert deletion.kv.value == b"x"
    finally:
        await reopened.close()


async def test_only_one_store_may_open_a_file(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    try:
        with pytest.raises(StoreError, match="already open"):
            SqliteStore(tmp_path / "store.db")
    finally:
        await sqlite_store.close()


async def test_compaction_deletes_superseded_rows(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    try:
        await sqlite_store.create("/cr", b"0")
        for i in range(1, 20):
            await sqlite_store.update("/cr", str(i).encode())
        await sqlite_store.create("/cr-gone", b"x")
        await sqlite_store.delete("/cr-gone")
        last = await sqlite_store.create("/cr-last", b"x")
        await sqlite_store.compact(last.mod_revision)
        with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as conn:
            rows = conn.execute("SELECT key, deleted FROM log ORDER BY rev").fetchall()
        # Below the compaction only each key's newest live row stays (no tombstones).
        assert rows == [("/cr", 0), ("/cr-last", 0)]
    finally:
        await sqlite_store.close()


async def test_store_files_are_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """Issue 12 (Low): store.db holds token hashes and every object: 0600, its WAL, SHM and lock file too."""
    path = tmp_path / "store.db"
    old_umask = os.umask(0o002)
    try:
        store = SqliteStore(path)
        await store.create("/k", b"v")
        files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", ".lock"))]
        assert {file.name: oct(stat.S_IMODE(file.stat().st_mode)) for file in files} == {
            file.name: "0o600" for file in files
        }
        await store.close()
        path.chmod(0o644)  # a store made by an older version: narrowed when opened
        store = SqliteStore(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        await store.close()
    finally:
        os.umask(old_umask)
