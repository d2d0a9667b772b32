"""The programmable origin (``edgefleet.demo.origin``), run as a real process on a free loopback port.

One origin serves the whole module (it starts in well under a second); each
test resets its counters and failure mode first. The range parser is also
checked directly, since caches lean on its edge cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edgefleet.demo import origin


@dataclass
class OriginProcess:
    url: str
    proc: subprocess.Popen[bytes]
    stderr: Path


def read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the origin did not print its ready line"
    return proc.stdout.readline().decode().strip()


@contextlib.contextmanager
def running_origin(stderr: Path) -> Iterator[OriginProcess]:
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgefleet.demo.origin", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        line = read_ready_line(proc, 15.0)
        assert line.startswith("origin listening on http://127.0.0.1:"), line
        yield OriginProcess(url=line.rpartition(" ")[2], proc=proc, stderr=stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def origin_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginProcess]:
    with running_origin(tmp_path_factory.mktemp("origin") / "stderr.log") as process:
        yield process


@pytest.fixture
async def client(origin_process: OriginProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=origin_process.url, timeout=10.0) as http:
        await set_mode(http, "ok")
        (await http.post("/__origin/reset")).raise_for_status()
        yield http


async def set_mode(http: httpx.AsyncClient, mode: str) -> None:
    response = await http.post("/__origin/mode", json={"mode": mode})
    assert response.json() == {"mode": mode}


async def stats(http: httpx.AsyncClient) -> dict[str, object]:
    result: dict[str, object] = (await http.get("/__origin/stats")).json()
    return result


# --- content and headers -----------------------------------------------------------


async def test_bytes_are_deterministic_per_path_and_sized(client: httpx.AsyncClient) -> None:
    first, again = await client.get("/bytes/5000"), await client.get("/bytes/5000")
    other = await client.get("/bytes/5000/obj-17")
    assert first.status_code == 200 and len(first.content) == 5000
    assert first.content == again.content and first.headers["ETag"] == again.headers["ETag"]
    assert len(other.content) == 5000 and other.content != first.content
    assert other.headers["ETag"] != first.headers["ETag"]
    assert first.headers["Content-Type"] == "application/octet-stream"
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    assert first.headers["ETag"].startswith('"') and first.headers["Content-Length"] == "5000"
    assert email.utils.parsedate_to_datetime(first.headers["Last-Modified"]).timestamp() <= time.time()
    assert (await client.get("/bytes/0")).content == b""


async def test_large_bodies_stream_and_head_sends_no_body(client: httpx.AsyncClient) -> None:
    big = await client.get("/bytes/3000000")
    assert len(big.content) == 3000000
    assert big.content[:4093] == big.content[4093:8186]  # the pattern's period
    head = await client.head("/bytes/67108864")
    assert head.status_code == 200 and head.headers["Content-Length"] == "67108864" and head.content == b""
    assert (await client.get("/bytes/67108865")).status_code == 400


async def test_query_parameters_shape_the_headers(client: httpx.AsyncClient) -> None:
    params = {
        "cc": "public, s-maxage=5",
        "cdncc": "max-age=7",
        "sc": "max-age=9",
        "expires": "0",
        "lm": "Mon, 01 Jan 2024 00:00:00 GMT",
        "tags": "a,b",
        "age": "42",
        "setcookie": "1",
    }
    response = await client.get("/bytes/10", params=params)
    assert response.headers["Cache-Control"] == "public, s-maxage=5"
    assert response.headers["CDN-Cache-Control"] == "max-age=7"
    assert response.headers["Surrogate-Control"] == "max-age=9"
    assert response.headers["Expires"] == "0" and response.headers["Age"] == "42"
    assert response.headers["Last-Modified"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert response.headers["Cache-Tag"] == "a,b" and response.headers["Set-Cookie"].startswith("session=")
    bare = await client.get("/bytes/10?cc=&etag=0&lm=")
    assert "Cache-Control" not in bare.headers and "ETag" not in bare.headers
    assert "Last-Modified" not in bare.headers
    missing = await client.get("/bytes/10?status=404")
    assert missing.status_code == 404 and len(missing.content) == 10
    assert (await client.get("/bytes/10?status=abc")).status_code == 400


async def test_vary_makes_variants_differ(client: httpx.AsyncClient) -> None:
    gzip = await client.get("/bytes/100?vary=Accept-Encoding", headers={"Accept-Encoding": "gzip"})
    plain = await client.get("/bytes/100?vary=Accept-Encoding", headers={"Accept-Encoding": "identity"})
    assert gzip.headers["Vary"] == "Accept-Encoding"
    assert gzip.content.startswith(b"accept-encoding=gzip\n") and len(gzip.content) == 100
    assert plain.content.startswith(b"accept-encoding=identity\n")
    assert gzip.content[30:] != plain.content[30:] and gzip.headers["ETag"] != plain.headers["ETag"]


async def test_delay_chunked_and_slow(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    assert (await client.get("/bytes/10?delay=300")).status_code == 200
    assert time.monotonic() - started >= 0.3
    chunked = await client.get("/bytes/40000?chunked=1")
    assert chunked.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in chunked.headers
    assert chunked.content == (await client.get("/bytes/40000")).content
    started = time.monotonic()
    slow = await client.get("/bytes/49152?slow=150")  # three 16 KiB chunks, a pause after each
    assert len(slow.content) == 49152 and time.monotonic() - started >= 0.3


# --- validation, ranges, versions ------------------------------------------------------


async def test_conditional_requests_get_304_with_validators(client: httpx.AsyncClient) -> None:
    full = await client.get("/bytes/1024/c")
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    by_etag = await client.get("/bytes/1024/c", headers={"If-None-Match": f'"nope", W/{etag}'})
    assert by_etag.status_code == 304 and by_etag.content == b""
    assert by_etag.headers["ETag"] == etag and by_etag.headers["Cache-Control"] == "public, max-age=3600"
    assert by_etag.headers["Last-Modified"] == modified
    by_date = await client.get("/bytes/1024/c", headers={"If-Modified-Since": modified})
    assert by_date.status_code == 304
    old = email.utils.formatdate(time.time() - 86400 * 365, usegmt=True)
    assert (await client.get("/bytes/1024/c", headers={"If-Modified-Since": old})).status_code == 200
    mismatch = await client.get("/bytes/1024/c", headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert mismatch.status_code == 200  # If-None-Match wins over If-Modified-Since
    assert (await stats(client))["conditional"] == 4


async def test_single_and_multiple_ranges(client: httpx.AsyncClient) -> None:
    full = (await client.get("/bytes/10000")).content
    single = await client.get("/bytes/10000", headers={"Range": "bytes=100-199"})
    assert single.status_code == 206 and single.content == full[100:200]
    assert single.headers["Content-Range"] == "bytes 100-199/10000"
    suffix = await client.get("/bytes/10000", headers={"Range": "bytes=-500"})
    assert suffix.content == full[-500:] and suffix.headers["Content-Range"] == "bytes 9500-9999/10000"
    tail = await client.get("/bytes/10000", headers={"Range": "bytes=9990-"})
    assert tail.content == full[9990:]
    multi = await client.get("/bytes/10000", headers={"Range": "bytes=0-9, 5000-5099, 20000-"})
    assert multi.status_code == 206
    boundary = multi.headers["Content-Type"].partition("boundary=")[2]
    parts = multi.content.split(f"--{boundary}".encode())
    assert parts[-1] == b"--\r\n" and len(parts) == 4
    assert b"Content-Range: bytes 5000-5099/10000\r\n\r\n" + full[5000:5100] + b"\r\n" in parts[2]
    assert len(multi.content) == int(multi.headers["Content-Length"])
    assert (await stats(client))["ranges"] == 4


async def test_unsatisfiable_invalid_and_if_range(client: httpx.AsyncClient) -> None:
    unsatisfiable = await client.get("/bytes/100", headers={"Range": "bytes=100-"})
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["Content-Range"] == "bytes */100"
    invalid = await client.get("/bytes/100", headers={"Range": "bytes=9-1"})
    assert invalid.status_code == 200 and len(invalid.content) == 100
    etag = invalid.headers["ETag"]
    matching = await client.get("/bytes/100", headers={"Range": "bytes=0-9", "If-Range": etag})
    stale = await client.get("/bytes/100", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert matching.status_code == 206 and stale.status_code == 200


async def test_version_bump_changes_etag_content_and_date(client: httpx.AsyncClient) -> None:
    before = await client.get("/bytes/1024/v")
    bumped = await client.post("/__origin/version", params={"path": "/bytes/1024/v"})
    assert bumped.json() == {"path": "/bytes/1024/v", "version": 1}
    after = await client.get("/bytes/1024/v")
    assert after.headers["ETag"] != before.headers["ETag"] and after.content != before.content
    when = email.utils.parsedate_to_datetime
    assert when(after.headers["Last-Modified"]) > when(before.headers["Last-Modified"])
    revalidated = await client.get("/bytes/1024/v", headers={"If-None-Match": before.headers["ETag"]})
    assert revalidated.status_code == 200
    assert (await client.get("/bytes/1024/other")).headers["ETag"] != after.headers["ETag"]


# --- counters and failure modes ---------------------------------------------------------


async def test_stats_count_content_requests_only(client: httpx.AsyncClient) -> None:
    await client.get("/bytes/10?cc=no-cache")
    await client.head("/bytes/10")
    await client.get("/bytes/10")
    await client.get("/echo")
    counted = await stats(client)
    assert counted == {
        "requests": 4,
        "by_path": {"/bytes/10?cc=no-cache": 1, "/bytes/10": 2, "/echo": 1},
        "ranges": 0,
        "conditional": 0,
        "methods": {"GET": 3, "HEAD": 1},
    }
    await client.post("/__origin/reset")
    assert (await stats(client))["requests"] == 0


async def test_error_and_close_modes(client: httpx.AsyncClient, origin_process: OriginProcess) -> None:
    await set_mode(client, "error")
    assert (await client.get("/bytes/10")).status_code == 503
    await set_mode(client, "close")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/bytes/10")
    await set_mode(client, "ok")
    assert (await client.get("/bytes/10")).status_code == 200
    assert (await stats(client))["requests"] == 3
    assert b"Traceback" not in origin_process.stderr.read_bytes()


async def test_hang_mode_answers_once_the_mode_changes(client: httpx.AsyncClient) -> None:
    await set_mode(client, "hang")
    pending = asyncio.create_task(client.get("/bytes/10"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await set_mode(client, "ok")
    assert (await asyncio.wait_for(pending, 5)).status_code == 200
    assert (await client.post("/__origin/mode", json={"mode": "sideways"})).status_code == 400


async def test_sigterm_stops_promptly_even_with_a_hung_request(tmp_path: Path) -> None:
    with running_origin(tmp_path / "stderr.log") as process:
        async with httpx.AsyncClient(base_url=process.url, timeout=10.0) as http:
            await set_mode(http, "hang")
            pending = asyncio.create_task(http.get("/bytes/10"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):
                await pending
            assert await asyncio.to_thread(process.proc.wait, 5) == 0
            assert time.monotonic() - started < 0.8  # without releasing hung requests: ~1 s of shutdown_timeout
        assert process.stderr.read_bytes() == b""


# --- demo site and echo ------------------------------------------------------------------


async def test_demo_site(client: httpx.AsyncClient) -> None:
    index = await client.get("/")
    assert index.headers["Cache-Control"] == "public, max-age=60" and 'href="/large.bin"' in index.text
    script = await client.get("/static/app.js")
    assert script.headers["Cache-Control"] == "public, max-age=86400" and "ETag" in script.headers
    clock = await client.get("/api/time")
    assert clock.headers["Cache-Control"] == "no-store" and "epoch" in clock.json()
    assert (await client.get("/private")).headers["Cache-Control"] == "private"
    middle = await client.get("/large.bin", headers={"Range": "bytes=4194304-4194399"})
    assert middle.headers["Content-Range"] == "bytes 4194304-4194399/8388608" and len(middle.content) == 96
    segment = await client.get("/video/seg-3.ts")
    assert segment.headers["Cache-Control"] == "public, max-age=31536000" and len(segment.content) == 1048576


async def test_echo_returns_the_request(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/echo?x=1", headers={"X-Forwarded-For": "10.0.0.1"})
    body = echoed.json()
    assert echoed.headers["Cache-Control"] == "no-store"
    assert body["method"] == "GET" and body["path"] == "/echo" and body["query"] == "x=1"
    assert body["headers"]["x-forwarded-for"] == "10.0.0.1"


# --- the pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", [(0, 1)]),
        ("bytes=5-", [(5, 10)]),
        ("bytes=-3", [(7, 10)]),
        ("bytes=-30", [(0, 10)]),
        ("bytes=8-100", [(8, 10)]),
        ("bytes=0-1,4-5", [(0, 2), (4, 6)]),
        ("bytes=10-,20-30", []),
        ("bytes=-0", []),
        ("bytes=3-2", None),
        ("bytes=a-b", None),
        ("items=0-1", None),
        ("bytes=", None),
        ("bytes=" + ",".join(["0-0"] * 65), None),
    ],
)
def test_parse_ranges(header: str, expected: list[tuple[int, int]] | None) -> None:
    assert origin.parse_ranges(header, 10) == expected


def test_body_reads_match_the_whole() -> None:
    body = origin.Body(size=20000, prefix=b"hello", seed="/x|0")
    whole = body.read(0, 20000)
    assert whole.startswith(b"hello") and len(whole) == 20000
    assert b"".join(body.chunks(0, 20000, 777)) == whole
    assert body.read(4000, 9001) == whole[4000:9001]
