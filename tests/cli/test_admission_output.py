"""The CLI's side of admission: warnings printed (safely) in yellow, delete --force, apply and delete order."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from edgefleet.api.meta import lookup
from edgefleet.cli import client as client_module
from edgefleet.cli.client import ApiClient, parse_warning, print_warning
from edgefleet.cli.manifests import in_apply_order, in_delete_order, load_manifests

MANIFEST = """\
apiVersion: edgefleet.io/v1
kind: Workload
metadata: {name: web}
spec: {nodeSelector: "role=web", template: {command: [sleep, "1"]}}
---
apiVersion: edgefleet.io/v1
kind: Node
metadata: {name: par-1}
spec: {site: paris}
---
apiVersion: edgefleet.io/v1
kind: Site
metadata: {name: paris}
spec: {region: eu-west, location: {lat: 48.8, lon: 2.3, country: FR}, capacityGbps: 10}
---
apiVersion: edgefleet.io/v1
kind: Node
metadata: {name: par-2}
spec: {site: paris}
"""


def test_parse_warning_reads_the_kubernetes_form() -> None:
    assert parse_warning('299 - "spec.nodeSelector: no Node matches \\"x\\" \\\\o/"') == (
        'spec.nodeSelector: no Node matches "x" \\o/'
    )
    assert parse_warning("not the usual form") == "not the usual form"
    assert parse_warning('299 - "bell\x07 and \x1b[2J clear"') == "bell  and  [2J clear"


def test_print_warning_is_yellow_and_prints_markup_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(client_module, "_stderr", Console(file=buffer, force_terminal=True, color_system="standard"))
    print_warning("[bold red]not markup[/] ok")
    text = buffer.getvalue()
    assert "\x1b[33m" in text and "[bold red]not markup[/] ok" in text


def mocked(handler: httpx.MockTransport, seen: list[str]) -> ApiClient:
    client = ApiClient("http://cloud", None, on_warning=seen.append)
    client._http = httpx.Client(transport=handler, base_url="http://cloud")
    return client


def test_every_response_hands_its_warnings_over_and_delete_can_force() -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        headers = [("Warning", '299 - "first"'), ("Warning", '299 - "second"')]
        return httpx.Response(200, json={"kind": "Site"}, headers=headers)

    seen: list[str] = []
    with mocked(httpx.MockTransport(answer), seen) as client:
        client.delete(lookup("sites"), "paris", force=True)
        client.delete(lookup("sites"), "lyon")
    assert seen == ["first", "second", "first", "second"]
    assert requests[0].url.params["force"] == "true" and "force" not in requests[1].url.params


def test_sites_are_applied_first_then_nodes_and_deleted_last(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(MANIFEST)
    manifests = load_manifests([str(path)])
    applied = [m.resource.name for m in in_apply_order(manifests)]
    assert applied == ["paris", "par-1", "par-2", "web"]
    deleted = [m.resource.name for m in in_delete_order(manifests)]
    assert deleted == ["web", "par-1", "par-2", "paris"]
