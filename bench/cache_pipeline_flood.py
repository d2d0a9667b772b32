"""Pipelining flood: how much a cache worker grows when a client pipelines GETs and never reads.

Starts the programmable origin and a one-worker ``edgefleet cache`` in front
of it, warms a 1 KB object, then, for each count, opens one connection with
a small receive buffer and pipelines that many GETs of the object without
reading a byte. Sending stops when every request is sent or when the server
has not taken a byte for ``--stall`` seconds (it stopped reading: the
backpressure this measures). The row gives the requests the server took,
the worker's RSS growth (``VmRSS``, after a moment to settle) and whether
the worker still answers another client at once.

    .venv/bin/python bench/cache_pipeline_flood.py [--counts 100000,1000000]

To compare with an older tree, put its ``src`` first on ``PYTHONPATH`` (the
worker processes inherit it).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cacheproc import CacheProcess, OriginProcess, cache_config, started

PATH = "/bytes/1024/flood"
REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: demo.test\r\n\r\n".encode()


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def flood(address: tuple[str, int], count: int, stall: float, limit: float) -> tuple[socket.socket, int]:
    """Pipeline ``count`` GETs on one connection that never reads; (the open connection, requests taken)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    sock.settimeout(stall)
    batch = REQUEST * 1000
    payload = memoryview(batch * (count // 1000) + REQUEST * (count % 1000))
    sent = 0
    deadline = time.monotonic() + limit
    try:
        while sent < len(payload) and time.monotonic() < deadline:
            sent += sock.send(payload[sent : sent + 65536])
    except TimeoutError:
        pass  # the server stopped reading
    time.sleep(1.0)  # let the worker answer what it read
    return sock, sent // len(REQUEST)


def measure(cache: CacheProcess, count: int, stall: float, limit: float) -> tuple[int, int, float]:
    """(requests taken, RSS growth in bytes, seconds another client waited) for one flood."""
    pid = cache.worker_pids()[0]
    before = rss_bytes(pid)
    sock, taken = flood(cache.address, count, stall, limit)
    grown = rss_bytes(pid) - before  # measured while the flooding connection is still open
    started_at = time.monotonic()
    httpx.get(f"{cache.url}{PATH}", headers={"Host": "demo.test"}, timeout=30)
    waited = time.monotonic() - started_at
    sock.close()
    return taken, grown, waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100000,1000000", help="pipelined GETs per run, comma-separated")
    parser.add_argument("--stall", type=float, default=2.0, help="seconds without progress that end a flood")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds a flood may send at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        with started(OriginProcess(data)) as origin:
            config = cache_config(origin.url, data, disk=False, limits={"idleTimeout": 300})
            with started(CacheProcess(config, data)) as cache:
                httpx.get(f"{cache.url}{PATH}", headers={"Host": "demo.test"}, timeout=10)
                print("pipelined GETs   taken by server   worker RSS growth   next client waited", flush=True)
                for count in [int(c) for c in args.counts.split(",") if c.strip()]:
                    taken, grown, waited = measure(cache, count, args.stall, args.limit)
                    print(
                        f"{count:>14,}   {taken:>15,}   {grown / 2**20:>13.1f} MiB   {waited * 1000:>14.1f} ms",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
