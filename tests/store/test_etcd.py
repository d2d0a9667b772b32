"""EtcdStore against real etcd failures: a member killed, a reply lost, no cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from edgefleet.store import open_store
from edgefleet.store.etcd import EtcdStore
from edgefleet.store.interface import (
    AlreadyExists,
    Event,
    KeyValue,
    OutcomeUnknown,
    Store,
    Unavailable,
)
from tests.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.etcd


class Writers:
    """Coroutines creating keys until stopped; records acknowledged and unknown writes."""

    def __init__(self, store: Store, count: int) -> None:
        self.store = store
        self.acknowledged: list[str] = []
        self.unknown: list[str] = []
        self._stop = asyncio.Event()
        self._acked = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write(w)) for w in range(count)]

    async def _write(self, writer: int) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"/ha/{writer}/{i}"
            i += 1
            try:
                await self.store.create(key, key.encode())
            except OutcomeUnknown:
                self.unknown.append(key)
            else:
                self.acknowledged.append(key)
                self._acked.set()

    async def until(self, count: int, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while len(self.acknowledged) < count:
                self._acked.clear()
                await self._acked.wait()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest.mark.parametrize("victim", ["follower", "leader"])
async def test_writes_and_watches_go_on_when_a_member_dies(etcd_cluster3: EtcdCluster, victim: str) -> None:
    store = open_store(etcd_cluster3.url, timeout=2.0, retry_timeout=20.0)
    try:
        start = await store.current_revision()
        async with contextlib.aclosing(store.watch("/ha/", start)) as watch:
            writers = Writers(store, 8)
            try:
                await writers.until(200)
                leader = etcd_cluster3.leader_index()
                index = leader if victim == "leader" else (leader + 1) % 3
                etcd_cluster3.members[index].kill()
                await writers.until(len(writers.acknowledged) + 300)
            finally:
                await writers.stop()
            seen = await _keys_seen(watch, set(writers.acknowledged))
        present = {kv.key for kv in (await store.list("/ha/")).items}
        assert set(writers.acknowledged) <= present
        assert set(writers.acknowledged) <= seen  # the watch resumed across the failure
        # Only a write in flight at the kill can end unknown: one per writer at most.
        assert len(writers.unknown) <= 8, writers.unknown
    finally:
        await store.close()


async def _keys_seen(watch: AsyncIterator[object], wanted: set[str]) -> set[str]:
    seen: set[str] = set()
    async with asyncio.timeout(30):
        async for item in watch:
            if isinstance(item, Event):
                seen.add(item.kv.key)
            if wanted <= seen:
                return seen
    return seen


class CuttingProxy:
    """A TCP relay to etcd that, when armed, drops the next reply and cuts the connection.

    The request has reached etcd by then, so the client cannot know whether
    its write was applied: exactly the case OutcomeUnknown exists for.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.armed = False
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        server_in, server_out = await asyncio.open_connection(*self._target)
        pair = {client_out, server_out}
        self._writers |= pair
        try:
            await asyncio.gather(
                self._pump(client_in, server_out, pair, reply=False),
                self._pump(server_in, client_out, pair, reply=True),
            )
        except asyncio.CancelledError:
            pass  # the proxy is closing; ending quietly keeps asyncio's stream callback quiet
        finally:
            for writer in pair:
                writer.transport.abort()
            self._writers -= pair
            self._relays.discard(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pair: set[asyncio.StreamWriter], *, reply: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if reply and self.armed:
                    self.armed, self.cuts = False, self.cuts + 1
                    break
                sink.write(data)
                await sink.drain()
        for writer in pair:
            writer.transport.abort()


async def test_a_lost_reply_is_never_reported_as_a_clean_failure(
    etcd_server: EtcdCluster,
) -> None:
    async with CuttingProxy(etcd_server.endpoints[0]) as proxy:
        # Opening blocks on etcd, and the proxy runs on this loop: open in a thread.
        store = await asyncio.to_thread(EtcdStore, proxy.endpoint, root="/lost-reply", timeout=2.0)
        try:
            for i in range(5):
                kv = await _create_with_lost_reply(store, proxy, f"/k{i}")
                assert kv.value == f"/k{i}".encode()
            assert proxy.cuts >= 5
            proxy.armed = True
            assert await store.get("/k0") is not None  # reads are simply retried
        finally:
            await store.close()


async def _create_with_lost_reply(store: Store, proxy: CuttingProxy, key: str) -> KeyValue:
    """Create under a cut reply: success or OutcomeUnknown, never AlreadyExists."""
    await store.get("/warm-up")  # a live connection, so the cut hits the write itself
    proxy.armed = True
    try:
        await store.create(key, key.encode())
    except AlreadyExists:
        pytest.fail("a write applied by our own lost attempt was reported as AlreadyExists")
    except OutcomeUnknown:
        pass
    kv = await store.get(key)
    assert kv is not None, "the write was sent, succeeded or unknown, yet is absent"
    return kv


async def test_an_unreachable_cluster_raises_unavailable() -> None:
    with pytest.raises(Unavailable):
        EtcdStore("127.0.0.1:1", connect_timeout=0.5)


async def test_root_prefixes_isolate_deployments(etcd_server: EtcdCluster) -> None:
    url = "etcd://" + ",".join(etcd_server.endpoints)
    first = open_store(url + "/iso")
    second = open_store(url + "/iso2")  # a prefix of the other's name must not leak
    try:
        await first.create("/a", b"1")
        await second.create("/b", b"2")
        assert [kv.key for kv in (await first.list("")).items] == ["/a"]
        assert [kv.key for kv in (await second.list("")).items] == ["/b"]
        assert first.epoch != second.epoch
    finally:
        await first.close()
        await second.close()
