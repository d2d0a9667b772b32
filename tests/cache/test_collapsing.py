"""Collapsed forwarding, end to end: concurrent misses of one URL cause one origin request.

Two cache processes run in front of one origin: ``cache`` with the default
``memoryObjectBytes`` (fills stay in memory) and ``spooling`` with 256 KiB,
so larger bodies go through the fill's spool file while clients read them.
The origin's ``delay`` parameter holds the response head back so that every
client has joined the fill before it arrives; ``slow`` sends the body in
16 KiB chunks with a pause after each, so a client that joins late can be
seen receiving bytes long before the origin has finished.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edgefleet.cache.upstream.fills import Fill
from edgefleet.demo.origin import Body
from tests.cacheproc import CacheProcess, OriginProcess, all_started, cache_config

SPOOL_THRESHOLD = 256 * 1024


@pytest.fixture(scope="module")
def caches(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CacheProcess]]:
    data_dir = tmp_path_factory.mktemp("caches")
    procs = {
        "memory": CacheProcess(cache_config(origin.url, data_dir, node="memory"), data_dir),
        "spool": CacheProcess(
            cache_config(
                origin.url,
                data_dir,
                node="spool",
                storage={
                    "memoryBytes": 64 * 2**20,
                    "memoryObjectBytes": SPOOL_THRESHOLD,
                    "disk": {"path": str(data_dir / "disk-spool"), "maxBytes": 256 * 2**20},
                },
            ),
            data_dir,
        ),
    }
    with all_started(list(procs.values())):
        yield procs


@pytest.fixture(params=["memory", "spool"])
def cache(request: pytest.FixtureRequest, caches: dict[str, CacheProcess]) -> CacheProcess:
    return caches[request.param]


def expected(path: str, size: int) -> bytes:
    return Body(size=size, seed=f"{path}|0").read(0, size)


@dataclass
class Received:
    status: int
    headers: httpx.Headers
    body: bytes
    started: float
    first_byte: float  # monotonic time of the first body byte
    finished: float


async def get(client: httpx.AsyncClient, target: str, delay: float = 0.0) -> Received:
    await asyncio.sleep(delay)
    started = time.monotonic()
    first_byte = 0.0
    chunks = []
    async with client.stream("GET", target) as response:
        async for data in response.aiter_raw():
            first_byte = first_byte or time.monotonic()
            chunks.append(data)
    return Received(response.status_code, response.headers, b"".join(chunks), started, first_byte, time.monotonic())


def client_for(cache: CacheProcess, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=cache.url, headers={"Host": "demo.test"}, limits=limits, timeout=30)


async def test_concurrent_misses_make_one_origin_request(cache: CacheProcess, origin: OriginProcess) -> None:
    path = f"/bytes/{300 * 1024}/collapse-{cache.config['node']}"
    target = path + "?delay=500"
    async with client_for(cache, 120) as client:
        received = await asyncio.gather(*(get(client, target) for _ in range(120)))
    body = expected(path, 300 * 1024)
    assert [r.status for r in received] == [200] * 120
    assert all(r.body == body for r in received), "every client gets the whole, correct body"
    assert origin.count(target) == 1
    # Clients that connect after the fill completed (a loaded machine) are hits; none fetched on its own.
    statuses = [r.headers["x-cache"].split()[0] for r in received]
    assert set(statuses) <= {"MISS", "HIT"} and "MISS" in statuses


async def test_a_late_joiner_streams_while_the_origin_still_sends(cache: CacheProcess, origin: OriginProcess) -> None:
    size = 1024 * 1024
    path = f"/bytes/{size}/streaming-{cache.config['node']}"
    target = path + "?slow=40"  # 64 chunks of 16 KiB, 40 ms apart: about 2.6 s
    async with client_for(cache, 4) as client:
        first, late = await asyncio.gather(get(client, target), get(client, target, delay=0.6))
    assert first.body == late.body == expected(path, size)
    assert origin.count(target) == 1, "the late client joined the fill"
    assert first.finished - first.started > 2.0, "the origin really was slow"
    assert late.first_byte - late.started < 0.5, "the late joiner gets the bytes already there at once"
    assert late.first_byte < first.finished - 1.0, "... long before the origin has finished"


async def test_responses_that_cannot_be_shared_are_not_given_to_waiters(
    cache: CacheProcess, origin: OriginProcess
) -> None:
    target = f"/bytes/{SPOOL_THRESHOLD * 2}/cookie-{cache.config['node']}?setcookie=1&delay=300"
    async with client_for(cache, 10) as client:
        received = await asyncio.gather(*(get(client, target) for _ in range(10)))
    assert [r.status for r in received] == [200] * 10
    assert len({r.headers["set-cookie"] for r in received}) == 10, "each client got its own Set-Cookie"
    assert origin.count(target) == 10


async def test_bodies_past_the_memory_limit_stream_from_the_spool_to_every_waiter(
    caches: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    cache = caches["spool"]
    sizes = [SPOOL_THRESHOLD + 1, SPOOL_THRESHOLD + 4096, 2 * 2**20]
    async with client_for(cache, 100) as client:
        for size in sizes:
            path = f"/bytes/{size}/spooled"
            target = path + "?delay=300&slow=2"
            joiners = [get(client, target, delay=0.1 * (index % 10)) for index in range(30)]
            received = await asyncio.gather(*joiners)
            assert all(r.status == 200 and r.body == expected(path, size) for r in received), size
            assert origin.count(target) == 1, size
            hit = await get(client, target)
            assert hit.body == expected(path, size) and hit.headers["x-cache"].startswith("HIT"), size


async def test_a_fast_body_past_the_memory_limit_reaches_the_client_whole(
    caches: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    """The fill may read the whole body before any client reads: the spool must outlive the fill."""
    cache = caches["spool"]
    async with client_for(cache, 8) as client:
        for size in (SPOOL_THRESHOLD + 1, SPOOL_THRESHOLD + 65536, 600 * 1024):
            path = f"/bytes/{size}/fast-spool"
            received = await asyncio.gather(*(get(client, path) for _ in range(4)))
            assert all(r.body == expected(path, size) for r in received), size


async def test_waiters_only_take_the_variant_they_asked_for(cache: CacheProcess, origin: OriginProcess) -> None:
    """A fill started by a gzip request is no answer for br requests (Vary: Accept-Encoding)."""
    target = f"/bytes/4096/vary-{cache.config['node']}?vary=Accept-Encoding&delay=300"
    codings = ["gzip", "br"] * 10
    async with client_for(cache, len(codings)) as client:
        received = await asyncio.gather(
            *(
                get_with(client, target, {"Accept-Encoding": coding}, delay=0.05 * (index % 2))
                for index, coding in enumerate(codings)
            )
        )
    for coding, got in zip(codings, received, strict=True):
        assert got.status == 200 and got.body.startswith(f"accept-encoding={coding}\n".encode()), coding
    assert origin.count(target) == 2, "one fetch per variant"


async def get_with(client: httpx.AsyncClient, target: str, headers: dict[str, str], delay: float) -> Received:
    await asyncio.sleep(delay)
    started = time.monotonic()
    response = await client.get(target, headers=headers)
    return Received(response.status_code, response.headers, response.content, started, started, time.monotonic())


async def test_concurrent_range_misses_of_one_slice_make_one_origin_request(
    cache: CacheProcess, origin: OriginProcess
) -> None:
    size = 10 * 2**20  # slices of 4 MiB: 0, 1 and a short 2
    path = f"/bytes/{size}/sliced-{cache.config['node']}"
    target = path + "?delay=300"
    body = Body(size=size, seed=f"{path}|0")
    firsts = [5_000_000 + 1000 * index for index in range(30)]  # all in slice 1
    async with client_for(cache, len(firsts)) as client:
        received = await asyncio.gather(
            *(
                get_with(client, target, {"Range": f"bytes={first}-{first + 1999}"}, delay=0.01 * (index % 5))
                for index, first in enumerate(firsts)
            )
        )
    for first, got in zip(firsts, received, strict=True):
        assert got.status == 206 and got.body == body.read(first, first + 2000), first
    assert origin.count(target) == 1


# --- the fill's spool, in process -----------------------------------------------------


async def read_all(fill: Fill) -> bytes:
    return b"".join([data async for data in fill.stream()])


@pytest.mark.parametrize("fail_from", [0, 20, 41])
async def test_a_spool_that_cannot_be_written_keeps_the_rest_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_from: int
) -> None:
    """Disk full while spooling (at the takeover of the chunks, or later): every byte still reaches readers."""
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if offset + len(data) > fail_from:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    fill = Fill("key", memory_limit=16, spool_dir=tmp_path)
    early = asyncio.ensure_future(read_all(fill))  # a reader from the start, and one after the end
    monkeypatch.setattr(os, "pwrite", pwrite)
    chunks = [bytes([index]) * 10 for index in range(7)]
    for data in chunks:
        fill.append(data)
        await asyncio.sleep(0)
    fill.finish()
    body = b"".join(chunks)
    assert await early == body and await read_all(fill) == body
    assert fill.read(5, 64) == body[5:65] and fill.read(69, 69) == body[69:]
    assert fill.body() == (body if fail_from == 0 else None)  # whole in memory only if nothing was spooled


async def test_a_spool_that_cannot_be_created_keeps_the_body_in_memory(tmp_path: Path) -> None:
    fill = Fill("key", memory_limit=4, spool_dir=tmp_path / "missing")
    for index in range(3):
        fill.append(bytes([index]) * 5)
    fill.finish()
    assert await read_all(fill) == fill.body() == b"\x00" * 5 + b"\x01" * 5 + b"\x02" * 5
