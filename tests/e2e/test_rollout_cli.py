"""``edgefleet rollout ...`` against a real cloud process and its workload controller.

The fleet is the examples' sites and nodes, with no agent: every node is
not Ready, so a rollout lists them all as waiting, stops at a pause step
and completes past the batches. That is enough to steer real rollouts with
the CLI: ``resume`` ends a pause step (the controller completes the
rollout), ``abort`` ends one as Aborted, ``undo`` puts the running
template back, while ``status -w`` processes follow with the API's watch
and exit 0, 1 or 2. The commands run in-process (typer's CliRunner, the
app the console script runs), ``status -w`` as real ``edgefleet``
processes. Exact rendering of hand-made states is tests/cli/test_rollout.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.cli.main import app
from tests import waiting
from tests.cloudproc import EDGEFLEET, CloudProcess, running_cloud
from tests.fleet import replace_object

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API = "/apis/edgefleet.io/v1"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
NODES = ["ams-edge-1", "ams-edge-2", "par-edge-1", "par-edge-2"]
TEMPLATES: dict[int, dict[str, Any]] = {
    1: {"command": ["sleep", "1000"]},
    2: {"command": ["sleep", "2000"], "env": [{"name": "MODE", "value": "two"}]},
    3: {
        "command": ["sleep", "3000"],
        "args": ["--x"],
        "env": [{"name": "MODE", "value": "three"}],
        "healthProbe": {"tcp": {"port": 8080}, "periodSeconds": 5},
    },
}


def digest(number: int) -> str:
    return template_revision(WorkloadTemplate.model_validate(TEMPLATES[number]))


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path) as proc:
        with proc.client() as api:
            for plural in ("sites", "nodes"):
                for doc in yaml.safe_load_all((EXAMPLES / f"{plural}.yaml").read_text()):
                    assert api.post(f"{API}/{plural}", json=doc).status_code == 201
        yield proc


def cli(cloud: CloudProcess, tmp_path: Path, *args: str) -> Result:
    env = {
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        **cloud.cli_env,
    }
    return CliRunner().invoke(app, list(args), env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result.stdout


def workload(api: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = api.get(f"{API}/workloads/web").json()
    return result


def wait_until(
    api: httpx.Client, what: str, check: Callable[[dict[str, Any]], bool], seconds: float = 15.0
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        doc = workload(api)
        return doc if check(doc) else None

    try:
        found: dict[str, Any] = waiting.wait_until(reached, seconds, interval=0.1, what=what)
    except AssertionError:
        raise AssertionError(f"no {what} after {seconds}s: {json.dumps(workload(api).get('status'))}") from None
    return found


def rollout(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = (doc.get("status") or {}).get("rollout") or {}
    return result


def set_template(api: httpx.Client, number: int) -> None:
    replace_object(api, f"{API}/workloads/web", lambda doc: doc["spec"].update(template=TEMPLATES[number]))


def follow(cloud: CloudProcess, tmp_path: Path, label: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``edgefleet rollout status web -w ARGS`` in the background, its stdout in a file."""
    env = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        **cloud.cli_env,
    }
    log = tmp_path / f"{label}.out"
    with log.open("w") as stdout:
        proc = subprocess.Popen(
            [EDGEFLEET, "rollout", "status", "web", "-w", *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    return proc, log


def printed(watcher: tuple[subprocess.Popen[str], Path], text: str, seconds: float = 15.0) -> None:
    proc, log = watcher

    def shown() -> bool:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
        return text in log.read_text()

    try:
        waiting.wait_until(shown, seconds, give_up=AssertionError)
    except AssertionError as failure:
        raise AssertionError(f"{failure}: {log.read_text()}") from None


def ended(watcher: tuple[subprocess.Popen[str], Path]) -> tuple[int, str, str]:
    proc, log = watcher
    try:
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, log.read_text(), stderr


def test_rollout_commands_steer_the_workload_controller(cloud: CloudProcess, tmp_path: Path) -> None:
    with cloud.client() as api:
        created = api.post(
            f"{API}/workloads",
            json={
                "apiVersion": "edgefleet.io/v1",
                "kind": "Workload",
                "metadata": {"name": "web"},
                "spec": {
                    "nodeSelector": "edgefleet.io/role=cache",
                    "template": TEMPLATES[1],
                    "strategy": {"steps": [{"pause": {}}]},
                },
            },
        )
        assert created.status_code == 201, created.text
        wait_until(api, "revision 1 adopted", lambda d: d.get("status", {}).get("currentRevisionNumber") == 1)
        assert ok(cli(cloud, tmp_path, "rollout", "status", "web")).startswith(
            "workload/web: no rollout in progress; the nodes run revision 1"
        )

        # Revision 2 rolls out and stops at its pause step; nobody is Ready, so everyone waits.
        set_template(api, 2)
        completing = follow(cloud, tmp_path, "completing")  # starts while the controller reacts
        wait_until(
            api,
            "a rollout paused at step 0",
            lambda d: rollout(d).get("phase") == "Paused" and rollout(d).get("targetNumber") == 2,
        )
        lines = ok(cli(cloud, tmp_path, "rollout", "status", "web")).splitlines()
        assert lines[0] == "workload/web: rollout Paused, revision 1 -> 2"
        assert lines[1].startswith("Step:      1 of 1: pause until `edgefleet rollout resume` (started ")
        assert lines[1].endswith("; `edgefleet rollout resume web` ends it")
        assert f"Waiting:   {', '.join(NODES)} (not Ready: they move when they return)" in lines
        assert next(line.split() for line in lines if line.startswith("par-edge")) == [
            "par-edge",
            "2",
            "0",
            "0",
            "0",
            "2",
            "-",
        ]

        # Paused both ways, then resumed: the pause step ends and the rollout completes; -w exits 0.
        printed(completing, "Paused -> revision 2 step 1/1")
        assert "workload/web paused" in ok(cli(cloud, tmp_path, "rollout", "pause", "web"))
        assert workload(api)["spec"]["paused"] is True
        assert ok(cli(cloud, tmp_path, "rollout", "resume", "web")).strip() == (
            "workload/web resumed: spec.paused cleared; pause step 1 of 1 ended"
        )
        code, stdout, stderr = ended(completing)
        assert code == 0, stdout + stderr
        assert "rollout of workload/web to revision 2 completed" in stderr
        done = workload(api)
        assert done["spec"]["paused"] is False
        assert done["status"]["currentRevisionNumber"] == 2 and rollout(done)["phase"] == "Completed"

        history = json.loads(ok(cli(cloud, tmp_path, "rollout", "history", "web", "-o", "json")))
        assigned = done["status"].get("nodeRevisions") or {}
        assert [(r["number"], r["revision"], r["current"], r["update"]) for r in history] == [
            (1, digest(1), False, False),
            (2, digest(2), True, True),
        ]
        assert [r["nodes"] for r in history] == [
            sum(v == digest(1) for v in assigned.values()),
            sum(v == digest(2) for v in assigned.values()) + 4 - len(assigned),
        ]
        table = ok(cli(cloud, tmp_path, "rollout", "history", "web")).splitlines()
        assert table[-1].split()[:2] == ["2", digest(2)] and table[-1].endswith("current, update")

        # Revision 3 stops at the pause step again: a -w with a timeout gives up (2); an abort ends it (1).
        set_template(api, 3)
        impatient = follow(cloud, tmp_path, "impatient", "--timeout", "1")
        aborting = follow(cloud, tmp_path, "aborting")
        wait_until(
            api,
            "the rollout to 3 paused",
            lambda d: rollout(d).get("phase") == "Paused" and rollout(d).get("targetNumber") == 3,
        )
        code, stdout, stderr = ended(impatient)
        assert code == 2, stdout + stderr
        assert "timed out after 1s: workload/web is still Paused" in stderr
        printed(aborting, "Paused -> revision 3 step 1/1")
        assert "rollout of workload/web to revision 3 aborted: the updated nodes move back to revision 2" in ok(
            cli(cloud, tmp_path, "rollout", "abort", "web")
        )
        code, stdout, stderr = ended(aborting)
        assert code == 1, stdout + stderr
        assert "rollout of workload/web to revision 3 was aborted" in stderr
        aborted = workload(api)
        assert rollout(aborted)["phase"] == "Aborted" and rollout(aborted)["failedRevision"] == digest(3)
        refusal = cli(cloud, tmp_path, "rollout", "abort", "web")
        assert refusal.exit_code == 1 and "has no rollout in progress (the last one Aborted)" in refusal.stderr

        # undo: spec.template is revision 2's again, exactly (args and healthProbe gone).
        assert "spec.template is revision 2" in ok(cli(cloud, tmp_path, "rollout", "undo", "web"))
        template = workload(api)["spec"]["template"]
        assert "healthProbe" not in template and template["args"] == [] and template["env"] == TEMPLATES[2]["env"]
        assert template_revision(WorkloadTemplate.model_validate(template)) == digest(2)
        wait_until(
            api,
            "revision 2 as the update revision",
            lambda d: (
                d["status"].get("updateRevisionNumber") == 2
                and d["status"].get("observedGeneration") == d["metadata"]["generation"]
            ),
        )
        assert ok(cli(cloud, tmp_path, "rollout", "status", "web")).startswith(
            "workload/web: no rollout in progress; the nodes run revision 2"
        )

        # pins name kept revisions only
        out = ok(cli(cloud, tmp_path, "rollout", "pin", "web", "--revision", "1", "--node", "ams-edge-1"))
        assert "it decides 1 node now: ams-edge-1" in out
        assert workload(api)["spec"]["pins"] == [{"selector": "edgefleet.io/node=ams-edge-1", "revision": 1}]
        missing = cli(cloud, tmp_path, "rollout", "pin", "web", "--revision", "9", "--node", "ams-edge-2")
        assert missing.exit_code == 1 and "`edgefleet rollout history web` lists its revisions" in missing.stderr
        ok(cli(cloud, tmp_path, "rollout", "unpin", "web", "--all"))
        assert workload(api)["spec"]["pins"] == []
