"""CPU microseconds per query of the GSLB's DNS path, in one process, without dnsperf or sockets' noise.

Why: ``bench/dns_vs_knot.py`` measures the pair (dnsperf and the server share
the machine), so on a shared 2-core VM its ratios move with whatever else
runs. This harness builds the same fleet and geo table as that benchmark
(``bench/dns_gslb_runner.py``'s fleet, the synthetic table of
``dns_vs_knot.geo_table``), pre-builds the same query packets, and times
:meth:`edgefleet.gslb.dns.DnsServer.answer` on them with the process CPU
clock, so a figure says what one query costs the server's code:

- *warm*: the first ``--warm-subnets`` /24s, replayed (the packet cache answers);
- *fresh*: ``--subnets`` distinct /24s, each once (placed by the geo table,
  the site decision read from the per-location table, the answer patched
  from the query's shape);
- *socket*: the warm and the fresh packets again through a real UDP socket
  pair and the server's own read loop (its system calls included, the
  client's sends and reads excluded), once with each I/O path of
  :mod:`edgefleet.gslb.dgram` (``recvmmsg``/``sendmmsg`` batches, and
  ``recvfrom``/``sendto`` per datagram), so the system-call share is visible.

Each figure is the best of ``--rounds`` (the least disturbed by other work).

    .venv/bin/python bench/dns_path_cpu.py [--subnets 1000000] [--rounds 3]
    .venv/bin/python bench/dns_path_cpu.py --quick
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dns_gslb_runner import fleet_documents
from bench.dns_vs_knot import geo_table, query_wire, subnets

from edgefleet.gslb.dgram import BATCHED_IO, FALLBACK_IO, DatagramIO
from edgefleet.gslb.dns import UDP_BATCH, DnsServer
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.geo import GeoDatabase
from edgefleet.gslb.zone import Resolver, Zone

SENDER = "127.0.0.1"


def packets(networks: list[str]) -> list[bytes]:
    """One A query per /24 with ECS, each with its own id (as dnsperf sends them)."""
    prefix = query_wire("0.0.0.0")[:-3]
    built = []
    for index, network in enumerate(networks):
        first, second, third, _ = network.split(".")
        body = prefix[2:] + bytes((int(first), int(second), int(third)))
        built.append((index & 0xFFFF).to_bytes(2, "big") + body)
    return built


def make_server(geo: Path) -> DnsServer:
    fleet = FleetState()
    errors = fleet.load(fleet_documents("geo"))
    if errors:
        raise SystemExit("\n".join(errors))
    return DnsServer(Resolver(Zone(), fleet, GeoDatabase(geo)), SENDER, 0)


def cpu_per_query(run: Callable[[], int]) -> float:
    """CPU µs per query of ``run`` (which returns how many queries it answered)."""
    started = time.process_time()
    count = run()
    return (time.process_time() - started) / max(count, 1) * 1e6


def warm(server: DnsServer, queries: list[bytes], passes: int) -> Callable[[], int]:
    def run() -> int:
        answer, now = server.answer, server.check_generation()
        for _ in range(passes):
            for query in queries:
                answer(query, SENDER, udp=True, now=now)
        return passes * len(queries)

    return run


def fresh(server: DnsServer, queries: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        server._reset_cache()  # every subnet unseen again (the shapes are learnt on the first query)
        answer, now = server.answer, server.check_generation()
        for query in queries:
            answer(query, SENDER, udp=True, now=now)
        return len(queries)

    return run


def through_socket(server: DnsServer, queries: list[bytes], io: DatagramIO, reset: bool = True) -> float:
    """CPU µs per query of the server's read loop on a real UDP socket with ``io`` (client time excluded)."""
    server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server_sock.bind((SENDER, 0))
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server_sock.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    client.setblocking(False)
    target = server_sock.getsockname()
    server._udp, server.udp_io = server_sock, io
    if reset:
        server._reset_cache()
    spent, answered, batch = 0.0, 0, 1024
    try:
        for start in range(0, len(queries), batch):
            for query in queries[start : start + batch]:
                client.sendto(query, target)
            began = time.process_time()
            for _ in range(batch // UDP_BATCH + 1):
                server._udp_readable()
            spent += time.process_time() - began
            while True:
                try:
                    client.recv(2048)
                except BlockingIOError:
                    break
                answered += 1
    finally:
        server._udp = None
        server_sock.close()
        client.close()
    return spent / max(answered, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subnets", type=int, default=1_000_000, help="distinct /24s of the fresh pass")
    parser.add_argument("--warm-subnets", type=int, default=4096, help="/24s replayed by the warm pass")
    parser.add_argument("--rounds", type=int, default=3, help="passes of each kind; the best is printed")
    parser.add_argument("--quick", action="store_true", help="100,000 subnets, 1 round: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.subnets, args.rounds = 100_000, 1
    networks = subnets(args.subnets)
    with tempfile.TemporaryDirectory() as tmp:
        geo = Path(tmp) / "geo.csv"
        geo.write_text(geo_table(networks, seed=1))
        loading = time.monotonic()
        server = make_server(geo)
        server.resolver.geo.lookup("10.0.0.1")  # the table loads here
        print(f"geo table of {len(networks):,} /24s loaded in {time.monotonic() - loading:.1f} s", flush=True)
    queries = packets(networks)
    warm_queries = queries[: args.warm_subnets]
    server.answer(warm_queries[0], SENDER, udp=True)
    figures = {
        "warm": min(cpu_per_query(warm(server, warm_queries, 50)) for _ in range(args.rounds)),
        "fresh": min(cpu_per_query(fresh(server, queries)) for _ in range(args.rounds)),
    }
    for io in (BATCHED_IO, FALLBACK_IO):
        if io is None:
            print("the batched I/O extension is not built (edgefleet.gslb._dgram): recvfrom only", flush=True)
            continue
        socket_warm = [through_socket(server, warm_queries * 10, io, reset=False) for _ in range(args.rounds)]
        figures[f"warm, socket, {io.path}"] = min(socket_warm)
        socket_fresh = [through_socket(server, queries[:200_000], io) for _ in range(args.rounds)]
        figures[f"fresh, socket, {io.path}"] = min(socket_fresh)
    for name, figure in figures.items():
        print(f"{name:>24}: {figure:6.2f} CPU µs/query", flush=True)


if __name__ == "__main__":
    main()
