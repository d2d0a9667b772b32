"""Workload: template, env forms, files, ports, probes, hooks, revisions."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.errors import ValidationFailed
from edgefleet.api.workloads import EnvVar, Workload, template_revision

from .helpers import DELETE, Doc, changed, errors_of, row


def _workload(document: Doc) -> Workload:
    obj = parse(document)
    assert isinstance(obj, Workload)
    return obj


def test_valid_workload_and_defaults(workload_doc: Doc) -> None:
    workload = _workload(workload_doc)
    template = workload.spec.template
    assert template.restart_policy == "Always"
    assert template.termination_grace_period_seconds == 30
    assert (template.env, template.files, template.ports) == ([], [], [])
    assert template.health_probe is None
    assert workload.spec.revision_history_limit == 10
    assert workload.spec.selector().matches({"edgefleet.io/role": "cache"})


def test_full_template(workload_doc: Doc) -> None:
    workload_doc["spec"]["template"].update(
        env=[{"name": "LOG_LEVEL", "value": "debug"}, {"name": "EMPTY"}],
        files=[
            {"path": "conf/cache.yaml", "content": "size: 1G\n", "mode": "0600"},
            {"path": "run.sh", "content": "#!/bin/sh\n", "mode": 0o755},
        ],
        ports=[{"name": "http", "port": 8081}, {"name": "dns", "port": 8081, "protocol": "udp"}],
        healthProbe={"tcp": {"port": 8081}, "periodSeconds": 5, "timeoutSeconds": 5},
        postStart={"exec": {"command": ["./warm-up"]}},
        preStop={"exec": {"command": ["./drain", "--wait"]}, "timeoutSeconds": 20},
        restartPolicy="OnFailure",
        terminationGracePeriodSeconds=25,
    )
    template = _workload(workload_doc).spec.template
    assert template.env[1] == EnvVar(name="EMPTY", value="")
    assert [f.mode for f in template.files] == [0o600, 0o755]
    assert template.ports[1].protocol == "udp"
    assert template.pre_stop is not None and template.pre_stop.timeout_seconds == 20


def test_env_map_form_is_stored_as_list(workload_doc: Doc) -> None:
    workload_doc["spec"]["template"]["env"] = {"B": "2", "A": "1"}
    workload = _workload(workload_doc)
    assert workload.spec.template.env == [EnvVar(name="B", value="2"), EnvVar(name="A", value="1")]
    wire = workload.to_dict()["spec"]["template"]["env"]
    assert wire == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]
    workload_doc["spec"]["template"]["env"] = wire
    assert _workload(workload_doc) == workload


def test_template_revision_is_stable(workload_doc: Doc) -> None:
    first = _workload(workload_doc).spec.template
    again = _workload(workload_doc).spec.template
    assert template_revision(first) == template_revision(again)
    assert len(template_revision(first)) == 16
    workload_doc["spec"]["template"]["args"] = ["8082"]
    assert template_revision(_workload(workload_doc).spec.template) != template_revision(first)
    # Spelling the same env both ways gives the same revision.
    workload_doc["spec"]["template"]["env"] = {"A": "1"}
    as_map = template_revision(_workload(workload_doc).spec.template)
    workload_doc["spec"]["template"]["env"] = [{"name": "A", "value": "1"}]
    assert template_revision(_workload(workload_doc).spec.template) == as_map


T = "spec.template"


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (
            f"{T}.command",
            [],
            f"{T}.command: List should have at least 1 item after validation, not 0",
        ),
        (f"{T}.command", DELETE, f"{T}.command: Field required"),
        (f"{T}.command", ["", "x"], f"{T}.command[0]: the program must not be empty"),
        (
            f"{T}.env",
            [{"name": "A", "value": "a\0b"}],
            f"{T}.env[0].value: must not contain NUL characters",
        ),
        (f"{T}.command", "python3 -m http.server", f"{T}.command: Input should be a valid list"),
        (f"{T}.args", ["ok", "nul\0byte"], f"{T}.args[1]: must not contain NUL characters"),
        (
            f"{T}.env",
            {"PORT": 8080},
            f"{T}.env: PORT: value must be a string (quote numbers and booleans in YAML)",
        ),
        (
            f"{T}.env",
            [{"name": "1BAD", "value": "x"}],
            f"{T}.env[0].name: '1BAD' is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            f"{T}.env",
            [{"name": "A"}, {"name": "B"}, {"name": "A", "value": "2"}],
            f"{T}.env[2].name: duplicate environment variable 'A'",
        ),
        (f"{T}.env", [{"value": "x"}], f"{T}.env[0].name: Field required"),
        (
            f"{T}.files",
            [{"path": "/etc/passwd"}],
            f"{T}.files[0].path: '/etc/passwd' must be a relative path with '/' separators",
        ),
        (
            f"{T}.files",
            [{"path": "conf/../../etc/passwd"}],
            f"{T}.files[0].path: 'conf/../../etc/passwd' must be normalised: no empty, '.' or '..' components",
        ),
        (
            f"{T}.files",
            [{"path": "a//b"}],
            f"{T}.files[0].path: 'a//b' must be normalised: no empty, '.' or '..' components",
        ),
        (
            f"{T}.files",
            [{"path": "dir/"}],
            f"{T}.files[0].path: 'dir/' must be normalised: no empty, '.' or '..' components",
        ),
        (
            f"{T}.files",
            [{"path": ""}],
            f"{T}.files[0].path: '' must be a relative path with '/' separators",
        ),
        (
            f"{T}.files",
            [{"path": "a\\b"}],
            f"{T}.files[0].path: 'a\\\\b' must be a relative path with '/' separators",
        ),
        (
            f"{T}.files",
            [{"path": "a", "mode": 0o4755}],
            f"{T}.files[0].mode: Input should be less than or equal to 511",
        ),
        (
            f"{T}.files",
            [{"path": "a", "mode": "rwx"}],
            f"{T}.files[0].mode: Input should be a valid integer, unable to parse string as an integer",
        ),
        (f"{T}.files", [{"path": "a"}, {"path": "a"}], f"{T}.files[1].path: duplicate file 'a'"),
        (
            f"{T}.files",
            [{"path": "big", "content": "x" * (1024 * 1024 + 1)}],
            f"{T}.files[0].content: content is 1048577 bytes; the limit is 1048576",
        ),
        (
            f"{T}.ports",
            [{"name": "http", "port": 0}],
            f"{T}.ports[0].port: Input should be greater than or equal to 1",
        ),
        (
            f"{T}.ports",
            [{"name": "http", "port": 65536}],
            f"{T}.ports[0].port: Input should be less than or equal to 65535",
        ),
        (
            f"{T}.ports",
            [{"name": "http", "port": 80, "protocol": "sctp"}],
            f"{T}.ports[0].protocol: Input should be 'tcp' or 'udp'",
        ),
        (
            f"{T}.ports",
            [{"name": "a-very-long-port-name", "port": 80}],
            f"{T}.ports[0].name: must be at most 15 characters (got 21)",
        ),
        (
            f"{T}.ports",
            [{"name": "http", "port": 80}, {"name": "http", "port": 81}],
            f"{T}.ports[1].name: duplicate port name 'http'",
        ),
        (
            f"{T}.ports",
            [{"name": "a", "port": 80}, {"name": "b", "port": 80}],
            f"{T}.ports[1].port: duplicate port '80/tcp'",
        ),
        (
            f"{T}.restartPolicy",
            "Sometimes",
            f"{T}.restartPolicy: Input should be 'Always', 'OnFailure' or 'Never'",
        ),
        (
            f"{T}.terminationGracePeriodSeconds",
            -1,
            f"{T}.terminationGracePeriodSeconds: Input should be greater than or equal to 0",
        ),
        (
            "spec.revisionHistoryLimit",
            101,
            "spec.revisionHistoryLimit: Input should be less than or equal to 100",
        ),
        (
            "spec.nodeSelector",
            "role=cache,",
            "spec.nodeSelector: invalid label selector: position 11: expected a label key, found the end",
        ),
        (f"{T}.image", "nginx", f"{T}.image: unknown field"),
    ],
)
def test_invalid_workload(workload_doc: Doc, path: str, value: Any, error: str) -> None:
    assert errors_of(changed(workload_doc, path, value)) == [error]


P = f"{T}.healthProbe"


@pytest.mark.parametrize(
    ("probe", "error"),
    [
        ({}, f"{P}: set exactly one of http, tcp or exec"),
        ({"http": {"port": 80}, "tcp": {"port": 80}}, f"{P}: set exactly one of http, tcp or exec"),
        (
            {"http": {"path": "health", "port": 80}},
            f"{P}.http.path: 'health' must start with '/' and contain no spaces or controls",
        ),
        ({"http": {"path": "/"}}, f"{P}.http.port: Field required"),
        (
            {"exec": {"command": []}},
            f"{P}.exec.command: List should have at least 1 item after validation, not 0",
        ),
        (
            {"tcp": {"port": 80}, "periodSeconds": 0},
            f"{P}.periodSeconds: Input should be greater than or equal to 1",
        ),
        (
            {"tcp": {"port": 80}, "periodSeconds": 5, "timeoutSeconds": 6},
            f"{P}.timeoutSeconds: must not exceed periodSeconds (5)",
        ),
        (
            {"tcp": {"port": 80}, "failureThreshold": 0},
            f"{P}.failureThreshold: Input should be greater than or equal to 1",
        ),
        ({"grpc": {"port": 80}}, f"{P}.grpc: unknown field"),
    ],
)
def test_invalid_probe(workload_doc: Doc, probe: dict[str, Any], error: str) -> None:
    workload_doc["spec"]["template"]["healthProbe"] = probe
    assert errors_of(workload_doc) == [error]


@pytest.mark.parametrize(
    ("hooks", "error"),
    [
        (
            {"preStop": {"exec": {"command": ["x"]}, "timeoutSeconds": 31}},
            f"{T}.preStop.timeoutSeconds: must not exceed terminationGracePeriodSeconds (30)",
        ),
        ({"preStop": {"timeoutSeconds": 5}}, f"{T}.preStop.exec: Field required"),
        (
            {"postStart": {"exec": {"command": ["x"]}, "timeoutSeconds": 0}},
            f"{T}.postStart.timeoutSeconds: Input should be greater than or equal to 1",
        ),
        ({"postStop": {"exec": {"command": ["x"]}}}, f"{T}.postStop: unknown field"),
    ],
)
def test_invalid_hooks(workload_doc: Doc, hooks: dict[str, Any], error: str) -> None:
    workload_doc["spec"]["template"].update(hooks)
    assert errors_of(workload_doc) == [error]


def test_status_and_columns(workload_doc: Doc) -> None:
    assert row(_workload(workload_doc), wide=False) == {
        "SELECTOR": "edgefleet.io/role=cache",
        "READY": "<none>",
        "UP-TO-DATE": "<none>",
        "AVAILABLE": "<none>",
        "REVISION": "<none>",
        "ROLLOUT": "<none>",
    }
    workload_doc["spec"]["nodeSelector"] = ""
    workload_doc["spec"]["template"]["ports"] = [{"name": "http", "port": 8081}]
    workload_doc["status"] = {
        "observedGeneration": 2,
        "currentRevision": "0f1e2d3c4b5a6978",
        "currentRevisionNumber": 3,
        "updateRevision": "1f1e2d3c4b5a6978",
        "updateRevisionNumber": 4,
        "desiredCount": 4,
        "readyCount": 3,
        "updatedCount": 1,
        "availableCount": 3,
        "nodeRevisions": {"par-edge-1": "1f1e2d3c4b5a6978"},
        "rollout": {
            "phase": "Progressing",
            "target": "1f1e2d3c4b5a6978",
            "nodes": {"par-edge-2": {"to": "1f1e2d3c4b5a6978", "phase": "Draining", "since": "2026-12-01T00:00:00Z"}},
        },
    }
    assert row(_workload(workload_doc)) == {
        "SELECTOR": "<all>",
        "READY": "3/4",
        "UP-TO-DATE": "1",
        "AVAILABLE": "3",
        "REVISION": "3->4",
        "ROLLOUT": "Progressing",
        "COMMAND": "python3 -m http.server 8081",
        "PORTS": "http:8081/tcp",
        "RESTART": "Always",
    }
    workload_doc["status"]["rollout"]["nodes"]["par-edge-2"]["phase"] = "Sleeping"
    assert errors_of(workload_doc) == [
        "status.rollout.nodes.par-edge-2.phase: Input should be 'Draining', 'Updating' or 'Settling'"
    ]


def test_run_as_user_and_secret_refs_validate_and_leave_old_revisions_alone(workload_doc: Doc) -> None:
    template = _workload(workload_doc).spec.template
    # The revision before runAsUser, valueFrom and artifacts existed: the same canonical JSON without them.
    document = template.model_dump(mode="json", by_alias=True)
    for late in ("builtin", "runAsUser", "artifacts"):
        document.pop(late)
    for var in document["env"]:
        var.pop("valueFrom")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert template_revision(template) == hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def template_of(**fields: Any) -> Any:
        doc = copy.deepcopy(workload_doc)
        doc["spec"]["template"].update(fields)
        return _workload(doc).spec.template

    assert template_of(runAsUser=65534).run_as_user == "65534"
    assert template_of(runAsUser="www-data").run_as_user == "www-data"
    assert template_revision(template_of(runAsUser="www-data")) != template_revision(template)
    for bad in ("Root", "a b", "../x", "4294967295", "x" * 33):
        with pytest.raises(ValidationFailed, match="runAsUser"):
            template_of(runAsUser=bad)
    with pytest.raises(ValidationFailed, match="built-in workloads run as the agent's user"):
        template_of(builtin="cache", runAsUser="nobody")
    ref = {"name": "K", "valueFrom": {"secretRef": {"name": "db", "key": "pass.word"}}}
    assert [r.name for r in template_of(env=[ref]).secret_refs()] == ["db"]
    with pytest.raises(ValidationFailed, match="not both"):
        template_of(env=[{**ref, "value": "inline"}])
    with pytest.raises(ValidationFailed, match="secretRef"):
        template_of(env=[{"name": "K", "valueFrom": {"secretRef": {"name": "Bad_Name", "key": "k"}}}])
