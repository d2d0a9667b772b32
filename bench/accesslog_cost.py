"""What the access log costs a request, in ns: ``AccessLog.record`` alone, and record + format + write.

How: the loop makes a request object as the parser does (header list included) and records it, N times,
against the same loop without recording; best of several interleaved rounds. ``record() alone`` keeps the
records (no flush), ``whole log`` lets the log flush itself in ``flushBytes`` batches to a temporary file, so
it includes formatting, the batch checks and the ``write()``; garbage collection is on, as in a worker.
The machine is shared: compare figures of one run, and prefer ``valgrind --tool=callgrind`` instruction
counts for small differences (see src/edgefleet/cache/front/accesslog.py).

    .venv/bin/python bench/accesslog_cost.py [--requests 100000] [--formats json,cdn,combined]
"""

from __future__ import annotations

import argparse
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
    peer_ip = "127.0.0.1"
    tls_version: str | None = None


Record = Callable[[Request, Client, int, int, str, float], None]


def run(record: Record | None, requests: int) -> float:
    client = Client()
    started = time.perf_counter()
    for _ in range(requests):
        request = Request("GET", "/bytes/1024", list(HEADERS), "bench.test", True, "1.1", agent="wrk")
        if record is not None:
            record(request, client, 200, 1024, "HIT", 0.0)
    return time.perf_counter() - started


def measure(format: str, requests: int, rounds: int, tmp: Path) -> str:
    settings = AccessLogConfig(format=format)  # type: ignore[arg-type]
    log = AccessLog(settings, "bench", tmp / f"{format}.log", Stats(), lambda host: "bench")
    held_settings = settings.model_copy(update={"flush_bytes": 64 * 2**20})
    held = AccessLog(held_settings, "bench", tmp / f"{format}-held.log", Stats(), lambda host: None)
    base, whole, alone = [], [], []
    for _ in range(rounds):
        base.append(run(None, requests))
        whole.append(run(log.record, requests))
        alone.append(run(held.record, requests))
        held._records.clear()  # never written: this measures record() alone
    log.close()
    per = 1e9 / requests
    return (
        f"{format:9} whole log {(min(whole) - min(base)) * per:6.0f} ns/request;  "
        f"record() alone {(min(alone) - min(base)) * per:5.0f} ns"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--formats", default="json,cdn,combined")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="accesslog-cost-") as tmp:
        for format in args.formats.split(","):
            print(measure(format, args.requests, args.rounds, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
