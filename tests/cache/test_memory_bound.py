"""A worker's memory stays bounded by its memory tier, whatever the working set and object sizes.

The cache runs with a 16 MiB memory tier and a disk tier. A working set ten
times the memory tier (80 objects of 2 MiB) is fetched twice (miss, then a
hit that mostly comes from disk), then one 64 MiB object, four times the
memory tier, is streamed through a miss and a hit. The worker's resident
set is read from ``/proc/<pid>/status``: ``VmRSS`` now and ``VmHWM``, its
peak since start, which may exceed the idle worker's size by the memory
tier plus 16 MiB of working buffers at most (so never by a 64 MiB object).
An absolute bound of 80 MiB failed once in CI by 28 KiB under load: it also
counted the interpreter's own ~55 MiB, which is not what this test is about.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started

MIB = 2**20
MEMORY_TIER = 16 * MIB
GROWTH = MEMORY_TIER + 16 * MIB
"""Most the worker may grow over its idle size: the memory tier and working buffers, never a 64 MiB object."""
OBJECT = 2 * MIB
OBJECTS = 80
LARGE = 64 * MIB


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


@pytest.fixture
def bounded_cache(origin: OriginProcess, tmp_path: Path) -> Iterator[CacheProcess]:
    config = cache_config(origin.url, tmp_path, node="mb")
    config["storage"] = {
        "memoryBytes": MEMORY_TIER,
        "disk": {"path": str(tmp_path / "disk-mb"), "maxBytes": 1024 * MIB},
    }
    with started(CacheProcess(config, tmp_path)) as proc:
        yield proc


def fetch(client: httpx.Client, path: str) -> tuple[str, int, str]:
    """(X-Cache, length, sha256) of a response, streamed so that the test holds no whole body."""
    digest = hashlib.sha256()
    size = 0
    with client.stream("GET", path) as response:
        assert response.status_code == 200
        for data in response.iter_bytes(MIB):
            digest.update(data)
            size += len(data)
        return response.headers.get("x-cache", "").split(" from ")[0], size, digest.hexdigest()


def test_worker_rss_stays_bounded_serving_ten_times_the_memory_tier(
    bounded_cache: CacheProcess, origin: OriginProcess
) -> None:
    [worker] = bounded_cache.worker_pids()
    idle, _ = rss(worker)
    bound = idle + GROWTH  # relative: the interpreter's own size is not what this test is about
    paths = [f"/bytes/{OBJECT}/set-{index}" for index in range(OBJECTS)]
    with bounded_cache.client() as client, httpx.Client(base_url=origin.url, timeout=30) as direct:
        expected = {path: fetch(direct, path)[1:] for path in paths[:3] + paths[-3:]}
        first = [fetch(client, path) for path in paths]
        after_misses = rss(worker)
        second = [fetch(client, path) for path in paths]
        after_hits = rss(worker)
        large_path = f"/bytes/{LARGE}/large"
        large_expected = fetch(direct, large_path)[1:]
        large = [fetch(client, large_path) for _ in range(2)]
        after_large = rss(worker)
    print(
        f"\nworker RSS (MiB): idle {idle / MIB:.1f}; after {OBJECTS} misses {after_misses[0] / MIB:.1f}; "
        f"after {OBJECTS} hits {after_hits[0] / MIB:.1f}; after the 64 MiB object {after_large[0] / MIB:.1f}; "
        f"peak {after_large[1] / MIB:.1f}; bound {bound / MIB:.0f}"
    )
    assert [state for state, _, _ in first] == ["MISS"] * OBJECTS
    assert [state for state, _, _ in second] == ["HIT"] * OBJECTS
    for path, (_, size, digest) in zip(paths, first, strict=True):
        assert size == OBJECT and (path not in expected or expected[path] == (size, digest))
    assert [result[1:] for result in second] == [result[1:] for result in first]
    assert [state for state, _, _ in large] == ["MISS", "HIT"]
    assert all(result[1:] == large_expected for result in large)
    assert sum(origin.count(path) for path in paths) == OBJECTS + 6  # the cache asked once each (+ direct reads)
    assert origin.count(large_path) == 2
    for label, (now, peak) in (("misses", after_misses), ("hits", after_hits), ("large", after_large)):
        assert now < bound, (label, now / MIB, idle / MIB)
        assert peak < bound, (label, peak / MIB, idle / MIB)
