"""Edge rules engine micro-benchmark: microseconds per request phase with 0, 10 and 50 typical rules.

Runs the pure engine (``edgefleet.cache.policy.rules``) in this process, no sockets: the cost the
cache's request path pays per request for ``on_request`` and ``on_client_response``, on the hit path of
``bench/rules_bench.py`` (a static file that one TTL rule matches), on a path no rule's literal path test
admits, and on a path whose regex rule matches and rewrites. It isolates the engine from the server,
so a regression in compile or match shows here before it shows in ``bench/rules_bench.py``'s req/s.
The figures are best-of-five means; on a shared machine compare rows of one run, not runs.

    .venv/bin/python bench/rules_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rules_bench import typical_rules
from pydantic import TypeAdapter

from edgefleet.api.rules import Rule
from edgefleet.cache.policy.rules import CompileEnv, Program, RequestInfo, compile_rules

HEADERS = [("Host", "bench.test"), ("User-Agent", "wrk"), ("Accept", "*/*")]
PATHS = {
    "static hit (1 TTL rule matches)": "/bytes/1024/static/app.js",
    "no rule admits the path": "/other/1024/static/app.js",
    "regex rewrite matches": "/v4/users/42",
}


def per_call(function: Callable[[], object], number: int) -> float:
    """Microseconds per call, best of five runs."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def measure(program: Program, path: str, number: int) -> tuple[float, float]:
    request = RequestInfo("GET", "http", "bench.test", path, "", HEADERS, "127.0.0.1")
    outcome = program.on_request(request, 1000.0)
    first = per_call(lambda: program.on_request(request, 1000.0), number)
    second = per_call(lambda: program.on_client_response(request, outcome, 200, HEADERS), number)
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    number = 2000 if args.quick else 50000
    adapter = TypeAdapter(list[Rule])
    print(f"{'rules':>5}  {'path':<34} {'on_request us':>14} {'on_client_response us':>22}")
    for count in (0, 10, 50):
        program = compile_rules(adapter.validate_python(typical_rules(count)), CompileEnv(secrets={"sign": {"k": "x"}}))
        if program is None:
            print(f"{count:>5}  {'(no program: engine skipped)':<34} {'-':>14} {'-':>22}")
            continue
        for label, path in PATHS.items():
            first, second = measure(program, path, number)
            print(f"{count:>5}  {label:<34} {first:>14.2f} {second:>22.2f}")


if __name__ == "__main__":
    main()
