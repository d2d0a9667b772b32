"""Fuzzing the cache server's HTTP/1.1 front end: the sans-I/O parser, then a running server.

The parser may only ever return requests or raise BadRequest with a status
the server answers; anything else would reach the event loop as a bug. The
live test sends the same kind of bytes to a real worker and checks that
every answer is well formed, that errors come after the answers to the
requests before them, and that the worker survives.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.cache.errors import BadRequest
from edgefleet.cache.wire.http1 import Limits, RequestParser, chunk, error_body
from edgefleet.cache.wire.targets import canonical_target
from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started

ANSWERED_ERRORS = {400, 408, 413, 414, 421, 431, 501, 505}
"""Every status a parser error may carry (408 is the server's own, for slow heads; 421 and 501 its head check)."""
MESSAGE_SECONDS = 0.1
"""CPU-time bound of one feed of the parser (a few microseconds normally). CPU time of the thread, not wall
time: a loaded machine that deschedules the test must not fail it, work without bound must."""
EXCHANGE_SECONDS = 5.0
"""Time bound of one live exchange (header and idle timeouts of 1 s, swept once a second)."""

SPECIAL = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"\xff",
    b"\x7f",
    b"%",
    b";",
    b",",
    b"\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Host: other.test\r\n",
    b"0\r\n\r\n",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"GET / HTTP/1.1\r\nHost: demo.test\r\n\r\n",
    b"fffffffff\r\n",
]
MUTATIONS = ("flip", "insert", "delete", "duplicate", "truncate", "replace")
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect", "te", "trailer"}


@dataclass(frozen=True)
class Spec:
    """A valid request, before it is written out."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    chunked: bool
    host: str = "demo.test"

    def wire(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        body = self.body
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
            body = (chunk(body) if body else b"") + b"0\r\n\r\n"
        elif body or self.method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def mutate(data: bytes, kind: str, where: int, size: int, special: int) -> bytes:
    """``data`` with one mutation applied; ``where``/``size``/``special`` pick its place and bytes."""
    if not data:
        return SPECIAL[special % len(SPECIAL)]
    at = where % len(data)
    end = min(len(data), at + 1 + size % 64)
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << (size % 8))]) + data[at + 1 :]
    if kind == "insert":
        return data[:at] + SPECIAL[special % len(SPECIAL)] + data[at:]
    if kind == "delete":
        return data[:at] + data[end:]
    if kind == "duplicate":
        return data[:end] + data[at:end] + data[end:]
    if kind == "truncate":
        return data[:at]
    return data[:at] + SPECIAL[special % len(SPECIAL)] + data[end:]


@dataclass
class Outcome:
    """What the parser made of some bytes."""

    requests: list[tuple[str, str, str, bytes, bool]]
    error: BadRequest | None
    pending: bool


def served_head(method: str, host: str) -> None:
    """The live server's head check (Proxy.check_head) for its one domain."""
    if host != "demo.test":
        raise BadRequest(421, "no domain serves this host")
    if method not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        raise BadRequest(501, f"method {method} is not supported")


def parse_in_pieces(data: bytes, cuts: list[int], limits: Limits) -> Outcome:
    """What the parser makes of ``data`` fed in pieces; every feed must take less than MESSAGE_SECONDS."""
    parser = RequestParser(limits, served_head)
    requests = []
    edges = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    try:
        for start, end in itertools.pairwise(edges):
            began = time.thread_time()
            try:
                done = parser.feed(data[start:end])
            finally:
                assert time.thread_time() - began < MESSAGE_SECONDS, "one feed took too long"
            for request in done:
                requests.append((request.method, request.target, request.host, request.body, request.keep_alive))
    except BadRequest as error:
        requests += [(r.method, r.target, r.host, r.body, r.keep_alive) for r in parser.take_completed()]
        return Outcome(requests, error, False)
    return Outcome(requests, None, parser.pending())


# --- hypothesis: the sans-I/O parser ---------------------------------------------------------

header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda name: name.lower() not in RESERVED
)
header_values = st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?", fullmatch=True)
targets = st.from_regex(r"/([A-Za-z0-9._~/=&-]|%[0-9A-Fa-f]{2}){0,40}(\?[A-Za-z0-9=&]{0,20})?", fullmatch=True)


def canonical_or_none(target: str) -> str | None:
    try:
        return canonical_target(target)
    except BadRequest:
        return None


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]))
    body = draw(st.binary(max_size=200)) if method in ("POST", "PUT") else b""
    return Spec(
        method=method,
        target=draw(targets.filter(lambda target: canonical_or_none(target) is not None)),
        headers=tuple(draw(st.lists(st.tuples(header_names, header_values), max_size=6))),
        body=body,
        chunked=bool(body) and draw(st.booleans()),
    )


mutations = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10_000), st.integers(0, 200), st.integers(0, 100))
FUZZ = Limits(max_url_bytes=256, max_header_bytes=1024, max_headers=12, max_body_bytes=150)


@settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(specs(), min_size=1, max_size=3), st.lists(st.integers(0, 5000), max_size=4))
def test_valid_pipelines_parse_to_what_was_sent_however_they_are_split(pipeline: list[Spec], cuts: list[int]) -> None:
    data = b"".join(spec.wire() for spec in pipeline)
    outcome = parse_in_pieces(data, cuts, Limits())
    assert outcome.error is None and not outcome.pending
    assert [(method, target, host, body) for method, target, host, body, _ in outcome.requests] == [
        (spec.method, canonical_target(spec.target), spec.host, spec.body) for spec in pipeline
    ]


@settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(specs(), min_size=1, max_size=3),
    st.lists(mutations, min_size=1, max_size=4),
    st.lists(st.integers(0, 5000), max_size=4),
)
def test_mutated_requests_give_requests_or_an_answerable_bad_request(
    pipeline: list[Spec], changes: list[tuple[str, int, int, int]], cuts: list[int]
) -> None:
    data = b"".join(spec.wire() for spec in pipeline)
    for change in changes:
        data = mutate(data, *change)
    started = time.perf_counter()
    outcome = parse_in_pieces(data, cuts, FUZZ)  # any other exception fails the test
    assert time.perf_counter() - started < 0.25
    if outcome.error is not None:
        assert outcome.error.status in ANSWERED_ERRORS - {408}
        assert outcome.error.message


@settings(max_examples=300, deadline=500)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=4))
def test_random_bytes_give_requests_or_an_answerable_bad_request(data: bytes, cuts: list[int]) -> None:
    outcome = parse_in_pieces(data, cuts, FUZZ)
    if outcome.error is not None:
        assert outcome.error.status in ANSWERED_ERRORS - {408}


# --- live: a running cache ----------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] [^\r\n]*\r\n")
NODE = "fz"


def random_payload(rng: random.Random, index: int) -> bytes:
    """A valid request (a third of the time), a mutated one, or random bytes."""
    kind = index % 6
    if kind == 5:
        return rng.randbytes(rng.randrange(1, 300))
    method = rng.choice(["GET", "GET", "HEAD", "POST"])
    target = f"/bytes/{rng.randrange(1, 999)}/fz{index}" if method != "POST" else f"/echo?i={index}"
    body = rng.randbytes(rng.randrange(0, 100)) if method == "POST" else b""
    headers = tuple((f"X-F{n}", f"v{rng.randrange(10**6)}") for n in range(rng.randrange(0, 4)))
    data = Spec(method, target, headers, body, chunked=bool(body) and rng.random() < 0.5).wire()
    if kind < 2:
        return data + Spec("GET", f"/bytes/10/last{index}", (("Connection", "close"),), b"", False).wire()
    for _ in range(rng.randrange(1, 4)):
        data = mutate(data, rng.choice(MUTATIONS), rng.randrange(10**6), rng.randrange(200), rng.randrange(100))
    return data


async def exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data``, read until the server closes, within EXCHANGE_SECONDS."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        async with asyncio.timeout(EXCHANGE_SECONDS):
            return await reader.read(-1)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def check_reply(data: bytes, reply: bytes) -> None:
    if not reply:
        return
    assert STATUS_LINE.match(reply), (data, reply[:200])
    outcome = parse_in_pieces(data, [], Limits())
    if outcome.error is not None and not outcome.requests:
        assert reply.startswith(b"HTTP/1.1 %d " % outcome.error.status), (data, reply[:200])
    if outcome.error is not None and all(keep_alive for *_, keep_alive in outcome.requests):
        _, body = error_body(outcome.error.status, outcome.error.message, NODE)
        assert reply.endswith(body), (data, reply[-300:])  # the error is the last answer, after the others
    if outcome.error is None and outcome.requests and not outcome.requests[-1][4]:
        assert reply.count(b"HTTP/1.1 ") >= len(outcome.requests), (data, reply[:300])


@pytest.fixture
def fuzzed_cache(origin: OriginProcess, tmp_path: Path) -> Iterator[CacheProcess]:
    config = cache_config(origin.url, tmp_path, node=NODE, limits={"headerTimeout": 1, "idleTimeout": 1})
    with started(CacheProcess(config, tmp_path)) as proc:
        yield proc


async def test_live_server_answers_fuzzed_bytes_and_stays_healthy(fuzzed_cache: CacheProcess) -> None:
    rng = random.Random(20240611)
    payloads = [random_payload(rng, index) for index in range(200)]
    started = time.monotonic()
    replies = await asyncio.gather(*(exchange(fuzzed_cache.address, data) for data in payloads))
    assert time.monotonic() - started < 10
    for data, reply in zip(payloads, replies, strict=True):
        check_reply(data, reply)
    assert sum(1 for reply in replies if reply.startswith(b"HTTP/1.1 2")) >= 30
    assert sum(1 for reply in replies if reply.startswith(b"HTTP/1.1 4")) >= 30
    normal = await asyncio.to_thread(fuzzed_cache.get, "/bytes/100/after-fuzz")
    assert normal.status_code == 200 and len(normal.content) == 100
    async with httpx.AsyncClient(timeout=5) as admin:
        assert (await admin.get(f"{fuzzed_cache.admin_url}/healthz")).status_code == 200
    log = fuzzed_cache.log()
    assert "exited" not in log and "Traceback" not in log, log[-3000:]
