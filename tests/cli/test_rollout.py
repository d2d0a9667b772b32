"""``edgefleet rollout ...`` on hand-made Workload states, against an in-memory API.

The workload controller decides what Workload.status says; here the tests
write every state themselves (a rollout in flight, paused at a pause step,
failed, aborted, ...) into :class:`FakeApi`, which keeps the server's rules
that matter to the CLI: JSON merge patch, the status subresource (a status
write changes only status, a spec write never status), resourceVersion
preconditions (409), validation through the kind's model. The commands run
in-process (typer's CliRunner) and the tests check what they print and
what they write. tests/e2e/test_rollout_cli.py runs them against a real
cloud and its controller.
"""

from __future__ import annotations

import builtins
import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from edgefleet.api.meta import KindInfo
from edgefleet.api.patches import merge_patch
from edgefleet.api.workloads import Workload, WorkloadTemplate, template_revision
from edgefleet.cli import client as client_module
from edgefleet.cli import rollout
from edgefleet.cli.client import ClientError
from edgefleet.cli.main import app
from edgefleet.cli.rollout import outcome

Document = dict[str, Any]

TEMPLATES: dict[int, Document] = {
    1: {"command": ["sleep", "1000"]},
    2: {"command": ["sleep", "2000"], "env": [{"name": "MODE", "value": "two"}]},
    3: {
        "command": ["sleep", "3000"],
        "args": ["--x"],
        "env": [{"name": "MODE", "value": "three"}],
        "healthProbe": {"tcp": {"port": 8080}, "periodSeconds": 5},
    },
}
STEPS = [{"nodes": 1}, {"pause": {}}, {"percent": 50}]
NODES = {"par-edge-1": "par-edge", "par-edge-2": "par-edge", "ams-edge-1": "ams-edge", "ams-edge-2": "ams-edge"}


def digest(number: int) -> str:
    return template_revision(WorkloadTemplate.model_validate(TEMPLATES[number]))


def normalised(number: int) -> Document:
    """A template as the server stores it (defaults filled in)."""
    result: Document = WorkloadTemplate.model_validate(TEMPLATES[number]).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return result


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeApi:
    """The REST API's rules the CLI relies on, in memory; ``writes`` records every write."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Document] = {}
        self.revision = 0
        self.writes: list[tuple[str, str, Document, bool]] = []  # (verb, name, body, status)
        self.before_write: Callable[[FakeApi, str], object] | None = None
        self.watch_script: list[Document] = []  # documents the next watch delivers, one event each
        self.server = "http://fake"
        self.now = 1000.0  # the clock of `status -w` (rollout.monotonic)

    # what ApiClient(server, token) returns, and its context
    def __call__(self, server: str, token: str | None, **_: Any) -> FakeApi:
        return self

    def close(self) -> None:
        pass

    def store(self, info: KindInfo, document: Document) -> Document:
        info.model.model_validate(document)  # the server validates every write
        self.revision += 1
        stored = copy.deepcopy(document)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        stored["metadata"].setdefault("uid", f"uid-{stored['metadata']['name']}")
        stored["metadata"].setdefault("creationTimestamp", ago(3600))
        generation = stored["metadata"].get("generation") or 1
        old = self.objects.get((info.plural, stored["metadata"]["name"]))
        if old is not None and old.get("spec") != stored.get("spec"):
            generation += 1
        stored["metadata"]["generation"] = generation
        self.objects[(info.plural, stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def get(self, info: KindInfo, name: str) -> Document:
        found = self.objects.get((info.plural, name))
        if found is None:
            raise ClientError(f'{info.singular} "{name}" not found', code=404)
        return copy.deepcopy(found)

    def list(self, info: KindInfo, *, selector: str | None = None, limit: int = 500) -> Document:
        items = [copy.deepcopy(doc) for (plural, _), doc in sorted(self.objects.items()) if plural == info.plural]
        return {"items": items, "metadata": {"resourceVersion": str(self.revision)}}

    def _write(self, info: KindInfo, name: str, body: Document, *, status: bool, verb: str) -> Document:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(self, name)
        current = self.get(info, name)
        expected = (body.get("metadata") or {}).get("resourceVersion")
        self.writes.append((verb, name, copy.deepcopy(body), status))
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise ClientError(f'{info.singular} "{name}" was changed by someone else', code=409)
        new = merge_patch(current, body) if verb == "patch" else copy.deepcopy(body)
        if status:
            current["status"] = new.get("status")
            return self.store(info, current)
        new["status"] = current.get("status")
        new["metadata"] = {
            **current["metadata"],
            **{k: v for k, v in new["metadata"].items() if k in ("labels", "annotations")},
        }
        return self.store(info, new)

    def patch(self, info: KindInfo, name: str, patch: Document, *, status: bool = False) -> Document:
        return self._write(info, name, patch, status=status, verb="patch")

    def replace(self, info: KindInfo, document: Document) -> Document:
        return self._write(info, document["metadata"]["name"], document, status=False, verb="replace")

    def watch(
        self,
        info: KindInfo,
        *,
        selector: str | None = None,
        resource_version: str = "",
        timeout_seconds: int | None = None,
    ) -> Iterator[Document]:
        if not self.watch_script:  # nothing happens until the server ends the stream
            assert timeout_seconds is not None, "a watch without a timeout would never end here"
            self.now += timeout_seconds
        while self.watch_script:
            doc = self.watch_script.pop(0)
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.revision)}}}
            yield {"type": "MODIFIED", "object": {**doc, "metadata": {**doc["metadata"], "name": "other"}}}
            yield {"type": "MODIFIED", "object": self.set_status(doc["metadata"]["name"], doc["status"])}

    # test helpers
    def set_status(self, name: str, status: Document | None) -> Document:
        current = self.get(_workloads(), name)
        current["status"] = status
        return self.store(_workloads(), current)

    def spec(self, name: str) -> Document:
        result: Document = self.get(_workloads(), name)["spec"]
        return result

    def status_writes(self) -> builtins.list[Document]:
        return [body for verb, _, body, status in self.writes if status]


def _workloads() -> KindInfo:
    from edgefleet.api.workloads import INFO

    return INFO


def _revisions() -> KindInfo:
    from edgefleet.api.revisions import INFO

    return INFO


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    from edgefleet.api.nodes import INFO as NODES_INFO

    fake = FakeApi()
    monkeypatch.setattr(client_module, "ApiClient", fake)
    monkeypatch.setattr(rollout, "monotonic", lambda: fake.now)
    for node, site in NODES.items():
        fake.store(
            NODES_INFO,
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": {"edgefleet.io/role": "cache"}},
                "spec": {"site": site, "addresses": ["127.0.0.1"]},
            },
        )
    return fake


def add_workload(fake: FakeApi, name: str, template: int = 3, **spec: Any) -> Document:
    """A Workload at ``template``, with revisions 1..3 kept (stored out of order)."""
    workload = fake.store(
        _workloads(),
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Workload",
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": "edgefleet.io/role=cache",
                "template": TEMPLATES[template],
                "strategy": {"steps": STEPS},
                **spec,
            },
        },
    )
    for number in (3, 1, 2):
        fake.store(
            _revisions(),
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "WorkloadRevision",
                "metadata": {"name": f"{name}-{number}"},
                "spec": {
                    "workload": name,
                    "workloadUid": workload["metadata"]["uid"],
                    "number": number,
                    "revision": digest(number),
                    "template": TEMPLATES[number],
                },
            },
        )
    return workload


def rolling(generation: int = 1, *, phase: str = "Progressing", step: int = 0) -> Document:
    """From revision 2 to 3: par-edge-1 settling on 3, ams-edge-1 pinned to 1, ams-edge-2 not Ready."""
    return {
        "observedGeneration": generation,
        "currentRevision": digest(2),
        "currentRevisionNumber": 2,
        "updateRevision": digest(3),
        "updateRevisionNumber": 3,
        "nodeRevisions": {"par-edge-1": digest(3), "ams-edge-1": digest(1)},
        "desiredCount": 4,
        "updatedCount": 1,
        "readyCount": 3,
        "availableCount": 2,
        "unavailableCount": 2,
        "sites": {
            "par-edge": {"desired": 2, "updated": 1, "ready": 2, "available": 1, "unavailable": 1},
            "ams-edge": {"desired": 2, "updated": 0, "ready": 1, "available": 1, "unavailable": 1},
        },
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "RolloutProgressing",
                "message": "moving nodes to revision 3",
                "lastTransitionTime": ago(30),
            }
        ],
        "rollout": {
            "phase": phase,
            "target": digest(3),
            "targetNumber": 3,
            "step": step,
            "stepStartedAt": ago(12),
            "nodes": {"par-edge-1": {"to": digest(3), "phase": "Settling", "since": ago(5)}},
            "waiting": ["ams-edge-2"],
            "message": "par-edge-1 settles",
        },
    }


def finished(generation: int = 1, number: int = 3, phase: str = "Completed") -> Document:
    return {
        "observedGeneration": generation,
        "currentRevision": digest(number),
        "currentRevisionNumber": number,
        "updateRevision": digest(number),
        "updateRevisionNumber": number,
        "desiredCount": 4,
        "updatedCount": 4,
        "readyCount": 4,
        "availableCount": 4,
        "unavailableCount": 0,
        "rollout": {
            "phase": phase,
            "target": digest(number),
            "targetNumber": number,
            "step": 3,
            "message": f"every node runs revision {number}",
        },
    }


def cli(*args: str) -> Result:
    return CliRunner().invoke(
        app,
        list(args),
        env={
            "EDGEFLEET_SERVER": "http://fake",
            "EDGEFLEET_TOKEN": "t",
            "EDGEFLEET_INSECURE": "1",
            "EDGEFLEET_CONFIG": "/nonexistent/config.yaml",
        },
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result.stdout


def refused(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result.stderr


def row(lines: list[str], first: str) -> list[str]:
    return next(line.split() for line in lines if line.split()[:1] == [first])


# -- status ---------------------------------------------------------------------------


def test_status_shows_phase_revisions_step_sites_in_flight_waiting_message_and_conditions(fake: FakeApi) -> None:
    add_workload(fake, "web")
    fake.set_status("web", rolling())
    text = ok(cli("rollout", "status", "web"))
    lines = text.splitlines()
    assert lines[0] == "workload/web: rollout Progressing, revision 2 -> 3"
    assert "Step:      1 of 3: batch: until 1 node runs the new revision (started 12s ago)" in lines
    assert "Nodes:     1/4 updated, 3 ready, 2 available, 2 unavailable" in lines
    assert row(lines, "SITE") == ["SITE", "DESIRED", "UPDATED", "READY", "AVAILABLE", "UNAVAILABLE", "IN", "FLIGHT"]
    assert row(lines, "par-edge") == ["par-edge", "2", "1", "2", "1", "1", "par-edge-1", "Settling", "5s"]
    assert row(lines, "ams-edge") == ["ams-edge", "2", "0", "1", "1", "1", "-"]
    assert "Waiting:   ams-edge-2 (not Ready: they move when they return)" in lines
    assert "Message:   par-edge-1 settles" in lines
    assert row(lines, "Progressing")[:4] == ["Progressing", "True", "RolloutProgressing", "30s"]

    data = json.loads(ok(cli("rollout", "status", "web", "-o", "json")))
    assert data["inProgress"] is True and data["result"] is None and data["steps"] == STEPS
    assert data["status"]["rollout"]["nodes"]["par-edge-1"]["phase"] == "Settling"

    fake.set_status("web", rolling(phase="Paused", step=1))
    text = ok(cli("rollout", "status", "web"))
    assert (
        "Step:      2 of 3: pause until `edgefleet rollout resume` (started 12s ago); "
        "`edgefleet rollout resume web` ends it"
    ) in text.splitlines()
    fake.replace(
        _workloads(),
        {
            **fake.get(_workloads(), "web"),
            "spec": {**fake.spec("web"), "strategy": {"steps": STEPS, "analysis": {"intervalSeconds": 60}}},
        },
    )
    fake.set_status(
        "web", {**rolling(), "rollout": {**rolling()["rollout"], "phase": "Analyzing", "analysisStartedAt": ago(20)}}
    )
    assert "Analysis:  started 20s ago, window 60s" in ok(cli("rollout", "status", "web")).splitlines()
    fake.set_status("web", {**rolling(step=3), "rollout": {**rolling(step=3)["rollout"], "abort": True}})
    text = ok(cli("rollout", "status", "web"))
    assert "Step:      after the 3 steps: every remaining node moves" in text
    assert "Abort:     requested; the updated nodes move back" in text


@pytest.mark.parametrize(
    ("status", "headline"),
    [
        (None, "workload/web: no status yet (the workload controller has not reported on it)"),
        (
            finished(),
            "workload/web: no rollout in progress; the nodes run revision 3 "
            "(the last rollout, to revision 3, Completed)",
        ),
        (
            {
                **finished(number=2),
                "updateRevision": digest(3),
                "updateRevisionNumber": 3,
                "rollout": {
                    **finished(number=2)["rollout"],
                    "phase": "Aborted",
                    "target": digest(3),
                    "targetNumber": 3,
                    "failedRevision": digest(3),
                },
            },
            "workload/web: no rollout in progress; the nodes run revision 2 "
            "(the last rollout, to revision 3, Aborted); "
            "spec.template (revision 3) is not retried until it changes",
        ),
    ],
)
def test_status_says_when_no_rollout_is_in_progress(fake: FakeApi, status: Document | None, headline: str) -> None:
    add_workload(fake, "web")
    fake.set_status("web", status)
    text = ok(cli("rollout", "status", "web"))
    assert text.splitlines()[0] == headline
    assert "IN FLIGHT" not in text and "Step:" not in text


def test_status_of_a_missing_workload_says_how_to_list_them(fake: FakeApi) -> None:
    stderr = refused(cli("rollout", "status", "nosuch"))
    assert "no workload named 'nosuch'" in stderr and "`edgefleet get workloads` lists them" in stderr
    assert "unknown output format" in refused(cli("rollout", "status", "nosuch", "-o", "wide"))


def workload_at(status: Document | None, generation: int = 1) -> Workload:
    return Workload.model_validate(
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Workload",
            "metadata": {"name": "w", "generation": generation},
            "spec": {"template": TEMPLATES[3], "strategy": {"steps": STEPS}},
            "status": status or {},
        }
    )


@pytest.mark.parametrize(
    ("status", "generation", "expected"),
    [
        (rolling(), 1, None),
        (rolling(phase="Paused", step=1), 1, None),
        ({**rolling(), "rollout": {**rolling()["rollout"], "phase": "RollingBack"}}, 1, None),
        (finished(), 1, "Completed"),
        (finished(), 2, None),  # the controller has not seen generation 2: its Completed is about generation 1
        ({**finished(number=2), "updateRevision": digest(3)}, 1, None),  # a newer template waits to start
        ({**finished(), "rollout": None}, 1, "Completed"),  # nothing ever rolled out
        (None, 1, None),  # no status yet
        ({**rolling(), "rollout": {**rolling()["rollout"], "phase": "Failed"}}, 1, "Failed"),
        ({**rolling(), "rollout": {**rolling()["rollout"], "phase": "Aborted"}}, 1, "Aborted"),
    ],
)
def test_when_status_watch_stops(status: Document | None, generation: int, expected: str | None) -> None:
    assert outcome(workload_at(status, generation)) == expected


@pytest.mark.parametrize(
    ("final", "code", "says"),
    [
        (finished(), 0, "rollout of workload/web to revision 3 completed"),
        (
            {**rolling(), "rollout": {**rolling()["rollout"], "phase": "Failed", "message": "errorRate 0.2 > 0.05"}},
            1,
            "rollout of workload/web to revision 3 failed: errorRate 0.2 > 0.05",
        ),
        (
            {**rolling(), "rollout": {**rolling()["rollout"], "phase": "Aborted", "message": "aborted by hand"}},
            1,
            "rollout of workload/web to revision 3 was aborted: aborted by hand",
        ),
        (None, 2, "timed out after 0.3s: workload/web is still Paused"),
    ],
)
def test_status_watch_follows_changes_to_the_end_and_exits_by_it(
    fake: FakeApi, final: Document | None, code: int, says: str
) -> None:
    add_workload(fake, "web")
    fake.set_status("web", {**finished(number=2), "observedGeneration": 0})  # generation 1 not seen yet
    fake.watch_script = [
        {"metadata": {"name": "web"}, "status": rolling()},
        {"metadata": {"name": "web"}, "status": rolling(phase="Paused", step=1)},
    ]
    if final is not None:
        fake.watch_script.append({"metadata": {"name": "web"}, "status": final})
    result = cli("rollout", "status", "web", "-w", "--timeout", "0.3" if final is None else "30")
    assert result.exit_code == code, result.stdout + result.stderr
    assert says in result.stderr
    progress = [line.split(" ", 1)[1] for line in result.stdout.splitlines()[:3]]
    assert progress[0].startswith(
        "Completed -> revision 2 updated 4/4 available 4 (every node runs revision 2) "
        "[the workload controller has not seen generation 1 yet]"
    )
    assert progress[1].startswith(
        "Progressing -> revision 3 step 1/3 updated 1/4 available 2 in flight: par-edge-1 Settling waiting: ams-edge-2"
    )
    assert progress[2].startswith("Paused -> revision 3 step 2/3")
    assert any(line.startswith("Nodes:     ") for line in result.stdout.splitlines()[3:])  # the whole status


def test_status_watch_as_data(fake: FakeApi) -> None:
    add_workload(fake, "web")
    fake.set_status("web", rolling())
    fake.watch_script = [{"metadata": {"name": "web"}, "status": finished()}]
    data = yaml.safe_load(ok(cli("rollout", "status", "web", "-w", "-o", "yaml")))
    assert data["result"] == "Completed" and data["status"]["rollout"]["phase"] == "Completed"


# -- history ----------------------------------------------------------------------------


def test_history_lists_this_workloads_revisions_with_their_nodes_and_marks(fake: FakeApi) -> None:
    add_workload(fake, "web", pins=[{"selector": "edgefleet.io/node=ams-edge-1", "revision": 1}])
    for name, owner, uid in (("other-1", "other", ""), ("web-9", "web", "a-namesake's-uid")):
        fake.store(
            _revisions(),
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "WorkloadRevision",
                "metadata": {"name": name},
                "spec": {
                    "workload": owner,
                    "workloadUid": uid,
                    "number": 9,
                    "revision": "f" * 16,
                    "template": TEMPLATES[1],
                },
            },
        )
    fake.set_status("web", rolling())
    lines = ok(cli("rollout", "history", "web")).splitlines()
    assert lines[0].split() == ["NUMBER", "REVISION", "CREATED", "COMMAND", "NODES"]
    assert [line.split()[:2] for line in lines[2:]] == [["1", digest(1)], ["2", digest(2)], ["3", digest(3)]]
    assert [line.split()[2:] for line in lines[2:]] == [
        ["1h", "sleep", "1000", "1", "pinned"],
        ["1h", "sleep", "2000", "2", "current"],  # 4 desired, 2 of them assigned another revision
        ["1h", "sleep", "3000", "--x", "1", "update"],
    ]
    data = json.loads(ok(cli("rollout", "history", "web", "-o", "json")))
    assert [(r["number"], r["nodes"], r["current"], r["update"]) for r in data] == [
        (1, 1, False, False),
        (2, 2, True, False),
        (3, 1, False, True),
    ]

    fake.store(
        _workloads(),
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Workload",
            "metadata": {"name": "bare"},
            "spec": {"template": TEMPLATES[1]},
        },
    )
    assert "No revisions of workload/bare yet" in ok(cli("rollout", "history", "bare"))


# -- pause, resume, abort ---------------------------------------------------------------


def test_pause_and_resume_write_spec_paused(fake: FakeApi) -> None:
    add_workload(fake, "web")
    assert "workload/web paused" in ok(cli("rollout", "pause", "web"))
    assert fake.spec("web")["paused"] is True
    assert fake.writes[-1] == ("patch", "web", {"spec": {"paused": True}}, False)
    writes = len(fake.writes)
    assert "already paused" in ok(cli("rollout", "pause", "web"))
    assert len(fake.writes) == writes

    fake.set_status("web", rolling(phase="Paused", step=0))  # paused by spec.paused at a batch step
    assert "workload/web resumed: spec.paused cleared" in ok(cli("rollout", "resume", "web")).splitlines()
    assert fake.spec("web")["paused"] is False and fake.status_writes() == []
    assert "nothing to resume" in ok(cli("rollout", "resume", "web"))


def test_resume_ends_the_pause_step_through_the_status_with_a_precondition(fake: FakeApi) -> None:
    add_workload(fake, "web")
    fake.set_status("web", rolling(phase="Paused", step=1))
    version = fake.get(_workloads(), "web")["metadata"]["resourceVersion"]
    assert "workload/web resumed: pause step 2 of 3 ended" in ok(cli("rollout", "resume", "web"))
    assert fake.status_writes() == [
        {"metadata": {"resourceVersion": version}, "status": {"rollout": {"resumedStep": 1}}}
    ]
    rollout = fake.get(_workloads(), "web")["status"]["rollout"]
    assert rollout["resumedStep"] == 1 and rollout["waiting"] == ["ams-edge-2"]  # the rest of status kept
    assert "resumed already" in ok(cli("rollout", "resume", "web"))
    assert len(fake.status_writes()) == 1


def test_a_conflicting_write_is_retried_on_the_new_state(fake: FakeApi) -> None:
    add_workload(fake, "web")
    fake.set_status("web", rolling(phase="Paused", step=1))

    fake.before_write = lambda api, name: api.set_status(name, rolling(phase="Paused", step=1))  # a new version
    ok(cli("rollout", "resume", "web"))
    first, second = fake.status_writes()
    assert first["metadata"]["resourceVersion"] != second["metadata"]["resourceVersion"]
    assert fake.get(_workloads(), "web")["status"]["rollout"]["resumedStep"] == 1

    fake.set_status("web", rolling())
    fake.before_write = lambda api, name: api.set_status(name, finished())  # the rollout ended meanwhile
    stderr = refused(cli("rollout", "abort", "web"))
    assert "workload/web has no rollout in progress (the last one Completed): nothing to abort" in stderr


def test_abort_sets_the_signal_only_during_a_rollout(fake: FakeApi) -> None:
    add_workload(fake, "web")
    fake.set_status("web", finished())
    stderr = refused(cli("rollout", "abort", "web"))
    assert "workload/web has no rollout in progress (the last one Completed): nothing to abort" in stderr
    assert "`edgefleet rollout undo web`" in stderr
    assert fake.writes == []

    fake.set_status("web", rolling())
    version = fake.get(_workloads(), "web")["metadata"]["resourceVersion"]
    out = ok(cli("rollout", "abort", "web"))
    assert "rollout of workload/web to revision 3 aborted: the updated nodes move back to revision 2" in out
    assert fake.status_writes() == [{"metadata": {"resourceVersion": version}, "status": {"rollout": {"abort": True}}}]
    rollout = fake.get(_workloads(), "web")["status"]["rollout"]
    assert rollout["abort"] is True and rollout["phase"] == "Progressing" and "par-edge-1" in rollout["nodes"]
    assert "already requested" in ok(cli("rollout", "abort", "web"))
    assert len(fake.status_writes()) == 1
    fake.set_status("web", {**rolling(), "rollout": {**rolling()["rollout"], "phase": "RollingBack"}})
    assert "already rolling back" in ok(cli("rollout", "abort", "web"))
    assert len(fake.status_writes()) == 1


# -- undo -----------------------------------------------------------------------------


def test_undo_puts_a_kept_template_back_exactly(fake: FakeApi) -> None:
    add_workload(fake, "web", paused=True)
    status = fake.set_status("web", rolling())["status"]  # 2 -> 3 in progress: back to 2
    out = ok(cli("rollout", "undo", "web"))
    assert f"spec.template is revision 2 ({digest(2)}) again, was revision 3" in out
    assert "note: workload/web is paused" in out
    verb, _, body, _ = fake.writes[-1]
    assert verb == "replace" and body["metadata"]["resourceVersion"]  # a full replace, with its precondition
    spec = fake.spec("web")
    assert spec["template"] == normalised(2)  # healthProbe and args gone, not merged
    assert "healthProbe" not in spec["template"] and spec["template"]["args"] == []
    assert spec["strategy"] == {"steps": STEPS} and spec["paused"] is True
    assert fake.get(_workloads(), "web")["status"] == status  # status is the controller's
    assert "already revision 2; nothing to undo" in ok(cli("rollout", "undo", "web", "--to-revision", "2"))

    fake.set_status("web", finished(number=2))  # nothing in progress: to the revision before the current one
    assert "spec.template is revision 1" in ok(cli("rollout", "undo", "web"))
    assert fake.spec("web")["template"] == normalised(1)
    ok(cli("rollout", "undo", "web", "--to-revision", "3"))
    assert fake.spec("web")["template"] == normalised(3)

    stderr = refused(cli("rollout", "undo", "web", "--to-revision", "7"))
    assert "workload/web has no revision 7" in stderr and "`edgefleet rollout history web`" in stderr
    fake.set_status("web", finished(number=1))
    assert "no revision before revision 1" in refused(cli("rollout", "undo", "web"))
    fake.set_status("web", None)
    assert "no current revision yet" in refused(cli("rollout", "undo", "web"))


# -- pin, unpin -------------------------------------------------------------------------


def test_pin_and_unpin_edit_the_host_version_map(fake: FakeApi) -> None:
    add_workload(fake, "web")
    out = ok(cli("rollout", "pin", "web", "--revision", "1", "--node", "ams-edge-1"))
    assert f"nodes matching 'edgefleet.io/node=ams-edge-1' pinned to revision 1 ({digest(1)})" in out
    assert "it decides 1 node now: ams-edge-1" in out
    assert fake.spec("web")["pins"] == [{"selector": "edgefleet.io/node=ams-edge-1", "revision": 1}]
    assert fake.writes[-1][2]["metadata"]["resourceVersion"]  # with a precondition

    out = ok(cli("rollout", "pin", "web", "--revision", "2", "-l", "edgefleet.io/site=ams-edge"))
    assert "it decides 1 node now: ams-edge-2" in out  # ams-edge-1 goes by the first pin
    assert "re-pinned to revision 2" in ok(cli("rollout", "pin", "web", "--revision", "2", "--node", "ams-edge-1"))
    assert fake.spec("web")["pins"] == [
        {"selector": "edgefleet.io/node=ams-edge-1", "revision": 2},
        {"selector": "edgefleet.io/site=ams-edge", "revision": 2},
    ]
    assert "there is no node 'edge-x9' (yet)" in ok(
        cli("rollout", "pin", "web", "--revision", "1", "--node", "edge-x9")
    )
    writes = len(fake.writes)
    for args, expected in (
        (("--revision", "7", "--node", "par-edge-1"), "`edgefleet rollout history web` lists its revisions"),
        (("--revision", "1"), "give exactly one of --node NAME or --selector SEL"),
        (("--revision", "1", "--node", "a", "-l", "b=c"), "give exactly one of --node NAME or --selector SEL"),
        (("--revision", "1", "-l", "a in (b"), "invalid selector 'a in (b'"),
    ):
        assert expected in refused(cli("rollout", "pin", "web", *args))
    assert len(fake.writes) == writes

    assert "workload/web: pin 'edgefleet.io/node=ams-edge-1' (revision 2) removed" in ok(
        cli("rollout", "unpin", "web", "--node", "ams-edge-1")
    )
    stderr = refused(cli("rollout", "unpin", "web", "-l", "nope=1"))
    assert "no pin with selector 'nope=1'" in stderr and "its pins: 'edgefleet.io/site=ams-edge'" in stderr
    assert "give exactly one of --node NAME, --selector SEL or --all" in refused(cli("rollout", "unpin", "web"))
    ok(cli("rollout", "unpin", "web", "--all"))
    assert fake.spec("web")["pins"] == []
    assert "has no pins" in ok(cli("rollout", "unpin", "web", "--all"))


def test_every_rollout_command_explains_itself() -> None:
    text = ok(CliRunner().invoke(app, ["rollout", "--help"]))
    for command in ("status", "history", "pause", "resume", "abort", "undo", "pin", "unpin"):
        assert command in text
    assert "exit 2" in ok(CliRunner().invoke(app, ["rollout", "status", "--help"]))
