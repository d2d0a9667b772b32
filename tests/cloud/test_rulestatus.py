"""Node conditions in the cloud: its own transition times, one Event per change, and a gate across nodes."""

from __future__ import annotations

from typing import Any

from edgefleet.api.doccolumns import NODE_COLUMNS
from edgefleet.api.documents import JSONObject
from edgefleet.cloud.rulestatus import EventGate, condition_events, stamp_conditions

MISSING = "domain shop, rule signed: Secret sign is not on this node (it does not exist)"


def rules_ready(status: str, message: str = "", at: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": "RulesReady", "status": status, "reason": "x", "message": message}
    if at is not None:
        condition["lastTransitionTime"] = at
    return {"conditions": [condition]}


def test_transition_times_are_the_clouds_and_kept_while_the_status_holds() -> None:
    patch: JSONObject = rules_ready("False", MISSING, at="1999-01-01T00:00:00Z")  # the agent's time: ignored
    stamp_conditions(patch, {}, "2026-01-01T00:00:00Z")
    assert patch["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    again: JSONObject = rules_ready("False", MISSING + " (changed)")
    stamp_conditions(again, patch, "2026-01-01T00:05:00Z")
    assert again["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z", "same status: kept"
    fixed: JSONObject = rules_ready("True")
    stamp_conditions(fixed, again, "2026-01-01T00:09:00Z")
    assert fixed["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    untouched: JSONObject = {"cache": {}}
    stamp_conditions(untouched, fixed, "2026-01-01T00:10:00Z")
    assert untouched == {"cache": {}}


def test_an_event_per_change_never_per_report() -> None:
    [warning] = condition_events("r1", {}, rules_ready("False", MISSING))
    assert (warning.type, warning.reason) == ("Warning", "SecretMissing")
    assert warning.message == f"node r1: {MISSING}"
    assert condition_events("r1", rules_ready("False", MISSING), rules_ready("False", MISSING)) == []
    assert len(condition_events("r1", rules_ready("False", MISSING), rules_ready("False", "other"))) == 1
    [normal] = condition_events("r1", rules_ready("False", MISSING), rules_ready("True"))
    assert (normal.type, normal.reason) == ("Normal", "SecretsPresent")
    assert condition_events("r1", {}, rules_ready("True")) == [], "ready from the start: nothing to say"
    assert condition_events("r1", rules_ready("True"), rules_ready("True")) == []
    assert condition_events("r1", rules_ready("False", MISSING), {"cache": {}}) == [], "not reported this time"
    assert condition_events("r1", None, {"conditions": ["junk", {"type": 3}]}) == []


def test_the_gate_lets_one_event_per_problem_through_per_window() -> None:
    gate = EventGate(window=60, size=2)
    first = condition_events("r1", {}, rules_ready("False", MISSING))[0]
    second = condition_events("r2", {}, rules_ready("False", MISSING))[0]
    assert first.gate_key == second.gate_key, "the same problem on another node"
    assert gate.allow(first.gate_key, 0.0) and not gate.allow(second.gate_key, 30.0)
    assert gate.allow(second.gate_key, 61.0)
    assert gate.allow("a", 62.0) and gate.allow("b", 62.0), "full: cleared, bounded"


def test_get_nodes_shows_a_false_condition_in_the_status_column() -> None:
    state = dict((column.header, column.value) for column in NODE_COLUMNS)["STATUS"]
    node: dict[str, Any] = {"spec": {}, "status": {"phase": "Ready", **rules_ready("False", MISSING)}}
    node["status"]["conditions"][0]["reason"] = "SecretMissing"
    assert state(node) == "Ready,SecretMissing"
    node["status"]["conditions"][0]["status"] = "True"
    assert state(node) == "Ready"
    node["status"]["conditions"] = ["junk", {"status": "False", "reason": "\x1b[31mred"}, {"status": "False"}]
    assert state(node) == "Ready", "only a plain word is shown: no terminal escapes from a node"
