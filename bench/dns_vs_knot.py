"""DNS benchmark: the edgefleet GSLB against Knot DNS, one worker each, same queries, same dnsperf.

Knot (Debian package ``knot``; ``knotd -c <tmp>/knot.conf`` with
``udp-workers: 1``, ``tcp-workers: 1``, ``background-workers: 1``,
``edns-client-subnet: on``, on a free loopback port) serves a static zone
``cdn.edgefleet.test`` whose ``demo`` name has two A records. The edgefleet
side is ``bench/dns_gslb_runner.py`` (one process, uvloop): three sites of
two nodes, the geo table below, Domain ``demo`` under the ``geo`` policy,
answering ``demo.cdn.edgefleet.test`` with the two nodes of the nearest site.

The queries (the same files for both servers): A queries for
``demo.cdn.edgefleet.test``, each with an EDNS Client Subnet option for a
/24 (``10.x.y.0/24``, then ``11.x.y.0/24``... for more than 65,536), in
random order, in two files: *warm* holds the first ``--warm-subnets``
(4,096) /24s, which dnsperf replays in a loop, so the caches answer; *fresh*
holds all ``--subnets`` /24s (``--subnets 1000000``: a million), each once
per pass, so no query shares a packet-cache entry with another one in a
run shorter than a pass (each is placed, its site decision read from the
table precomputed for its location, and its answer built from its shape:
see :mod:`edgefleet.gslb.dns`). They are written in dnsperf's binary
format (``-B``: raw length-prefixed messages, dnsperf only rewrites the
id) because ``-E`` would put the *same* option in every query, and built by
hand (a million in about a second; dnspython takes minutes). The synthetic
geo table gives each /24 of the fresh file a line of its own (one of 16
cities), under covering /16s and /8s (a million-line table, loaded in a few
seconds), so the GSLB places every subnet with a longest-prefix match,
routes it and echoes the ECS option with the matched scope; Knot parses and
echoes the same option (scope 0) but decides nothing.

All servers are started, then each is loaded alone, one after the other,
``--rounds`` times (the machine may be busy with other work: alternating
and taking medians keeps a burst of it from deciding the ratio), with::

    dnsperf -B -s 127.0.0.1 -p PORT -d queries.bin -l SECONDS -c CLIENTS -Q MAX_QPS -q OUTSTANDING

and the script prints queries/s, mean latency and lost queries for Knot and
edgefleet (caches on: the production path) on each file, with ``--modes
cache,no-cache`` also edgefleet with ``--no-cache`` (every query parsed,
placed, decided and encoded: the cost the caches and tables save), with
``--modes cache,recvfrom`` also edgefleet reading and sending one datagram
per system call (the fallback of :mod:`edgefleet.gslb.dgram`: the A/B of
batched I/O), and each
edgefleet figure's ratio to Knot's on the same file. The targets of issue
15: at least 0.5 on the fresh file with ``--subnets 1000000``, 0.9 on the
warm one. Queries/s measure the pair (dnsperf and
the server share the machine, and on a small one dnsperf, not the server,
may set the pace), so the script also reads each server's CPU time from
``/proc`` during its run and prints its CPU use and CPU microseconds per
answered query: the server's own cost, whoever set the pace.
``bench/dns_path_cpu.py`` measures the edgefleet side alone, in-process
(CPU µs per query of the answer path, with and without the socket calls),
which a busy machine disturbs much less.

Everything runs on 127.0.0.1, runs are bounded in time, and every process
started is stopped (SIGTERM, then SIGKILL) however the run ends.

    .venv/bin/python bench/dns_vs_knot.py [--seconds 10] [--subnets 1000000] [--max-qps 1000000]
    .venv/bin/python bench/dns_vs_knot.py --quick --subnets 1000000
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
import dns.name
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


MAX_SUBNETS = 200 << 16
"""Distinct /24s :func:`subnets` can give: 10.0.0.0/24 up to 209.255.255.0/24."""


def subnets(count: int) -> list[str]:
    """``count`` distinct /24 networks (network addresses): 10.0.0.0/24, 10.0.1.0/24... then 11.0.0.0/24...

    Synthetic: the bench only ever sends them to servers on 127.0.0.1.
    """
    if not 0 < count <= MAX_SUBNETS:
        raise ValueError(f"--subnets must be between 1 and {MAX_SUBNETS}")
    return [f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0" for i in range(count)]


def geo_table(networks: list[str], seed: int) -> str:
    """A geo CSV placing each /24 in a city, with covering /16s and /8s (longest prefix wins).

    Every /24 of the query file has a line of its own (a million-line table
    for ``--subnets 1000000``: a real geo database's order of size).
    """
    rng = random.Random(seed)
    lines = ["cidr,country,region,lat,lon"]
    for first in sorted({int(network.split(".", 1)[0]) for network in networks}):
        lines.append(f"{first}.0.0.0/8," + ",".join(map(str, CITIES[0])))
    for prefix in sorted({tuple(map(int, network.split(".")[:2])) for network in networks}):
        lines.append(f"{prefix[0]}.{prefix[1]}.0.0/16," + ",".join(map(str, rng.choice(CITIES))))
    cities = [",".join(map(str, city)) for city in CITIES]
    lines += [f"{network}/24,{rng.choice(cities)}" for network in networks]
    return "\n".join(lines) + "\n"


def query_wire(network: str) -> bytes:
    """An A query for NAME with RD clear, EDNS (payload 1232) and the Client Subnet ``network``/24."""
    header = bytes(5) + b"\x01" + bytes(5) + b"\x01"  # id 0, no flags, 1 question, 1 additional record
    question = dns.name.from_text(NAME).to_wire() + b"\x00\x01\x00\x01"
    option = b"\x00\x08\x00\x07\x00\x01\x18\x00" + bytes(int(octet) for octet in network.split(".")[:3])
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + len(option).to_bytes(2, "big") + option
    return header + question + opt


def query_file(networks: list[str], seed: int) -> bytes:
    """dnsperf ``-B`` input: length-prefixed A queries for NAME, one ECS /24 each, shuffled, RD clear.

    Built by hand (:func:`query_wire`, checked against dnspython in the
    tests) rather than with dnspython: a million queries take a second, not minutes.
    """
    order = list(networks)
    random.Random(seed).shuffle(order)
    prefix = query_wire("0.0.0.0")[:-3]
    length = (len(prefix) + 3).to_bytes(2, "big")
    chunks = []
    for network in order:
        first, second, third, _ = network.split(".")
        chunks.append(length + prefix + bytes((int(first), int(second), int(third))))
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


def start_edgefleet(stack: contextlib.ExitStack, tmp: Path, geo: Path, mode: str) -> Target:
    """The runner in ``mode``: ``cache`` (production), ``no-cache`` or ``recvfrom`` (caches, per-datagram I/O)."""
    label = f"edgefleet-{mode}"
    args = [sys.executable, str(RUNNER), "--geo", str(geo), "--listen", "127.0.0.1:0"]
    extra = {"cache": [], "no-cache": ["--no-cache"], "recvfrom": ["--udp-io", "recvfrom"]}[mode]
    service = Service(label, args + extra, tmp / f"{label}.log", stdout_pipe=True)
    stack.enter_context(running(service))
    port = announced_port(service, "dns listening on ", 300.0)  # a million-line geo table takes seconds to load
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
        for mode in args.modes:
            label = "edgefleet" if mode == "cache" else f"edgefleet {mode}"
            try:
                ports[label] = start_edgefleet(stack, tmp, geo, mode)
            except StartError as error:
                print(f"# skipping {label}: {error}", flush=True)
    return ports


QUERY_FILES = ("warm", "fresh")


def run_in(tmp: Path, args: argparse.Namespace) -> None:
    networks = subnets(args.subnets)
    geo = tmp / "geo.csv"
    geo.write_text(geo_table(networks, args.seed))
    files = {"fresh": tmp / "fresh.bin", "warm": tmp / "warm.bin"}
    files["fresh"].write_bytes(query_file(networks, args.seed))
    files["warm"].write_bytes(query_file(networks[: args.warm_subnets], args.seed))
    print(
        f"# {os.cpu_count()} CPUs; dnsperf -B -l {args.seconds} -c {args.clients} -Q {args.max_qps} "
        f"-q {args.outstanding}; A queries for {NAME} with ECS; 'warm': {min(args.warm_subnets, len(networks))} "
        f"distinct /24s replayed (caches hit), 'fresh': {len(networks)} distinct /24s, each once per pass "
        f"(a packet-cache hit needs a second pass: more than {len(networks)} queries in {args.seconds} s); "
        f"geo table of {len(networks)} /24s; one server loaded at a time, {args.rounds} round(s)",
        flush=True,
    )
    print_header()
    results: dict[str, list[PerfResult]] = {}
    with contextlib.ExitStack() as stack:
        ports = start_servers(stack, tmp, geo, args)
        for round_number in range(1, args.rounds + 1):
            for kind in QUERY_FILES:
                for label, target in ports.items():
                    result = run_dnsperf(target, files[kind], args)
                    row = f"{label} {kind}"
                    results.setdefault(row, []).append(result)
                    knot_row = f"{KNOT_LABEL} {kind}"
                    knot = results[knot_row][-1] if knot_row in results and label != KNOT_LABEL else None
                    print_row(f"{row} #{round_number}" if args.rounds > 1 else row, result, knot)
    if args.rounds > 1:
        print("# medians", flush=True)
        for row, runs in results.items():
            knot_row = f"{KNOT_LABEL} {row.rpartition(' ')[2]}"
            knot = median_result(results[knot_row]) if knot_row in results and row != knot_row else None
            print_row(row, median_result(runs), knot)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="dnsperf -l: seconds of load per server")
    parser.add_argument("--clients", type=int, default=1, help="dnsperf -c: client sockets")
    parser.add_argument("--max-qps", type=int, default=1_000_000, help="dnsperf -Q: query rate cap")
    parser.add_argument(
        "--outstanding", type=int, default=100, help="dnsperf -q: queries in flight at most (100 is dnsperf's default)"
    )
    parser.add_argument(
        "--subnets", type=int, default=4096, help="distinct client /24s of the 'fresh' query file (and the geo table)"
    )
    parser.add_argument(
        "--warm-subnets", type=int, default=4096, help="distinct client /24s of the 'warm' query file (the first ones)"
    )
    parser.add_argument("--seed", type=int, default=5, help="seed of the geo table and the query order")
    parser.add_argument("--only", choices=("both", "knot", "edgefleet"), default="both")
    parser.add_argument(
        "--modes",
        default="cache",
        help="edgefleet servers, comma-separated: cache (production), no-cache (every query decided), recvfrom "
        "(caches on, one datagram per system call instead of recvmmsg/sendmmsg batches: the A/B of the I/O path)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="load every server this many times, alternating, and print the medians"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per server, one round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = set(args.modes) - {"cache", "no-cache", "recvfrom"}
    if unknown:
        parser.error(f"unknown --modes {', '.join(sorted(unknown))}: cache, no-cache or recvfrom")
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
