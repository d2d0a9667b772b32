"""Lifecycle rules: server-owned metadata on create, update and status writes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest

from edgefleet.api import lifecycle, parse
from edgefleet.api.errors import ValidationFailed
from edgefleet.api.nodes import Node, NodeStatus
from edgefleet.api.sites import Site, SiteStatus

from .helpers import Doc

NOW = datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC)


def _site(document: Doc) -> Site:
    obj = parse(document)
    assert isinstance(obj, Site)
    return obj


@pytest.fixture
def stored(site_doc: Doc) -> Site:
    """A site as the store holds it after create, with a status written later."""
    created = lifecycle.prepare_create(_site(site_doc), uid="uid-1", now=NOW)
    status = created.model_copy(update={"status": SiteStatus(active=True, healthy_nodes=2)})
    return lifecycle.set_resource_version(lifecycle.prepare_status_update(created, status), 7)


def test_prepare_create(site_doc: Doc) -> None:
    site_doc["metadata"].update(
        uid="client-uid",
        resourceVersion="99",
        generation=5,
        creationTimestamp="1999-01-01T00:00:00Z",
    )
    site_doc["status"] = {"active": True}
    request = _site(site_doc)
    before = request.model_copy(deep=True)
    created = lifecycle.prepare_create(request, uid="uid-1", now=NOW)
    meta = created.metadata
    assert (meta.uid, meta.generation, meta.resource_version) == ("uid-1", 1, None)
    assert meta.creation_timestamp == "2024-05-01T12:30:45Z"
    assert created.status == SiteStatus()
    assert created.spec == request.spec
    assert request == before


def test_create_timestamp_is_utc() -> None:
    paris = timezone(timedelta(hours=2))
    node = parse(
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"site": "s"},
        }
    )
    created = lifecycle.prepare_create(node, uid="u", now=datetime(2024, 5, 1, 14, 0, tzinfo=paris))
    assert created.metadata.creation_timestamp == "2024-05-01T12:00:00Z"
    assert isinstance(created, Node) and created.status == NodeStatus()


def test_create_refuses_caller_bugs(site_doc: Doc) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        lifecycle.prepare_create(_site(site_doc), uid="u", now=datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="uid"):
        lifecycle.prepare_create(_site(site_doc), uid="", now=NOW)


def test_update_of_spec_bumps_generation(stored: Site, site_doc: Doc) -> None:
    site_doc["spec"]["capacityGbps"] = 20
    site_doc["metadata"]["resourceVersion"] = "7"
    updated = lifecycle.prepare_update(stored, _site(site_doc))
    meta = updated.metadata
    assert (meta.uid, meta.generation) == ("uid-1", 2)
    assert meta.creation_timestamp == "2024-05-01T12:30:45Z"
    assert meta.resource_version == "7"  # the client's precondition, for the store layer
    assert updated.spec.capacity_gbps == 20
    assert updated.status == stored.status


def test_update_of_metadata_only_keeps_generation(stored: Site, site_doc: Doc) -> None:
    site_doc["metadata"]["labels"] = {"tier": "edge"}
    site_doc["metadata"]["annotations"] = {"owner": "netops"}
    updated = lifecycle.prepare_update(stored, _site(site_doc))
    assert updated.metadata.generation == 1
    assert updated.metadata.labels == {"tier": "edge"}
    assert updated.metadata.annotations == {"owner": "netops"}


def test_update_ignores_client_status_and_server_fields(stored: Site, site_doc: Doc) -> None:
    site_doc["status"] = {"active": False}
    site_doc["metadata"].update(generation=40, creationTimestamp="2000-01-01T00:00:00Z")
    updated = lifecycle.prepare_update(stored, _site(site_doc))
    assert updated.status == stored.status
    assert updated.metadata.generation == 1
    assert updated.metadata.creation_timestamp == stored.metadata.creation_timestamp


def test_generation_counts_spec_changes_only(stored: Site, site_doc: Doc) -> None:
    current = stored
    for capacity in (10, 11, 11, 12, 12, 10):
        site_doc["spec"]["capacityGbps"] = capacity
        current = lifecycle.prepare_update(current, _site(site_doc))
    assert current.metadata.generation == 4


def test_equal_spec_in_another_spelling_is_no_change(stored: Site, site_doc: Doc) -> None:
    site_doc["spec"]["location"]["country"] = "fr"
    site_doc["spec"]["capacityGbps"] = 10.0
    site_doc["spec"]["alwaysOn"] = True
    assert lifecycle.prepare_update(stored, _site(site_doc)).metadata.generation == 1


def test_update_must_be_the_same_object(stored: Site, site_doc: Doc) -> None:
    renamed = copy.deepcopy(site_doc)
    renamed["metadata"]["name"] = "other"
    with pytest.raises(ValidationFailed) as info:
        lifecycle.prepare_update(stored, _site(renamed))
    assert [str(e) for e in info.value.errors] == ["metadata.name: cannot change from 'par-edge' to 'other'"]
    site_doc["metadata"]["uid"] = "uid-2"
    with pytest.raises(ValidationFailed, match=r"metadata\.uid: does not match"):
        lifecycle.prepare_update(stored, _site(site_doc))
    node = parse(
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Node",
            "metadata": {"name": "par-edge"},
            "spec": {"site": "s"},
        }
    )
    with pytest.raises(ValidationFailed, match="kind: cannot change from 'Site' to 'Node'"):
        lifecycle.prepare_update(stored, node)


def test_update_does_not_modify_inputs(stored: Site, site_doc: Doc) -> None:
    site_doc["spec"]["capacityGbps"] = 20
    new = _site(site_doc)
    old_before, new_before = stored.model_copy(deep=True), new.model_copy(deep=True)
    updated = lifecycle.prepare_update(stored, new)
    updated.metadata.labels["x"] = "y"
    assert (stored, new) == (old_before, new_before)


def test_status_update_takes_only_status(stored: Site, site_doc: Doc) -> None:
    site_doc["spec"]["capacityGbps"] = 99
    site_doc["metadata"]["labels"] = {"sneaky": "yes"}
    site_doc["status"] = {"active": False, "healthyNodes": 0, "totalNodes": 2}
    updated = lifecycle.prepare_status_update(stored, _site(site_doc))
    assert updated.status == SiteStatus(active=False, healthy_nodes=0, total_nodes=2)
    assert updated.spec == stored.spec
    assert updated.metadata == stored.metadata
    renamed = site_doc | {"metadata": {"name": "other"}}
    with pytest.raises(ValidationFailed, match=r"metadata\.name"):
        lifecycle.prepare_status_update(stored, _site(renamed))


def test_is_unchanged(stored: Site, site_doc: Doc) -> None:
    assert lifecycle.is_unchanged(stored, _site(site_doc))
    site_doc["status"] = {"active": False}
    site_doc["metadata"]["resourceVersion"] = "1"
    assert lifecycle.is_unchanged(stored, _site(site_doc)), "status and server fields ignored"
    for path, value in (("labels", {"a": "b"}), ("annotations", {"a": "b"})):
        other = copy.deepcopy(site_doc)
        other["metadata"][path] = value
        assert not lifecycle.is_unchanged(stored, _site(other))
    site_doc["spec"]["alwaysOn"] = False
    assert not lifecycle.is_unchanged(stored, _site(site_doc))


def test_resource_version_helpers(stored: Site) -> None:
    assert lifecycle.get_resource_version(stored) == 7
    cleared = lifecycle.set_resource_version(stored, None)
    assert lifecycle.get_resource_version(cleared) is None
    assert stored.metadata.resource_version == "7"
    assert lifecycle.set_resource_version(stored, 12).metadata.resource_version == "12"
    assert lifecycle.parse_resource_version("0042") == 42
    for bad in ("", "-1", "1.5", "abc", "١٢", "9" * 21):
        with pytest.raises(ValidationFailed, match=r"metadata\.resourceVersion"):
            lifecycle.parse_resource_version(bad)
    with pytest.raises(ValueError, match="never negative"):
        lifecycle.format_resource_version(-1)
