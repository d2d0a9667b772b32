"""The geo table's Artifact: the publishing decision (same digest: no write) and which table a node takes."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api.artifacts import Artifact
from edgefleet.api.geotables import (
    CSV_MEDIA_TYPE,
    MMDB_MEDIA_TYPE,
    artifact_document,
    current_table,
    media_type_for,
    plan_publish,
    suffix_for,
    table_object_name,
)

A = "a" * 64
B = "b" * 64
C = "c" * 64


def published(digest: str, created: str = "2026-01-01T00:00:00Z", media_type: str = CSV_MEDIA_TYPE) -> dict[str, Any]:
    document = artifact_document(digest, 1234, media_type)
    document["metadata"]["creationTimestamp"] = created
    return document


def test_the_artifact_is_a_valid_immutable_artifact_named_by_digest() -> None:
    document = artifact_document(A, 1234, CSV_MEDIA_TYPE)
    artifact = Artifact.model_validate(document)
    assert artifact.name == table_object_name(A) == "gslb-geo-table-" + "a" * 16
    assert (artifact.spec.sha256, artifact.spec.size, artifact.spec.source) == (A, 1234, "upload")
    assert artifact.metadata.labels == {"edgefleet.io/system": "gslb-geo-table"}


def test_the_same_digest_again_writes_nothing() -> None:
    plan = plan_publish([published(A)], A, 1234, CSV_MEDIA_TYPE)
    assert plan.create is None and plan.delete == ()


def test_a_new_table_is_created_and_the_older_ones_deleted() -> None:
    plan = plan_publish([published(A), published(B)], C, 99, MMDB_MEDIA_TYPE)
    assert plan.create == artifact_document(C, 99, MMDB_MEDIA_TYPE)
    assert plan.delete == (table_object_name(A), table_object_name(B))


def test_an_existing_table_stays_and_the_others_go() -> None:
    plan = plan_publish([published(A), published(B)], B, 1234, CSV_MEDIA_TYPE)
    assert plan.create is None and plan.delete == (table_object_name(A),)


def test_the_packaged_table_publishes_nothing_and_removes_older_publications() -> None:
    assert plan_publish([], None, 0, CSV_MEDIA_TYPE) == plan_publish([], None, 5, MMDB_MEDIA_TYPE)
    plan = plan_publish([published(A)], None, 0, CSV_MEDIA_TYPE)
    assert plan.create is None and plan.delete == (table_object_name(A),)


def test_artifacts_without_the_label_are_never_touched() -> None:
    other = published(A)
    other["metadata"]["labels"] = {}
    assert plan_publish([other], B, 1, CSV_MEDIA_TYPE).delete == ()
    assert current_table([other]) is None


def test_a_node_takes_the_newest_table() -> None:
    older, newer = published(A, "2026-01-01T00:00:00Z"), published(B, "2026-01-01T00:00:01Z")
    assert current_table([newer, older]) == current_table([older, newer])
    ref = current_table([older, newer], in_use=A)
    assert ref is not None and ref.sha256 == B and ref.object_name == table_object_name(B)


def test_a_tie_keeps_the_table_in_use_then_goes_by_name() -> None:
    one, two = published(A), published(B)
    assert (current_table([one, two], in_use=A) or pytest.fail()).sha256 == A
    assert (current_table([one, two], in_use=B) or pytest.fail()).sha256 == B
    assert (current_table([one, two]) or pytest.fail()).sha256 == B


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["spec"].update(sha256="nothex"),
        lambda d: d["spec"].update(size=-1),
        lambda d: d["spec"].pop("size"),
        lambda d: d["spec"].update(source="url"),
        lambda d: d.update(spec=None),
        lambda d: d.update(kind="Secret"),
    ],
)
def test_malformed_publications_are_skipped(change: Any) -> None:
    document = published(A)
    change(document)
    assert current_table([document]) is None


def test_the_format_travels_as_the_media_type() -> None:
    assert media_type_for("GeoLite2-City.MMDB") == MMDB_MEDIA_TYPE and suffix_for(MMDB_MEDIA_TYPE) == ".mmdb"
    assert media_type_for("my.csv") == CSV_MEDIA_TYPE and suffix_for(CSV_MEDIA_TYPE) == ".csv"
    ref = current_table([published(A, media_type=MMDB_MEDIA_TYPE)])
    assert ref is not None and ref.suffix == ".mmdb"
