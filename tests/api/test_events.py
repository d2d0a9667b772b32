"""Event: a valid record, every rule with its field path, registry entry and table columns."""

from __future__ import annotations

import json

import pytest

from edgefleet.api import parse
from edgefleet.api.events import MAX_MESSAGE_LENGTH, Event
from edgefleet.api.meta import lookup

from .helpers import DELETE, Doc, changed, errors_of, make, row


@pytest.fixture
def event_doc() -> Doc:
    return make(
        "Event",
        "ams-edge.0123456789ab",
        {
            "involvedObject": {"kind": "Site", "name": "ams-edge"},
            "reason": "SiteActivated",
            "message": "demand from region eu-west: 80.0 qps, above activateAbove 50 qps for 60s",
            "firstTimestamp": "2026-01-01T10:00:00Z",
            "lastTimestamp": "2026-01-01T10:00:00Z",
            "source": "site-activation-controller",
        },
    )


def test_valid_event_and_defaults(event_doc: Doc) -> None:
    event = parse(event_doc)
    assert isinstance(event, Event)
    assert (event.spec.type, event.spec.count) == ("Normal", 1)
    assert event.spec.involved_object.kind == "Site"
    assert event.status is None
    wire = json.loads(json.dumps(event.to_dict()))
    assert "status" not in wire
    assert wire["spec"]["involvedObject"] == {"kind": "Site", "name": "ams-edge"}
    assert parse(wire) == event


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("spec.reason", "site activated", "spec.reason: 'site activated' is not a CamelCase word"),
        ("spec.reason", "siteActivated", "spec.reason: 'siteActivated' is not a CamelCase word"),
        ("spec.reason", DELETE, "spec.reason: Field required"),
        ("spec.type", "Error", "spec.type: Input should be 'Normal' or 'Warning'"),
        ("spec.count", 0, "spec.count: Input should be greater than or equal to 1"),
        ("spec.involvedObject.name", "Ams", "spec.involvedObject.name: 'Ams' is not a DNS-1123 name"),
        ("spec.involvedObject.kind", "site", "spec.involvedObject.kind: 'site' is not a CamelCase word"),
        ("spec.firstTimestamp", "yesterday", "spec.firstTimestamp: 'yesterday' is not an RFC 3339 timestamp"),
        ("spec.lastTimestamp", "2026-01-01T09:59:59Z", "spec.lastTimestamp: must not be before firstTimestamp"),
        ("spec.message", "x" * (MAX_MESSAGE_LENGTH + 1), "spec.message: String should have at most 1024"),
        ("spec.colour", "red", "spec.colour: unknown field"),
        ("status", {"phase": "Done"}, "status: Input should be None"),
    ],
)
def test_invalid_events_name_the_field(event_doc: Doc, path: str, value: object, error: str) -> None:
    errors = errors_of(changed(event_doc, path, value))
    assert len(errors) == 1 and errors[0].startswith(error), errors


def test_null_status_means_none(event_doc: Doc) -> None:
    event_doc["status"] = None
    assert parse(event_doc).status is None


def test_registered_with_plural_and_short_name() -> None:
    assert lookup("events").kind == "Event"
    assert lookup("ev").kind == "Event"
    assert lookup("event").model is Event


def test_columns(event_doc: Doc) -> None:
    event = parse(changed(changed(event_doc, "spec.type", "Warning"), "spec.count", 3))
    assert row(event, wide=False) == {
        "LAST SEEN": "2026-01-01T10:00:00Z",
        "TYPE": "Warning",
        "REASON": "SiteActivated",
        "OBJECT": "site/ams-edge",
        "MESSAGE": "demand from region eu-west: 80.0 qps, above activateAbove 50 qps for 60s",
    }
    assert row(event)["COUNT"] == "3"
    assert row(event)["SOURCE"] == "site-activation-controller"
    assert row(parse(changed(event_doc, "spec.message", "")))["MESSAGE"] == "<none>"
