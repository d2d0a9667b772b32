"""API benchmark: REST writes/s with 16 clients, and write-to-event latency with 100 watchers.

Runs a real ``edgefleet cloud`` on SQLite, then on a real single-member etcd,
and prints one line per figure. Targets (issue 2): >= 1,000 writes/s on
SQLite; watch p99 <= 50 ms with 100 watchers. Bounded in time and count;
everything talks to 127.0.0.1 only.

    .venv/bin/python bench/api_throughput.py [--seconds 10] [--writers 16] [--watchers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cloudproc import CloudProcess, running_cloud
from tests.etcd_cluster import running_etcd
from tests.fleet import site_doc as site

SITES = "/apis/edgefleet.io/v1/sites"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def write_throughput(cloud: CloudProcess, writers: int, seconds: float) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {cloud.token}"}
    deadline = time.perf_counter() + seconds
    counts = [0] * writers
    errors = 0

    async def writer(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < deadline:
            async with session.post(cloud.url + SITES, json=site(f"t{index}-{n}")) as response:
                await response.read()
                if response.status == 201:
                    counts[index] += 1
                else:
                    errors += 1
            n += 1

    connector = aiohttp.TCPConnector(limit=writers)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(writer(i, session) for i in range(writers)))
        elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, errors


async def watch_latency(cloud: CloudProcess, watchers: int, writes: int, rate: float) -> list[float]:
    headers = {"Authorization": f"Bearer {cloud.token}"}
    sent: dict[str, float] = {}
    latencies: list[float] = []
    connected = 0

    async def watcher(session: aiohttp.ClientSession, revision: str) -> None:
        nonlocal connected
        params = {
            "watch": "true",
            "resourceVersion": revision,
            "allowWatchBookmarks": "false",
            "timeoutSeconds": str(int(writes / rate) + 30),
        }
        async with session.get(cloud.url + SITES, params=params) as response:
            connected += 1
            seen = 0
            async for line in response.content:
                event = json.loads(line)
                name = event["object"]["metadata"]["name"]
                if name in sent:
                    latencies.append(time.perf_counter() - sent[name])
                    seen += 1
                if seen >= writes:
                    return

    connector = aiohttp.TCPConnector(limit=watchers + 4)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as session:
        async with session.get(cloud.url + SITES, params={"limit": "1"}) as response:
            revision = (await response.json())["metadata"]["resourceVersion"]
        tasks = [asyncio.create_task(watcher(session, revision)) for _ in range(watchers)]
        while connected < watchers:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        for n in range(writes):
            name = f"lat-{n}"
            sent[name] = time.perf_counter()
            async with session.post(cloud.url + SITES, json=site(name)) as response:
                await response.read()
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return latencies


@contextlib.contextmanager
def backend(kind: str, data: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{data}/store.db"
        return
    with running_etcd(data / "etcd") as cluster:
        yield cluster.url


def run(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, backend(kind, Path(tmp)) as url, running_cloud(url, Path(tmp)) as cloud:
        rate, errors = asyncio.run(write_throughput(cloud, args.writers, args.seconds))
        print(
            f"{kind:<7} writes/s: {rate:8.0f}  ({args.writers} concurrent clients, {args.seconds:.0f} s, "
            f"{errors} errors)  target >= 1000 on sqlite",
            flush=True,
        )
        latencies = asyncio.run(watch_latency(cloud, args.watchers, args.events, args.rate))
        expected = args.watchers * args.events
        print(
            f"{kind:<7} write-to-event latency with {args.watchers} watchers: "
            f"p50 {statistics.median(latencies) * 1000:6.1f} ms  p99 {percentile(latencies, 0.99) * 1000:6.1f} ms  "
            f"({len(latencies)}/{expected} events, {args.rate:.0f} writes/s)  target p99 <= 50 ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the write test")
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=200, help="writes observed by the watchers")
    parser.add_argument("--rate", type=float, default=50.0, help="writes/s during the latency test")
    parser.add_argument("--backends", default="sqlite,etcd")
    args = parser.parse_args()
    for kind in args.backends.split(","):
        run(kind, args)


if __name__ == "__main__":
    main()
