"""Rate-limit micro-benchmark: microseconds per token take, per-process buckets against the shared table.

Rows, all in this process unless said: ``TokenBuckets.take`` (a dict per worker, what a Proxy without a
table uses); the node's shared table (:mod:`edgefleet.cache.storage.ratetable`) for a returning client
(memoised tag: set lock, read, decide, write, unlock), the same without the lock (``workers: 1``), and
for a new client each time (plus the keyed BLAKE2b); the lock and unlock syscalls alone; a whole request
phase (``Program.on_request``) with one rate-limit rule on each store; and, with ``--processes N``
(default 2), N processes taking from the same keys at once (contention on the same sets), as the mean
per take seen by each process. Only requests that reach a rate-limit action pay any of this; a Domain
without one pays nothing. Best-of-five means; on a shared machine compare rows of one run, not runs.

    .venv/bin/python bench/ratelimit_take.py [--quick] [--processes 2]
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import TypeAdapter

from edgefleet.api.rules import Rule
from edgefleet.cache.policy.rules import CompileEnv, RequestInfo, compile_rules
from edgefleet.cache.policy.rules.ratelimit import TokenBuckets
from edgefleet.cache.storage.ratetable import BucketTable, create_region

ROOT = Path(__file__).resolve().parents[1]
RULE = [{"name": "limit", "actions": [{"rateLimit": {"requestsPerSecond": 1e6, "burst": 1000}}]}]


def per_call(function: Callable[[], object], number: int) -> float:
    """Microseconds per call, best of five runs."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def in_process(number: int) -> list[tuple[str, float]]:
    region = create_region(65536)
    table = BucketTable(region)  # as with workers: 2 or more (set locks)
    alone = BucketTable(region, locked=False)  # as with workers: 1
    shared = table.limiters_for("bench")("limit/0", 1e6, 1000.0, 65536)
    unlocked = alone.limiters_for("bench")("limit/1", 1e6, 1000.0, 65536)
    local = TokenBuckets(1e6, 1000.0, 65536)
    fresh = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count())
    fd = table._fd
    rules = TypeAdapter(list[Rule]).validate_python(RULE)
    on_shared = compile_rules(rules, CompileEnv(limiters=table.limiters_for("bench")))
    on_local = compile_rules(rules, CompileEnv())
    assert on_shared is not None and on_local is not None
    request = RequestInfo("GET", "http", "bench.test", "/api/x", "", [("Host", "bench.test")], "203.0.113.7")

    def lock_unlock() -> None:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 7)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 7)

    rows = [
        ("TokenBuckets.take (per process)", per_call(lambda: local.take("203.0.113.7", time.time()), number)),
        ("shared table, returning client", per_call(lambda: shared.take("203.0.113.7", 0.0), number)),
        ("shared table, workers: 1 (no lock)", per_call(lambda: unlocked.take("203.0.113.7", 0.0), number)),
        ("shared table, a new client each time", per_call(lambda: shared.take(next(fresh), 0.0), number)),
        ("  of which: set lock + unlock syscalls", per_call(lock_unlock, number)),
        ("on_request, 1 rate-limit rule, per process", per_call(lambda: on_local.on_request(request, 1.0), number)),
        ("on_request, 1 rate-limit rule, shared", per_call(lambda: on_shared.on_request(request, 1.0), number)),
    ]
    table.close()
    alone.close()
    os.close(region)
    return rows


def hammer(fd: int, number: int) -> None:
    """A child of ``--processes``: ``number`` takes of one key; prints microseconds per take."""
    table = BucketTable(fd)
    limiter = table.limiters_for("bench")("limit/0", 1e6, 1000.0, 65536)
    started = time.perf_counter()
    for _ in range(number):
        limiter.take("203.0.113.7", 0.0)
    print(json.dumps((time.perf_counter() - started) / number * 1e6))


def contended(processes: int, number: int) -> list[tuple[str, float]]:
    fd = create_region(65536)
    code = f"from bench.ratelimit_take import hammer; hammer({fd}, {number})"
    children = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, pass_fds=[fd], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    figures = [float(json.loads(child.communicate()[0])) for child in children]
    return [(f"shared table, {processes} processes on one key (mean)", sum(figures) / len(figures))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--processes", type=int, default=2, help="processes for the contended row (0: skip it)")
    args = parser.parse_args()
    number = 2000 if args.quick else 50000
    rows = in_process(number)
    if args.processes > 0:
        rows += contended(args.processes, number * 4)
    print(f"{'case':<48} {'us/take':>8}")
    for label, micros in rows:
        print(f"{label:<48} {micros:>8.2f}")


if __name__ == "__main__":
    main()
