"""Admission as an operator meets it: a real cloud process and the CLI as subprocesses.

One manifest lists a Node before its Site (apply orders them), a Workload
whose selector matches no node (a yellow warning on stderr, exit 0), then a
Site that still has a Node (refused, with --force as the way out), and
``delete -f`` of the whole manifest (Nodes before their Sites).
"""

from __future__ import annotations

from pathlib import Path

from tests.cloudproc import CloudProcess
from tests.e2e.test_cli import ok, run

MANIFEST = """\
apiVersion: edgefleet.io/v1
kind: Node
metadata: {name: lyon-1, labels: {role: cache}}
spec: {site: lyon}
---
apiVersion: edgefleet.io/v1
kind: Site
metadata: {name: lyon}
spec: {region: eu-west, location: {lat: 45.7, lon: 4.8, country: FR}, capacityGbps: 10}
---
apiVersion: edgefleet.io/v1
kind: Workload
metadata: {name: web}
spec: {nodeSelector: "role=web", template: {command: [sleep, "1000"]}}
"""


def test_apply_orders_warns_and_delete_needs_force(cloud: CloudProcess, tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text(MANIFEST)
    applied = run(cloud, tmp_path, "apply", "-f", str(manifest))
    assert ok(applied).splitlines() == ["site/lyon created", "node/lyon-1 created", "workload/web created"]
    assert "Warning: spec.nodeSelector: no Node matches 'role=web'" in applied.stderr

    refused = run(cloud, tmp_path, "delete", "site", "lyon")
    assert refused.returncode == 1
    assert 'site "lyon" still has 1 node (lyon-1)' in refused.stderr and "--force" in refused.stderr
    assert "someone changed it" not in refused.stderr, "no hint about version conflicts"

    ok(run(cloud, tmp_path, "delete", "-f", str(manifest)))
    ok(run(cloud, tmp_path, "apply", "-f", str(manifest)))
    assert "site/lyon deleted" in ok(run(cloud, tmp_path, "delete", "site", "lyon", "--force"))
    assert "lyon-1" in ok(run(cloud, tmp_path, "get", "nodes")), "force leaves the node"
