"""``bench/cache_vs_nginx.py --tls``: HTTPS hits and new TLS handshakes, edgefleet against nginx.

How: one ECDSA P-256 certificate for ``bench.test`` (signed by a throwaway CA, :mod:`edgefleet.tls`) is
served by both: nginx gets ``listen ... ssl`` with ``ssl_protocols TLSv1.2 TLSv1.3`` and
``ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20`` (its defaults otherwise: session tickets on, no shared
session cache), edgefleet gets ``tlsListen`` and the certificate (the same TLS 1.2 suites, OpenSSL's TLS
1.3 defaults, tickets on). For each worker count, after warming, ``wrk`` loads each server in turn:

- **keep-alive**: 1 KB hits over kept-alive TLS connections (one handshake per connection, then only
  record encryption): what serving costs over TLS;
- **handshakes**: the same with ``Connection: close``, so each request opens a connection and makes a
  handshake: new handshakes per second.

wrk keeps the session of a connection it closes cleanly and offers it on the next connect (``SSL_clear``
keeps it), so most of these handshakes are *resumptions* (TLS 1.3 PSK with a fresh ECDHE share: no
certificate, no signature), for both servers alike. The edgefleet side's counters say how many were
resumed; nginx's are not read. A full-handshake figure would need tickets off on both sides, which the
cache does not offer as a setting.

Each row also gives the CPU time the servers' worker processes spent per request (from
``/proc/<pid>/stat``, the children of each server's master): on a busy machine req/s swing with the
neighbours, CPU per request much less, so its ratio is the steadier comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from edgefleet.tls import create_ca, issue_server_cert

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True)
class TlsSetup:
    """The certificate both servers present, and how each one's config says so."""

    cert_file: Path
    key_file: Path

    def nginx_conf(self, conf: str) -> str:
        """The plain nginx.conf of the benchmark, its listener turned into a TLS one."""
        conf = re.sub(r"listen (127\.0\.0\.1:\d+)", r"listen \1 ssl", conf, count=1)
        directives = (
            f"ssl_certificate {self.cert_file};\n        ssl_certificate_key {self.key_file};\n"
            f"        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_ciphers {CIPHERS};\n"
        )
        return re.sub(r"(server_name [^;]+;\n)", lambda m: m.group(1) + "        " + directives, conf, count=1)

    def cache_yaml(self, config: str, tls_port: int) -> str:
        """The plain cache config of the benchmark plus ``tlsListen`` and the certificate."""
        return config + (
            f"tlsListen: 127.0.0.1:{tls_port}\n"
            f"certificates: [{{name: bench, certFile: {self.cert_file}, keyFile: {self.key_file}}}]\n"
        )


def make_setup(tmp: Path, host: str) -> TlsSetup:
    """One ECDSA P-256 certificate for ``host`` and 127.0.0.1, written to ``tmp``."""
    pair = issue_server_cert(create_ca("bench CA"), [host, "127.0.0.1"])
    setup = TlsSetup(tmp / "bench.crt", tmp / "bench.key")
    setup.cert_file.write_bytes(pair.cert_pem)
    setup.key_file.write_bytes(pair.key_pem)
    setup.key_file.chmod(0o644)  # nginx workers may run as another user
    return setup


def handshake_counts(admin_url: str) -> tuple[float, float]:
    """(handshakes, resumed) from edgefleet's metrics."""
    text = httpx.get(f"{admin_url}/metrics", headers={"Cache-Control": "no-cache"}, timeout=5).text
    values = dict(re.findall(r"^(edgefleet_cache_tls_(?:handshakes|resumed)_total) (\S+)$", text, re.MULTILINE))
    return float(values.get("edgefleet_cache_tls_handshakes_total", 0)), float(
        values.get("edgefleet_cache_tls_resumed_total", 0)
    )


def run_tls(tmp: Path, origin_url: str, args: argparse.Namespace, base: ModuleType) -> None:
    """The --tls run (module docstring); ``base`` is bench/cache_vs_nginx.py, whose servers and wrk it uses."""
    setup = make_setup(tmp, base.HOST)
    origin_port = int(origin_url.rpartition(":")[2])
    ratios = []
    for workers in args.workers:
        with contextlib.ExitStack() as stack:
            servers = base.start_servers(stack, tmp, workers, origin_port, args, tls=setup)
            for server in servers:
                warning = base.warm(server, "/bytes/1024")
                if warning:
                    print(f"# warning: {warning}", flush=True)
            for label, extra in (("keep-alive 1 KB", ()), ("handshakes 1 KB", ("Connection: close",))):
                row = base.Row(workers, label)
                before = {s.name: handshake_counts(s.admin) for s in servers if s.admin}
                cpu = {}
                for server in servers:
                    pids = worker_pids(server)
                    started = cpu_seconds(pids)
                    result = base.run_wrk(
                        f"{server.url}/bytes/1024", args.connections, args.seconds, args.threads, extra
                    )
                    row.results[server.name] = result
                    cpu[server.name] = (cpu_seconds(pids) - started) / max(result.requests_per_s * args.seconds, 1)
                base.print_row(row)
                print_cpu(cpu)
                for server in servers:
                    if server.name in before:
                        print_resumed(server.name, before[server.name], handshake_counts(server.admin))
                if len(row.results) == 2:
                    ratios.append(row.results["edgefleet"].requests_per_s / row.results["nginx"].requests_per_s)
    if ratios:
        print(f"edgefleet/nginx over TLS: min ratio {min(ratios):.2f} (target 0.8)", flush=True)


def print_resumed(name: str, before: tuple[float, float], after: tuple[float, float]) -> None:
    handshakes, resumed = after[0] - before[0], after[1] - before[1]
    share = f"{resumed / handshakes:.0%}" if handshakes else "n/a"
    print(f"         {name}: {handshakes:,.0f} handshakes, {resumed:,.0f} resumed ({share})", flush=True)


def worker_pids(server: Any) -> list[int]:
    """The worker processes of a server: the children of its master (nginx's and edgefleet's alike)."""
    proc = server.service.proc
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of ``pids`` so far (processes gone count 0)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def print_cpu(cpu: dict[str, float]) -> None:
    parts = [f"{name} {seconds * 1e6:,.0f} us" for name, seconds in cpu.items()]
    ratio = f", nginx/edgefleet {cpu['nginx'] / cpu['edgefleet']:.2f}" if len(cpu) == 2 and cpu["edgefleet"] else ""
    print(f"         worker CPU per request: {', '.join(parts)}{ratio}", flush=True)
