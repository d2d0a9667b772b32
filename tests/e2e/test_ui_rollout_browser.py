"""The dashboard shows rollouts, in headless Chromium against a real cloud and its workload controller.

One node (par-edge-1) reports Ready and running revision 1 of a Workload;
the test changes the template, and the controller starts a rollout that
drains par-edge-1 (for ten minutes: ``drain.seconds``) while the other,
never-connected nodes wait. The dashboard must show the Workload's row
(revision 1 -> 2, Progressing, 0/4 updated, par-edge-1 Draining in its
site), the drain and the running revision on par-edge-1's row, and follow
the node when it reports revision 2. Skipped like tests/e2e/test_ui_browser.py
when Chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from edgefleet.api.workloads import WorkloadTemplate, template_revision
from tests.cloudproc import CloudProcess
from tests.e2e.test_ui_browser import (  # noqa: F401  (browser: the fixture)
    API,
    MERGE_PATCH,
    browser,
    now,
    pytestmark,
    save_screenshot,
    wait_for,
)
from tests.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATES = {1: {"command": ["sleep", "1000"]}, 2: {"command": ["sleep", "2000"]}}
LIVE_SECONDS = 5.0


def digest(number: int) -> str:
    return template_revision(WorkloadTemplate.model_validate(TEMPLATES[number]))


def report(api: httpx.Client, node: str, revision: int) -> None:
    """What par-edge-1's agent would say: Ready, running the workload at ``revision``."""
    status = {
        "phase": "Ready",
        "lastHeartbeat": now(),
        "hub": "test-hub",
        "workloads": {"web": {"state": "Running", "ready": True, "revision": digest(revision)}},
    }
    response = api.patch(f"{API}/nodes/{node}/status", json={"status": status}, headers=MERGE_PATCH)
    assert response.status_code == 200, response.text


SNAPSHOT = """
const q = (css) => document.querySelector(css);
const row = q('#workloads tr[data-workload="web"]');
const chip = row && row.querySelector('.site-chip[data-site="par-edge"]');
const node = q('#nodes tr[data-node="par-edge-1"]');
const rev = node && node.querySelector('.workload[data-workload="web"] .rev');
return {
  row: row && { ...row.dataset, text: row.innerText },
  chip: chip && { updated: chip.dataset.updated, desired: chip.dataset.desired,
                  inFlight: [...chip.querySelectorAll(".in-flight")].map((e) => [e.dataset.node, e.dataset.phase]) },
  node: node && { fit: node.dataset.fit, drains: [...node.querySelectorAll("[data-drain]")].map((e) => e.dataset.drain),
                  drainText: node.querySelector("td.drains").innerText,
                  revision: rev ? [rev.dataset.revision, rev.dataset.state] : null },
  otherDrains: document.querySelectorAll('#nodes tr[data-node="par-edge-2"] [data-drain]').length,
  summary: q("#summary").textContent,
};
"""


def seen(driver: Any) -> dict[str, Any]:
    """What the dashboard shows of web and par-edge-1, read in one go (redraws replace the elements)."""
    result: dict[str, Any] = driver.execute_script(SNAPSHOT)
    return result


def wait_status(api: httpx.Client, what: str, check: Any, seconds: float = 15.0) -> None:
    wait_until(
        lambda: check(api.get(f"{API}/workloads/web").json().get("status") or {}), seconds, interval=0.1, what=what
    )


def test_dashboard_shows_revisions_rollout_progress_and_drains(
    cloud: CloudProcess,
    browser: Any,  # noqa: F811  (the imported fixture, by name)
    tmp_path: Path,
) -> None:
    with cloud.client() as api:
        for plural in ("sites", "nodes"):
            for doc in yaml.safe_load_all((EXAMPLES / f"{plural}.yaml").read_text()):
                assert api.post(f"{API}/{plural}", json=doc).status_code == 201
        report(api, "par-edge-1", 1)
        created = api.post(
            f"{API}/workloads",
            json={
                "apiVersion": "edgefleet.io/v1",
                "kind": "Workload",
                "metadata": {"name": "web"},
                "spec": {
                    "nodeSelector": "edgefleet.io/role=cache",
                    "template": TEMPLATES[1],
                    "strategy": {"drain": {"seconds": 600}, "maxUnavailable": "100%", "maxUnavailablePerSite": "100%"},
                },
            },
        )
        assert created.status_code == 201, created.text
        wait_status(api, "revision 1 adopted", lambda s: s.get("currentRevisionNumber") == 1)
        patched = api.patch(f"{API}/workloads/web", json={"spec": {"template": TEMPLATES[2]}}, headers=MERGE_PATCH)
        assert patched.status_code == 200, patched.text
        wait_status(
            api,
            "par-edge-1 draining",
            lambda s: ((s.get("rollout") or {}).get("nodes") or {}).get("par-edge-1", {}).get("phase") == "Draining",
        )

        browser.get(f"{cloud.url}/ui#token={cloud.token}")
        wait_for(browser, lambda d: (seen(d).get("row") or {}).get("phase") == "Progressing", 10, "web's rollout row")
        shown = seen(browser)
        row = shown["row"]
        assert (row["current"], row["update"], row["updated"], row["desired"]) == ("1", "2", "0", "4")
        assert "1 → 2" in row["text"] and "0/4 updated" in row["text"]
        assert "waiting: ams-edge-1, ams-edge-2, par-edge-2" in row["text"]
        assert shown["chip"] == {"updated": "0", "desired": "2", "inFlight": [["par-edge-1", "Draining"]]}

        wait_for(
            browser,
            lambda d: (seen(d).get("node") or {}).get("drains") == ["web"],
            LIVE_SECONDS,
            "par-edge-1 drained by the rollout of web",
        )
        node = seen(browser)["node"]
        assert "rollout: web" in node["drainText"]
        assert node["fit"] == "false"  # out of GSLB answers
        assert node["revision"] == ["1", "current"]
        assert seen(browser)["otherDrains"] == 0  # par-edge-2 waits, undrained
        assert "1 rolling out" in seen(browser)["summary"]

        report(api, "par-edge-1", 2)  # the agent switched: the row follows the watch
        wait_for(
            browser,
            lambda d: ((seen(d).get("node") or {}).get("revision") or [None])[0] == "2",
            LIVE_SECONDS,
            "par-edge-1 running revision 2",
        )
        # "update" while the rollout runs; "current" if the controller already finished it
        assert seen(browser)["node"]["revision"][1] in ("update", "current")

    screenshot = tmp_path / "dashboard-rollout.png"
    save_screenshot(browser, screenshot)
    print(f"dashboard screenshot: {screenshot}")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
