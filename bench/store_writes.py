"""Print how many creates per second a store takes from concurrent writers.

Usage (from the repository root):

    .venv/bin/python tests/store/bench_writes.py sqlite [--writers 16] [--count 20000]
    .venv/bin/python tests/store/bench_writes.py etcd   [--writers 16] [--count 20000]

SQLite runs on a fresh file in a temporary directory (on the same disk as
/tmp: fsync cost is the disk's); etcd runs on a fresh single member started
for the run. Each create carries a 200-byte value. A benchmark, not a test:
it prints one line and never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/

from tests.etcd_cluster import running_etcd

from edgefleet.store.etcd import EtcdStore
from edgefleet.store.interface import Store
from edgefleet.store.sqlite import SqliteStore


async def creates_per_second(store: Store, writers: int, count: int) -> float:
    value = b"v" * 200
    per_writer = count // writers

    async def write(w: int) -> None:
        for i in range(per_writer):
            await store.create(f"/bench/{w}/{i}", value)

    started = time.perf_counter()
    await asyncio.gather(*(write(w) for w in range(writers)))
    return per_writer * writers / (time.perf_counter() - started)


async def run(backend: str, writers: int, count: int, workdir: Path) -> float:
    if backend == "sqlite":
        store: Store = SqliteStore(workdir / "bench.db")
        try:
            return await creates_per_second(store, writers, count)
        finally:
            await store.close()
    with running_etcd(workdir / "etcd") as cluster:
        store = EtcdStore(cluster.endpoints)
        try:
            return await creates_per_second(store, writers, count)
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=["sqlite", "etcd"])
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as workdir:
        rate = asyncio.run(run(args.backend, args.writers, args.count, Path(workdir)))
    print(f"{args.backend}: {rate:,.0f} creates/s with {args.writers} concurrent writers ({args.count} creates)")


if __name__ == "__main__":
    main()
