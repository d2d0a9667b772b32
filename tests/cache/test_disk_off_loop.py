"""The disk halves of a 304's meta update and of purges run in a thread, never on the event loop.

How: the worker's request path serves a loopback port from the test's event loop (``tests.cache.inprocess``)
in front of a real origin process, on a fake clock; the disk tier's write methods are wrapped to record the
thread they run in, and one of them is held on a :class:`threading.Event` to show that the loop keeps serving
while the disk half waits (on the loop it would block every request, this test's included). Why: a disk
write takes the index's cross-process write lock, which another worker may hold for a long time
(``bench/cache_index_stall.py``); see the module docstring of ``edgefleet.cache.storage.store``, "Threads".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cache.config import parse_config
from edgefleet.cache.front.proxy import Proxy
from edgefleet.cache.front.worker import build_storage
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage.disk import DiskTier
from edgefleet.cache.storage.memory import MemoryTier
from edgefleet.cache.storage.store import Storage, objects_purged
from tests.cache.inprocess import serving
from tests.cache.test_caching import HOSTS, domains
from tests.cache.test_decisions import FakeClock
from tests.cacheproc import OriginProcess, cache_config
from tests.waiting import eventually

WRITES = ("update_meta", "remove", "remove_prefix", "remove_tag", "invalidate", "invalidate_prefix", "invalidate_tag")


@dataclass
class Spied:
    """A cache served from this loop, with the threads its disk tier's writes ran in, by method name."""

    proxy: Proxy
    clock: FakeClock
    client: httpx.AsyncClient
    threads: dict[str, list[int]] = field(default_factory=dict)
    hold: threading.Event | None = None  # set: the disk writes wait for it (cleared by the test to let them go)
    release: threading.Event = field(default_factory=threading.Event)

    async def fetch(self, target: str, method: str = "GET") -> str:
        response = await self.client.request(method, target, headers={"Host": HOSTS["demo"]})
        return str(response.headers.get("x-cache", "")).split(" ")[0]

    def spy(self, disk: DiskTier) -> None:
        for name in WRITES:
            setattr(disk, name, self._recording(name, getattr(disk, name)))

    def _recording(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any) -> Any:
            self.threads.setdefault(name, []).append(threading.get_ident())
            if self.hold is not None:
                self.hold.set()
                assert self.release.wait(10), "the test never let the disk write go"
            return method(*args)

        return recorded


@pytest.fixture
async def spied(origin: OriginProcess, tmp_path: Path) -> AsyncIterator[Spied]:
    config = parse_config(cache_config(origin.url, tmp_path, domains=domains(origin.url)))
    clock = FakeClock(time.time() - 86400)  # see test_clocked.py: ages count from the fake clock alone
    proxy = Proxy(config, build_storage(config), Stats(), None, clock=clock)
    async with serving(proxy, config) as client:
        spied = Spied(proxy, clock, client)
        assert proxy.storage.disk is not None
        spied.spy(proxy.storage.disk)
        yield spied


async def stored(spied: Spied, key: str) -> None:
    """The response of ``key`` is in both tiers: its store (the disk half in a thread) has finished."""
    fills = spied.proxy.fills
    await eventually(lambda: fills.get(key) is None and fills.being_stored(key) is None, what=f"{key} stored")


def off_the_loop(spied: Spied, name: str) -> None:
    ran = spied.threads.get(name)
    assert ran, f"the disk tier's {name} never ran"
    assert threading.get_ident() not in ran, f"{name} ran on the event loop's thread"


async def test_a_304_updates_the_disk_copy_from_a_thread(spied: Spied) -> None:
    target = "/bytes/64/off-loop-304?cc=max-age=1"
    assert await spied.fetch(target) == "MISS"
    key = spied.proxy.key_of_url(spied.proxy.domains.by_name["demo"], target)
    await stored(spied, key)
    spied.clock.advance(2)
    assert await spied.fetch(target) == "REVALIDATED"
    off_the_loop(spied, "update_meta")
    assert await spied.fetch(target) == "HIT", "the refreshed meta is the one served"
    assert spied.proxy.storage.disk is not None
    on_disk = spied.proxy.storage.disk.lookup(key, "")
    assert on_disk is not None
    with on_disk:
        assert on_disk.meta.response_time == pytest.approx(spied.clock(), abs=1), "the disk copy was refreshed too"


async def test_a_purge_runs_its_disk_half_in_a_thread_while_the_loop_serves(spied: Spied) -> None:
    purged, other = "/bytes/64/off-loop-purged?cc=max-age=600", "/bytes/64/off-loop-other?cc=max-age=600"
    for target in (purged, other):
        assert await spied.fetch(target) == "MISS"
    demo = spied.proxy.domains.by_name["demo"]
    key, keys = spied.proxy.key_of_url(demo, purged), [spied.proxy.key_of_url(demo, t) for t in (purged, other)]
    for stored_key in keys:  # with two stores still in threads, a purge would wait for the disk on the loop
        await stored(spied, stored_key)
    spied.hold = threading.Event()
    purge = asyncio.ensure_future(spied.proxy.purge_keys([key], [], [], soft=False))
    assert await asyncio.to_thread(spied.hold.wait, 10), "the disk half of the purge never started"
    # The disk half waits: the loop still serves, from memory (the purge has not happened yet).
    assert await asyncio.wait_for(spied.fetch(other), 10) == "HIT"
    assert await asyncio.wait_for(spied.fetch(purged), 10) == "HIT"
    assert not purge.done()
    spied.release.set()
    assert await purge == 1
    off_the_loop(spied, "remove")
    assert await spied.fetch(purged) == "MISS", "the memory copy went after the disk one, none came back"
    assert await spied.fetch(other) == "HIT"


async def test_an_unsafe_method_invalidates_the_disk_copy_from_a_thread(spied: Spied) -> None:
    target = "/bytes/16/off-loop-invalidated"
    assert await spied.fetch(target) == "MISS"
    assert await spied.fetch(f"/echo?location={target}", method="POST") == "PASS"
    off_the_loop(spied, "invalidate")
    assert await spied.fetch(target) == "REVALIDATED", "marked stale in both tiers, validated before use"


def test_a_purge_counts_per_target_the_larger_of_the_two_tiers(tmp_path: Path) -> None:
    assert objects_purged([2, 0, 5], [1, 3, 5]) == 2 + 3 + 5
    assert objects_purged([], [1, 2]) == 3, "no disk tier: the memory's counts"
    memory_only = Storage(MemoryTier(1 << 20, 1 << 20), None)
    assert memory_only.purge_disk(["http://a/x"], [], [], soft=False) == []
    disk = DiskTier(tmp_path / "disk", 1 << 30).open()
    try:
        assert Storage(MemoryTier(1 << 20, 1 << 20), disk).purge_disk(["k"], ["p"], ["t"], soft=True) == [0, 0, 0]
    finally:
        disk.close()
