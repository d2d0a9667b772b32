"""DNS benchmark: the edgefleet GSLB against Knot DNS, one worker each, same queries, same dnsperf.

Knot (Debian package ``knot``; ``knotd -c <tmp>/knot.conf`` with
``udp-workers: 1``, ``tcp-workers: 1``, ``background-workers: 1``,
``edns-client-subnet: on``, on a free loopback port) serves a static zone
``cdn.edgefleet.test`` whose ``demo`` name has two A records. The edgefleet
side is ``bench/dns_gslb_runner.py`` (one process, uvloop): three sites of
two nodes, the geo table below, Domain ``demo`` under the ``geo`` policy,
answering ``demo.cdn.edgefleet.test`` with the two nodes of the nearest site.

The queries (the same file for both servers): ``--subnets`` A queries for
``demo.cdn.edgefleet.test``, each with an EDNS Client Subnet option for a
different /24 (``10.x.y.0/24``), in random order; dnsperf replays the file in
a loop. They are written in dnsperf's binary format (``-B``: raw
length-prefixed messages, dnsperf only rewrites the id) because ``-E``
would put the *same* option in every query. The synthetic geo table maps
each of those /24s to one of 16 cities (plus /16 and /8 covering prefixes),
so the GSLB places every subnet with a longest-prefix match, routes it and
echoes the ECS option with the matched scope; Knot parses and echoes the
same option (scope 0) but decides nothing.

All servers are started, then each is loaded alone, one after the other,
``--rounds`` times (the machine may be busy with other work: alternating
and taking medians keeps a burst of it from deciding the ratio), with::

    dnsperf -B -s 127.0.0.1 -p PORT -d queries.bin -l SECONDS -c CLIENTS -Q MAX_QPS -q OUTSTANDING

and the script prints queries/s, mean latency and lost queries for Knot,
edgefleet (caches on: the production path; a subnet's answer is computed
once per fleet change, then served from the packet cache) and edgefleet
with ``--no-cache`` (every query parsed, placed, routed and encoded), and
each edgefleet figure's ratio to Knot's. The target of issue 5 is a ratio
of at least 0.5 with the caches on. Queries/s measure the pair (dnsperf and
the server share the machine, and on a small one dnsperf, not the server,
may set the pace), so the script also reads each server's CPU time from
``/proc`` during its run and prints its CPU use and CPU microseconds per
answered query: the server's own cost, whoever set the pace.

Everything runs on 127.0.0.1, runs are bounded in time, and every process
started is stopped (SIGTERM, then SIGKILL) however the run ends.

    .venv/bin/python bench/dns_vs_knot.py [--seconds 10] [--subnets 4096] [--max-qps 1000000]
    .venv/bin/python bench/dns_vs_knot.py --quick --only edgefleet
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import Service, StartError, announced_port, require, run_main, running, scratch_dir, wait_until

ZONE = "cdn.edgefleet.test"
NAME = f"demo.{ZONE}"
KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"  # /usr/sbin is not on every user's PATH
DNSPERF = shutil.which("dnsperf") or "/usr/bin/dnsperf"
RUNNER = Path(__file__).with_name("dns_gslb_runner.py")
KNOT_LABEL = "knot (1 udp worker)"

CITIES = [  # country, region, lat, lon
    ("FR", "eu-west", 48.8566, 2.3522),
    ("NL", "eu-west", 52.3676, 4.9041),
    ("DE", "eu-central", 50.1109, 8.6821),
    ("GB", "eu-west", 51.5074, -0.1278),
    ("ES", "eu-west", 40.4168, -3.7038),
    ("PL", "eu-central", 52.2297, 21.0122),
    ("US", "us-east", 40.7128, -74.0060),
    ("US", "us-west", 37.7749, -122.4194),
    ("CA", "us-east", 43.6532, -79.3832),
    ("BR", "sa-east", -23.5505, -46.6333),
    ("JP", "ap-northeast", 35.6762, 139.6503),
    ("KR", "ap-northeast", 37.5665, 126.9780),
    ("SG", "ap-southeast", 1.3521, 103.8198),
    ("AU", "ap-southeast", -33.8688, 151.2093),
    ("IN", "ap-south", 19.0760, 72.8777),
    ("ZA", "af-south", -26.2041, 28.0473),
]

KNOT_CONF = """\
server:
    rundir: "{tmp}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
control:
    listen: "{tmp}/knot.sock"
database:
    storage: "{tmp}/db"
log:
  - target: stderr
    any: warning
zone:
  - domain: {zone}
    storage: "{tmp}"
    file: "{zone}.zone"
"""

ZONE_FILE = """\
$ORIGIN {zone}.
$TTL 3600
@     SOA ns1 hostmaster 1 3600 600 604800 30
@     NS  ns1
ns1   A   127.0.0.1
demo  30  A  127.0.1.1
demo  30  A  127.0.1.2
"""


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (checked for both, then released)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise StartError("no free port for UDP and TCP")


# --- inputs ----------------------------------------------------------------------------


def subnets(count: int) -> list[str]:
    """``count`` distinct /24 networks under 10.0.0.0/8 (network addresses)."""
    return [f"10.{(i >> 8) & 255}.{i & 255}.0" for i in range(count)]


def geo_table(networks: list[str], seed: int) -> str:
    """A geo CSV placing each /24 in a city, with covering /16s and a /8 (longest prefix wins)."""
    rng = random.Random(seed)
    lines = ["cidr,country,region,lat,lon", "10.0.0.0/8,{},{},{},{}".format(*CITIES[0])]
    for second in sorted({int(network.split(".")[1]) for network in networks}):
        lines.append(f"10.{second}.0.0/16," + ",".join(map(str, rng.choice(CITIES))))
    lines += [f"{network}/24," + ",".join(map(str, rng.choice(CITIES))) for network in networks]
    return "\n".join(lines) + "\n"


def query_file(networks: list[str], seed: int) -> bytes:
    """dnsperf ``-B`` input: length-prefixed A queries for NAME, one ECS /24 each, shuffled, RD clear."""
    order = list(networks)
    random.Random(seed).shuffle(order)
    chunks = []
    for network in order:
        query = dns.message.make_query(NAME, "A", use_edns=0, payload=1232, options=[dns.edns.ECSOption(network, 24)])
        query.flags &= ~dns.flags.RD
        wire = query.to_wire()
        chunks.append(len(wire).to_bytes(2, "big") + wire)
    return b"".join(chunks)


# --- processes -----------------------------------------------------------------------------


def answers_a(port: int) -> list[str]:
    """The A records NAME gets from 127.0.0.1:port for a client in 10.0.0.0/24 (empty on failure)."""
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption("10.0.0.0", 24)])
    with contextlib.suppress(dns.exception.DNSException, OSError):
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
        if response.rcode() == dns.rcode.NOERROR:
            return sorted(item.address for rrset in response.answer for item in rrset)
    return []


@dataclass
class Target:
    """A running server under test: where to send queries, and its process (for its CPU time)."""

    port: int
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads included (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_knot(stack: contextlib.ExitStack, tmp: Path) -> Target:
    home = tmp / "knot"
    (home / "db").mkdir(parents=True)
    port = free_port()
    (home / "knot.conf").write_text(KNOT_CONF.format(tmp=home, port=port, zone=ZONE))
    (home / f"{ZONE}.zone").write_text(ZONE_FILE.format(zone=ZONE))
    service = stack.enter_context(running(Service("knotd", [KNOTD, "-c", str(home / "knot.conf")], home / "knot.log")))
    wait_until(service, lambda: bool(answers_a(port)), 15.0)
    assert service.proc is not None
    return Target(port, service.proc.pid)


def start_edgefleet(stack: contextlib.ExitStack, tmp: Path, geo: Path, no_cache: bool) -> Target:
    label = "edgefleet-nocache" if no_cache else "edgefleet"
    args = [sys.executable, str(RUNNER), "--geo", str(geo), "--listen", "127.0.0.1:0"]
    service = Service(label, args + (["--no-cache"] if no_cache else []), tmp / f"{label}.log", stdout_pipe=True)
    stack.enter_context(running(service))
    port = announced_port(service, "dns listening on ", 20.0)
    wait_until(service, lambda: bool(answers_a(port)), 15.0)
    assert service.proc is not None
    return Target(port, service.proc.pid)


# --- load ------------------------------------------------------------------------------------


@dataclass
class PerfResult:
    qps: float
    mean_latency_ms: float
    stddev_ms: float
    lost: str
    rcodes: str
    completed: int = 0
    server_cpu: float = float("nan")
    """CPU seconds the server used during the run."""

    @property
    def cpu_us_per_query(self) -> float:
        return self.server_cpu / self.completed * 1e6 if self.completed else float("nan")


def parse_dnsperf(output: str) -> PerfResult:
    qps = re.search(r"Queries per second:\s*([0-9.]+)", output)
    latency = re.search(r"Average Latency \(s\):\s*([0-9.]+)", output)
    stddev = re.search(r"Latency StdDev \(s\):\s*([0-9.]+)", output)
    lost = re.search(r"Queries lost:\s*(.*)", output)
    rcodes = re.search(r"Response codes:\s*(.*)", output)
    completed = re.search(r"Queries completed:\s*([0-9]+)", output)
    if qps is None or latency is None:
        raise RuntimeError(f"cannot parse dnsperf output:\n{output}")
    return PerfResult(
        float(qps.group(1)),
        float(latency.group(1)) * 1000,
        float(stddev.group(1)) * 1000 if stddev else float("nan"),
        lost.group(1).strip() if lost else "?",
        rcodes.group(1).strip() if rcodes else "?",
        int(completed.group(1)) if completed else 0,
    )


def run_dnsperf(target: Target, queries: Path, args: argparse.Namespace) -> PerfResult:
    command = [
        DNSPERF,
        "-B",
        "-s",
        "127.0.0.1",
        "-p",
        str(target.port),
        "-d",
        str(queries),
        "-l",
        str(args.seconds),
        "-c",
        str(args.clients),
        "-Q",
        str(args.max_qps),
        "-q",
        str(args.outstanding),
    ]
    cpu_before = cpu_seconds(target.pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60, check=False)
    cpu_used = cpu_seconds(target.pid) - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    result = parse_dnsperf(done.stdout)
    result.server_cpu = cpu_used
    return result


# --- the run ------------------------------------------------------------------------------------


def print_header() -> None:
    print(
        f"{'server':<24} {'queries/s':>10} {'ratio':>6} {'mean latency':>13} {'stddev':>10} {'server CPU':>10} "
        f"{'CPU/query':>10}  lost; rcodes",
        flush=True,
    )


def print_row(name: str, result: PerfResult, knot: PerfResult | None) -> None:
    ratio = f"{result.qps / knot.qps:6.2f}" if knot else f"{'n/a':>6}"
    cpu_share = result.server_cpu / max(result.completed / result.qps, 1e-9) if result.qps else float("nan")
    print(
        f"{name:<24} {result.qps:>10,.0f} {ratio} {result.mean_latency_ms:>10.3f} ms {result.stddev_ms:>7.3f} ms "
        f"{cpu_share:>10.0%} {result.cpu_us_per_query:>7.2f} µs  {result.lost}; {result.rcodes}",
        flush=True,
    )


def median_result(results: list[PerfResult]) -> PerfResult:
    """The run with the median queries/s (the upper middle one for an even count)."""
    return sorted(results, key=lambda result: result.qps)[len(results) // 2]


def start_servers(stack: contextlib.ExitStack, tmp: Path, geo: Path, args: argparse.Namespace) -> dict[str, Target]:
    """Every server of the run, by label; they idle while another one is loaded."""
    ports = {}
    if args.only in ("both", "knot"):
        ports[KNOT_LABEL] = start_knot(stack, tmp)
    if args.only in ("both", "edgefleet"):
        for no_cache in args.modes:
            label = "edgefleet --no-cache" if no_cache else "edgefleet"
            try:
                ports[label] = start_edgefleet(stack, tmp, geo, no_cache)
            except StartError as error:
                print(f"# skipping {label}: {error}", flush=True)
    return ports


def run_in(tmp: Path, args: argparse.Namespace) -> None:
    networks = subnets(args.subnets)
    geo, queries = tmp / "geo.csv", tmp / "queries.bin"
    geo.write_text(geo_table(networks, args.seed))
    queries.write_bytes(query_file(networks, args.seed))
    print(
        f"# {os.cpu_count()} CPUs; dnsperf -B -l {args.seconds} -c {args.clients} -Q {args.max_qps} "
        f"-q {args.outstanding}; "
        f"{len(networks)} A queries for {NAME}, each with ECS from its own /24; one server loaded at a time, "
        f"{args.rounds} round(s)",
        flush=True,
    )
    print_header()
    results: dict[str, list[PerfResult]] = {}
    with contextlib.ExitStack() as stack:
        ports = start_servers(stack, tmp, geo, args)
        for round_number in range(1, args.rounds + 1):
            for label, target in ports.items():
                result = run_dnsperf(target, queries, args)
                results.setdefault(label, []).append(result)
                knot = results[KNOT_LABEL][-1] if KNOT_LABEL in results and label != KNOT_LABEL else None
                print_row(f"{label} #{round_number}" if args.rounds > 1 else label, result, knot)
    if args.rounds > 1:
        print("# medians", flush=True)
        knot = median_result(results[KNOT_LABEL]) if KNOT_LABEL in results else None
        for label, runs in results.items():
            print_row(label, median_result(runs), None if label == KNOT_LABEL else knot)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="dnsperf -l: seconds of load per server")
    parser.add_argument("--clients", type=int, default=1, help="dnsperf -c: client sockets")
    parser.add_argument("--max-qps", type=int, default=1_000_000, help="dnsperf -Q: query rate cap")
    parser.add_argument(
        "--outstanding", type=int, default=100, help="dnsperf -q: queries in flight at most (100 is dnsperf's default)"
    )
    parser.add_argument("--subnets", type=int, default=4096, help="distinct client /24s in the query file")
    parser.add_argument("--seed", type=int, default=5, help="seed of the geo table and the query order")
    parser.add_argument("--only", choices=("both", "knot", "edgefleet"), default="both")
    parser.add_argument("--modes", default="cache,no-cache", help="edgefleet runs: cache, no-cache, or both")
    parser.add_argument(
        "--rounds", type=int, default=3, help="load every server this many times, alternating, and print the medians"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per server, one round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() == "no-cache" for mode in args.modes.split(",") if mode.strip()]
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 2), 1
    return args


def run(args: argparse.Namespace) -> None:
    with scratch_dir("dns-bench-", args.keep, "configs, logs, queries") as tmp:
        run_in(tmp, args)


def main() -> None:
    args = parse_args()
    require((KNOTD, DNSPERF), "knot, dnsperf")
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
