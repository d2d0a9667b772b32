"""A malicious client of the cache, against real ``edgefleet cache`` processes (issue 12, docs/security.md).

Each test plays one attack from the Internet side: pipelining without
reading, forged tier headers, Host spellings, path tricks, bodies sent
before the Host is checked or sent slowly, too many connections, header
tricks and invalidating POSTs. What is measured is what the attack aims at:
the worker's memory, the origin's request counters, the entries stored.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.cache.policy import keys
from edgefleet.cache.upstream import tiers
from tests.cacheproc import (
    CacheProcess,
    OriginProcess,
    RawConnection,
    RawResponse,
    all_started,
    cache_config,
    http_request,
    started,
)

HOST = "demo.test"
STRANGER = "127.0.0.9"
EDGES = ("edge-a", "edge-b")
RULE = {"pathPrefix": "/bytes/100/api/", "bypass": True}


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginProcess]:
    with started(OriginProcess(tmp_path_factory.mktemp("origin"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def cache(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheProcess]:
    """One worker, memory only, serving ``demo.test`` from ``origin``."""
    data_dir = tmp_path_factory.mktemp("cache")
    config = cache_config(origin.url, data_dir, disk=False, cache_policy={"rules": [RULE]})
    with started(CacheProcess(config, data_dir)) as proc:
        yield proc


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# --- item 3: pipelining without reading ------------------------------------------------------


def test_pipelined_gets_without_reading_keep_the_worker_bounded(cache: CacheProcess) -> None:
    """300,000 pipelined GETs of a cached 1 KB object, never read: the worker stops reading, memory stays flat.

    Before the fix the fast path answered every request into the transport's buffer: about 9 MiB per
    100,000 requests, and all 300,000 were taken.
    """
    path = "/bytes/1024/pipelined"
    request = http_request("GET", path, HOST)
    assert cache.get(path).status_code == 200  # stored
    pid = cache.worker_pids()[0]
    before = rss_bytes(pid)
    count = 300_000
    payload = memoryview(request * count)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(cache.address)
        sock.settimeout(1.5)
        sent = 0
        deadline = time.monotonic() + 15
        try:
            while sent < len(payload) and time.monotonic() < deadline:
                sent += sock.send(payload[sent : sent + 65536])
        except TimeoutError:
            pass  # the server stopped reading: what we want
        time.sleep(1.0)  # let the worker answer whatever it read
        grown = rss_bytes(pid) - before
        assert grown < 10 * 2**20, f"worker grew {grown / 2**20:.1f} MiB for {sent // len(request)} requests taken"
        assert sent < len(payload), "the server read every request although none of its answers was read"
    assert cache.get(path).status_code == 200  # and it still serves others


# --- helpers ----------------------------------------------------------------------------------


def untrusted_connection(cache: CacheProcess, timeout: float = 10.0) -> RawConnection:
    """A connection from 127.0.0.9: not an address of any node the cache knows."""
    sock = socket.create_connection(cache.address, timeout=timeout, source_address=(STRANGER, 0))
    conn = RawConnection.__new__(RawConnection)
    conn.sock, conn._buffer, conn.eof = sock, b"", False
    return conn


def exchange(cache: CacheProcess, data: bytes, method: str = "GET") -> RawResponse:
    with untrusted_connection(cache) as conn:
        conn.send(data)
        return conn.read_response(method)


def only_if_cached(proc: CacheProcess, target: str) -> int:
    """200 if ``proc`` holds ``target``, 504 if not (asked from a trusted address: no tier fields are sent)."""
    return proc.get(target, **{"Cache-Control": "only-if-cached"}).status_code


# --- item 7: forged tier header fields ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiered(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CacheProcess]]:
    """Two edge peers on 127.0.0.1 under one parent node: clients on 127.0.0.9 are strangers to them."""
    data_dir = tmp_path_factory.mktemp("tiers")
    procs = {
        name: CacheProcess(cache_config(origin.url, data_dir, node=name, disk=False), data_dir)
        for name in (*EDGES, "parent")
    }
    peers = [{"name": name, "url": procs[name].url} for name in EDGES]
    parent = {"name": "parent", "url": procs["parent"].url}
    for name in EDGES:
        procs[name].config["site"] = {"self": name, "peers": peers, "parents": [{"site": "p", "nodes": [parent]}]}
    procs["parent"].config["site"] = {"self": "parent", "peers": [parent]}
    with all_started(list(procs.values())):
        yield procs


def owned_by(owner: str, stem: str) -> str:
    """A target under ``stem`` whose key the edge ``owner`` owns."""
    for index in range(100):
        target = f"{stem}-{index}"
        if tiers.rank(EDGES, keys.cache_key("http", HOST, target, "keep", ()))[0] == owner:
            return target
    raise AssertionError("no target found")


def test_forged_tier_fields_do_not_skip_the_owner_or_the_parent(
    tiered: dict[str, CacheProcess], origin: OriginProcess
) -> None:
    """``X-Edgefleet-Tier: peer`` and a spent hop count from a client: still asked through owner and parent."""
    target = owned_by("edge-b", "/bytes/300/forged-tier")
    forged = http_request("GET", target, HOST, ("X-Edgefleet-Tier", "peer"), ("X-Edgefleet-Hops", "9"))
    response = exchange(tiered["edge-a"], forged)
    assert response.status == 200
    assert origin.count(target) == 1
    assert only_if_cached(tiered["edge-b"], target) == 200, "the owner stored it: the request went through it"
    assert only_if_cached(tiered["parent"], target) == 200, "and through the parent"
    chain = [entry.strip() for entry in (response.header("x-cache") or "").split(",")]
    assert chain == ["MISS from parent", "PARENT from edge-b", "PEER from edge-a"], "asked through owner and parent"


def test_forged_via_does_not_dodge_collapsing(tiered: dict[str, CacheProcess], origin: OriginProcess) -> None:
    """Concurrent misses naming the node in Via: one origin request, not one each (a looped request skips fills)."""
    target = "/bytes/200/forged-via?delay=600"
    forged = http_request("GET", target, HOST, ("Via", "1.1 edge-a, 1.1 edge-b, 1.1 parent"))
    conns = [untrusted_connection(tiered["edge-a"]) for _ in range(8)]
    try:
        for conn in conns:
            conn.send(forged)
        statuses = [conn.read_response().status for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert statuses == [200] * 8
    assert origin.count(target) == 1, "the forged Via made requests leave the collapsed fill"


# --- item 9: Host spellings ---------------------------------------------------------------------


def test_host_spellings_share_one_entry_that_one_purge_removes(cache: CacheProcess, origin: OriginProcess) -> None:
    target = "/bytes/100/host-spellings"
    spellings = ["demo.test", "DEMO.test", "demo.test.", "demo.test:80", "Demo.Test.:8081"]
    for host in spellings:
        response = exchange(cache, http_request("GET", target, host))
        assert response.status == 200, (host, response.body)
    assert origin.count(target) == 1, "every spelling is one cache entry"
    assert cache.admin("POST", "/purge", json={"urls": [f"http://demo.test{target}"]}).status_code == 200
    assert exchange(cache, http_request("GET", target, "DEMO.TEST.:8081")).status == 200
    assert origin.count(target) == 2, "the purge of the canonical URL reached the entry every spelling shares"


@pytest.mark.parametrize("host", ["[demo.test]", "demo.test:1:2", "demo.test:http", "demo..test", "demo_test/x"])
def test_malformed_host_values_are_refused(cache: CacheProcess, host: str) -> None:
    response = exchange(cache, http_request("GET", "/bytes/100/bad-host", host))
    assert response.status == 400, (host, response.status, response.body)


def test_the_origin_sees_the_canonical_host(cache: CacheProcess) -> None:
    response = exchange(cache, http_request("GET", "/echo?canonical-host", "DEMO.test.:8081"))
    assert response.status == 200
    assert json.loads(response.body)["headers"]["host"] == "demo.test"


# --- item 10: path tricks, Cookie, routing header fields ------------------------------------------


def test_encoded_slash_with_dot_segments_is_refused(cache: CacheProcess, origin: OriginProcess) -> None:
    """``/static/..%2fapi/me``: under /static/ for the cache, maybe /api/me for the origin: refused."""
    for target in ("/bytes/100/static/..%2fapi/me", "/bytes/100/static/%2e%2e%2Fapi/me", "/bytes/100/x/..%5capi/me"):
        response = exchange(cache, http_request("GET", target, HOST))
        assert response.status == 400, (target, response.status)
        assert origin.count(target) == 0


@pytest.mark.parametrize(
    "target",
    [
        "/bytes/100/static/../api/me",
        "//bytes/100/api/me",
        "/bytes/100//api/me",
        "/bytes/100/%61pi/me",
        "/bytes/100/./api/me",
    ],
)
def test_rules_match_the_normalised_path(cache: CacheProcess, origin: OriginProcess, target: str) -> None:
    """Each spelling of /bytes/100/api/me falls under the bypass rule and reaches the origin normalised."""
    response = exchange(cache, http_request("GET", target, HOST))
    assert response.status == 200
    assert (response.header("x-cache") or "").startswith("PASS"), (target, response.header("x-cache"))
    assert origin.count(target) == 0, "the origin got the raw spelling"


def test_spellings_of_one_path_share_one_entry(cache: CacheProcess, origin: OriginProcess) -> None:
    for target in ("/bytes/100/one-path", "/bytes/100/%6fne-path", "//bytes/100/one-path", "/bytes/100/x/../one-path"):
        assert exchange(cache, http_request("GET", target, HOST)).status == 200
    assert origin.count("/bytes/100/one-path") == 1


def test_a_response_to_a_request_with_a_cookie_is_not_stored(cache: CacheProcess) -> None:
    target = "/bytes/100/with-cookie"
    assert exchange(cache, http_request("GET", target, HOST, ("Cookie", "session=alice"))).status == 200
    assert only_if_cached(cache, target) == 504, "stored although the origin may have personalised it"


def test_client_routing_fields_do_not_reach_the_origin(cache: CacheProcess) -> None:
    fields = [
        ("X-Forwarded-Host", "evil.test"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("Forwarded", "host=evil.test"),
    ]
    response = exchange(cache, http_request("GET", "/echo?routing-fields", HOST, *fields))
    seen = json.loads(response.body)["headers"]
    assert not {name.lower() for name, _ in fields} & set(seen), seen


# --- Low: an unsafe method invalidates softly ----------------------------------------------------


def test_a_client_post_marks_the_entry_stale_instead_of_removing_it(cache: CacheProcess, origin: OriginProcess) -> None:
    target = "/echo?cc=max-age%3D600&soft-invalidation"
    assert exchange(cache, http_request("GET", target, HOST)).status == 200
    assert (exchange(cache, http_request("GET", target, HOST)).header("x-cache") or "").startswith("HIT")
    assert exchange(cache, http_request("POST", target, HOST, body=b"x"), "POST").status == 200
    origin.mode("error")
    try:
        after = exchange(cache, http_request("GET", target, HOST))
    finally:
        origin.mode("ok")
    assert after.status == 200, "the POST threw the stored copy away: nothing left to serve while the origin fails"
    assert (after.header("x-cache") or "").startswith("STALE"), after.header("x-cache")
    again = exchange(cache, http_request("GET", target, HOST))
    assert again.status == 200 and not (again.header("x-cache") or "").startswith("HIT"), "not revalidated"


# --- item 8: bodies before the Host is checked, slow bodies, connection caps -----------------------


def answered_within(cache: CacheProcess, head: bytes, seconds: float) -> RawResponse | None:
    """Send ``head`` and the first 64 KiB of its body; the answer read within ``seconds``, None if none came."""
    with untrusted_connection(cache, timeout=seconds) as conn:
        conn.send(head + b"x" * 65536)
        try:
            return conn.read_response("POST")
        except (TimeoutError, ConnectionError):
            return None


def test_a_body_for_an_unknown_host_is_refused_before_it_is_read(cache: CacheProcess) -> None:
    head = http_request("POST", "/upload", "unknown.test", ("Content-Length", "900000"))
    response = answered_within(cache, head, 3.0)
    assert response is not None and response.status == 421, "the server waited for a body nobody will take"


def test_a_body_for_an_unsupported_method_is_refused_before_it_is_read(cache: CacheProcess) -> None:
    response = answered_within(cache, http_request("PROPFIND", "/x", HOST, ("Content-Length", "900000")), 3.0)
    assert response is not None and response.status == 501


def test_a_body_over_the_limit_is_refused_from_its_length(cache: CacheProcess) -> None:
    """Over ``maxUploadBytes`` (1 GiB) for a streamed body, over ``maxBodyBytes`` for a GET's: 413 at once."""
    response = answered_within(cache, http_request("POST", "/echo", HOST, ("Content-Length", str(2 * 2**30))), 3.0)
    assert response is not None and response.status == 413
    response = answered_within(cache, http_request("GET", "/echo", HOST, ("Content-Length", str(2 * 2**20))), 3.0)
    assert response is not None and response.status == 413


@pytest.fixture(scope="module")
def limited(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheProcess]:
    """A cache with small connection caps and a short body timeout."""
    data_dir = tmp_path_factory.mktemp("limited")
    limits = {"maxConnectionsPerClient": 8, "maxConnections": 12, "bodyTimeout": 2}
    with started(CacheProcess(cache_config(origin.url, data_dir, disk=False, limits=limits), data_dir)) as proc:
        yield proc


def test_a_slow_body_is_cut_off(limited: CacheProcess) -> None:
    """A byte of body every 0.3 s keeps the connection active but does not keep it: 408 after bodyTimeout."""
    with untrusted_connection(limited, timeout=0.3) as conn:
        conn.send(http_request("POST", "/echo", HOST, ("Content-Length", "1000")))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not conn.eof:
            with contextlib.suppress(OSError):
                conn.send(b"x")
            conn.closed_within(0.3)
        assert conn.eof, "a slow body held its connection and buffer for 8 s"
        assert b" 408 " in conn.pending_bytes().split(b"\r\n", 1)[0]


def test_connections_are_capped_per_client_and_per_worker(limited: CacheProcess) -> None:
    def connect(source: str) -> socket.socket:
        return socket.create_connection(limited.address, timeout=5, source_address=(source, 0))

    def refused(sock: socket.socket) -> bool:
        sock.sendall(http_request("GET", "/bytes/100/capped", HOST))
        return sock.recv(65536).startswith(b"HTTP/1.1 503 ")

    mine = [connect(STRANGER) for _ in range(10)]
    others = [connect(f"127.0.0.{20 + index}") for index in range(4)]
    extra = connect("127.0.0.30")
    try:
        assert [refused(sock) for sock in mine] == [False] * 8 + [True] * 2, "per client address"
        assert [refused(sock) for sock in others] == [False] * 4, "a cap on one address leaves others alone"
        assert refused(extra), "per worker"
    finally:
        for sock in [*mine, *others, extra]:
            sock.close()
