"""Smoke test of bench/fleet_sim.py: 20 simulated agents in 2 workers against a real cloud.

Runs the tool as a user does (its push scenario, the default) and checks
that it prints its line, writes its JSON, that every agent committed every
write (commits == nodes x writes), and that it left no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NODES, WRITES = 20, 3


def test_push_scenario_counts_every_commit(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    state = tmp_path / "state"
    args = [
        sys.executable,
        str(ROOT / "bench" / "fleet_sim.py"),
        "--nodes",
        str(NODES),
        "--workers",
        "2",
        "--nodes-per-site",
        "5",
        "--idle-seconds",
        "2",
        "--settle",
        "0.5",
        "--writes",
        str(WRITES),
        "--write-gap",
        "0.02",
        "--state",
        str(state),
        "--json",
        str(out),
    ]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the tool's scratch directory (worker specs) goes here
    run = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout + run.stderr

    lines = [line for line in run.stdout.splitlines() if line.startswith("push")]
    assert len(lines) == 1 and f"commits {NODES * WRITES}/{NODES * WRITES}" in lines[0], run.stdout
    assert "targets:" in run.stdout

    (result,) = json.loads(out.read_text())["results"]
    assert result["nodes"] == NODES and result["workers"] == 2
    assert result["join"]["joined"] == NODES and result["join"]["failed"] == 0
    assert result["commits"] == result["commits_expected"] == NODES * WRITES
    assert 0 < result["push_p50_ms"] <= result["push_p99_ms"] <= result["push_max_ms"]
    for figure in ("hub_cpu_pct_idle", "hub_rss_mib", "store_writes_per_s_idle", "sim_rss_mib", "load_avg_idle"):
        assert result[figure] is not None, figure
    assert result["connected_end"] == NODES

    credentials = json.loads((state / f"push-sqlite-{NODES}" / "credentials.json").read_text())
    assert len(credentials) == NODES  # cached for the next run against the same store

    for pattern, what in ((f"fleet_sim.py worker {tmp_path}", "worker"), (f"--store sqlite:///{state}", "cloud")):
        left = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
        assert left.stdout == "", f"{what} processes left behind: {left.stdout}"
