"""Node: addresses, scheduling switches, status, table columns."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.nodes import Node, check_address

from .helpers import DELETE, Doc, changed, errors_of, row


def test_valid_node_and_defaults(node_doc: Doc) -> None:
    node = parse(node_doc)
    assert isinstance(node, Node)
    assert node.spec.site == "par-edge"
    assert (node.spec.unschedulable, node.spec.draining) == (False, False)
    assert node.status.phase is None


def test_addresses_are_canonical(node_doc: Doc) -> None:
    node_doc["spec"]["addresses"] = ["2001:DB8:0:0::1", "127.0.0.1", "fe80::1"]
    node = parse(node_doc)
    assert isinstance(node, Node)
    assert node.spec.addresses == ["2001:db8::1", "127.0.0.1", "fe80::1"]


def test_no_addresses_is_allowed(node_doc: Doc) -> None:
    node = parse(changed(node_doc, "spec.addresses", DELETE))
    assert isinstance(node, Node)
    assert node.spec.addresses == []


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (
            "spec.addresses",
            ["192.0.2.300"],
            "spec.addresses[0]: '192.0.2.300' is not a valid IPv4 or IPv6 address",
        ),
        (
            "spec.addresses",
            ["192.0.2.1", "edge1.example.com"],
            "spec.addresses[1]: 'edge1.example.com' is not a valid IPv4 or IPv6 address",
        ),
        ("spec.addresses", ["0.0.0.0"], "spec.addresses[0]: '0.0.0.0' is not a unicast address"),
        ("spec.addresses", ["::"], "spec.addresses[0]: '::' is not a unicast address"),
        ("spec.addresses", ["ff02::1"], "spec.addresses[0]: 'ff02::1' is not a unicast address"),
        (
            "spec.addresses",
            ["fe80::1%eth0"],
            "spec.addresses[0]: 'fe80::1%eth0': zoned IPv6 addresses cannot be served in DNS answers",
        ),
        (
            "spec.addresses",
            ["2001:db8::1", "2001:DB8::1"],
            "spec.addresses[1]: duplicate address '2001:db8::1'",
        ),
        ("spec.addresses", [1234], "spec.addresses[0]: Input should be a valid string"),
        ("spec.site", DELETE, "spec.site: Field required"),
        (
            "spec.site",
            "Par Edge",
            "spec.site: 'Par Edge' is not a DNS-1123 name: use lowercase letters, digits, '-' and "
            "'.', starting and ending with a letter or digit",
        ),
        (
            "spec.draining",
            "soon",
            "spec.draining: Input should be a valid boolean, unable to interpret input",
        ),
        ("spec.labels", {"a": "b"}, "spec.labels: unknown field"),
    ],
)
def test_invalid_node(node_doc: Doc, path: str, value: Any, error: str) -> None:
    assert errors_of(changed(node_doc, path, value)) == [error]


def test_check_address_is_usable_alone() -> None:
    assert check_address("2001:0db8::0001") == "2001:db8::1"
    with pytest.raises(ValueError, match="not a valid"):
        check_address("localhost")


STATUS: dict[str, Any] = {
    "phase": "Ready",
    "lastHeartbeat": "2024-05-01T12:00:00Z",
    "hub": "cloud-1",
    "syncedRevision": 1042,
    "syncedEpoch": "e-7f3a",
    "agentVersion": "0.1.0",
    "workloads": {"cache": {"revision": "abc123", "state": "Running", "ready": True, "restarts": 0}},
    "cache": {
        "requests": 1000,
        "hits": 900,
        "hitRatio": 0.9,
        "bytesServed": 10**9,
        "windowSeconds": 300,
        "clientRequests": 1000,
        "servedLocal": 900,
        "localRatio": 0.9,
        "offload": 0.99,
        "domains": {"shop": {"requests": 1000, "originRequests": 10}},
    },
    "peerVotes": {"par-edge-2": {"healthy": True, "at": "2024-05-01T12:00:00+00:00"}},
}


def test_status_round_trips(node_doc: Doc) -> None:
    node_doc["status"] = STATUS
    node = parse(node_doc)
    assert isinstance(node, Node)
    assert node.status.workloads is not None
    assert node.status.workloads["cache"].state == "Running"
    assert node.to_dict()["status"] == STATUS


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("status.phase", "Gone", "status.phase: Input should be 'Ready', 'NotReady' or 'Unknown'"),
        (
            "status.lastHeartbeat",
            "yesterday",
            "status.lastHeartbeat: 'yesterday' is not an RFC 3339 timestamp",
        ),
        (
            "status.lastHeartbeat",
            "2024-05-01T12:00:00",
            "status.lastHeartbeat: '2024-05-01T12:00:00' is not an RFC 3339 timestamp with a UTC offset",
        ),
        (
            "status.cache.hitRatio",
            1.5,
            "status.cache.hitRatio: Input should be less than or equal to 1",
        ),
        (
            "status.peerVotes.par-edge-2.healthy",
            DELETE,
            "status.peerVotes.par-edge-2.healthy: Field required",
        ),
    ],
)
def test_invalid_status(node_doc: Doc, path: str, value: Any, error: str) -> None:
    node_doc["status"] = STATUS
    assert errors_of(changed(node_doc, path, value)) == [error]


def test_columns(node_doc: Doc) -> None:
    assert row(parse(node_doc), wide=False) == {
        "SITE": "par-edge",
        "STATUS": "Pending",
        "HEARTBEAT": "<none>",
        "HUB": "<none>",
        "SYNCED": "<none>",
        "WORKLOADS": "<none>",
        "OFFLOAD": "<none>",
    }
    node_doc["status"] = {**STATUS, "workloads": {**STATUS["workloads"], "api": {"ready": False}}}
    node_doc["spec"].update(unschedulable=True, draining=True)
    assert row(parse(node_doc)) == {
        "SITE": "par-edge",
        "STATUS": "Ready,SchedulingDisabled,Draining",
        "HEARTBEAT": "2024-05-01T12:00:00Z",
        "HUB": "cloud-1",
        "SYNCED": "1042",
        "WORKLOADS": "1/2",
        "ADDRESSES": "192.0.2.10",
        "OFFLOAD": "99.0%",
        "LOCAL": "90.0%",
        "REQUESTS": "1000",
        "BYTE-OFFLOAD": "<none>",
        "HIT-RATIO": "90.0%",
    }


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"workloads": {f"w{i}": {"ready": True} for i in range(257)}}, "status.workloads"),
        ({"peerVotes": {f"n{i}": {"healthy": True} for i in range(513)}}, "status.peerVotes"),
        ({"peerVotes": {"Not A Name!": {"healthy": True}}}, "status.peerVotes"),
        ({"agentVersion": "v" * 65}, "status.agentVersion"),
        ({"message": "m" * 4097}, "status.message"),
        ({"workloads": {"cache": {"revision": "r" * 4097}}}, "status.workloads"),
        ({"cache": {"bytesServed": 2**63}}, "status.cache.bytesServed"),
    ],
)
def test_every_status_field_is_bounded(node_doc: Doc, status: Doc, field: str) -> None:
    """Issue 12, item 4: a status out of bounds is refused, naming the field."""
    errors = errors_of({**node_doc, "status": status})
    assert len(errors) == 1 and errors[0].startswith(field), errors
