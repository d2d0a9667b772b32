"""Leader election on SQLite and on a real etcd: one leader, hand-over on resign, take-over on expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud.leader import LEADER_PREFIX, LeaderElection
from edgefleet.store.etcd import EtcdStore
from edgefleet.store.interface import Store, Unavailable
from edgefleet.store.sqlite import SqliteStore
from tests.etcd_cluster import etcd_server
from tests.waiting import eventually

__all__ = ["etcd_server"]  # the session fixture, re-exported for pytest

TTL = 1


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two replicas' views of one store (SQLite: one store object, as one process has)."""
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "store.db")
        yield store, store
        await store.close()
        return
    cluster = request.getfixturevalue("etcd_server")
    root = f"/leader-{uuid.uuid4().hex[:10]}"
    first, second = EtcdStore(cluster.endpoints, root=root), EtcdStore(cluster.endpoints, root=root)
    yield first, second
    await first.close()
    await second.close()


class Replica:
    """One replica's election and the work it runs while leading."""

    def __init__(self, store: Store, name: str, log: list[str], running: set[str]) -> None:
        self.election = LeaderElection(store, "nodelifecycle", holder=name, ttl=TTL)
        self.name = name
        self._log = log
        self._running = running
        self.task: asyncio.Task[None] | None = None

    async def work(self) -> None:
        if self._running:  # checked by the tests through `log`
            self._log.append(f"overlap: {self.name} with {sorted(self._running)}")
        self._running.add(self.name)
        self._log.append(self.name)
        try:
            await asyncio.Event().wait()
        finally:
            self._running.discard(self.name)

    def start(self) -> Replica:
        self.task = asyncio.create_task(self.election.run(self.work))
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_one_leader_and_hand_over_on_resign(two_stores: tuple[Store, Store]) -> None:
    log: list[str] = []
    running: set[str] = set()
    a = Replica(two_stores[0], "a", log, running).start()
    await eventually(lambda: log == ["a"])
    b = Replica(two_stores[1], "b", log, running).start()
    await asyncio.sleep(TTL * 1.5)  # several keepalives and polls
    assert log == ["a"] and a.election.is_leader and not b.election.is_leader
    await a.stop()  # resigns: b takes over within a poll, not a whole ttl
    await eventually(lambda: log == ["a", "b"], within=TTL)
    assert running == {"b"}
    await b.stop()
    assert await two_stores[1].get(LEADER_PREFIX + "nodelifecycle") is None


class CutOff:
    """A replica's store that becomes unreachable when ``broken`` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise Unavailable("cut off")
            return await method(*args, **kwargs)

        return call


async def test_a_cut_off_leader_steps_down_before_its_successor_starts(two_stores: tuple[Store, Store]) -> None:
    log: list[str] = []
    running: set[str] = set()
    flaky = CutOff(two_stores[0])
    a = Replica(flaky, "a", log, running).start()  # type: ignore[arg-type]
    await eventually(lambda: log == ["a"])
    b = Replica(two_stores[1], "b", log, running).start()
    flaky.broken = True
    # a stops within one ttl of its last refresh; b starts only once the lease expired.
    await eventually(lambda: log[-1:] == ["b"], within=TTL * 8)
    assert log == ["a", "b"], "never two leaders at once"
    assert running == {"b"} and not a.election.is_leader
    await a.stop()
    await b.stop()


async def test_leader_steps_down_when_its_key_is_deleted(two_stores: tuple[Store, Store]) -> None:
    log: list[str] = []
    running: set[str] = set()
    a = Replica(two_stores[0], "a", log, running).start()
    await eventually(lambda: log == ["a"])
    await two_stores[0].delete(LEADER_PREFIX + "nodelifecycle")
    await eventually(lambda: log == ["a", "a"], within=TTL * 4)  # stepped down, then won again
    await a.stop()


async def test_failing_work_resigns_and_is_retried(two_stores: tuple[Store, Store]) -> None:
    attempts: list[int] = []

    async def crash() -> None:
        attempts.append(1)
        raise RuntimeError("controller bug")

    election = LeaderElection(two_stores[0], "crashy", ttl=TTL)
    task = asyncio.create_task(election.run(crash))
    try:
        await eventually(lambda: len(attempts) >= 2, within=TTL * 4)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
