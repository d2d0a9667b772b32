"""A programmable HTTP origin for tests, benchmarks and the demo.

The cache needs an origin whose every answer can be chosen from the test:
which caching headers, which status, how slow, whether it fails. This module
is that origin, an aiohttp server in one module that imports nothing else
from edgefleet, run as ``python -m edgefleet.demo.origin --listen HOST:PORT``. It
prints ``origin listening on http://HOST:PORT`` once it accepts connections.

How it works, in three layers:

- **Content** is pure. ``/bytes/{n}`` (and ``/bytes/{n}/anything``) is ``n``
  bytes of a pattern of prime period derived from the URL path and the path's
  version, so different paths and versions differ, and a byte range assembled
  at the wrong offset does not match. A body is never materialised whole:
  ``Body.read(start, end)`` repeats the cached 4 KiB pattern, so 64 MiB
  objects and ranges of them cost a memcpy. Validators (strong ETag,
  Last-Modified), conditional requests and byte ranges (RFC 9110 sections
  13 and 14) are plain functions of headers and sizes.
- **Shaping** happens on every content path through query parameters:
  ``cc``, ``cdncc``, ``sc``, ``expires``, ``lm``, ``etag=0`` (or ``etag=url``: one ETag for all variants), ``vary``,
  ``setcookie=1``, ``tags``, ``status``, ``delay``, ``chunked=1``, ``slow``,
  ``age``, ``location``, ``contentlocation`` (see ``shaped_headers`` and
  ``write_payload``); ``interim=103,103*5,100`` sends those interim (1xx) heads before the final one (each with a
  ``Link`` hint; ``*N`` repeats, at most 1000 in all), and in mode ``hold``
  the request then waits for the mode to change before its final head (so a
  test can see the interim heads arrive first).
- **Control** lives under ``/__origin/``, which is never counted:
  ``GET stats``, ``POST reset``, ``POST version?path=P`` (new ETag and
  content for P), ``POST mode`` with ``{"mode": "ok"|"error"|"close"|"hang"|"hold"}``
  to make every content request fail with 503, lose its connection, or wait
  until the mode changes (``hold``: see ``interim``).

A small demo site (``/``, ``/static/app.js``, ``/api/time``, ``/private``,
``/large.bin``, ``/video/seg-{n}.ts``), ``/echo`` (the request as JSON) and
``/upload`` (reads the request body as it arrives and answers its size and
sha256 as JSON; ``?fail_after=N`` drops the connection once N body bytes are
in; to ``Expect: 100-continue`` it says 100, or with ``?refuse=STATUS``
answers that final status at once and never reads the body, or with
``?nocontinue=1`` says nothing, as an HTTP/1.0 server would) complete it.
The origin is a test tool: it trusts its callers, but bad query values get
a 400, never a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from email.utils import formatdate, parsedate_to_datetime

from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_RANGES = 64  # more ranges than this in one request: the Range header is ignored (RFC 9110 14.2 allows it)
PATTERN_PERIOD = 4093  # prime, so range and chunk boundaries never line up with the pattern
STREAM_CHUNK = 256 * 1024
SLOW_CHUNK = 16 * 1024
INLINE_LIMIT = 1024 * 1024  # payloads up to this size are sent as one buffer
BOUNDARY = "edgefleet-origin-7d1c0b5e"
ADMIN_PREFIX = "/__origin/"
MODES = ("ok", "error", "close", "hang", "hold")
MAX_INTERIM = 1000
DEFAULT_CACHE_CONTROL = "public, max-age=3600"

Segment = bytes | tuple[int, int]  # literal bytes, or the [start, end) slice of the body


# --- content ----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def pattern_of(seed: str) -> bytes:
    """The repeating unit of a generated body: PATTERN_PERIOD bytes fixed by ``seed``."""
    return hashlib.shake_256(seed.encode()).digest(PATTERN_PERIOD)


@dataclass(frozen=True)
class Body:
    """``size`` bytes: ``prefix`` first, then the pattern of ``seed`` (indexed by absolute offset)."""

    size: int
    prefix: bytes = b""
    seed: str | None = None

    @classmethod
    def literal(cls, data: bytes) -> Body:
        return cls(size=len(data), prefix=data)

    def read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        head = self.prefix[start:end]
        if self.seed is None or end <= len(self.prefix):
            return head
        return head + repeat(pattern_of(self.seed), max(start, len(self.prefix)), end)

    def chunks(self, start: int, end: int, chunk: int) -> Iterator[bytes]:
        for offset in range(start, end, chunk):
            yield self.read(offset, min(end, offset + chunk))

    def variant(self, text: bytes) -> Body:
        """This body for one Vary variant: generated bodies keep their size and start with ``text``."""
        if self.seed is None:
            return Body.literal(text + self.prefix)
        seed = f"{self.seed}|{text.decode(errors='replace')}"
        return Body(size=self.size, prefix=(text + self.prefix)[: self.size], seed=seed)


def repeat(pattern: bytes, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of ``pattern`` repeated forever."""
    offset = start % len(pattern)
    copies = (offset + end - start) // len(pattern) + 1
    return (pattern * copies)[offset : offset + end - start]


def strong_etag(identity: str) -> str:
    return '"' + hashlib.sha256(identity.encode()).hexdigest()[:20] + '"'


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def parse_http_date(value: str) -> float | None:
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return parsedate_to_datetime(value).timestamp()
    return None


# --- validators and ranges (RFC 9110 sections 13 and 14) -----------------------


def etag_list_matches(header: str, etag: str | None, *, weak: bool = True) -> bool:
    """Whether an If-None-Match (weak comparison) or If-Match style list names ``etag``."""
    if etag is None:
        return False
    if header.strip() == "*":
        return True

    def opaque(tag: str) -> str:
        return tag[2:] if weak and tag.startswith("W/") else tag

    return any(opaque(tag.strip()) == opaque(etag) for tag in header.split(","))


def not_modified(headers: Mapping[str, str], etag: str | None, last_modified: float | None) -> bool:
    """RFC 9110 13.2.2 steps 3-4: If-None-Match wins; If-Modified-Since only without it."""
    if "If-None-Match" in headers:
        return etag_list_matches(headers["If-None-Match"], etag)
    since = parse_http_date(headers.get("If-Modified-Since", ""))
    return since is not None and last_modified is not None and int(last_modified) <= since


def if_range_allows(header: str | None, etag: str | None, last_modified: float | None) -> bool:
    """If-Range (RFC 9110 13.1.5): a strong ETag match, or the exact Last-Modified date."""
    if header is None:
        return True
    header = header.strip()
    if header.startswith(('"', "W/")):
        return etag is not None and not header.startswith("W/") and header == etag
    when = parse_http_date(header)
    return when is not None and last_modified is not None and int(last_modified) == when


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ``[start, end)`` ranges of a Range header; ``None`` if it must be ignored.

    An empty list means every range is unsatisfiable (answer 416). Invalid
    syntax, another unit, or more than MAX_RANGES ranges means the header is
    ignored and the full representation is sent.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    specs = [part.strip() for part in spec.split(",") if part.strip()]
    if not specs or len(specs) > MAX_RANGES:
        return None
    try:
        parsed = [parse_range_spec(part, size) for part in specs]
    except ValueError:
        return None
    return [one for one in parsed if one is not None]


def parse_range_spec(spec: str, size: int) -> tuple[int, int] | None:
    """One ``first-last``, ``first-`` or ``-suffix``: a range, or ``None`` if unsatisfiable.

    Raises ValueError when the spec is invalid (then the whole header is ignored).
    """
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        raise ValueError(spec)
    if first == "":
        if last == "":
            raise ValueError(spec)
        suffix = int(last)
        return (max(0, size - suffix), size) if suffix > 0 and size > 0 else None
    start = int(first)
    if last and int(last) < start:
        raise ValueError(spec)
    if start >= size:
        return None
    end = size if last == "" else min(size, int(last) + 1)
    return (start, end)


def multipart_segments(ranges: list[tuple[int, int]], size: int, content_type: str) -> list[Segment]:
    """The multipart/byteranges payload (RFC 9110 14.6) for several ranges."""
    segments: list[Segment] = []
    for start, end in ranges:
        head = f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
        segments += [head.encode(), (start, end), b"\r\n"]
    segments.append(f"--{BOUNDARY}--\r\n".encode())
    return segments


def payload_length(segments: list[Segment]) -> int:
    return sum(len(s) if isinstance(s, bytes) else s[1] - s[0] for s in segments)


# --- state ------------------------------------------------------------------


@dataclass
class OriginState:
    """Counters, per-path versions and the failure mode; shared by all handlers of one server."""

    started: float = field(default_factory=lambda: float(int(time.time())))
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    ranges: int = 0
    conditional: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    modified: dict[str, float] = field(default_factory=dict)
    mode: str = "ok"
    mode_changed: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    def count(self, request: web.BaseRequest) -> None:
        query = request.rel_url.raw_query_string
        self.requests += 1
        self.by_path[request.path + ("?" + query if query else "")] += 1
        self.methods[request.method] += 1
        if "Range" in request.headers:
            self.ranges += 1
        if "If-None-Match" in request.headers or "If-Modified-Since" in request.headers:
            self.conditional += 1

    def stats(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "ranges": self.ranges,
            "conditional": self.conditional,
            "methods": dict(self.methods),
        }

    def reset(self) -> None:
        self.requests = self.ranges = self.conditional = 0
        self.by_path.clear()
        self.methods.clear()

    def version(self, path: str) -> int:
        return self.versions.get(path, 0)

    def last_modified(self, path: str) -> float:
        return self.modified.get(path, self.started)

    def bump(self, path: str) -> int:
        """A new version of ``path``; its Last-Modified moves forward by at least one second."""
        self.versions[path] = self.version(path) + 1
        self.modified[path] = max(float(int(time.time())), self.last_modified(path) + 1)
        return self.versions[path]

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.mode_changed.set()
        self.mode_changed = asyncio.Event()

    def close(self) -> None:
        """The server is stopping: hung requests lose their connection instead of holding up the exit."""
        self.closing = True
        self.set_mode(self.mode)


# --- representations of the content paths ---------------------------------


@dataclass(frozen=True)
class Representation:
    """What a content path answers before query shaping; ``identity`` None means no ETag."""

    body: Body
    content_type: str = "application/octet-stream"
    cache_control: str | None = DEFAULT_CACHE_CONTROL
    identity: str | None = None
    last_modified: float | None = None
    ranges: bool = True


def generated(state: OriginState, path: str, size: int, content_type: str, cache_control: str) -> Representation:
    version = state.version(path)
    return Representation(
        body=Body(size=size, seed=f"{path}|{version}"),
        content_type=content_type,
        cache_control=cache_control,
        identity=f"{path}|{size}|{version}",
        last_modified=state.last_modified(path),
    )


def page(state: OriginState, path: str, text: str, content_type: str, cache_control: str) -> Representation:
    data = text.encode()
    return Representation(
        body=Body.literal(data),
        content_type=content_type,
        cache_control=cache_control,
        identity=f"{path}|{hashlib.sha256(data).hexdigest()}",
        last_modified=state.last_modified(path),
    )


INDEX_HTML = """<!doctype html>
<html><head><title>edgefleet demo origin</title><script src="/static/app.js"></script></head>
<body><h1>edgefleet demo origin (version {version})</h1><ul>
<li><a href="/static/app.js">/static/app.js</a> (max-age=86400)</li>
<li><a href="/api/time">/api/time</a> (no-store)</li>
<li><a href="/private">/private</a> (private)</li>
<li><a href="/large.bin">/large.bin</a> (8 MiB, ranges)</li>
<li><a href="/video/seg-0.ts">/video/seg-0.ts</a> (1 MiB segments, one year)</li>
<li><a href="/bytes/1024">/bytes/1024</a> (programmable, see edgefleet.demo.origin)</li>
</ul></body></html>
"""

APP_JS = "// edgefleet demo origin, version {version}\ndocument.title += ' (served through edgefleet)';\n"


def index_page(request: web.Request, state: OriginState) -> Representation:
    text = INDEX_HTML.format(version=state.version("/"))
    return page(state, "/", text, "text/html; charset=utf-8", "public, max-age=60")


def app_js(request: web.Request, state: OriginState) -> Representation:
    text = APP_JS.format(version=state.version(request.path))
    return page(state, request.path, text, "application/javascript", "public, max-age=86400")


def api_time(request: web.Request, state: OriginState) -> Representation:
    now = time.time()
    data = json.dumps({"time": http_date(now), "epoch": now}).encode()
    return Representation(
        body=Body.literal(data), content_type="application/json", cache_control="no-store", ranges=False
    )


def private_page(request: web.Request, state: OriginState) -> Representation:
    text = f"private page for this user only (version {state.version(request.path)})\n"
    return page(state, request.path, text, "text/plain; charset=utf-8", "private")


def large_bin(request: web.Request, state: OriginState) -> Representation:
    return generated(state, request.path, 8 * 1024 * 1024, "application/octet-stream", DEFAULT_CACHE_CONTROL)


def video_segment(request: web.Request, state: OriginState) -> Representation:
    return generated(state, request.path, 1024 * 1024, "video/mp2t", "public, max-age=31536000")


def bytes_object(request: web.Request, state: OriginState) -> Representation:
    size = int(request.match_info["n"])
    if size > MAX_BODY_BYTES:
        raise web.HTTPBadRequest(text=f"at most {MAX_BODY_BYTES} bytes\n")
    return generated(state, request.path, size, "application/octet-stream", DEFAULT_CACHE_CONTROL)


def echo(request: web.Request, state: OriginState) -> Representation:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    data = json.dumps(
        {"method": request.method, "path": request.path, "query": request.rel_url.raw_query_string, "headers": headers},
        indent=1,
    ).encode()
    return Representation(
        body=Body.literal(data), content_type="application/json", cache_control="no-store", ranges=False
    )


async def upload(request: web.Request) -> web.Response:
    """Read the body piece by piece (never whole); its size and sha256, or a lost connection (``fail_after``)."""
    fail_after = int_param(request.query, "fail_after", -1, 0, 1 << 40) if "fail_after" in request.query else -1
    digest = hashlib.sha256()
    size = 0
    async for data in request.content.iter_any():
        digest.update(data)
        size += len(data)
        if 0 <= fail_after <= size:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=502)  # never sent: the connection is gone
    return web.json_response(
        {
            "method": request.method,
            "size": size,
            "sha256": digest.hexdigest(),
            "chunked": "chunked" in request.headers.get("Transfer-Encoding", "").lower(),
        },
        headers={"Cache-Control": "no-store"},
    )


async def upload_expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` at ``/upload``: 100, a final ``refuse`` status instead, or (``nocontinue``) nothing."""
    if "refuse" in request.query:
        status = int_param(request.query, "refuse", 417, 400, 599)
        return web.Response(status=status, text="refused before the body\n", headers={"Connection": "close"})
    if request.query.get("nocontinue") or request.version != HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood\n")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's own handler: the 100 is not part of the response
    return None


# --- query shaping ----------------------------------------------------------


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise web.HTTPBadRequest(text=f"query parameter {name} must be an integer in [{low}, {high}]\n")
    return int(raw)


def vary_text(vary: str, headers: Mapping[str, str]) -> bytes:
    names = [name.strip().lower() for name in vary.split(",") if name.strip() and name.strip() != "*"]
    return "".join(f"{name}={headers.get(name, '')}\n" for name in names).encode()


def shaped(rep: Representation, request: web.Request) -> tuple[Representation, CIMultiDict[str], int]:
    """The representation, headers and status after the query parameters are applied."""
    query = request.query
    status = int_param(query, "status", 200, 100, 599)
    etag_identity = rep.identity
    if query.get("vary"):
        text = vary_text(query["vary"], request.headers)
        rep = replace(rep, body=rep.body.variant(text))
        if query.get("etag") != "url":  # etag=url: one ETag for every variant (a 304 names them all)
            etag_identity = None if rep.identity is None else f"{rep.identity}|{text.decode(errors='replace')}"
    headers = shaped_headers(rep, query, etag_identity)
    return rep, headers, status


def shaped_headers(rep: Representation, query: Mapping[str, str], etag_identity: str | None) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": rep.content_type})
    cache_control = query.get("cc", rep.cache_control)
    if cache_control:
        headers["Cache-Control"] = cache_control
    if etag_identity is not None and query.get("etag") != "0":
        headers["ETag"] = strong_etag(etag_identity)
    if "lm" in query:  # lm= (empty) means no Last-Modified
        if query["lm"]:
            headers["Last-Modified"] = query["lm"]
    elif rep.last_modified is not None:
        headers["Last-Modified"] = http_date(rep.last_modified)
    for param, name in (
        ("cdncc", "CDN-Cache-Control"),
        ("sc", "Surrogate-Control"),
        ("expires", "Expires"),
        ("vary", "Vary"),
        ("tags", "Cache-Tag"),
        ("age", "Age"),
        ("location", "Location"),
        ("contentlocation", "Content-Location"),
    ):
        if query.get(param):
            headers[name] = query[param]
    if query.get("setcookie") == "1":
        headers["Set-Cookie"] = f"session={hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:16]}; Path=/"
    if rep.ranges:
        headers["Accept-Ranges"] = "bytes"
    return headers


# --- responses --------------------------------------------------------------


def not_modified_headers(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """RFC 9110 15.4.5: a 304 carries the validators and caching fields a 200 would have."""
    dropped = {"content-type", "accept-ranges", "set-cookie"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped)


def select_payload(
    request: web.Request, rep: Representation, headers: CIMultiDict[str], status: int
) -> tuple[int, CIMultiDict[str], list[Segment]]:
    """Apply conditionals and ranges to a shaped response: status, headers and payload segments."""
    size = rep.body.size
    if status != 200:
        return status, headers, [] if status in (204, 304) or status < 200 else [(0, size)]
    etag = headers.get("ETag")
    validator_date = parse_http_date(headers.get("Last-Modified", ""))
    if request.method in ("GET", "HEAD") and not_modified(request.headers, etag, validator_date):
        return 304, not_modified_headers(headers), []
    if request.method != "GET" or not rep.ranges or "Range" not in request.headers:
        return 200, headers, [(0, size)]
    if not if_range_allows(request.headers.get("If-Range"), etag, validator_date):
        return 200, headers, [(0, size)]
    ranges = parse_ranges(request.headers["Range"], size)
    if ranges is None:
        return 200, headers, [(0, size)]
    return ranged(headers, ranges, size, rep.content_type)


def ranged(
    headers: CIMultiDict[str], ranges: list[tuple[int, int]], size: int, content_type: str
) -> tuple[int, CIMultiDict[str], list[Segment]]:
    if not ranges:
        headers = CIMultiDict({"Content-Range": f"bytes */{size}", "Content-Type": "text/plain"})
        return 416, headers, []
    if len(ranges) == 1:
        start, end = ranges[0]
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return 206, headers, [(start, end)]
    headers["Content-Type"] = f"multipart/byteranges; boundary={BOUNDARY}"
    return 206, headers, multipart_segments(ranges, size, content_type)


def segment_chunks(body: Body, segments: list[Segment], chunk: int) -> Iterator[bytes]:
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
        else:
            yield from body.chunks(segment[0], segment[1], chunk)


async def write_payload(
    request: web.Request, body: Body, status: int, headers: CIMultiDict[str], segments: list[Segment]
) -> web.StreamResponse:
    """Send the answer: one buffer when small and plain, else streamed (chunked=1, slow=MS)."""
    chunked = request.query.get("chunked") == "1"
    slow_ms = int_param(request.query, "slow", 0, 0, 60_000)
    length = payload_length(segments)
    if not chunked and not slow_ms and length <= INLINE_LIMIT and request.method != "HEAD":
        return web.Response(status=status, headers=headers, body=b"".join(segment_chunks(body, segments, INLINE_LIMIT)))
    response = web.StreamResponse(status=status, headers=headers)
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = length
    await response.prepare(request)
    if request.method != "HEAD":
        for data in segment_chunks(body, segments, SLOW_CHUNK if slow_ms else STREAM_CHUNK):
            await response.write(data)
            if slow_ms:
                await asyncio.sleep(slow_ms / 1000)
    await response.write_eof()
    return response


Producer = Callable[[web.Request, OriginState], Representation]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def interim_codes(value: str) -> list[int]:
    """The 1xx statuses of ``interim=103,103*5,100``; 400 on anything else or more than MAX_INTERIM."""
    codes: list[int] = []
    for item in value.split(","):
        code, _, times = item.strip().partition("*")
        count = int(times) if times.isdigit() else (1 if not times else -1)
        if not code.isdigit() or not 100 <= int(code) <= 199 or count < 0 or len(codes) + count > MAX_INTERIM:
            raise web.HTTPBadRequest(text=f"interim must list 1xx statuses (CODE or CODE*N), at most {MAX_INTERIM}\n")
        codes += [int(code)] * count
    return codes


async def send_interim(request: web.Request, state: OriginState) -> None:
    """Write the ``interim`` 1xx heads before the final response; then, in mode ``hold``, wait for a change."""
    codes = interim_codes(request.query["interim"])
    if request.transport is None:
        return
    for index, code in enumerate(codes):
        reason = "Early Hints" if code == 103 else "Informational"
        head = f"HTTP/1.1 {code} {reason}\r\nLink: </hint-{index}.css>; rel=preload; as=style\r\n\r\n"
        request.transport.write(head.encode())
    while state.mode == "hold" and not state.closing:
        await state.mode_changed.wait()


def content_handler(state: OriginState, produce: Producer) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        rep, headers, status = shaped(produce(request, state), request)
        status, headers, segments = select_payload(request, rep, headers, status)
        if request.query.get("interim"):
            await send_interim(request, state)
        return await write_payload(request, rep.body, status, headers, segments)

    return handle


# --- control: counting, failure modes, delays, admin endpoints ---------------


def gate(state: OriginState) -> Middleware:
    """Middleware: count content requests, then apply the failure mode and ``delay``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        state.count(request)
        while state.mode == "hang" and not state.closing:
            await state.mode_changed.wait()
        if state.mode == "error":
            return web.Response(status=503, text="origin is in error mode\n")
        if state.mode == "close" or state.closing:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=502)  # never sent: writing to the closed transport ends the request
        delay_ms = int_param(request.query, "delay", 0, 0, 600_000)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return await handler(request)

    return middleware


def admin_routes(state: OriginState) -> list[web.RouteDef]:
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats(), headers={"Cache-Control": "no-store"})

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"reset": True})

    async def version(request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        if not path.startswith("/"):
            raise web.HTTPBadRequest(text="query parameter path must be an absolute URL path\n")
        return web.json_response({"path": path, "version": state.bump(path)})

    async def mode(request: web.Request) -> web.Response:
        if request.method == "POST":
            with contextlib.suppress(ValueError):
                wanted = (await request.json()).get("mode")
                if wanted in MODES:
                    state.set_mode(wanted)
                    return web.json_response({"mode": state.mode})
            raise web.HTTPBadRequest(text=f'expected JSON {{"mode": one of {", ".join(MODES)}}}\n')
        return web.json_response({"mode": state.mode})

    return [
        web.get(ADMIN_PREFIX + "stats", stats),
        web.post(ADMIN_PREFIX + "reset", reset),
        web.post(ADMIN_PREFIX + "version", version),
        web.route("*", ADMIN_PREFIX + "mode", mode),
    ]


def content_routes(state: OriginState) -> list[web.RouteDef]:
    def get(path: str, produce: Producer) -> web.RouteDef:
        return web.get(path, content_handler(state, produce))  # aiohttp adds HEAD for web.get

    return [
        get("/bytes/{n:[0-9]+}", bytes_object),
        get("/bytes/{n:[0-9]+}/{name:.+}", bytes_object),
        get("/", index_page),
        get("/static/app.js", app_js),
        get("/api/time", api_time),
        get("/private", private_page),
        get("/large.bin", large_bin),
        get(r"/video/seg-{n:[0-9]+}.ts", video_segment),
        web.route("*", "/echo", content_handler(state, echo)),
        web.route("*", "/upload", upload, expect_handler=upload_expect),
    ]


def make_app(state: OriginState | None = None) -> web.Application:
    """The origin as an aiohttp application (for in-process use; ``serve`` runs it on a socket)."""
    state = state or OriginState()
    app = web.Application(middlewares=[gate(state)])
    app.add_routes(admin_routes(state) + content_routes(state))
    return app


# --- process ----------------------------------------------------------------


async def serve(
    host: str = "127.0.0.1", port: int = 8080, *, stop: asyncio.Event | None = None, state: OriginState | None = None
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled); port 0 picks a free port.

    Prints ``origin listening on http://HOST:PORT`` (the bound port) once connections are accepted.
    """
    state = state or OriginState()
    runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        print(f"origin listening on http://{shown}:{bound}", flush=True)
        await (stop.wait() if stop is not None else asyncio.get_running_loop().create_future())
    finally:
        state.close()
        await runner.cleanup()


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve_until_signalled(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(host, port, stop=stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefleet origin", description="A programmable HTTP origin.")
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="address to listen on (port 0 picks a free one); default 127.0.0.1:8080",
    )
    args = parser.parse_args(argv)
    host, port = args.listen
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the origin works without it
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_until_signalled(host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
