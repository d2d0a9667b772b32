"""Smoke test of bench/rollout_scale.py: a rollout over 20 simulated agents in 4 sites against a real cloud.

Runs the tool as a user does and checks that the rollout completes (every
node moved once, every agent reports the new revision), that it prints its
table and writes its figures, and that it left no process behind.
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
NODES, SITES = 20, 4


def test_rollout_scenario_completes_and_reports_figures(tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    state = tmp_path / "state"
    args = [
        sys.executable,
        str(ROOT / "bench" / "rollout_scale.py"),
        "--nodes",
        str(NODES),
        "--sites",
        str(SITES),
        "--workers",
        "2",
        "--timeout",
        "40",
        "--ready-timeout",
        "30",
        "--idle-seconds",
        "1",
        "--state",
        str(state),
        "--json",
        str(out),
    ]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the tool's scratch directory (worker specs) goes here
    run = subprocess.run(args, capture_output=True, text=True, timeout=90, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "controller CPU / step" in run.stdout and "FAILED" not in run.stdout, run.stdout + run.stderr

    result = json.loads(out.read_text())
    assert result["phase"] == "Completed", result.get("message")
    assert (result["from_revision"], result["to_revision"]) == (1, 2)
    assert result["join"]["joined"] == NODES and result["agents_on_target"] == NODES
    assert result["node_steps"] == NODES  # each node moved once
    assert result["steps_per_site"] == NODES // SITES and result["ideal_seconds"] == 0
    assert 0 < result["total_seconds"] < 40 and result["seconds_per_step"] > 0
    assert result["controller_cpu_ms_per_step"] > 0 and result["cloud_cpu_ms_per_step"] > 0
    assert result["rounds"] >= 1 and result["status_writes"] >= 1 and result["idle_rounds_per_s"] is not None
    breakdown = result["breakdown"]
    assert breakdown["steps_seen"] == NODES and breakdown["agent_s"]["p50"] >= 0 and breakdown["cloud_s"]["p50"] > 0

    for pattern, what in ((f"fleet_sim.py worker {tmp_path}", "worker"), (f"--store sqlite:///{state}", "cloud")):
        left = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
        assert left.stdout == "", f"{what} processes left behind: {left.stdout}"
