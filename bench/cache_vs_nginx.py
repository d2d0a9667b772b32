"""Cache benchmark: edgefleet's cache against nginx's proxy_cache, same origin, same client, same workers.

Starts the programmable origin (``python -m edgefleet.demo.origin``), then for
each worker count an nginx from Debian (``nginx -c <tmp>/nginx.conf -p
<tmp>``, proxy_cache with cache lock, upstream keepalive) and ``edgefleet
cache --config <tmp>/cache.yaml`` with the same number of workers. For
each object size (1 KB, 100 KB, 1 MB) both caches are warmed (the second
request must be a hit), then ``wrk`` loads nginx and then edgefleet, one
after the other, and a table row gives both req/s, their ratio and both
p99 latencies. Then the collapse test sends 1,000 concurrent GETs of one
fresh URL whose origin answer takes 300 ms to each cache and reads from
the origin's counters how many requests reached it (ideal: 1).

Everything runs on 127.0.0.1, durations are bounded, and every process
started is stopped (SIGTERM, then SIGKILL) however the run ends. If
``edgefleet cache`` cannot start, its side is skipped with a message.
Access logs are off on both unless ``--access-log on`` (both log every
request to a file, and a third run shows edgefleet without its log: see
``bench/accesslogbench.py``). ``--log-ab`` runs only edgefleet, log on against
log off, in alternating rounds, and gives the median ratio and its spread.

    .venv/bin/python bench/cache_vs_nginx.py [--workers 1,2] [--seconds 8] [--connections 32]
    .venv/bin/python bench/cache_vs_nginx.py --quick --only nginx
    .venv/bin/python bench/cache_vs_nginx.py --access-log on --workers 1
    .venv/bin/python bench/cache_vs_nginx.py --log-ab --rounds 6 --seconds 3 --workers 1 --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accesslogbench
from bench.benchutil import Service, StartError, announced_port, require, run_main, running, scratch_dir, wait_until
from bench.tlsbench import TlsSetup, run_tls
from tests.cloudproc import EDGEFLEET, free_port

HOST = "bench.test"
SIZES = {"1 KB": 1024, "100 KB": 102400, "1 MB": 1048576}
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # /usr/sbin is not on every user's PATH
WRK = shutil.which("wrk") or "/usr/bin/wrk"
COLLAPSE_SIZE = 102400
COLLAPSE_DELAY_MS = 300

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
{user}pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush {tcp_nopush};
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=bench:64m max_size=2g inactive=1d use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name {host};
        location / {{
            proxy_pass http://origin;
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""

CACHE_YAML = """\
node: bench
listen: 127.0.0.1:{port}
workers: {workers}
admin: {{listen: 127.0.0.1:{admin_port}, token: bench-admin-token}}
storage:
  memoryBytes: 268435456
  disk: {{path: {tmp}/efcache, maxBytes: 2147483648}}
accessLog: {{sample: 0}}
domains:
  - name: bench
    hostnames: [{host}]
    origins: [{{url: "http://127.0.0.1:{origin_port}"}}]
"""


# --- processes ---------------------------------------------------------------


def answers(url: str, host: str | None = None, want: int | None = None) -> bool:
    headers = {"Host": host} if host else {}
    with contextlib.suppress(httpx.TransportError):
        status = httpx.get(url, headers=headers, timeout=1.0, verify=False).status_code  # --tls: our own CA
        return want is None or status == want
    return False


@dataclass
class Server:
    """A running cache under test: its name, base URL and how it marks a hit."""

    name: str
    url: str
    hit_header: str
    service: Service
    admin: str = ""
    """edgefleet's admin URL (metrics), empty for nginx."""


def start_nginx(
    stack: contextlib.ExitStack,
    tmp: Path,
    workers: int,
    origin_port: int,
    tcp_nopush: str,
    tls: TlsSetup | None = None,
    access_log: bool = False,
) -> Server:
    home = tmp / f"nginx-{workers}"
    home.mkdir()
    port = free_port()
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must write the cache in our tmp dir
    conf = NGINX_CONF.format(
        workers=workers, user=user, tmp=home, origin_port=origin_port, port=port, host=HOST, tcp_nopush=tcp_nopush
    )
    if tls is not None:
        conf = tls.nginx_conf(conf)
    if access_log:
        conf = accesslogbench.nginx_conf(conf, str(home))
    (home / "nginx.conf").write_text(conf)
    args = [NGINX, "-e", str(home / "nginx-error.log"), "-c", str(home / "nginx.conf"), "-p", str(home)]
    service = stack.enter_context(running(Service("nginx", args, home / "nginx-error.log")))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    wait_until(service, lambda: answers(url + "/echo", HOST), 15.0)
    return Server("nginx", url, "X-Cache-Status", service)


def start_edgefleet(
    stack: contextlib.ExitStack,
    tmp: Path,
    workers: int,
    origin_port: int,
    tls: TlsSetup | None = None,
    access_log: bool = False,
    name: str = "edgefleet",
) -> Server:
    home = tmp / f"{name}-{workers}"
    home.mkdir()
    port, admin_port = free_port(), free_port()
    config = CACHE_YAML.format(
        port=port, workers=workers, admin_port=admin_port, tmp=home, host=HOST, origin_port=origin_port
    )
    tls_port = free_port()
    if tls is not None:
        config = tls.cache_yaml(config, tls_port)
    if access_log:
        config = accesslogbench.cache_yaml(config)
    (home / "cache.yaml").write_text(config)
    args = [EDGEFLEET, "cache", "--config", str(home / "cache.yaml")]
    service = stack.enter_context(running(Service("edgefleet cache", args, home / "edgefleet.log")))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        healthy = answers(f"http://127.0.0.1:{admin_port}/healthz", want=200)  # every worker, TLS listener included
        return healthy or (tls is None and answers(url + "/", HOST))

    wait_until(service, ready, 20.0)
    if tls is not None:
        url = f"https://127.0.0.1:{tls_port}"
    return Server(name, url, "X-Cache", service, f"http://127.0.0.1:{admin_port}")


# --- load ----------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    p99_ms: float
    problems: str = ""


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise RuntimeError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rate = re.search(r"Requests/sec:\s*([0-9.]+)", output)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    if rate is None or p99 is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    problems = [m.group(0).strip() for m in re.finditer(r"(Non-2xx or 3xx responses|Socket errors):.*", output)]
    return WrkResult(float(rate.group(1)), parse_duration_ms(p99.group(1)), "; ".join(problems))


def run_wrk(url: str, connections: int, seconds: int, threads: int, extra: Sequence[str] = ()) -> WrkResult:
    """wrk against ``url``; ``extra``: more request header lines (``Connection: close`` for --tls handshakes)."""
    headers = [arg for line in (f"Host: {HOST}", *extra) for arg in ("-H", line)]
    args = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *headers, url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


def warm(server: Server, path: str) -> str:
    """Fetch ``path`` a few times; a warning unless the second answer was a cache hit."""
    marks = []
    for _ in range(3):
        response = httpx.get(server.url + path, headers={"Host": HOST}, timeout=30.0, verify=False)
        marks.append((response.status_code, response.headers.get(server.hit_header, "-")))
    if marks[1][0] == 200 and marks[1][1].upper().startswith("HIT"):
        return ""
    return f"{server.name}: {path} not a hit (answers: {', '.join(f'{code} {mark}' for code, mark in marks)})"


# --- collapse ------------------------------------------------------------------


@dataclass
class CollapseResult:
    origin_requests: int
    complete: int
    clients: int
    seconds: float


async def concurrent_gets(url: str, clients: int, size: int) -> int:
    """``clients`` simultaneous GETs of ``url``; how many got a 200 with the full body."""
    connector = aiohttp.TCPConnector(limit=clients, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)

    async def one(session: aiohttp.ClientSession) -> bool:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(url, headers={"Host": HOST}) as response:
                return response.status == 200 and len(await response.read()) == size
        return False

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(one(session) for _ in range(clients)))
    return sum(results)


def origin_count(origin_url: str, path: str) -> int:
    by_path = httpx.get(origin_url + "/__origin/stats", timeout=10.0).json()["by_path"]
    return sum(count for key, count in by_path.items() if key.partition("?")[0] == path)


def collapse(server: Server, origin_url: str, workers: int, clients: int) -> CollapseResult:
    path = f"/bytes/{COLLAPSE_SIZE}/collapse-{server.name}-{workers}"
    started = time.perf_counter()
    complete = asyncio.run(concurrent_gets(f"{server.url}{path}?delay={COLLAPSE_DELAY_MS}", clients, COLLAPSE_SIZE))
    elapsed = time.perf_counter() - started
    return CollapseResult(origin_count(origin_url, path), complete, clients, elapsed)


# --- the run -----------------------------------------------------------------------


@dataclass
class Row:
    workers: int
    size: str
    results: dict[str, WrkResult] = field(default_factory=dict)


def fmt_rate(result: WrkResult | None) -> str:
    return f"{result.requests_per_s:>15,.0f}" if result else f"{'n/a':>15}"


def fmt_p99(result: WrkResult | None) -> str:
    return f"{result.p99_ms:>11.2f} ms" if result else f"{'n/a':>14}"


def print_header() -> None:
    print(
        f"{'workers':>7}  {'size':>6}  {'nginx req/s':>15}  {'edgefleet req/s':>15}  {'ratio':>6}  "
        f"{'nginx p99':>14}  {'edgefleet p99':>14}",
        flush=True,
    )


def print_row(row: Row) -> None:
    nginx, edgefleet = row.results.get("nginx"), row.results.get("edgefleet")
    ratio = f"{edgefleet.requests_per_s / nginx.requests_per_s:6.2f}" if nginx and edgefleet else f"{'n/a':>6}"
    print(
        f"{row.workers:>7}  {row.size:>6}  {fmt_rate(nginx)}  {fmt_rate(edgefleet)}  {ratio}  "
        f"{fmt_p99(nginx)}  {fmt_p99(edgefleet)}",
        flush=True,
    )
    nolog = row.results.get(accesslogbench.NOLOG)
    if edgefleet and nolog:
        print(accesslogbench.with_and_without(edgefleet.requests_per_s, nolog.requests_per_s), flush=True)
    for name, result in row.results.items():
        if result.problems:
            print(f"         {name}: {result.problems}", flush=True)


def start_servers(
    stack: contextlib.ExitStack,
    tmp: Path,
    workers: int,
    origin_port: int,
    args: argparse.Namespace,
    tls: TlsSetup | None = None,
) -> list[Server]:
    servers = []
    logs = getattr(args, "access_log", "off") == "on"
    if args.only in ("both", "nginx"):
        servers.append(start_nginx(stack, tmp, workers, origin_port, args.nginx_tcp_nopush, tls, logs))
    if args.only in ("both", "edgefleet"):
        try:
            servers.append(start_edgefleet(stack, tmp, workers, origin_port, tls, logs))
            if logs:  # the same load without edgefleet's log: what the log costs
                servers.append(start_edgefleet(stack, tmp, workers, origin_port, tls, name=accesslogbench.NOLOG))
        except StartError as error:
            print(f"# skipping edgefleet ({workers} workers): `edgefleet cache` did not start: {error}", flush=True)
    return servers


def run_workers(tmp: Path, workers: int, origin_url: str, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """Throughput rows and collapse lines for one worker count; the servers stop on return."""
    rows, lines = [], []
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, tmp, workers, int(origin_url.rpartition(":")[2]), args)
        for label, size in args.sizes.items():
            row = Row(workers, label)
            for server in servers:
                warning = warm(server, f"/bytes/{size}")
                if warning:
                    print(f"# warning: {warning}", flush=True)
            for server in servers:  # one after the other, never together
                row.results[server.name] = run_wrk(
                    f"{server.url}/bytes/{size}", args.connections, args.seconds, args.threads
                )
            print_row(row)
            rows.append(row)
        for server in servers:
            result = collapse(server, origin_url, workers, args.clients)
            lines.append(
                f"collapse {server.name:<9} workers={workers}: {result.origin_requests} origin request(s) "
                f"for {result.clients} concurrent GETs ({COLLAPSE_DELAY_MS} ms origin), "
                f"{result.complete}/{result.clients} complete 200s in {result.seconds:.2f} s"
            )
    return rows, lines


def summary(rows: list[Row]) -> str:
    ratios = [
        r.results["edgefleet"].requests_per_s / r.results["nginx"].requests_per_s
        for r in rows
        if "edgefleet" in r.results and "nginx" in r.results
    ]
    if ratios:
        mean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        return (
            f"edgefleet/nginx throughput: geometric mean ratio {mean:.2f} over {len(ratios)} cases "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    best = max((r.results[n].requests_per_s for r in rows for n in r.results), default=0.0)
    ran = sorted({n for r in rows for n in r.results}) or ["nothing"]
    return f"only {', '.join(ran)} ran: no ratio; best {best:,.0f} req/s"


def raise_fd_limit() -> None:
    """1,000 concurrent client sockets need more than the usual soft limit of 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def run(args: argparse.Namespace) -> None:
    raise_fd_limit()
    with scratch_dir("cache-bench-", args.keep, "configs, logs, caches") as tmp:
        os.chmod(tmp, 0o755)  # nginx workers may run as another user
        run_in(tmp, args)


def run_in(tmp: Path, args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        origin = Service(
            "origin",
            [sys.executable, "-m", "edgefleet.demo.origin", "--listen", "127.0.0.1:0"],
            tmp / "origin.log",
            stdout_pipe=True,
        )
        stack.enter_context(running(origin))
        origin_url = f"http://127.0.0.1:{announced_port(origin, 'origin listening on ', 15.0)}"
        print(
            f"# {os.cpu_count()} CPUs; wrk -t{args.threads} -c{args.connections} -d{args.seconds}s; "
            f"origin {origin_url}; servers: {'edgefleet log on/off' if args.log_ab else args.only}; "
            f"nginx tcp_nopush {args.nginx_tcp_nopush}",
            flush=True,
        )
        if not args.log_ab:
            print(accesslogbench.describe() if args.access_log == "on" else "# access logs off (--access-log on)")
            print_header()
        if args.tls:  # HTTPS hits and handshakes instead of the plain rows (bench/tlsbench.py)
            run_tls(tmp, origin_url, args, sys.modules[__name__])
            return
        if args.log_ab:  # edgefleet log on against log off, alternating rounds (bench/accesslogbench.py)
            accesslogbench.run_ab(tmp, origin_url, args, sys.modules[__name__])
            return
        rows, collapses = [], []
        for workers in args.workers:
            more_rows, more_lines = run_workers(tmp, workers, origin_url, args)
            rows += more_rows
            collapses += more_lines
        for line in collapses:
            print(line, flush=True)
        print(summary(rows), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per server and size")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--clients", type=int, default=1000, help="concurrent GETs in the collapse test")
    parser.add_argument("--only", choices=("both", "nginx", "edgefleet"), default="both")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per load, 1 KB objects only")
    parser.add_argument(
        "--nginx-tcp-nopush",
        choices=("on", "off"),
        default="off",
        help="nginx tcp_nopush; 'on' stalls 100 KB responses ~40 ms on loopback (delayed ACK)",
    )
    parser.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="off",
        help="'on': nginx and edgefleet both log every request to a file, and a third run shows edgefleet "
        "without its log (bench/accesslogbench.py)",
    )
    parser.add_argument(
        "--log-ab",
        action="store_true",
        help="edgefleet with its access log against edgefleet without, in alternating rounds (no nginx): "
        "median with/without ratio and spread, worker CPU per request (bench/accesslogbench.py)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="--log-ab: rounds per size (each runs both servers)")
    parser.add_argument(
        "--pin", action="store_true", help="--log-ab: edgefleet's workers on CPUs 0..n-2, wrk on the last CPU"
    )
    parser.add_argument(
        "--tls", action="store_true", help="1 KB hits over kept-alive TLS and new handshakes/s (bench/tlsbench.py)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs and logs)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.log_ab and args.tls:
        parser.error("--log-ab and --tls are separate runs: pick one")
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    args.sizes = {"1 KB": SIZES["1 KB"]} if args.quick else dict(SIZES)
    if args.quick:
        args.seconds = min(args.seconds, 2)
    return args


def main() -> None:
    args = parse_args()
    require((WRK, NGINX), "nginx, wrk")
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
