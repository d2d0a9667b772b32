"""Rate limits per node on a real cache with ``workers: 2``: the workers share one table of buckets.

One cache (two workers) and one origin for the module. A client's connections are spread over both
workers by the kernel (``SO_REUSEPORT``); which worker holds each connection is read from ``/proc``, so
the test knows both served. Whatever the spread, the client gets at most ``burst + rate * elapsed``
200s in total, the rest 429 with ``Retry-After`` (buckets per worker would give up to twice that). The
table belongs to the master: a worker killed and restarted, and a reload, find the spent buckets again.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cacheproc import CacheProcess, OriginProcess, RawConnection, cache_config, http_request, started
from tests.waiting import wait_until

RATE, BURST = 5.0, 10
RULES: list[dict[str, Any]] = [
    {
        "name": "limit",
        "match": {"path": {"prefix": "/bytes/8/limited/"}},
        "actions": [{"rateLimit": {"requestsPerSecond": RATE, "burst": BURST}}],
    },
    {
        "name": "slow",
        "match": {"path": {"prefix": "/bytes/8/slow/"}},
        "actions": [{"rateLimit": {"requestsPerSecond": 0.01, "burst": 3}}],
    },
]
CONNECTIONS = 16
SECONDS = 1.0


def config(origin: OriginProcess, data_dir: Path, rules: list[dict[str, Any]]) -> dict[str, Any]:
    document = cache_config(origin.url, data_dir, workers=2, disk=False, accessLog={"enabled": False})
    document["domains"][0]["rules"] = rules
    return document


@pytest.fixture(scope="module")
def cache(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheProcess]:
    data_dir = tmp_path_factory.mktemp("ratelimit")
    with started(CacheProcess(config(origin, data_dir, RULES), data_dir)) as proc:
        yield proc


def get(conn: RawConnection, path: str) -> tuple[int, str | None]:
    conn.send(http_request("GET", path))
    response = conn.read_response()
    return response.status, response.header("retry-after")


def worker_of(cache: CacheProcess, conn: RawConnection) -> int:
    """The worker process holding the server side of ``conn`` (a request on it was answered: accepted)."""
    client_port = conn.sock.getsockname()[1]
    wanted = f":{cache.address[1]:04X} "
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1] + " ").endswith(wanted) and fields[2].endswith(f":{client_port:04X}"):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in cache.worker_pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except FileNotFoundError:  # closed meanwhile
                continue
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def test_a_client_on_many_connections_gets_the_rate_of_one_node(cache: CacheProcess) -> None:
    connections = [cache.connect() for _ in range(CONNECTIONS)]
    try:
        assert all(get(conn, "/bytes/16/warm")[0] == 200 for conn in connections)
        workers = [worker_of(cache, conn) for conn in connections]
        assert len(set(workers)) == 2, "the kernel gave every connection to one worker"
        answers: list[tuple[int, int, str | None]] = []
        started_at = time.monotonic()
        while time.monotonic() - started_at < SECONDS:
            for conn, worker in zip(connections, workers, strict=True):
                answers.append((worker, *get(conn, "/bytes/8/limited/a")))
        elapsed = time.monotonic() - started_at
    finally:
        for conn in connections:
            conn.close()
    allowed = [status for _, status, _ in answers if status == 200]
    limited = [(worker, wait) for worker, status, wait in answers if status == 429]
    assert len(allowed) + len(limited) == len(answers)
    assert BURST <= len(allowed) <= BURST + RATE * elapsed, (len(allowed), elapsed)
    assert {worker for worker, _ in limited} == set(workers)  # both workers refused the client
    assert all(wait is not None and int(wait) >= 1 for _, wait in limited)
    wait_until(lambda: cache.metric("edgefleet_cache_rate_limited_total") == len(limited), 5.0, what="the counter")


def test_spent_buckets_survive_a_worker_restart_and_a_reload(cache: CacheProcess) -> None:
    with cache.connect() as conn:
        assert [get(conn, "/bytes/8/slow/x")[0] for _ in range(4)] == [200, 200, 200, 429]
    before = cache.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    restarted = wait_until(lambda: (set(cache.worker_pids()) - set(before)) or None, 15.0, what="a new worker")
    cache.wait_healthy()
    assert refused_by(cache, restarted.pop()) == 429  # the new worker found the spent bucket
    changed = copy.deepcopy(cache.config)
    changed["domains"][0]["rules"] = [{"name": "extra", "match": {"path": {"prefix": "/x/"}}}, *RULES]
    cache.reload(changed)
    cache.wait_log("reloaded")
    with cache.connect() as conn:
        assert get(conn, "/bytes/8/slow/x")[0] == 429


def refused_by(cache: CacheProcess, pid: int) -> int:
    """The status of ``/bytes/8/slow/x`` on a connection the worker ``pid`` holds (new connections until one is)."""
    for _ in range(64):
        with cache.connect() as conn:
            status, _ = get(conn, "/bytes/8/slow/x")
            if worker_of(cache, conn) == pid:
                return status
            assert status == 429
    raise AssertionError(f"no connection reached worker {pid}")
