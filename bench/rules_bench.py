"""Edge rules benchmark: 1 KB cache hits with 0, 10 and 50 typical rules on the Domain, same load.

Starts the programmable origin, then for each rule count one ``edgefleet cache`` (same worker count,
memory tier, access log off) whose Domain has that many rules, warms a 1 KB object (the second
request must be a hit) and loads it with ``wrk``, one server at a time. The loads are interleaved
over ``--rounds`` rounds (0, 10, 50, 0, 10, 50...) and the best of each count is kept, so that a busy
moment of a shared machine does not land on one count only. A row gives req/s, p99 and the ratio to
the run without rules (the issue's target: >= 0.85 with 10 rules).

"Typical" rules, as a CDN customer writes them: redirects of old paths, a deny of an admin path,
token auth on a private prefix, a rate limit on a login path, a rewrite, an A/B split on a landing
page, CORS on an API prefix, a cache TTL override on static files, and security response headers on
every answer. The hit's path matches only the last one (and the TTL override), so the run measures
the cost every request pays: the request phase's conditions that fail (cheapest first) and the
response header ops applied to the hit.

    .venv/bin/python bench/rules_bench.py [--workers 1] [--seconds 8] [--connections 32]
    .venv/bin/python bench/rules_bench.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import Service, announced_port, require, run_main, running, scratch_dir, wait_until
from bench.cache_vs_nginx import HOST, WRK, WrkResult, answers, raise_fd_limit, run_wrk
from tests.cloudproc import EDGEFLEET, free_port

PATH = "/bytes/1024/static/app.js"
RULE_COUNTS = (0, 10, 50)


def typical_rules(count: int) -> list[dict[str, Any]]:
    """``count`` rules of the kinds customers write (see the module docstring), the catch-all header rule last."""
    kinds = [
        lambda n: {"match": {"path": {"prefix": f"/old{n}/"}}, "actions": [{"redirect": {"location": "/new${path}"}}]},
        lambda n: {"match": {"path": {"prefix": f"/admin{n}"}}, "actions": [{"deny": {"status": 403}}]},
        lambda n: {
            "match": {"path": {"prefix": f"/private{n}/"}},
            "actions": [{"tokenAuth": {"keys": [{"secret": "sign", "key": "k"}]}}],
        },
        lambda n: {
            "match": {"path": {"exact": f"/login{n}"}, "method": {"oneOf": ["POST"]}},
            "actions": [{"rateLimit": {"requestsPerSecond": 5, "burst": 10}}],
        },
        lambda n: {"match": {"path": {"regex": f"^/v{n}/(.*)$"}}, "actions": [{"rewrite": {"path": "/api/${1}"}}]},
        lambda n: {
            "match": {"path": {"prefix": f"/landing{n}/"}},
            "actions": [
                {
                    "split": {
                        "name": f"exp{n}",
                        "variants": [{"name": "a", "pathPrefix": "/a"}, {"name": "b", "pathPrefix": "/b"}],
                    }
                }
            ],
        },
        lambda n: {
            "match": {"path": {"prefix": f"/api{n}/"}},
            "actions": [{"cors": {"allowOrigins": ["https://app.example"]}}],
        },
        lambda n: {
            "match": {"path": {"glob": f"/assets{n}/**.css"}, "headers": [{"name": "Accept", "present": True}]},
            "actions": [{"requestHeaders": {"set": {"X-Asset": "css"}}}],
        },
    ]
    rules: list[dict[str, Any]] = []
    if count == 0:
        return rules
    body = count - 2  # the TTL override and the security headers close the list
    for index in range(body):
        rules.append({"name": f"r{index}", **kinds[index % len(kinds)](index)})
    rules.append(
        {"name": "static-ttl", "match": {"path": {"prefix": "/bytes/"}}, "actions": [{"cache": {"ttl": 3600}}]}
    )
    rules.append(
        {
            "name": "security-headers",
            "phase": "clientResponse",
            "actions": [
                {
                    "responseHeaders": {
                        "set": {"X-Frame-Options": "DENY", "Strict-Transport-Security": "max-age=31536000"}
                    }
                }
            ],
        }
    )
    return rules


def cache_config(port: int, admin_port: int, workers: int, origin_port: int, home: Path, rules: int) -> str:
    config = {
        "node": "bench",
        "listen": f"127.0.0.1:{port}",
        "workers": workers,
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": "bench-admin-token"},
        "storage": {"memoryBytes": 268435456, "disk": {"path": str(home / "efcache"), "maxBytes": 2147483648}},
        "accessLog": {"sample": 0},
        "secrets": {"sign": {"k": "bench-signing-key"}},
        "domains": [
            {
                "name": "bench",
                "hostnames": [HOST],
                "origins": [{"url": f"http://127.0.0.1:{origin_port}"}],
                "rules": typical_rules(rules),
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def start_cache(
    stack: contextlib.ExitStack, tmp: Path, rules: int, origin_port: int, args: argparse.Namespace
) -> tuple[str, str]:
    """A cache whose Domain has ``rules`` rules, its object warmed; (URL of the object, a warning or '')."""
    home = tmp / f"rules-{rules}"
    home.mkdir()
    port, admin_port = free_port(), free_port()
    (home / "cache.yaml").write_text(cache_config(port, admin_port, args.workers, origin_port, home, rules))
    service = Service("edgefleet cache", [EDGEFLEET, "cache", "--config", str(home / "cache.yaml")], home / "log")
    stack.enter_context(running(service))
    wait_until(service, lambda: answers(f"http://127.0.0.1:{admin_port}/healthz", want=200), 20.0)
    url = f"http://127.0.0.1:{port}{PATH}"
    marks = [httpx.get(url, headers={"Host": HOST}, timeout=10).headers.get("x-cache", "-") for _ in range(3)]
    return url, "" if marks[1].startswith("HIT") else f"not a hit ({marks})"


def run(args: argparse.Namespace) -> None:
    raise_fd_limit()
    with scratch_dir("rules-bench-", args.keep, "configs, logs, caches") as tmp, contextlib.ExitStack() as stack:
        origin = Service(
            "origin",
            [sys.executable, "-m", "edgefleet.demo.origin", "--listen", "127.0.0.1:0"],
            tmp / "origin.log",
            stdout_pipe=True,
        )
        stack.enter_context(running(origin))
        origin_port = announced_port(origin, "origin listening on ", 15.0)
        print(
            f"# {os.cpu_count()} CPUs; 1 KB hits; wrk -t{args.threads} -c{args.connections} -d{args.seconds}s; "
            f"{args.workers} worker(s); access log off; {args.rounds} interleaved round(s), best of each kept",
            flush=True,
        )
        caches = {count: start_cache(stack, tmp, count, origin_port, args) for count in args.rules}
        best: dict[int, WrkResult] = {}
        for _ in range(args.rounds):  # interleaved, so that a busy moment of the machine hits every count alike
            for count, (url, _) in caches.items():
                result = run_wrk(url, args.connections, args.seconds, args.threads)
                if count not in best or result.requests_per_s > best[count].requests_per_s:
                    best[count] = result
        print(f"{'rules':>6} {'req/s':>10} {'p99 ms':>8} {'ratio':>6}  notes", flush=True)
        base = best[0].requests_per_s
        for count, result in best.items():
            notes = "; ".join(note for note in (caches[count][1], result.problems) if note)
            ratio = result.requests_per_s / base
            print(f"{count:>6} {result.requests_per_s:>10.0f} {result.p99_ms:>8.2f} {ratio:>6.2f}  {notes}", flush=True)
        print("# target: ratio >= 0.85 with 10 rules (issue 17)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="cache worker processes")
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per rule count")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rules", default=",".join(map(str, RULE_COUNTS)), help="rule counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each count is kept")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per load, 2 rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs and logs)")
    args = parser.parse_args(argv)
    args.rules = [int(n) for n in args.rules.split(",") if n.strip()]
    if 0 not in args.rules:
        args.rules.insert(0, 0)  # the ratio's reference
    if args.quick:
        args.seconds = min(args.seconds, 2)
        args.rounds = min(args.rounds, 2)
    return args


def main() -> None:
    args = parse_args()
    require((WRK,), "wrk")
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
