"""What the access log costs a request, in CPU ns: ``record()``, formatting, the ``write()``, and all together.

How: the loop makes a request object as the parser does (header list included) and records it, N times,
against the same loop without recording; best of several interleaved rounds, in CPU time of this thread
(``time.thread_time_ns``: system time of the ``write()`` included, other processes of a loaded machine
not). The columns:

- ``whole log``: record() and the flushes the log makes itself in ``flushBytes`` batches to a temporary
  file (formatting, the batch checks, the ``write()``); garbage collection is on, as in a worker;
- ``record()``: the hot path alone (the records are kept, never written);
- ``format``: ``Formatter.lines`` of a batch of the same records, per line;
- ``write``: the ``write()`` of that batch to the file, per line (page cache; no fsync).

The machine is shared: compare figures of one run, and prefer ``valgrind --tool=callgrind`` instruction
counts for small differences (see src/edgefleet/cache/front/accesslog.py).

    .venv/bin/python bench/accesslog_cost.py [--requests 100000] [--rounds 5] [--formats json,cdn,combined]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cache.config import AccessLogConfig
from edgefleet.cache.front.accesslog import AccessLog
from edgefleet.cache.stats import Stats
from edgefleet.cache.wire.http1 import Request

HEADERS = [("Host", "bench.test"), ("User-Agent", "wrk"), ("Accept", "*/*"), ("Connection", "keep-alive")]


class Client:
    """The connection's side of a record (instance attributes, as on a real connection)."""

    def __init__(self) -> None:
        self.peer_ip = "127.0.0.1"
        self.tls_version: str | None = None


Record = Callable[[Request, Client, int, int, str, float], None]


def run(record: Record | None, requests: int) -> int:
    """CPU ns this thread spent making ``requests`` requests (and recording them, with ``record``)."""
    client = Client()
    started = time.thread_time_ns()
    for _ in range(requests):
        request = Request("GET", "/bytes/1024", list(HEADERS), "bench.test", True, "1.1", agent="wrk")
        if record is not None:
            record(request, client, 200, 1024, "HIT", 0.0)
    return time.thread_time_ns() - started


def timed(action: Callable[..., object], *args: object) -> int:
    """CPU ns of ``action(*args)``."""
    started = time.thread_time_ns()
    action(*args)
    return time.thread_time_ns() - started


def measure(format: str, requests: int, rounds: int, tmp: Path) -> str:
    settings = AccessLogConfig(format=format)  # type: ignore[arg-type]
    log = AccessLog(settings, "bench", tmp / f"{format}.log", Stats(), lambda host: "bench")
    held_settings = settings.model_copy(update={"flush_bytes": 64 * 2**20})
    held = AccessLog(held_settings, "bench", tmp / f"{format}-held.log", Stats(), lambda host: None)
    base, whole, alone, formatting, writing = [], [], [], [], []
    fd = os.open(tmp / f"{format}-batch.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for _ in range(rounds):
        base.append(run(None, requests))
        whole.append(run(log.record, requests))
        alone.append(run(held.record, requests))
        batch = held._records[: settings.flush_bytes // 256]  # about one flush's worth
        held._records.clear()  # never written by the log: this measures record() alone
        data = held.formatter.lines(batch)
        formatting.append(timed(held.formatter.lines, batch) // len(batch))
        writing.append(timed(os.write, fd, data) // len(batch))
    os.close(fd)
    log.close()
    return (
        f"{format:9} whole log {(min(whole) - min(base)) / requests:6.0f} ns/request;  "
        f"record() {(min(alone) - min(base)) / requests:5.0f} ns;  format {min(formatting):5.0f} ns/line;  "
        f"write {min(writing):4.0f} ns/line"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="requests per round and server")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is shown")
    parser.add_argument("--formats", default="json,cdn,combined", help="comma-separated: json, cdn, combined")
    args = parser.parse_args()
    if args.requests < 1000 or args.rounds < 1:
        parser.error("--requests must be at least 1000 and --rounds at least 1")
    print("# CPU time of this thread (time.thread_time_ns), best of each column over the rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="accesslog-cost-") as tmp:
        for format in args.formats.split(","):
            print(measure(format, args.requests, args.rounds, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
