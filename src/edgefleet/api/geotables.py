"""The GSLB's geo table as an Artifact: how the cloud names it and how a node finds the current one.

How: when ``edgefleet cloud`` runs its GSLB with ``--geo FILE``, it puts the file into its blob store and
publishes an Artifact (:mod:`edgefleet.api.artifacts`) that describes it (:func:`artifact_document`):

- object name ``gslb-geo-table-<first 16 hex digits of the SHA-256>`` (``spec.name`` :data:`ARTIFACT_NAME`,
  ``spec.version`` the 16 digits), so one table is one immutable object and publishing the same file
  again, from the same replica or another, is the same object: no write;
- the label :data:`SYSTEM_LABEL` = :data:`SYSTEM_VALUE`, which is what nodes look for;
- ``spec.mediaType`` says the format (:data:`CSV_MEDIA_TYPE` or :data:`MMDB_MEDIA_TYPE`), since the reader
  picks it by file suffix (:func:`suffix_for`).

Artifacts are in every node's view (metadata only), so this costs every node a few hundred bytes per
change; the table's bytes (tens of MB for a real one) travel through the artifact path (the site's cache
and its parents, digest verified), never inside a sync batch. The cloud deletes the labelled Artifacts of
older tables after creating the new one; while two exist (that moment, or a cloud stopped between the two
writes) a node takes the one created last (:func:`current_table`; ties broken by the one it already uses,
then by name), so every node converges on the same table. No labelled Artifact: nodes use the table
packaged with edgefleet.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.api.artifacts import check_sha256, object_name

ARTIFACT_NAME = "gslb-geo-table"
"""``spec.name`` of the published geo table Artifacts."""
SYSTEM_LABEL = "edgefleet.io/system"
SYSTEM_VALUE = "gslb-geo-table"
SELECTOR = f"{SYSTEM_LABEL}={SYSTEM_VALUE}"
"""The label selector of the published geo table Artifacts (``edgefleet get artifacts -l ...``)."""
CSV_MEDIA_TYPE = "text/csv"
MMDB_MEDIA_TYPE = "application/vnd.maxmind.mmdb"
VERSION_DIGITS = 16
MAX_TABLE_BYTES = 1024**3
"""Security limit: the largest geo table the cloud publishes and a node fetches (1 GiB)."""


@dataclass(frozen=True, slots=True)
class GeoTableRef:
    """A published geo table as a node's view shows it."""

    object_name: str
    sha256: str
    size: int
    media_type: str
    created: str
    """``metadata.creationTimestamp`` (RFC 3339, whole seconds): the newest wins."""

    @property
    def suffix(self) -> str:
        return suffix_for(self.media_type)


def media_type_for(file_name: str) -> str:
    """The media type the cloud publishes a table file under: MaxMind for ``.mmdb``, else CSV."""
    return MMDB_MEDIA_TYPE if file_name.lower().endswith(".mmdb") else CSV_MEDIA_TYPE


def suffix_for(media_type: str) -> str:
    """The file suffix a node stores a table under (the reader picks the format by suffix)."""
    return ".mmdb" if media_type == MMDB_MEDIA_TYPE else ".csv"


def version_for(digest: str) -> str:
    return check_sha256(digest)[:VERSION_DIGITS]


def table_object_name(digest: str) -> str:
    """The Artifact object's name for the table with SHA-256 ``digest``."""
    return object_name(ARTIFACT_NAME, version_for(digest))


def artifact_document(digest: str, size: int, media_type: str) -> dict[str, Any]:
    """The Artifact the cloud creates for a table (bytes in its blob store: ``source: upload``)."""
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Artifact",
        "metadata": {"name": table_object_name(digest), "labels": {SYSTEM_LABEL: SYSTEM_VALUE}},
        "spec": {
            "name": ARTIFACT_NAME,
            "version": version_for(digest),
            "sha256": digest,
            "size": size,
            "mediaType": media_type,
            "source": "upload",
        },
    }


def is_geo_table(document: Mapping[str, Any]) -> bool:
    """Whether an Artifact document is a published geo table (by its label)."""
    metadata = document.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return document.get("kind") == "Artifact" and isinstance(labels, dict) and labels.get(SYSTEM_LABEL) == SYSTEM_VALUE


def table_ref(document: Mapping[str, Any]) -> GeoTableRef | None:
    """The :class:`GeoTableRef` of a labelled Artifact; None if it is not one or is malformed."""
    if not is_geo_table(document):
        return None
    metadata, spec = document.get("metadata"), document.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict) or spec.get("source", "upload") != "upload":
        return None
    try:
        digest = check_sha256(str(spec["sha256"]))
        size = int(spec["size"])
    except (KeyError, TypeError, ValueError):
        return None
    if size < 0:
        return None
    media_type = str(spec.get("mediaType") or CSV_MEDIA_TYPE)
    return GeoTableRef(
        str(metadata.get("name", "")), digest, size, media_type, str(metadata.get("creationTimestamp", ""))
    )


def current_table(documents: Iterable[Mapping[str, Any]], in_use: str | None = None) -> GeoTableRef | None:
    """The geo table nodes should use: the newest labelled Artifact; None: the packaged table.

    Ties on the creation time (two tables published in one second) go to ``in_use`` (the digest the node
    uses now, so it does not switch back and forth), then to the greatest object name.
    """
    refs = [ref for document in documents if (ref := table_ref(document)) is not None]
    if not refs:
        return None
    return max(refs, key=lambda ref: (ref.created, ref.sha256 == in_use, ref.object_name))


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """What the cloud writes to publish a table: the Artifact to create (None: it exists), those to delete."""

    create: dict[str, Any] | None
    delete: tuple[str, ...]


def plan_publish(existing: Iterable[Mapping[str, Any]], digest: str | None, size: int, media_type: str) -> PublishPlan:
    """The writes that make ``digest`` the one published table (``None``: the packaged table, publish none).

    ``existing``: the labelled Artifacts in the store. The same digest already there: nothing to create
    (several replicas, a restart, a SIGHUP without change cost no write); every other labelled Artifact is
    deleted, after the create (see the module docstring).
    """
    wanted = None if digest is None else table_object_name(digest)
    names = {str((document.get("metadata") or {}).get("name", "")) for document in existing if is_geo_table(document)}
    create = None
    if digest is not None and wanted not in names:
        create = artifact_document(digest, size, media_type)
    return PublishPlan(create, tuple(sorted(name for name in names if name != wanted)))
