"""ClusterInfo: a valid object, every rule with its field path, registry entry and table columns."""

from __future__ import annotations

import json

import pytest

from edgefleet.api import parse
from edgefleet.api.clusterinfo import MAX_SERVERS, ClusterInfo, check_server_url
from edgefleet.api.meta import lookup

from .helpers import DELETE, Doc, changed, errors_of, make, row


@pytest.fixture
def info_doc() -> Doc:
    return make("ClusterInfo", "default", {"servers": ["https://hub-1.example:7440", "http://10.0.0.2:7440"]})


def test_valid_cluster_info_is_normalised(info_doc: Doc) -> None:
    info_doc["spec"]["servers"] = [
        "HTTPS://Hub-1.Example:7440/",
        "http://10.0.0.2:7440",
        "http://[2001:db8::1]:7440",
        "https://cloud.example/edgefleet/",
    ]
    info = parse(info_doc)
    assert isinstance(info, ClusterInfo)
    assert info.spec.servers == [
        "https://hub-1.example:7440",
        "http://10.0.0.2:7440",
        "http://[2001:db8::1]:7440",
        "https://cloud.example/edgefleet",
    ]
    assert info.status is None
    wire = json.loads(json.dumps(info.to_dict()))
    assert "status" not in wire
    assert parse(wire) == info


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("spec.servers", [], "spec.servers: List should have at least 1 item"),
        (
            "spec.servers",
            [f"http://10.0.0.{i}:7440" for i in range(MAX_SERVERS + 1)],
            "spec.servers: List should have at most 16 items",
        ),
        ("spec.servers", DELETE, "spec.servers: Field required"),
        ("spec.servers", "http://10.0.0.1:7440", "spec.servers: Input should be a valid list"),
        ("spec.servers.1", "ftp://10.0.0.2", "spec.servers[1]: not an absolute http(s) URL"),
        ("spec.servers.1", "10.0.0.2:7440", "spec.servers[1]: not an absolute http(s) URL"),
        ("spec.servers.1", "http://", "spec.servers[1]: not an absolute http(s) URL"),
        ("spec.servers.1", "http://10.0.0.2:7440/?x=1", "spec.servers[1]: must not contain a query or fragment"),
        ("spec.servers.1", "http://u:p@10.0.0.2", "spec.servers[1]: must not contain user:password@ credentials"),
        ("spec.servers.1", "http://10.0.0.2:99999", "spec.servers[1]: invalid host or port"),
        ("spec.servers.1", "http://hub 2:7440", "spec.servers[1]: must not contain spaces"),
        ("spec.servers.1", "HTTPS://HUB-1.example:7440/", "spec.servers[1]: duplicate server"),
        ("spec.servers.1", 7440, "spec.servers[1]: Input should be a valid string"),
        ("spec.colour", "red", "spec.colour: unknown field"),
        ("status", {"phase": "Done"}, "status: Input should be None"),
    ],
)
def test_invalid_cluster_infos_name_the_field(info_doc: Doc, path: str, value: object, error: str) -> None:
    errors = errors_of(changed(info_doc, path, value))
    assert len(errors) == 1 and errors[0].startswith(error), errors


def test_check_server_url_is_the_one_rule() -> None:
    assert check_server_url("http://Cloud:7440//") == "http://cloud:7440"
    with pytest.raises(ValueError, match="absolute"):
        check_server_url("cloud:7440")


def test_registered_with_plural_and_short_name() -> None:
    assert lookup("clusterinfos").kind == "ClusterInfo"
    assert lookup("clusterinfo").model is ClusterInfo
    assert lookup("ci").kind == "ClusterInfo"


def test_columns(info_doc: Doc) -> None:
    info = parse(info_doc)
    assert row(info, wide=False) == {"SERVERS": "https://hub-1.example:7440,http://10.0.0.2:7440"}
    assert row(info)["COUNT"] == "2"
