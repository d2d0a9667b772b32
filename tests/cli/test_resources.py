"""``edgefleet get`` lists events by time, and every command fails the same way (``common.fail``)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from edgefleet.api.events import INFO as EVENTS
from edgefleet.api.sites import INFO as SITES
from edgefleet.cli import client as client_module
from edgefleet.cli.common import fail
from edgefleet.cli.main import app
from edgefleet.cli.output import display_order

Document = dict[str, Any]
ENV = {
    "EDGEFLEET_SERVER": "http://fake",
    "EDGEFLEET_TOKEN": "t",
    "EDGEFLEET_INSECURE": "1",
    "EDGEFLEET_CONFIG": "/nonexistent/config.yaml",
    "COLUMNS": "200",
}


def event(name: str, reason: str, last: str) -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "resourceVersion": "7", "creationTimestamp": "2026-12-07T09:00:00Z"},
        "spec": {
            "involvedObject": {"kind": "Site", "name": "par"},
            "reason": reason,
            "firstTimestamp": "2026-12-07T09:00:00Z",
            "lastTimestamp": last,
        },
    }


EVENTS_BY_NAME = [  # as the server lists them
    event("a-event", "Third", "2026-12-07T10:00:05Z"),
    event("b-event", "First", "2026-12-07T11:59:59.5+02:00"),
    event("c-event", "Second", "2026-12-07T10:00:00Z"),
]


class FakeClient:
    """Lists what it was given; nothing else of ApiClient is needed by ``get``."""

    def __init__(self, server: str, token: str | None, **_: Any) -> None:
        self.server = server

    def list(self, info: Any, *, selector: str | None = None) -> Document:
        items = EVENTS_BY_NAME if info.kind == "Event" else []  # the KindInfo, or the kind table's entry
        return {"items": [dict(item) for item in items], "metadata": {"resourceVersion": "7"}}

    def close(self) -> None:
        pass


def test_events_are_ordered_by_when_they_last_happened_and_other_kinds_are_not() -> None:
    reasons = [doc["spec"]["reason"] for doc in display_order(EVENTS, EVENTS_BY_NAME)]
    assert reasons == ["First", "Second", "Third"]  # as text, 11:59:59.5+02:00 would be last
    assert display_order(SITES, EVENTS_BY_NAME) == EVENTS_BY_NAME


def test_get_events_prints_them_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "ApiClient", FakeClient)
    for output in ("table", "name", "json"):
        result = CliRunner().invoke(app, ["get", "events", "-o", output], env=ENV)
        assert result.exit_code == 0, result.output
        text = result.stdout
        assert (
            text.index("b-event" if output != "table" else "First")
            < text.index("c-event" if output != "table" else "Second")
            < text.index("a-event" if output != "table" else "Third")
        )


def test_fail_prints_one_error_line_then_indented_details_without_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited:
        fail("webhook said [bold]no[/bold]\nsecond line", "spec.x: [red]bad[/red]", code=3)
    assert exited.value.exit_code == 3
    assert capsys.readouterr().err == "error: webhook said [bold]no[/bold]\n  second line\n  spec.x: [red]bad[/red]\n"


def test_a_refusal_shows_the_field_causes_and_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing(FakeClient):
        def list(self, info: Any, *, selector: str | None = None) -> Document:
            raise client_module.ClientError("forbidden", code=401, causes=[{"field": "token", "message": "expired"}])

    monkeypatch.setattr(client_module, "ApiClient", Refusing)
    result = CliRunner().invoke(app, ["get", "sites"], env=ENV)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: forbidden\n  token: expired\n"
        "  check the token: --token, EDGEFLEET_TOKEN or `edgefleet config set-context`\n"
    )


NODE = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Node",
    "metadata": {"name": "par-1", "resourceVersion": "7", "creationTimestamp": "2026-12-07T09:00:00Z"},
    "spec": {"site": "par", "addresses": ["192.0.2.10", "2001:db8::1"], "draining": True},
    "status": {
        "phase": "Ready",
        "workloads": {"cache": {"ready": True}, "api": {"ready": False}},
        "cache": {"offload": 0.5, "localRatio": 1, "clientRequests": 12, "hitRatio": 0.25},
    },
}
# What a server of another version, or a broken one, might send: cells say <none>, never a crash.
ODD_NODES: list[Document] = [
    {"metadata": {"name": "no-status"}, "spec": {"site": "par"}, "status": None},
    {"metadata": {"name": "odd-types"}, "spec": "x", "status": {"workloads": ["a"], "cache": {"offload": "high"}}},
]


def node_table(monkeypatch: pytest.MonkeyPatch, nodes: list[Document], output: str = "wide") -> str:
    class Nodes(FakeClient):
        def list(self, info: Any, *, selector: str | None = None) -> Document:
            return {"items": nodes, "metadata": {"resourceVersion": "7"}}

    monkeypatch.setattr(client_module, "ApiClient", Nodes)
    result = CliRunner().invoke(app, ["get", "nodes", "-o", output], env=ENV)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_nodes_table_is_read_from_the_documents_as_the_model_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefleet.api.meta import kind_info, parse

    header, _, row = node_table(monkeypatch, [NODE]).splitlines()
    cells = dict(zip(header.split(), row.split(), strict=True))
    model = parse(NODE)
    expected = {c.header: c.value(model) for c in kind_info("Node").columns}
    assert {h: cells[h] for h in expected if " " not in h and h != "HEARTBEAT"} == {
        h: v for h, v in expected.items() if h != "HEARTBEAT"
    }
    assert cells["STATUS"] == "Ready,Draining" and cells["WORKLOADS"] == "1/2" and cells["LOCAL"] == "100.0%"
    assert cells["ADDRESSES"] == "192.0.2.10,2001:db8::1" and cells["HIT-RATIO"] == "25.0%"


def test_a_nodes_table_of_odd_documents_shows_none(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = node_table(monkeypatch, ODD_NODES).splitlines()
    assert lines[2].split()[:3] == ["no-status", "Pending", "par"]
    assert lines[3].split()[:3] == ["odd-types", "Pending", "<none>"]
    assert "high" not in lines[3] and "a" not in lines[3].split()
