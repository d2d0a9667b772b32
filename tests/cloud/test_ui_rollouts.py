"""The dashboard's view of rollouts (model.js), run in node on hand-made objects.

Which revision a node runs (numbered through WorkloadRevision objects, or a
short hash), whether a rollout drains it, and what a Workload's rollout row
says: revisions current -> update, phase, step, updated/desired and the
per-site counts with the nodes in flight. The browser draws these in
tests/e2e/test_ui_rollout_browser.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cloud.test_ui import run_node

ROLLOUT_SCRIPT = """
const m = await import(UI + "/model.js");
const workload = (name, status, spec = {}) => ({ metadata: { name, uid: `uid-${name}` },
  spec: { strategy: { steps: [{ nodes: 1 }, { pause: {} }, { percent: 50 }] }, ...spec }, status });
const rolling = workload("cache", {
  currentRevision: "aaaa1111aaaa1111", currentRevisionNumber: 2, updateRevision: "bbbb2222bbbb2222",
  updateRevisionNumber: 3, desiredCount: 4, updatedCount: 1, availableCount: 2,
  sites: { par: { desired: 2, updated: 1, ready: 2, available: 1, unavailable: 1 },
           ams: { desired: 2, updated: 0, ready: 1, available: 1, unavailable: 1 } },
  rollout: { phase: "Paused", target: "bbbb2222bbbb2222", targetNumber: 3, step: 1, waiting: ["ams-2"],
             nodes: { "par-1": { to: "bbbb2222bbbb2222", phase: "Settling", since: "2026-01-01T00:00:00Z" } },
             message: "paused at step 2" } }, { paused: true });
const done = workload("web", { currentRevision: "cccc", currentRevisionNumber: 5, updateRevision: "cccc",
  updateRevisionNumber: 5, desiredCount: 2, updatedCount: 2,
  rollout: { phase: "Completed", target: "cccc", targetNumber: 5, step: 3, nodes: { x: { phase: "Updating" } },
             message: "done" } });
const fresh = workload("new", {});
const revisions = [
  { spec: { workload: "cache", workloadUid: "uid-cache", number: 1, revision: "dddd4444dddd4444" } },
  { spec: { workload: "cache", workloadUid: "someone-else", number: 9, revision: "eeee5555eeee5555" } },
  { spec: { workload: "gone", number: 1, revision: "ffff" } },
];
const known = m.workloadRevisions([rolling, done, fresh], revisions);
const node = (name, workloads, drains) => ({ metadata: { name }, spec: { site: "par" },
  status: { phase: "Ready", workloads, drains } });
const runs = (hash) => node("n", { cache: { state: "Running", ready: true, revision: hash } });
const siteOf = new Map([["par-1", "par"], ["ams-2", "ams"]]);
const drained = node("par-1", {}, { "workload/cache": "2026-01-01T00:00:00Z", "maintenance": "2026-01-01T00:00:00Z" });
console.log(JSON.stringify({
  numbers: Object.fromEntries([...known.get("cache").numbers].sort()),
  onUpdate: m.workloadSummary(runs("bbbb2222bbbb2222"), known)[0].revision,
  onCurrent: m.workloadSummary(runs("aaaa1111aaaa1111"), known)[0].revision,
  onOlder: m.workloadSummary(runs("dddd4444dddd4444"), known)[0].revision,
  onNamesakes: m.workloadSummary(runs("eeee5555eeee5555"), known)[0].revision,
  noRevision: m.workloadSummary(runs(undefined), known)[0].revision,
  withoutRevisions: m.workloadSummary(runs("aaaa1111aaaa1111"))[0],
  doneCurrent: m.runningRevision("cccc", known.get("web")),
  drains: m.cloudDrains(drained),
  drainedFit: m.isFit(drained, [drained]),
  undrainedFit: m.isFit(node("par-2", {}, {}), []),
  rolling: m.workloadRollout(rolling, siteOf),
  done: m.workloadRollout(done, siteOf),
  fresh: m.workloadRollout(fresh),
  steps: [{ nodes: 2 }, { percent: 25 }, { selector: "tier=canary" }, { pause: { seconds: 60 } }, { pause: {} }]
    .map(m.describeStep),
  labels: [m.revisionLabel(3, "abc"), m.revisionLabel(null, "0123456789abcdef"), m.revisionLabel(null, null)],
}));
"""


@pytest.fixture(scope="module")
def result() -> Any:
    return run_node(ROLLOUT_SCRIPT)


def test_nodes_show_the_revision_they_run_and_the_rollout_drains(result: Any) -> None:
    assert result["numbers"] == {"aaaa1111aaaa1111": 2, "bbbb2222bbbb2222": 3, "dddd4444dddd4444": 1}
    assert result["onUpdate"] == {"label": "3", "hash": "bbbb2222bbbb2222", "state": "update"}
    assert result["onCurrent"] == {"label": "2", "hash": "aaaa1111aaaa1111", "state": "current"}
    assert result["onOlder"] == {"label": "1", "hash": "dddd4444dddd4444", "state": "other"}
    assert result["onNamesakes"] == {"label": "eeee5555", "hash": "eeee5555eeee5555", "state": "other"}
    assert result["noRevision"] == {"label": "—", "hash": None, "state": "unknown"}
    assert result["withoutRevisions"] == {"name": "cache", "state": "Running", "ready": True, "revision": None}
    assert result["doneCurrent"] == {"label": "5", "hash": "cccc", "state": "current"}
    assert result["drains"] == [
        {"key": "maintenance", "workload": None, "since": "2026-01-01T00:00:00Z"},
        {"key": "workload/cache", "workload": "cache", "since": "2026-01-01T00:00:00Z"},
    ]
    assert result["drainedFit"] is False and result["undrainedFit"] is True


def test_a_workload_row_says_where_its_rollout_is(result: Any) -> None:
    rolling = result["rolling"]
    assert {
        k: rolling[k]
        for k in (
            "current",
            "update",
            "changing",
            "phase",
            "active",
            "stepText",
            "updated",
            "desired",
            "available",
            "ratio",
            "paused",
            "message",
            "waiting",
        )
    } == {
        "current": "2",
        "update": "3",
        "changing": True,
        "phase": "Paused",
        "active": True,
        "stepText": "step 2/3: pause until resumed",
        "updated": 1,
        "desired": 4,
        "available": 2,
        "ratio": 0.25,
        "paused": True,
        "message": "paused at step 2",
        "waiting": ["ams-2"],
    }
    assert rolling["sites"] == [
        {"name": "ams", "desired": 2, "updated": 0, "ready": 1, "available": 1, "unavailable": 1, "inFlight": []},
        {
            "name": "par",
            "desired": 2,
            "updated": 1,
            "ready": 2,
            "available": 1,
            "unavailable": 1,
            "inFlight": [{"node": "par-1", "phase": "Settling", "since": "2026-01-01T00:00:00Z"}],
        },
    ]
    done = result["done"]
    assert (done["current"], done["update"], done["changing"], done["phase"], done["active"]) == (
        "5",
        "5",
        False,
        "Completed",
        False,
    )
    assert done["stepText"] == "" and done["sites"] == [] and done["waiting"] == [] and done["ratio"] == 1
    fresh = result["fresh"]
    assert (fresh["current"], fresh["phase"], fresh["desired"], fresh["ratio"]) == ("—", None, None, None)
    assert result["steps"] == [
        "2 nodes",
        "25% of the nodes",
        "nodes matching tier=canary",
        "pause 60s",
        "pause until resumed",
    ]
    assert result["labels"] == ["3", "01234567", "—"]
