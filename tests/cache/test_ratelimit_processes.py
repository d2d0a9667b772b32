"""Several real processes hammering the same keys through one shared rate-limit region.

Each child maps the region the test made (the descriptor passed as a cache master passes it to its
workers); once all are ready they start together, take tokens for a few keys as fast as they can for
half a second, and report what they were admitted and when they started and stopped (the machine's
monotonic clock, the one the table reads). Whatever the interleaving, a key's admissions over all the
processes are at most ``burst + rate * (last stop - first start)``: the takes are atomic per set, so no
slack is needed beyond float rounding. Per-process buckets would admit about three times as much; and
takes without the set lock lose updates under this contention.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edgefleet.cache.storage.ratetable import BucketTable, create_region

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
RATE = 200.0
BURST = 50
KEYS = ("203.0.113.1", "203.0.113.2")
SECONDS = 0.5


def hammer(fd: int, seconds: float) -> None:
    """A child: take tokens for ``KEYS`` in turn for ``seconds``; print the counts and the times as JSON."""
    table = BucketTable(fd)
    limiter = table.limiters_for("demo")("limit/0", RATE, BURST, 16)
    admitted = dict.fromkeys(KEYS, 0)
    takes = 0
    print("ready", flush=True)
    sys.stdin.readline()  # every child is ready: go together
    start = time.monotonic()
    stop = start + seconds
    while time.monotonic() < stop:
        for key in KEYS:
            takes += 1
            if limiter.take(key, 0.0) is None:
                admitted[key] += 1
    end = time.monotonic()
    print(json.dumps({"admitted": admitted, "start": start, "end": end, "takes": takes}))


def test_processes_sharing_a_region_never_get_more_than_rate_times_time_plus_burst() -> None:
    fd = create_region(1024)
    code = f"from tests.cache.test_ratelimit_processes import hammer; hammer({fd}, {SECONDS})"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            pass_fds=[fd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:  # all ready: let them go at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [json.loads(child.communicate(timeout=60)[0]) for child in children]
        assert all(child.returncode == 0 for child in children)
    finally:  # a failed assertion must not leave children running into the next test
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate()
        os.close(fd)
    start = min(report["start"] for report in reports)
    end = max(report["end"] for report in reports)
    for key in KEYS:
        admitted = sum(report["admitted"][key] for report in reports)
        assert BURST <= admitted <= BURST + RATE * (end - start) + 1e-6, (key, admitted, end - start, reports)
    assert all(report["takes"] > report["admitted"][KEYS[0]] for report in reports)  # each was refused too
