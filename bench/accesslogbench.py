"""``bench/cache_vs_nginx.py --access-log on``: both caches log every request to a file.

How: nginx gets ``access_log <tmp>/nginx-access.log edgefleet_json`` with a
``log_format`` that writes the fields of edgefleet's default JSON line
(``escape=json``) and NO ``buffer=``/``flush=``: that is what a default
nginx does, one ``write()`` per request. edgefleet runs with its default
``accessLog`` (JSON lines to ``access.log`` beside its config, written in
batches every 200 ms or 256 KiB). A third server, edgefleet with its log off,
runs the same load, so one run also shows what the log costs edgefleet
(target: at most 10% slower).

``--access-log off`` (the default) keeps the figures of earlier runs: both
logs off.

``--log-ab [--rounds 6]``: edgefleet with its default log (A) against edgefleet with its log off (B), no
nginx. One run of wrk is too noisy on a shared machine for a 10% target (the same pair swung from 0.68 to
1.01), so both servers run side by side and wrk loads them in short alternating rounds (A B, B A, A B...:
a drift of the machine's load falls on both alike). Each round gives the with/without ratio of req/s and
of worker CPU per request (from /proc: what the log costs the worker, whatever else the machine does); the
summary gives their medians and spread (min-max) and the log's cost in microseconds of worker CPU a
request. Target: median req/s ratio >= 0.90. ``--pin`` puts the workers and wrk on different CPUs: on a
shared 2-core machine, wrk woken on the worker's CPU preempts it after its socket writes, and the more CPU
the worker uses (log on), the more often (``perf`` showed 7% of the worker's time in the switch, log on,
against 1% off).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.tlsbench import worker_pids

NGINX_LOG_FORMAT = (
    'log_format edgefleet_json escape=json \'{"time":"$time_iso8601","client":"$remote_addr",'
    '"method":"$request_method","host":"$host","target":"$request_uri","protocol":"$server_protocol",'
    '"status":$status,"bytes":$body_bytes_sent,"cache":"$upstream_cache_status",'
    '"upstreamMs":"$upstream_response_time","ms":$request_time,"tls":"$ssl_protocol",'
    '"userAgent":"$http_user_agent","referer":"$http_referer","node":"bench","domain":"$server_name"}\';'
)
"""nginx's line with the fields of edgefleet's default JSON line."""

NOLOG = "edgefleet-nolog"
"""The name of the third server: edgefleet without its access log."""


def nginx_conf(conf: str, home: str) -> str:
    """nginx.conf text with the access log on (unbuffered, nginx's default)."""
    logging = f"    {NGINX_LOG_FORMAT}\n    access_log {home}/nginx-access.log edgefleet_json;"
    return conf.replace("    access_log off;", logging)


def cache_yaml(config: str) -> str:
    """cache.yaml text with edgefleet's default access log (the bench's config turns it off)."""
    return config.replace("accessLog: {sample: 0}\n", "")


def describe() -> str:
    return (
        "# access logs on: nginx access_log <tmp>/nginx-access.log, JSON with edgefleet's fields, unbuffered "
        "(one write per request, nginx's default); edgefleet's default accessLog (JSON lines, batched every "
        f"200 ms or 256 KiB); '{NOLOG}': edgefleet with its log off, same load"
    )


def with_and_without(with_log: float, without_log: float) -> str:
    """The extra line under a row: what the log costs edgefleet."""
    return (
        f"         edgefleet without access log: {without_log:,.0f} req/s; "
        f"with/without {with_log / without_log:.2f} (target >= 0.90)"
    )


# --- --log-ab ---------------------------------------------------------------------------------------

TARGET = 0.90
"""With/without req/s the log must keep (issue 14: at most 10% slower)."""


@dataclass
class Load:
    """One wrk run: req/s, and the worker CPU seconds per request, all and user-space only."""

    rate: float
    cpu: float
    user: float


@dataclass
class Round:
    """One A/B round: a load with the log on and one with it off."""

    on: Load
    off: Load

    @property
    def rate_on(self) -> float:
        return self.on.rate

    @property
    def rate_off(self) -> float:
        return self.off.rate

    @property
    def cpu_on(self) -> float:
        return self.on.cpu

    @property
    def cpu_off(self) -> float:
        return self.off.cpu

    @property
    def rate_ratio(self) -> float:
        return self.rate_on / self.rate_off if self.rate_off else 0.0

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_on / self.cpu_off if self.cpu_off else 0.0


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of ``pids`` so far (processes gone count 0).

    User time apart: a worker preempted on its way out of a socket write (wrk woken on the same core) pays
    system time that swings from run to run; the log's own work (formatting) is user time.
    """
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    ticks = os.sysconf("SC_CLK_TCK")
    return user / ticks, system / ticks


def load(base: ModuleType, server: Any, path: str, args: argparse.Namespace) -> Load:
    """One wrk run against ``server``: req/s and the worker CPU seconds it took per request."""
    pids = worker_pids(server)
    user, system = cpu_split(pids)
    result = base.run_wrk(f"{server.url}{path}", args.connections, args.seconds, args.threads)
    if result.problems:
        print(f"         {server.name}: {result.problems}", flush=True)
    requests = max(result.requests_per_s * args.seconds, 1.0)
    user_after, system_after = cpu_split(pids)
    spent_user = user_after - user
    return Load(result.requests_per_s, (spent_user + system_after - system) / requests, spent_user / requests)


def one_round(base: ModuleType, servers: tuple[Any, Any], path: str, index: int, args: argparse.Namespace) -> Round:
    """Log on then off in even rounds, off then on in odd ones."""
    on, off = servers
    if index % 2 == 0:
        with_log = load(base, on, path, args)
        return Round(with_log, load(base, off, path, args))
    without_log = load(base, off, path, args)
    return Round(load(base, on, path, args), without_log)


def print_round(index: int, done: Round) -> None:
    print(
        f"  round {index + 1:>2}  log on {done.rate_on:>9,.0f} req/s  off {done.rate_off:>9,.0f} req/s  "
        f"ratio {done.rate_ratio:5.2f}  |  worker CPU/request on {done.cpu_on * 1e6:6.1f} us  "
        f"off {done.cpu_off * 1e6:6.1f} us  ratio {done.cpu_ratio:5.2f}  (user on {done.on.user * 1e6:5.1f} us  "
        f"off {done.off.user * 1e6:5.1f} us)",
        flush=True,
    )


def ab_summary(label: str, rounds: list[Round]) -> str:
    """Medians and spread of the rounds, and the verdict against the target."""
    rates = [done.rate_ratio for done in rounds]
    cpus = [done.cpu_ratio for done in rounds]
    cost = statistics.median(done.cpu_on - done.cpu_off for done in rounds) * 1e6
    user_cost = statistics.median(done.on.user - done.off.user for done in rounds) * 1e6
    median = statistics.median(rates)
    verdict = "met" if median >= TARGET else "NOT met"
    return (
        f"{label}: with/without access log over {len(rounds)} rounds: req/s median {median:.2f} "
        f"(spread {min(rates):.2f}-{max(rates):.2f}; target >= {TARGET:.2f}: {verdict}); "
        f"worker CPU/request median {statistics.median(cpus):.2f} (spread {min(cpus):.2f}-{max(cpus):.2f}: "
        f"CPU-bound, that is {1 / statistics.median(cpus):.2f} of the req/s); "
        f"the log costs {cost:.2f} us of worker CPU a request ({user_cost:.2f} us of user CPU)"
    )


def pin(servers: tuple[Any, Any]) -> str:
    """``--pin``: the servers' workers on every CPU but the last, this process (and so wrk) on the last."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "# --pin: fewer than 2 CPUs, nothing pinned"
    for server in servers:
        for pid in worker_pids(server):
            os.sched_setaffinity(pid, cpus[:-1])
    os.sched_setaffinity(0, cpus[-1:])
    return f"# --pin: workers on CPUs {cpus[:-1]}, wrk on CPU {cpus[-1]}"


def run_ab(tmp: Path, origin_url: str, args: argparse.Namespace, base: ModuleType) -> None:
    """The --log-ab run (module docstring); ``base`` is bench/cache_vs_nginx.py, whose servers and wrk it uses."""
    origin_port = int(origin_url.rpartition(":")[2])
    print(
        f"# --log-ab: edgefleet with its default access log against edgefleet with it off, {args.rounds} "
        f"alternating rounds of {args.seconds} s per server and size",
        flush=True,
    )
    for workers in args.workers:
        with contextlib.ExitStack() as stack:
            on = base.start_edgefleet(stack, tmp, workers, origin_port, access_log=True, name="edgefleet-log")
            off = base.start_edgefleet(stack, tmp, workers, origin_port, name=NOLOG)
            if args.pin:
                print(pin((on, off)), flush=True)
            for label, size in args.sizes.items():
                path = f"/bytes/{size}"
                for server in (on, off):
                    warning = base.warm(server, path)
                    if warning:
                        print(f"# warning: {warning}", flush=True)
                print(f"# workers={workers} {label}", flush=True)
                rounds = []
                for index in range(args.rounds):
                    rounds.append(one_round(base, (on, off), path, index, args))
                    print_round(index, rounds[-1])
                print(ab_summary(f"workers={workers} {label}", rounds), flush=True)
