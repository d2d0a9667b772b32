"""The cache server's HTTP/1.1 front end on the wire: a real origin, a real ``edgefleet cache`` process.

Keep-alive, pipelining, chunked framing in and out, HEAD, limits and
timeouts, unknown hosts, upstream failures, the X-Cache/Server-Timing
headers and the access log. One origin and one cache serve the whole module
(timeouts shortened to one second); a second cache covers the settings that
differ (``unknownHostStatus: 404``); a sample-0 access log is checked in process.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cache.config import parse_config
from edgefleet.cache.front.worker import Worker
from tests.cache.figures import fresh_metric
from tests.cache.inprocess import serving
from tests.cacheproc import CacheProcess, OriginProcess, RawConnection, cache_config, http_request, started
from tests.waiting import wait_until

NODE = "fe"


class CapturingHandler(socketserver.StreamRequestHandler):
    """An origin that records each request's head and body exactly (Content-Length framed only)."""

    def handle(self) -> None:
        server: CapturingOrigin = self.server  # type: ignore[assignment]
        while head := self._head():
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            lengths = [int(value) for name, value in fields.items() if name.strip().lower() == b"content-length"]
            body = self.rfile.read(lengths[0]) if lengths else b""
            server.seen.append((head, body))
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCache-Control: no-store\r\n\r\nok\n")

    def _head(self) -> bytes:
        lines = []
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b""):
            lines.append(line.rstrip(b"\r\n"))
        return b"\r\n".join(lines)


class CapturingOrigin(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CapturingHandler)
        self.seen: list[tuple[bytes, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("front")


@pytest.fixture(scope="module")
def capture() -> Iterator[CapturingOrigin]:
    server = CapturingOrigin()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def cache(origin: OriginProcess, capture: CapturingOrigin, data_dir: Path) -> Iterator[CacheProcess]:
    config = cache_config(
        origin.url,
        data_dir,
        node=NODE,
        limits={"headerTimeout": 1, "idleTimeout": 1, "maxUrlBytes": 1024, "maxHeaderBytes": 4096},
        upstream={"responseTimeout": 1},
    )
    config["domains"].append({"name": "capture", "hostnames": ["capture.test"], "origins": [{"url": capture.url}]})
    with started(CacheProcess(config, data_dir)) as proc:
        yield proc


@pytest.fixture(scope="module")
def quiet_cache(origin: OriginProcess, data_dir: Path) -> Iterator[CacheProcess]:
    config = cache_config(
        origin.url,
        data_dir,
        node="quiet",
        unknownHostStatus=404,
        accessLog={"path": str(data_dir / "access-quiet.log"), "sample": 0},
    )
    with started(CacheProcess(config, data_dir)) as proc:
        yield proc


@pytest.fixture
def origin_ok(origin: OriginProcess) -> Iterator[OriginProcess]:
    """The origin, put back in mode ok whatever the test did to it."""
    try:
        yield origin
    finally:
        origin.mode("ok")


def origin_body(origin: OriginProcess, path: str) -> bytes:
    return httpx.get(origin.url + path, timeout=10).content


# --- connections ----------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(cache: CacheProcess, origin: OriginProcess) -> None:
    with cache.connect() as conn:
        statuses = []
        for path in ["/bytes/2000/ka1", "/bytes/2000/ka1", "/bytes/3000/ka2", "/bytes/2000/ka1", "/bytes/3000/ka2"]:
            conn.send(http_request("GET", path))
            response = conn.read_response()
            assert response.body == origin_body(origin, path)
            statuses.append(response.header("x-cache"))
        assert statuses == [f"{state} from {NODE}" for state in ("MISS", "HIT", "MISS", "HIT", "HIT")]
        assert not conn.closed_within(0.1)


def test_pipelined_gets_with_a_miss_between_hits_come_back_whole_and_in_order(
    cache: CacheProcess, origin: OriginProcess
) -> None:
    for path in ("/bytes/5000/pipe-a", "/bytes/7000/pipe-c"):
        assert cache.get(path).status_code == 200
    paths = ["/bytes/5000/pipe-a", "/bytes/300000/pipe-b?delay=300", "/bytes/7000/pipe-c"]
    with cache.connect() as conn:
        conn.send(b"".join(http_request("GET", path) for path in paths))
        responses = [conn.read_response() for _ in paths]
        assert [r.header("x-cache") for r in responses] == [f"HIT from {NODE}", f"MISS from {NODE}", f"HIT from {NODE}"]
        for path, response in zip(paths, responses, strict=True):
            assert response.status == 200
            assert response.body == origin_body(origin, path.partition("?")[0])
        assert conn.pending_bytes() == b"" and not conn.closed_within(0.1)


def test_pipelined_requests_before_a_bad_one_are_answered_first(cache: CacheProcess) -> None:
    bad = b"GET /x HTTP/1.1\r\nHost: demo.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/100/before-bad?delay=200") + http_request("GET", "/bytes/100/b2") + bad)
        first, second, error = conn.read_response(), conn.read_response(), conn.read_response()
        assert (first.status, second.status, error.status) == (200, 200, 400)
        assert error.header("connection") == "close"
        assert conn.closed_within(2)


# --- framing --------------------------------------------------------------------------------


STORED = "edgefleet_cache_stored_total"


def test_chunked_origin_response_is_relayed_chunked_then_served_with_a_length(
    cache: CacheProcess, origin: OriginProcess
) -> None:
    expected = origin_body(origin, "/bytes/70000/chunk")
    stored = fresh_metric(cache, STORED)
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/70000/chunk?chunked=1"))
        miss = conn.read_response()
        assert miss.header("x-cache") == f"MISS from {NODE}"
        assert (miss.framing, miss.header("transfer-encoding"), miss.header("content-length")) == (
            "chunked",
            "chunked",
            None,
        )
        assert miss.body == expected
        # The disk commit runs in a thread: until it ends, the next request joins the fill (a MISS).
        wait_until(lambda: fresh_metric(cache, STORED) > stored, what="the chunked response stored")
        conn.send(http_request("GET", "/bytes/70000/chunk?chunked=1"))
        hit = conn.read_response()
        assert (hit.header("x-cache"), hit.framing, hit.body) == (f"HIT from {NODE}", "length", expected)


def test_http_1_0_client_gets_a_close_delimited_body_for_a_chunked_miss(
    cache: CacheProcess, origin: OriginProcess
) -> None:
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/50000/chunk10?chunked=1", version="1.0"))
        response = conn.read_response()
        assert response.status == 200 and response.framing == "close"
        assert "transfer-encoding" not in response.names()
        assert response.header("connection") == "close"
        assert response.body == origin_body(origin, "/bytes/50000/chunk10")
        assert conn.eof


def test_http_1_0_keep_alive_request_gets_connection_close_and_is_closed(cache: CacheProcess) -> None:
    cache.get("/bytes/10/ka10")
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/10/ka10", "demo.test", ("Connection", "keep-alive"), version="1.0"))
        response = conn.read_response()
        assert response.header("x-cache") == f"HIT from {NODE}" and len(response.body) == 10
        assert response.header("connection") == "close"
        assert conn.closed_within(1)


def test_connection_close_hits_are_answered_then_closed_and_later_requests_dropped(cache: CacheProcess) -> None:
    """A hit for a ``Connection: close`` request (the fast path since issue 14) says so and ends the connection."""
    cache.get("/bytes/10/close10")
    with cache.connect() as conn:
        conn.send(
            http_request("GET", "/bytes/10/close10", "demo.test", ("Connection", "close"))
            + http_request("GET", "/bytes/10/close10")  # after a close: never answered
        )
        response = conn.read_response()
        assert response.header("x-cache") == f"HIT from {NODE}" and len(response.body) == 10
        assert response.header("connection") == "close" and response.header("age") is not None
        assert conn.closed_within(1)
        assert conn.pending_bytes() == b""


def test_chunked_request_body_reaches_the_origin_whole_with_a_content_length(
    cache: CacheProcess, capture: CapturingOrigin
) -> None:
    body = b"first-" * 1000 + b"\r\n0\r\n" + bytes(range(256))
    pieces = [body[:10], body[10:5000], body[5000:]]
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\nX-Trailer: t\r\n\r\n"
    capture.seen.clear()
    with cache.connect() as conn:
        conn.send(http_request("POST", "/upload?x=1", "capture.test", ("Transfer-Encoding", "chunked"), body=framed))
        response = conn.read_response("POST")
    assert (response.status, response.body, response.header("x-cache")) == (200, b"ok\n", f"PASS from {NODE}")
    [(head, received)] = capture.seen
    assert head.startswith(b"POST /upload?x=1 HTTP/1.1\r\n")
    assert received == body
    lower = head.lower()
    assert b"content-length: %d" % len(body) in lower
    assert b"transfer-encoding" not in lower and b"x-trailer" not in lower


def test_chunked_post_to_echo_is_forwarded_as_a_sized_request(cache: CacheProcess, origin: OriginProcess) -> None:
    with cache.connect() as conn:
        conn.send(
            http_request(
                "POST",
                "/echo?q=1",
                "demo.test",
                ("Transfer-Encoding", "chunked"),
                body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            )
        )
        response = conn.read_response("POST")
    echoed = json.loads(response.body)
    assert (echoed["method"], echoed["path"], echoed["query"]) == ("POST", "/echo", "q=1")
    assert echoed["headers"]["content-length"] == "11"
    assert "transfer-encoding" not in echoed["headers"]
    assert echoed["headers"]["host"] == "demo.test"
    assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echoed["headers"]["via"] == f"1.1 {NODE}"


def test_expect_100_continue_gets_an_interim_response_before_the_body(cache: CacheProcess) -> None:
    with cache.connect() as conn:
        conn.send(http_request("POST", "/echo", "demo.test", ("Content-Length", "5"), ("Expect", "100-continue")))
        interim = conn.read_response("HEAD")
        conn.send(b"hello")
        final = conn.read_response("POST")
    assert interim.status == 100
    assert final.status == 200 and json.loads(final.body)["method"] == "POST"


def test_absolute_form_target_uses_its_own_host(cache: CacheProcess, origin: OriginProcess) -> None:
    with cache.connect() as conn:
        conn.send(b"GET http://demo.test/bytes/10/absolute HTTP/1.1\r\nHost: unknown.test\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200 and len(response.body) == 10
    assert origin.count("/bytes/10/absolute") == 1


def test_head_has_the_headers_of_get_and_no_body(cache: CacheProcess) -> None:
    compared = ("content-length", "content-type", "etag", "last-modified", "cache-control", "accept-ranges")
    with cache.connect() as conn:
        conn.send(
            http_request("HEAD", "/bytes/4000/head")
            + http_request("GET", "/bytes/4000/head")
            + http_request("HEAD", "/bytes/4000/head")
            + http_request("GET", "/bytes/10/after-head")
        )
        head_miss, get, head_hit = (conn.read_response("HEAD"), conn.read_response(), conn.read_response("HEAD"))
        after = conn.read_response()
    assert len(get.body) == 4000 and get.header("x-cache") == f"HIT from {NODE}"
    assert after.status == 200 and len(after.body) == 10  # nothing was left over from the HEAD answers
    assert head_miss.header("x-cache") == f"MISS from {NODE}" and head_hit.header("x-cache") == f"HIT from {NODE}"
    for name in compared:
        assert get.header(name) is not None, name
        assert head_miss.header(name) == get.header(name) == head_hit.header(name), name
    assert {"server-timing", "age"} <= set(head_hit.names())


# --- limits and timeouts ----------------------------------------------------------------------


def test_header_block_over_the_limit_is_431_with_connection_close(cache: CacheProcess) -> None:
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/10/big-head", "demo.test", ("X-Big", "v" * 5000)))
        response = conn.read_response()
        assert response.status == 431 and response.header("connection") == "close"
        assert b"431 Request Header Fields Too Large" in response.body
        assert conn.closed_within(2)


def test_url_over_the_limit_is_414_with_connection_close(cache: CacheProcess) -> None:
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/10/" + "u" * 1100))
        response = conn.read_response()
        assert response.status == 414 and response.header("connection") == "close"
        assert conn.closed_within(2)


def test_half_a_head_is_answered_408_and_closed_after_the_header_timeout(cache: CacheProcess) -> None:
    with cache.connect() as conn:
        conn.send(b"GET /bytes/10/slowloris HTTP/1.1\r\nHost: demo.test\r\nX-Slow: ")
        started = time.monotonic()
        assert conn.closed_within(4)
        assert 0.9 < time.monotonic() - started < 3.5
        assert conn.pending_bytes().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"Connection: close\r\n" in conn.pending_bytes()


def test_a_head_dribbled_a_byte_at_a_time_still_times_out(cache: CacheProcess) -> None:
    head = http_request("GET", "/bytes/10/dribble", "demo.test", ("X-Pad", "p" * 40))
    with cache.connect() as conn:
        started = time.monotonic()
        for byte in head[:-2]:
            conn.send(bytes([byte]))
            if conn.closed_within(0.2):
                break
        assert conn.eof and time.monotonic() - started < 3.5
        assert conn.pending_bytes().startswith(b"HTTP/1.1 408 ")


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(cache: CacheProcess) -> None:
    with cache.connect() as conn:
        conn.send(http_request("GET", "/bytes/10/idle"))
        assert conn.read_response().status == 200
        assert not conn.closed_within(0.6)
        assert conn.closed_within(3)
        assert conn.pending_bytes() == b""


# --- hosts and upstream failures ----------------------------------------------------------------


def test_unknown_host_is_421_by_default_with_a_readable_body(cache: CacheProcess) -> None:
    response = cache.get("/bytes/10/x", host="nobody.test")
    assert response.status_code == 421
    assert "421 Misdirected Request" in response.text and "no domain serves this host" in response.text
    assert response.headers["x-cache"] == f"ERROR from {NODE}"


def test_unknown_host_is_404_when_configured(quiet_cache: CacheProcess) -> None:
    response = quiet_cache.get("/bytes/10/x", host="nobody.test")
    assert response.status_code == 404
    assert "404 Not Found" in response.text


def test_origin_closing_connections_is_502(cache: CacheProcess, origin_ok: OriginProcess) -> None:
    origin_ok.mode("close")
    response = cache.get("/bytes/10/down-close")
    assert response.status_code == 502
    assert response.text.startswith("502 Bad Gateway: ") and f"(edgefleet cache on {NODE})" in response.text
    assert response.headers["content-type"].startswith("text/plain")


def test_origin_hanging_past_the_response_timeout_is_504(cache: CacheProcess, origin_ok: OriginProcess) -> None:
    origin_ok.mode("hang")
    started = time.monotonic()
    response = cache.get("/bytes/10/down-hang")
    assert response.status_code == 504
    assert 0.9 < time.monotonic() - started < 5
    assert response.text.startswith("504 Gateway Timeout: ")


# --- headers and the access log --------------------------------------------------------------------


def test_x_cache_and_server_timing_on_miss_and_hit(cache: CacheProcess) -> None:
    miss = cache.get("/bytes/500/timing")
    hit = cache.get("/bytes/500/timing")
    assert miss.headers["x-cache"] == f"MISS from {NODE}"
    assert miss.headers["server-timing"].startswith('cache;desc="MISS", upstream;dur=')
    assert hit.headers["x-cache"] == f"HIT from {NODE}"
    assert hit.headers["server-timing"] == 'cache;desc="HIT"'


def test_access_log_gets_json_lines(cache: CacheProcess) -> None:
    cache.get("/bytes/10/logged")
    cache.get("/bytes/10/logged")
    path = Path(cache.config["accessLog"]["path"])

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        ours = [line for line in lines if line["target"] == "/bytes/10/logged"]
        return ours if len(ours) == 2 else []

    ours = wait_until(logged, timeout=5, what="both requests in the access log (flushed every 200 ms)")
    assert [line["cache"] for line in ours] == ["MISS", "HIT"]
    for line in ours:
        assert {"time", "client", "method", "host", "status", "bytes", "ms", "node", "domain"} <= set(line)
        assert (line["status"], line["bytes"], line["host"], line["node"]) == (200, 10, "demo.test", NODE)


async def test_access_log_sample_zero_writes_nothing(origin: OriginProcess, tmp_path: Path) -> None:
    """The worker of a sample-0 config has no access log at all: nothing to flush later, so nothing to wait for."""
    path = tmp_path / "access-quiet.log"
    config = parse_config(cache_config(origin.url, tmp_path, node="quiet", accessLog={"path": str(path), "sample": 0}))
    worker = Worker(config, 0)
    async with serving(worker.proxy, config) as client:
        for _ in range(3):
            assert (await client.get("/bytes/10/unlogged", headers={"Host": "demo.test"})).status_code == 200
    assert worker.access_log is None and worker.stats.requests == 3
    assert not path.exists()


def test_raw_connection_reader_sees_close_delimited_bodies(cache: CacheProcess) -> None:
    """The test client itself: an HTTP/1.0 answer with a length is still read by its length."""
    with RawConnection(cache.address) as conn:
        conn.send(http_request("GET", "/bytes/10/raw10", version="1.0"))
        response = conn.read_response()
        assert response.framing == "length" and len(response.body) == 10 and conn.closed_within(2)
