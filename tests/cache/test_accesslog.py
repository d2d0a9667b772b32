"""The access log: formats and fields, hostile values, batching, reopen and rotation, the sink, real processes.

Pure tests feed records to :class:`~edgefleet.cache.front.logformat.Formatter`
and check every line is one line of printable ASCII that decodes to what was
logged. In-process tests drive :class:`~edgefleet.cache.front.accesslog.AccessLog`
and the sink's :class:`~edgefleet.cache.front.logship.Shipper` against a
local collector. The process tests run ``edgefleet cache``: a SIGKILLed worker
under load loses at most its flush window, a rotation under load (``mv`` +
SIGUSR1, and ``maxBytes``) loses and duplicates no line, a SIGTERM flushes
and ships what is held.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from edgefleet.cache.config import AccessLogConfig, parse_config
from edgefleet.cache.errors import ConfigError
from edgefleet.cache.front import logformat, logrotate
from edgefleet.cache.front.accesslog import AccessLog
from edgefleet.cache.front.logformat import DEFAULT_FIELDS, Formatter, Record
from edgefleet.cache.front.logship import Shipper, backoff, pieces
from edgefleet.cache.stats import Stats
from edgefleet.cache.wire.http1 import Limits, Request, RequestParser
from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started
from tests.waiting import eventually, wait_until

T0 = 1765108241_250_000_000  # 2025-12-07T11:50:41.250Z, in ns
FORMATS = ("json", "cdn", "combined")


@dataclass
class FakeClient:
    peer_ip: str = "192.0.2.7"
    tls_version: str | None = None


def request(target: str = "/a/b?x=1", *headers: tuple[str, str], host: str = "demo.test") -> Request:
    """A request as the parser makes it (it picks out User-Agent and Referer)."""
    fields = dict((name.lower(), value) for name, value in headers)
    return Request(
        "GET",
        target,
        [("Host", host), *headers],
        host,
        True,
        "1.1",
        agent=fields.get("user-agent"),
        referer=fields.get("referer"),
    )


def record(rq: Request, **changes: Any) -> Record:
    """The record the request path keeps for ``rq`` (a hit from 192.0.2.7 at T0 unless ``changes`` say)."""
    values: dict[str, Any] = {
        "ts": T0,
        "client": FakeClient(),
        "status": 200,
        "sent": 1024,
        "cache": "HIT",
        "seconds": 0.0,
        "upstream": None,
    }
    values.update(changes)
    client = values["client"]
    return (
        values["ts"],
        rq.method,
        rq.host,
        rq.target,
        rq.version,
        rq.agent,
        rq.referer,
        client.peer_ip,
        client.tls_version,
        values["status"],
        values["sent"],
        values["cache"],
        values["seconds"],
        values["upstream"],
    )


def formatter(format: str = "json", fields: list[Any] | None = None) -> Formatter:
    return Formatter(format, fields, "par-1", lambda host: "demo" if host == "demo.test" else None)  # type: ignore[arg-type]


def lines_of(fmt: Formatter, records: list[Record]) -> list[str]:
    data = fmt.lines(records)
    assert data.endswith(b"\n") and all(0x20 <= byte < 0x7F for byte in data.replace(b"\n", b""))
    return data.decode("ascii").splitlines()


# --- formats and fields --------------------------------------------------------------------------


def test_json_lines_hold_every_field_by_default() -> None:
    agent = ("User-Agent", "curl/8.5")
    hit = record(request("/a/b?x=1", agent))
    miss = record(
        request("/c", ("Referer", "https://ref.example/")),
        client=FakeClient("2001:db8::1", "TLSv1.3"),
        status=502,
        sent=0,
        cache="MISS",
        seconds=0.0123,
        upstream=12.5,
    )
    first, second = (json.loads(line) for line in lines_of(formatter(), [hit, miss]))
    assert list(first) == list(DEFAULT_FIELDS)
    assert first == {
        "time": "2025-12-07T11:50:41.250Z",
        "client": "192.0.2.7",
        "method": "GET",
        "host": "demo.test",
        "target": "/a/b?x=1",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 1024,
        "cache": "HIT",
        "upstreamMs": None,
        "ms": 0.0,
        "tls": None,
        "userAgent": "curl/8.5",
        "referer": None,
        "node": "par-1",
        "domain": "demo",
    }
    assert (second["status"], second["cache"], second["upstreamMs"], second["ms"]) == (502, "MISS", 12.5, 12.3)
    assert (second["tls"], second["client"], second["referer"]) == ("TLSv1.3", "2001:db8::1", "https://ref.example/")


def test_fields_select_and_order_json_and_cdn() -> None:
    rq = request("/x", ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"))
    line = lines_of(formatter("json", ["status", "userAgent", "time"]), [record(rq)])[0]
    assert line == '{"status":200,"userAgent":"Mozilla/5.0 (X11; Linux x86_64)","time":"2025-12-07T11:50:41.250Z"}'
    cdn = lines_of(
        formatter("cdn", ["time", "client", "target", "cache", "upstreamMs", "tls", "userAgent"]), [record(rq)]
    )
    assert cdn == ['2025-12-07T11:50:41.250Z 192.0.2.7 /x HIT - - "Mozilla/5.0 (X11; Linux x86_64)"']


def test_cdn_default_and_combined_lines() -> None:
    rq = request("/x?y=2", ("Referer", "https://r.example/p"), ("User-Agent", "Mozilla/5.0 (X11)"))
    rec = record(rq, status=206, sent=512, cache="STALE", seconds=0.5, upstream=3.25)
    assert lines_of(formatter("cdn"), [rec]) == [
        "2025-12-07T11:50:41.250Z 192.0.2.7 GET demo.test /x?y=2 HTTP/1.1 206 512 STALE 3.250 500.000 - "
        '"Mozilla/5.0 (X11)" "https://r.example/p" par-1 demo'
    ]
    assert lines_of(formatter("combined"), [rec]) == [
        '192.0.2.7 - - [07/Dec/2025:11:50:41 +0000] "GET /x?y=2 HTTP/1.1" 206 512 '
        '"https://r.example/p" "Mozilla/5.0 (X11)"'
    ]


@pytest.mark.parametrize("format", FORMATS)
def test_the_fast_line_equals_the_escaped_line_for_plain_values(format: str) -> None:
    """The raw f-string path and the escape-everything path agree whenever there is nothing to escape."""
    fmt = formatter(format)
    records = [
        record(request("/p?q=1", ("User-Agent", "Mozilla/5.0 (X11; Linux)"), ("Referer", "https://r/"))),
        record(request("/", host="other.test"), client=FakeClient("::1", "TLSv1.2"), upstream=0.5, seconds=1.0),
        record(request("/h"), cache="REVALIDATED", status=304, sent=0),
    ]
    for rec in records:
        assert fmt.line(rec) == fmt.escaped(rec)


FIELD_SETS: list[list[Any] | None] = [None, ["time", "domain", "target"], ["userAgent", "cache", "ms", "upstreamMs"]]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("fields", FIELD_SETS)
def test_a_clean_batch_equals_its_lines_one_by_one(format: str, fields: list[Any] | None) -> None:
    """The batch comprehension writes what the per-line function writes, across milliseconds and seconds."""
    fmt = formatter(format, fields)
    records = [
        record(
            request(f"/p{index}", ("User-Agent", "Mozilla/5.0 (X11)"), host="demo.test" if index % 3 else "o.test"),
            ts=T0 + index * 400_000_000 + index,
            upstream=None if index % 2 else index / 7,
            seconds=index / 1000,
            client=FakeClient("::1", "TLSv1.3" if index % 4 else None),
        )
        for index in range(40)
    ]
    assert fmt.lines(records) == "".join(map(fmt.line, records)).encode("ascii")


@pytest.mark.parametrize("format", ["cdn", "combined"])
def test_a_space_outside_quotes_sends_the_batch_the_escaped_way(format: str) -> None:
    """A space is fine in a quoted User-Agent, not in an unquoted target: the batch check knows which is which."""
    fmt = formatter(format)
    quoted_space = record(request("/a", ("User-Agent", "a b")))
    assert fmt.lines([quoted_space]) == fmt.line(quoted_space).encode("ascii")
    line = lines_of(fmt, [record(request("/a b", ("User-Agent", "a b")))])[0]
    assert "/a\\x20b" in line and '"a b"' in line


def test_time_texts_stay_right_past_the_cache_size() -> None:
    fmt = formatter("cdn", ["time"])
    records = [record(request(), ts=T0 + index * 1_000_000) for index in range(logformat.CACHED_TIMES + 10)]
    lines = lines_of(fmt, records)
    assert lines[0] == "2025-12-07T11:50:41.250Z" and lines[-1] == "2025-12-07T11:50:45.355Z"
    assert lines == [logformat.iso_millis((T0 // 1_000_000) + index) for index in range(len(records))]


def test_a_domain_is_looked_up_again_in_the_next_batch() -> None:
    """A config reload may move a host to another Domain: the name is cached per batch only."""
    names = {"demo.test": "first"}
    fmt = Formatter("cdn", ["domain"], "par-1", names.get)
    assert lines_of(fmt, [record(request())]) == ["first"]
    names["demo.test"] = "second"
    assert lines_of(fmt, [record(request())]) == ["second"]


# --- hostile values ---------------------------------------------------------------------------------

FORGED = '\n{"time":"x","status":200,"target":"/forged"}\n'
HOSTILE_TARGETS = [
    "/a" + FORGED.replace("\n", "%0A"),
    '/q?"quoted"\\back\\slash',
    "/ctl\x00\x01\x1f\x7f",
    "/latin-1-bytes-\xff\xfe\xc3\x28",  # not UTF-8 on the wire: the parser gives latin-1 code points
    "/with space and\ttab",
    "/new\r\nline" + FORGED,
]
HOSTILE_AGENTS = [FORGED, '"; DROP "', "\\" * 9, "x" * 100_000, "\x1b[31mred\x1b[0m", "\u2028\u2029\x85"]


@pytest.mark.parametrize("format", FORMATS)
def test_hostile_values_cannot_break_or_forge_a_line(format: str) -> None:
    """Control characters, quotes, backslashes, newlines, non-UTF-8 bytes, a huge User-Agent: one line each."""
    records = [
        record(request(target, ("User-Agent", agent), ("Referer", agent[::-1])))
        for target in HOSTILE_TARGETS
        for agent in HOSTILE_AGENTS
    ]
    clean = record(request("/clean", ("User-Agent", "ok")))
    lines = lines_of(formatter(format), [clean, *records, clean])
    assert len(lines) == len(records) + 2
    assert lines[0] == lines[-1]  # the batch went the escaped way, the plain lines are the same
    for line, rec in zip(lines[1:-1], records, strict=True):
        target, agent, referer = rec[3], rec[5], rec[6]
        if format == "json":
            decoded = json.loads(line)
            assert (decoded["target"], decoded["userAgent"], decoded["referer"]) == (target, agent, referer)
        else:
            assert line.count('"') == (6 if format == "combined" else 4)  # only the format's own quotes
            fields = re.sub(r'"[^"]*"', "Q", line).split(" ")  # a quoted value is one field
            assert len(fields) == (10 if format == "combined" else len(DEFAULT_FIELDS))


def test_escaped_text_shows_bytes_as_hex() -> None:
    line = lines_of(formatter("cdn", ["target", "userAgent"]), [record(request('/a b"\xff', ("User-Agent", 'x"\ny')))])
    assert line == ['/a\\x20b\\x22\\xff "x\\x22\\x0ay"']


def test_the_parser_picks_out_user_agent_and_referer() -> None:
    """So that a record holds strings, not the request's header list (kept alive, it costs the GC)."""
    parser = RequestParser(Limits())
    (first, second) = parser.feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nuser-agent: one\r\nUser-Agent: two\r\nReferer: https://r/\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert (first.agent, first.referer, second.agent, second.referer) == ("one", "https://r/", None, None)


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_and_rules(tmp_path: Path) -> None:
    settings = AccessLogConfig()
    assert (settings.active, settings.sample, settings.flush_ms, settings.format) == (True, 1.0, 200, "json")
    assert settings.file(tmp_path) == tmp_path / "access.log"
    assert AccessLogConfig(path="-").file(tmp_path) is None
    assert AccessLogConfig(path="/var/log/x.log").file(tmp_path) == Path("/var/log/x.log")
    assert not AccessLogConfig(sample=0).active and not AccessLogConfig(enabled=False).active


@pytest.mark.parametrize(
    ("access_log", "problem"),
    [
        ({"flushMs": 5}, "accessLog.flushMs"),
        ({"flushMs": 6000}, "accessLog.flushMs"),
        ({"colour": "red"}, "accessLog.colour"),
        ({"format": "xml"}, "accessLog.format"),
        ({"fields": ["time", "time"]}, "duplicate field"),
        ({"fields": ["time", "cookie"]}, "accessLog.fields"),
        ({"sink": {"url": "ftp://collector/x"}}, "accessLog.sink.url"),
        ({"sink": {"url": "http://c/x", "extra": 1}}, "accessLog.sink.extra"),
        ({"maxBytes": 10}, "accessLog.maxBytes"),
        ({"sample": 1.5}, "accessLog.sample"),
    ],
)
def test_bad_config_is_refused_by_field(access_log: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config({"accessLog": access_log})


# --- the access log in process ----------------------------------------------------------------------


def access_log(tmp_path: Path, shipper: Shipper | None = None, **settings: Any) -> tuple[AccessLog, Stats]:
    stats = shipper.stats if shipper is not None else Stats()
    config = AccessLogConfig.model_validate(settings)
    return AccessLog(config, "n1", config.file(tmp_path), stats, lambda host: "demo", shipper), stats


def test_records_wait_for_a_flush_then_one_write(tmp_path: Path) -> None:
    log, stats = access_log(tmp_path)
    for index in range(10):
        log.record(request(f"/r{index}"), FakeClient(), 200, 1, "HIT", 0.0)
    assert not (tmp_path / "access.log").read_bytes()  # held, not written per request
    log.flush()
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert [json.loads(line)["target"] for line in lines] == [f"/r{index}" for index in range(10)]
    assert (stats.access_log_lines, stats.access_log_bytes) == (10, len("".join(line + "\n" for line in lines)))


def test_a_full_batch_is_written_without_waiting_for_the_timer(tmp_path: Path) -> None:
    log, stats = access_log(tmp_path, flushBytes=4096)
    for index in range(100):  # about 300 bytes a line: several batches of 4 KiB
        log.record(request(f"/r{index}"), FakeClient(), 200, 1, "HIT", 0.0)
    assert 0 < stats.access_log_lines < 100  # written in batches, the last one still held
    log.close()
    assert stats.access_log_lines == 100 == len((tmp_path / "access.log").read_text().splitlines())


def test_sampling_keeps_a_share(tmp_path: Path) -> None:
    log, stats = access_log(tmp_path, sample=0.25)
    for _ in range(4000):
        log.record(request(), FakeClient(), 200, 1, "HIT", 0.0)
    log.flush()
    assert 700 < stats.access_log_lines < 1300


def test_reopen_after_a_rename_puts_every_line_in_exactly_one_file(tmp_path: Path) -> None:
    log, _ = access_log(tmp_path)
    path = tmp_path / "access.log"
    log.record(request("/before-flush"), FakeClient(), 200, 1, "HIT", 0.0)
    log.flush()
    log.record(request("/held"), FakeClient(), 200, 1, "HIT", 0.0)
    path.rename(tmp_path / "access.log.1")
    log.record(request("/after-mv"), FakeClient(), 200, 1, "HIT", 0.0)
    log.reopen()
    log.record(request("/after-reopen"), FakeClient(), 200, 1, "HIT", 0.0)
    log.close()

    def targets(name: str) -> list[str]:
        return [json.loads(line)["target"] for line in (tmp_path / name).read_text().splitlines()]

    assert targets("access.log.1") == ["/before-flush", "/held", "/after-mv"]
    assert targets("access.log") == ["/after-reopen"]


def test_a_failing_write_is_counted_and_does_not_raise(tmp_path: Path) -> None:
    log, stats = access_log(tmp_path)
    os.close(log._fd)
    log._fd = os.open(os.devnull, os.O_RDONLY)  # writes fail with EBADF, as a broken disk would
    log.record(request(), FakeClient(), 200, 1, "HIT", 0.0)
    log.flush()
    assert (stats.access_log_flush_errors, stats.access_log_lines) == (1, 0)


def test_rotation_renames_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    assert logrotate.renames(path, 3) == [
        (tmp_path / "access.log.2", tmp_path / "access.log.3"),
        (tmp_path / "access.log.1", tmp_path / "access.log.2"),
        (path, tmp_path / "access.log.1"),
    ]
    for name in ("access.log", "access.log.1", "access.log.3"):
        (tmp_path / name).write_text(name)
    assert logrotate.rotate(path, 3)
    contents = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert contents == {"access.log.1": "access.log", "access.log.2": "access.log.1", "access.log.3": "access.log.3"}
    assert not logrotate.rotate(path, 3)  # nothing to rotate


# --- the sink -------------------------------------------------------------------------------------


def test_pieces_cut_at_line_ends_and_backoff_grows() -> None:
    data = b"".join(b"%03d------\n" % index for index in range(10))  # 10 lines of 10 bytes
    assert pieces(data, 35) == [data[:30], data[30:60], data[60:90], data[90:]]
    assert pieces(b"x" * 50 + b"\n" + b"y\n", 20) == [b"x" * 50 + b"\n", b"y\n"]  # a long line goes alone
    assert backoff(1, 0.0) == 0.25 and backoff(2, 0.999) < 1.0 and backoff(50, 0.999) < 30.0


def test_a_full_queue_drops_the_oldest_batches() -> None:
    stats = Stats()
    settings = AccessLogConfig.model_validate({"sink": {"url": "http://c/x", "maxQueueBytes": 4096}}).sink
    assert settings is not None
    shipper = Shipper(settings, stats, "application/x-ndjson")
    for index in range(10):
        shipper.offer(b"%d" % index + b"x" * 998 + b"\n", 1)  # 1000-byte batches, 4 fit
    assert [piece[:1] for piece in shipper.queue] == [b"6", b"7", b"8", b"9"]
    assert (stats.access_log_batches_dropped, stats.access_log_lines_dropped) == (6, 6)


@dataclass
class Collector:
    """A log collector for the tests: answers ``fail`` POSTs with 503, then keeps what it gets."""

    fail: int = 0
    bodies: list[bytes] = field(default_factory=list)
    types: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        self.bodies.append(await request.read())
        self.types.add(request.headers.get("Content-Type", ""))
        return web.Response(status=204)

    def lines(self) -> list[str]:
        return b"".join(self.bodies).decode().splitlines()


async def serve_collector(collector: Collector) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/logs", collector.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/logs"


async def test_batches_are_posted_and_retried_after_a_failure(tmp_path: Path) -> None:
    collector = Collector(fail=1)
    runner, url = await serve_collector(collector)
    try:
        shipper = Shipper(log_sink(url), Stats(), "application/x-ndjson")
        log, stats = access_log(tmp_path, shipper, flushMs=10)
        log.start()
        for index in range(40):
            log.record(request(f"/s{index}"), FakeClient(), 200, 1, "HIT", 0.0)
        await eventually(lambda: len(collector.lines()) == 40, within=15, what="40 lines shipped after one 503")
        assert [json.loads(line)["target"] for line in collector.lines()] == [f"/s{index}" for index in range(40)]
        assert stats.access_log_ship_errors == 1 and stats.access_log_batches_shipped >= 1
        assert collector.types == {"application/x-ndjson"} and not shipper.queue
        await log.stop()
    finally:
        await runner.cleanup()


def log_sink(url: str) -> Any:
    settings = AccessLogConfig.model_validate({"sink": {"url": url, "maxBatchBytes": 4096}}).sink
    assert settings is not None
    return settings


# --- real processes ---------------------------------------------------------------------------------


@dataclass
class Load:
    """Sequential GETs with a unique query each, from ``threads`` threads; when each one completed."""

    cache: CacheProcess
    threads: int = 1
    limit: int = 100_000
    completed: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._workers:
            thread.join(30)

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.cache.url, headers={"Host": "demo.test"}, timeout=5) as client:
            for number in range(self.limit):
                if self.stop.is_set():
                    return
                tag = f"t{index}-{number}"
                try:
                    ok = client.get(f"/bytes/100/logged?n={tag}").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.completed[tag] = time.monotonic()
                else:
                    self.failed += 1

    def wait(self, count: int) -> None:
        wait_until(lambda: len(self.completed) >= count, 30, what=f"{count} requests completed")

    def join(self) -> None:
        for thread in self._workers:
            thread.join(60)


def tags(*paths: Path) -> list[str]:
    """The ``n`` query value of every logged request in ``paths`` (duplicates kept)."""
    found = []
    for path in paths:
        for line in path.read_text().splitlines():
            target = json.loads(line)["target"]
            if "?n=" in target:
                found.append(target.partition("?n=")[2])
    return found


def log_cache(origin: OriginProcess, tmp_path: Path, workers: int = 1, **settings: Any) -> CacheProcess:
    """A cache with these access log settings (not started); queries are ignored in keys, so every GET hits."""
    config = cache_config(
        origin.url, tmp_path, workers=workers, accessLog=settings, cache_policy={"queryString": "ignore"}
    )
    return CacheProcess(config, tmp_path)


def older_than(load: Load, seconds: float) -> int:
    now = time.monotonic()
    return sum(1 for when in list(load.completed.values()) if when < now - seconds)


def test_a_killed_worker_loses_at_most_its_flush_window(origin: OriginProcess, tmp_path: Path) -> None:
    """SIGKILL a worker under load: every request completed before (kill - flushMs - margin) is in the log."""
    window = 0.2 + 0.3  # flushMs, and a margin for a busy machine's scheduling
    with started(log_cache(origin, tmp_path, flushMs=200)) as cache, Load(cache) as load:
        wait_until(lambda: older_than(load, window) >= 200, 30, what="200 requests done before the window")
        (worker,) = cache.worker_pids()
        killed = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        load.stop.set()
    found = tags(tmp_path / "access.log")
    due = {tag for tag, when in load.completed.items() if when < killed - window}
    assert len(due) >= 200
    assert due <= set(found), f"{len(due - set(found))} lines lost from before the flush window"
    assert len(found) == len(set(found))  # and none twice


def test_rotation_under_load_loses_and_duplicates_no_line(origin: OriginProcess, tmp_path: Path) -> None:
    """Two workers share the file; a mv + SIGUSR1, then a size rotation, while four clients load the cache."""
    path = tmp_path / "access.log"
    cache = log_cache(origin, tmp_path, workers=2, maxBytes=65536, keep=100)
    with started(cache), Load(cache, threads=4) as load:
        load.wait(300)
        path.rename(tmp_path / "moved.log")  # the logrotate way
        os.kill(cache.master_pid, signal.SIGUSR1)
        wait_until(path.exists, 10, what="the workers reopened access.log")
        wait_until((tmp_path / "access.log.1").exists, 20, what="a rotation by size (maxBytes)")
        load.stop.set()
        load.join()
        metric = "edgefleet_cache_access_log_lines_total"
        wait_until(lambda: cache.metric(metric) >= len(load.completed), 10, what="every line written")
    assert load.failed == 0
    files = [tmp_path / "moved.log", *sorted(tmp_path.glob("access.log*"))]
    found = tags(*files)  # the cache stopped: every line is written
    assert len(found) > 500
    assert sorted(found) == sorted(load.completed)  # none lost, none twice


def test_shutdown_flushes_to_the_default_file_and_ships(origin: OriginProcess, tmp_path: Path) -> None:
    """No path given: access.log beside the config file. SIGTERM writes the held lines and ships them."""
    collector = CollectorThread()
    with collector:
        config = cache_config(origin.url, tmp_path, accessLog={"flushMs": 5000, "sink": {"url": collector.url}})
        cache = CacheProcess(config, tmp_path)
        with started(cache):
            for index in range(20):
                assert cache.get(f"/bytes/10/bye?n=s{index}").status_code == 200
            hostile = b'GET /bytes/10/bye?q=%22 HTTP/1.1\r\nHost: demo.test\r\nUser-Agent: a"\tb\xfe\\\r\n\r\n'
            assert cache.raw(hostile, timeout=2).startswith(b"HTTP/1.1 200")
            assert not (tmp_path / "access.log").read_text()  # within the 5 s window: held
        assert cache.proc is not None and cache.proc.returncode == 0
        expected = sorted(f"s{index}" for index in range(20))
        assert sorted(tags(tmp_path / "access.log")) == expected
        lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
        assert len(lines) == 21 and lines[0]["userAgent"].startswith("python-httpx/")
        assert (lines[-1]["target"], lines[-1]["userAgent"]) == ("/bytes/10/bye?q=%22", 'a"\tb\xfe\\')
        shipped = [json.loads(line)["target"] for line in collector.lines()]
        assert sorted(shipped) == sorted([f"/bytes/10/bye?n={tag}" for tag in expected] + ["/bytes/10/bye?q=%22"])


class CollectorThread:
    """:class:`Collector` served on its own loop in a thread, for a cache process to POST to."""

    def __init__(self) -> None:
        import asyncio

        self.collector = Collector()
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> CollectorThread:
        import asyncio

        self._thread.start()
        self._runner, self.url = asyncio.run_coroutine_threadsafe(serve_collector(self.collector), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def lines(self) -> list[str]:
        return self.collector.lines()
