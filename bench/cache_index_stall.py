"""Can the disk tier's SQLite index stall a cache worker's event loop? Worst cases, in figures.

What it does: fills a disk tier with ``--objects`` small objects (the index
gets that many rows), sets its budget just above that so every new object
evicts old ones, and starts ``--writers`` other processes that store objects
into the same directory as fast as they can, with a prefix purge now and
then (other workers of the node: they share the index and its write lock).
Meanwhile one asyncio loop in this process does what a worker does on its
loop: disk hits (``Storage.find`` of a stored key: file open + checks, no
SQLite), disk misses (``find`` of an absent key: one indexed SQLite read),
and stores (``Storage.store_small``: an ``IMMEDIATE`` transaction for the
rename + row, and an eviction when over budget). A ticker coroutine sleeps
1 ms at a time and records how late it wakes: that lateness is the stall
every other connection of the worker would see.

Stores, 304 meta updates (``Storage.update_meta_on_disk``) and purges
(``Storage.purge_disk``) are run two ways: ``inline`` (on the loop, as a fill
stored them before this benchmark was written) and ``thread``
(``asyncio.to_thread``, as :mod:`edgefleet.cache.upstream.fetches` runs all
three now). Hits and misses stay
on the loop in both (the hit path must not pay a thread hop). Access times
are written as a worker writes them: by a housekeeping task, in a thread,
once a second (a hit writes them itself only as a fallback, see
``edgefleet.cache.front.worker.TOUCH_FALLBACK_SECONDS``).

    .venv/bin/python bench/cache_index_stall.py [--objects 10000] [--seconds 8] [--writers 1]

Figures are milliseconds: p50 / p99 / max per operation, and the loop's
lateness. On 2 shared cores they are noisy: compare the two modes of one
run, and run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cache.front.worker import HOUSEKEEPING_SECONDS, TOUCH_FALLBACK_SECONDS
from edgefleet.cache.storage.disk import DiskTier
from edgefleet.cache.storage.entries import EntryMeta
from edgefleet.cache.storage.memory import MemoryTier
from edgefleet.cache.storage.store import Storage

BODY = secrets.token_bytes(1024)


def meta_for(key: str) -> EntryMeta:
    now = time.time()
    return EntryMeta(
        key=key,
        variant="",
        vary=(),
        status=200,
        reason="OK",
        headers=[("Content-Type", "text/plain")],
        request_time=now,
        response_time=now,
        initial_age=0.0,
        fresh_until=now + 3600,
        stale_while_revalidate_until=now + 3600,
        stale_if_error_until=now + 3600,
        must_revalidate=False,
        no_cache=False,
        size=len(BODY),
        tags=("bench",),
    )


def storage_on(path: Path, max_bytes: int) -> Storage:
    """A Storage whose memory tier keeps nothing: every find goes to the disk tier (access times as a worker)."""
    return Storage(MemoryTier(1, 0), DiskTier(path, max_bytes, touch_interval=TOUCH_FALLBACK_SECONDS).open())


def fill(path: Path, objects: int) -> int:
    """Store ``objects`` objects; the bytes their files take."""
    storage = storage_on(path, 1 << 40)
    assert storage.disk is not None
    for index in range(objects):
        storage.store_small(meta_for(f"http://demo.test/seed/{index}"), BODY)
    used = storage.disk.bytes_used()
    storage.disk.close()
    return used


def other_worker(path: str, max_bytes: int, name: str, stop_at: float) -> None:
    """Another worker of the node: stores (and so evicts) as fast as it can, purges a prefix now and then."""
    storage = storage_on(Path(path), max_bytes)
    assert storage.disk is not None
    index = 0
    while time.time() < stop_at:
        storage.store_small(meta_for(f"http://demo.test/{name}/{index}"), BODY)
        if index % 500 == 499:
            storage.purge([], [f"http://demo.test/{name}/{index // 1000}"], [], soft=False)
        index += 1
    storage.disk.close()


@dataclass
class Timings:
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds * 1000)

    def row(self, name: str) -> str:
        values = sorted(self.samples.get(name, [0.0]))
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        p50 = statistics.median(values)
        return f"{name:<14} n={len(values):>6}  p50 {p50:7.3f}  p99 {p99:7.3f}  max {values[-1]:8.3f}"


async def ticker(timings: Timings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        timings.add("loop lateness", time.perf_counter() - started - 0.001)


def timed(timings: Timings, name: str, call: Callable[..., object], *args: object) -> object:
    started = time.perf_counter()
    result = call(*args)
    timings.add(name, time.perf_counter() - started)
    return result


async def disk_write(timings: Timings, name: str, mode: str, call: Callable[..., object], *args: object) -> None:
    """A disk write as the worker does it: on the loop (``inline``) or in a thread (``thread``)."""
    if mode == "inline":
        timed(timings, name, call, *args)
        return
    started = time.perf_counter()
    await asyncio.to_thread(call, *args)
    timings.add(name, time.perf_counter() - started)


async def request_path(storage: Storage, seeded: int, mode: str, seconds: float, timings: Timings) -> None:
    plain: Callable[[tuple[str, ...]], str] = lambda vary: ""  # noqa: E731
    deadline = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < deadline:
        key = f"http://demo.test/seed/{(index * 7919) % seeded}"
        entry = timed(timings, "hit (or gone)", storage.find, key, plain)
        if entry is not None and hasattr(entry, "close"):
            entry.close()
        timed(timings, "miss", storage.find, f"http://demo.test/absent/{index}", plain)
        if index % 4 == 0:
            meta = meta_for(f"http://demo.test/main-{mode}/{index}")
            await disk_write(timings, "store", mode, storage.store_small, meta, BODY)
        if index % 16 == 8:  # a 304's meta update of the object stored 8 requests ago
            meta = meta_for(f"http://demo.test/main-{mode}/{index - 8}")
            await disk_write(timings, "304 update", mode, storage.update_meta_on_disk, meta)
        if index % 16 == 12:  # a purge of it (what a Purge or a POST to its URL does)
            keys = [f"http://demo.test/main-{mode}/{index - 12}"]
            await disk_write(timings, "purge", mode, storage.purge_disk, keys, [], [], False)
        index += 1
        await asyncio.sleep(0)


async def housekeeping(storage: Storage, stop: asyncio.Event) -> None:
    """As a worker's: access times written in a thread every second."""
    assert storage.disk is not None
    while not stop.is_set():
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        await asyncio.to_thread(storage.disk.flush)


async def measure(storage: Storage, seeded: int, mode: str, seconds: float) -> Timings:
    timings = Timings()
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(timings, stop))
    keep = asyncio.create_task(housekeeping(storage, stop))
    await request_path(storage, seeded, mode, seconds, timings)
    stop.set()
    await tick
    keep.cancel()
    return timings


def run_mode(path: Path, max_bytes: int, seeded: int, mode: str, args: argparse.Namespace) -> None:
    context = multiprocessing.get_context("spawn")
    stop_at = time.time() + args.seconds + 3
    others = [
        context.Process(target=other_worker, args=(str(path), max_bytes, f"w{n}-{mode}", stop_at))
        for n in range(args.writers)
    ]
    for proc in others:
        proc.start()
    time.sleep(1.0)  # let the other workers get going (a benchmark: real contention is the point)
    storage = storage_on(path, max_bytes)
    assert storage.disk is not None
    timings = asyncio.run(measure(storage, seeded, mode, args.seconds))
    storage.disk.close()
    for proc in others:
        proc.join()
    print(
        f"\n[{mode}] stores {'on the loop' if mode == 'inline' else 'in a thread'}, "
        f"{args.writers} other writer(s), {seeded} rows"
    )
    for name in ("hit (or gone)", "miss", "store", "304 update", "purge", "loop lateness"):
        print("  " + timings.row(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--modes", default="inline,thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="index-stall-") as scratch:
        path = Path(scratch) / "disk"
        started = time.perf_counter()
        used = fill(path, args.objects)
        took = time.perf_counter() - started
        print(
            f"seeded {args.objects} objects ({used / 2**20:.1f} MiB of files) in {took:.1f} s;"
            f" cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.2f}"
        )
        for mode in args.modes.split(","):
            run_mode(path, used + 64 * 1024, args.objects, mode, args)


if __name__ == "__main__":
    main()
