"""Request bodies stream through the cache to the upstream (issue 12, item 8).

A body larger than ``maxBodyBytes`` (or a chunked one) is not buffered: it is
relayed to the upstream as it arrives, with the client's socket paused while
the upstream does not take it, so a 50 MiB upload costs the worker a bounded
amount of memory. Real processes: an ``edgefleet cache`` and the origin's
``/upload`` endpoint, which reads the body as it arrives and answers its size
and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.cache.upstream.client import CONTINUE_WAIT
from tests.cacheproc import CacheProcess, OriginProcess, RawConnection, cache_config, http_request, started

HOST = "demo.test"
MiB = 2**20
PIECE = bytes(range(256)) * 4096  # 1 MiB, not all one byte


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def send_body(conn: RawConnection, size: int) -> str:
    """Send ``size`` bytes of body (Content-Length framing); their sha256."""
    digest = hashlib.sha256()
    left = size
    while left:
        piece = PIECE[: min(left, len(PIECE))]
        conn.send(piece)
        digest.update(piece)
        left -= len(piece)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginProcess]:
    with started(OriginProcess(tmp_path_factory.mktemp("backup"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def uploads(
    origin: OriginProcess,
    backup: OriginProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CacheProcess]:
    """One worker, default body limits but a 2 s body timeout; a backup origin behind the first one."""
    data_dir = tmp_path_factory.mktemp("uploads")
    config = cache_config(origin.url, data_dir, disk=False, limits={"bodyTimeout": 2})
    config["domains"][0]["origins"].append({"url": backup.url, "backup": True})
    with started(CacheProcess(config, data_dir)) as proc:
        yield proc


def test_a_50_mib_upload_streams_through_with_bounded_memory(uploads: CacheProcess) -> None:
    (worker,) = uploads.worker_pids()
    with uploads.connect(timeout=20) as conn:  # warm up: the upstream session and its pool exist
        conn.send(http_request("POST", "/upload", HOST, body=b"warm"))
        assert conn.read_response("POST").status == 200
        before = peak_rss(worker)
        size = 50 * MiB
        conn.send(http_request("PUT", "/upload?big", HOST, ("Content-Length", str(size))))
        sha = send_body(conn, size)
        response = conn.read_response("PUT")
        assert response.status == 200, response.body[:300]
        assert json.loads(response.body) == {"method": "PUT", "size": size, "sha256": sha, "chunked": False}
        grown = peak_rss(worker) - before
        print(f"worker peak RSS grew by {grown / MiB:.1f} MiB for a {size // MiB} MiB upload")
        assert grown < 16 * MiB, f"the worker's peak RSS grew by {grown / MiB:.1f} MiB"
        conn.send(http_request("GET", "/bytes/100/after-upload", HOST))  # the connection is reusable
        assert conn.read_response().status == 200


def test_a_chunked_upload_streams_and_the_connection_is_reused(uploads: CacheProcess) -> None:
    digest = hashlib.sha256()
    pieces = []
    for index in range(48):
        data = PIECE[index : index + 65536 + index * 1000]
        digest.update(data)
        pieces.append(b"%x\r\n%s\r\n" % (len(data), data))
    head = http_request("POST", "/upload?chunked", HOST, ("Transfer-Encoding", "chunked"))
    size = sum(65536 + index * 1000 for index in range(48))
    with uploads.connect() as conn:  # the body, then a pipelined request right behind its last chunk
        conn.send(head + b"".join(pieces) + b"0\r\n\r\n" + http_request("GET", "/bytes/100/after-chunked", HOST))
        response = conn.read_response("POST")
        assert response.status == 200, response.body[:300]
        assert json.loads(response.body) == {
            "method": "POST",
            "size": size,
            "sha256": digest.hexdigest(),
            "chunked": True,
        }
        assert conn.read_response().status == 200


def test_an_upload_with_expect_continue_is_asked_for_then_streamed(uploads: CacheProcess) -> None:
    size = 3 * MiB
    with uploads.connect() as conn:
        conn.send(
            http_request("PUT", "/upload?expect", HOST, ("Content-Length", str(size)), ("Expect", "100-continue"))
        )
        assert conn.read_response("PUT").status == 100
        sha = send_body(conn, size)
        response = conn.read_response("PUT")
        assert response.status == 200 and json.loads(response.body)["sha256"] == sha


def test_an_upload_over_max_upload_bytes_is_refused_from_its_length(uploads: CacheProcess) -> None:
    with uploads.connect(timeout=3) as conn:
        conn.send(http_request("PUT", "/upload", HOST, ("Content-Length", str(2**30 + 1))))
        assert conn.read_response("PUT").status == 413


def test_a_client_that_stops_mid_body_is_cut_off(uploads: CacheProcess) -> None:
    (worker,) = uploads.worker_pids()
    before = peak_rss(worker)
    with uploads.connect(timeout=6) as conn:
        conn.send(http_request("PUT", "/upload?stalled", HOST, ("Content-Length", str(50 * MiB))))
        send_body(conn, 8 * MiB)
        started_at = time.monotonic()
        response = conn.read_response("PUT")
        assert response.status == 408, response.body[:300]
        assert conn.closed_within(2.0), "the connection stayed open after the body timed out"
        assert time.monotonic() - started_at < 5.0
    assert peak_rss(worker) - before < 16 * MiB


def test_an_upstream_failing_mid_body_is_a_502_and_not_retried(
    uploads: CacheProcess,
    origin: OriginProcess,
    backup: OriginProcess,
) -> None:
    target = f"/upload?fail_after={MiB}"
    with uploads.connect(timeout=10) as conn:
        conn.send(http_request("PUT", target, HOST, ("Content-Length", str(8 * MiB))))
        with contextlib.suppress(OSError):  # the cache may answer and close before it has read all of the body
            send_body(conn, 8 * MiB)
        response = conn.read_response("PUT")
        assert response.status == 502, response.body[:300]
    assert origin.count(target) == 1
    assert backup.count(target) == 0, "a partly sent body was sent again to the next origin"


def test_an_upstream_that_cannot_be_reached_is_retried_with_the_whole_body(
    origin: OriginProcess,
    tmp_path: Path,
) -> None:
    """Nothing of the body was sent to an origin that refused the connection: the next one gets all of it."""
    dead = f"http://127.0.0.1:{_closed_port()}"
    config = cache_config(dead, tmp_path, disk=False)
    config["domains"][0]["origins"].append({"url": origin.url, "backup": True})
    with started(CacheProcess(config, tmp_path)) as cache, cache.connect() as conn:
        size = 4 * MiB
        conn.send(http_request("POST", "/upload?retried", HOST, ("Content-Length", str(size))))
        sha = send_body(conn, size)
        response = conn.read_response("POST")
        assert response.status == 200 and json.loads(response.body)["sha256"] == sha


def test_a_chunked_upload_growing_past_max_upload_bytes_is_cut_off_with_413(
    origin: OriginProcess,
    tmp_path: Path,
) -> None:
    config = cache_config(origin.url, tmp_path, disk=False, limits={"maxUploadBytes": 2 * MiB})
    with started(CacheProcess(config, tmp_path)) as cache, cache.connect() as conn:
        conn.send(http_request("POST", "/upload?too-long", HOST, ("Transfer-Encoding", "chunked")))
        with contextlib.suppress(OSError):  # the cache may close before all of it is sent
            for _ in range(4):
                conn.send(b"%x\r\n%s\r\n" % (len(PIECE), PIECE))
        response = conn.read_response("POST")
        assert response.status == 413, response.body[:300]
        assert response.header("connection") == "close" and conn.closed_within(2.0)


def _closed_port() -> int:
    from tests.cloudproc import free_port

    return free_port()


# --- Expect: 100-continue: RFC 9110 §10.1.1 and §15.2.1 ------------------------------------------
#
# A client that asks ``Expect: 100-continue`` holds its body back until it is told ``100 Continue``. The
# cache forwards the expectation with the request head and the upstream's answer decides: its 100 lets the
# body come; a final status instead (401, 417...) reaches the client with no body asked for; an upstream that
# says nothing (an HTTP/1.0 server) is given the body after ``CONTINUE_WAIT`` anyway, so the client is never
# left waiting. The origin's ``/upload`` answers the expectation as each test asks (``refuse``, ``nocontinue``).

EXPECT = ("Expect", "100-continue")


def upload_head(target: str, size: int, version: str = "1.1") -> bytes:
    return http_request("PUT", target, HOST, ("Content-Length", str(size)), EXPECT, version=version)


def sent_body(conn: RawConnection, size: int) -> dict[str, object]:
    conn.send(b"x" * size)
    response = conn.read_response("PUT")
    assert response.status == 200, response.body[:300]
    answer: dict[str, object] = json.loads(response.body)
    return answer


def test_9110_10_1_1_the_expectation_is_forwarded_and_the_upstreams_100_lets_the_body_come(
    uploads: CacheProcess,
) -> None:
    with uploads.connect() as conn:
        conn.send(upload_head("/upload?small", 10))  # small: not buffered first, the upstream is asked
        assert conn.read_response("PUT").status == 100
        assert sent_body(conn, 10)["size"] == 10


def test_9110_15_2_the_upstreams_100_is_relayed_even_when_its_answer_does_not_read_the_body(
    uploads: CacheProcess,
) -> None:
    """/echo's origin says 100, then answers at once without reading the body: the client, told 100, sends it; the
    cache reads and drops it (it is short), so the connection carries the next request instead of a reset."""
    with uploads.connect() as conn:
        conn.send(http_request("POST", "/echo?expect", HOST, ("Content-Length", "2"), EXPECT))
        assert conn.read_response("POST").status == 100
        conn.send(b"hi")
        echoed = conn.read_response("POST")
        assert echoed.status == 200 and json.loads(echoed.body)["headers"]["expect"] == "100-continue"
        assert echoed.header("connection") != "close"
        conn.send(http_request("GET", "/bytes/10/after-drain", HOST))
        assert conn.read_response().status == 200


@pytest.mark.parametrize("status", [401, 417])
def test_9110_15_2_1_a_final_answer_before_the_body_reaches_the_client_without_it(
    uploads: CacheProcess, status: int
) -> None:
    with uploads.connect() as conn:
        conn.send(upload_head(f"/upload?refuse={status}", 5 * 2**20))
        response = conn.read_response("PUT")
        assert response.status == status, "no 100 first: the body is not wanted"
        assert response.header("connection") == "close" and conn.closed_within(5)
    with uploads.connect() as conn:  # the upstream connection that expected a body is never reused
        for index in range(3):
            conn.send(http_request("POST", f"/echo?after-refuse-{index}", HOST, body=b"ok"))
            after = conn.read_response("POST")
            assert after.status == 200 and json.loads(after.body)["query"] == f"after-refuse-{index}"


def test_9110_10_1_1_an_upstream_that_never_says_100_gets_the_body_after_a_wait(uploads: CacheProcess) -> None:
    with uploads.connect() as conn:
        asked = time.monotonic()
        conn.send(upload_head("/upload?nocontinue=1", 1000))
        assert conn.read_response("PUT").status == 100, "the client is not left waiting"
        waited = time.monotonic() - asked
        assert sent_body(conn, 1000)["size"] == 1000
    assert waited >= CONTINUE_WAIT * 0.9, f"100 after {waited:.2f} s: it must come from the upstream's side"


def test_9110_10_1_1_an_http_1_0_expectation_is_ignored(uploads: CacheProcess) -> None:
    with uploads.connect() as conn:
        conn.send(upload_head("/upload?http10", 4, version="1.0"))  # the head alone: nothing answers it
        conn.send(b"abcd")
        response = conn.read_response("PUT")
    assert response.status == 200, "no 1xx to an HTTP/1.0 client (§15.2)"
    assert json.loads(response.body)["size"] == 4
