"""Artifact: one immutable file (a binary, a bundle) that Workloads ship to the edge nodes.

How: an Artifact is a name and a version, the SHA-256 digest and size of its
bytes, a media type and where the bytes come from:

- ``source: upload``: the bytes were uploaded to the cloud's blob store
  (``edgefleet artifact push FILE --name N --version V``), which keeps them
  content-addressed on disk and serves them immutable to nodes and admins
  (:mod:`edgefleet.cloud.blobs`);
- ``source: url``: the bytes live on an external HTTP(S) origin (an object
  store, a release server); ``url`` names them and ``sha256`` is the digest
  they must have.

The object's name is ``<name>-<version>`` (:func:`object_name`; admission
refuses another), so a new version is a new object, and its ``spec`` is
immutable once created (admission refuses an update that changes it):
what a Workload revision names can never change under it. A Workload
references artifacts in ``template.artifacts`` (:mod:`edgefleet.api.workloads`);
the agent fetches them through its own site's cache, verifies the digest and
installs them in the workload's directory before the old process stops
(:mod:`edgefleet.edge.artifacts`).

Every node receives every Artifact in its view (metadata only: a few hundred
bytes each, and they never change), so an agent can prefetch before a
rollout assigns it the revision that needs one.

Limits (security limits): :data:`MAX_SIZE` bytes per artifact, URLs of at
most 2048 characters without credentials, media types of the RFC 6838 shape.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from edgefleet.api.common import Count, cell
from edgefleet.api.errors import FieldValueError
from edgefleet.api.meta import Column, KindInfo, Model, Resource, check_dns1123_label, register

MAX_SIZE = 64 * 1024**3
"""Security limit: bytes of one artifact (64 GiB)."""
MAX_URL_LENGTH = 2048
DEFAULT_MEDIA_TYPE = "application/octet-stream"
PREFETCH_ANNOTATION = "edgefleet.io/prefetch-sites"
"""Set by ``edgefleet artifact prefetch``: a site selector (``*``: every site) whose nodes fetch the Artifact now."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_URL = re.compile(r"^https?://[^/?#@\s]+(/[^#\s]*)?$")


def check_sha256(value: str) -> str:
    """64 lowercase hex digits (a ``sha256:`` prefix is accepted and removed)."""
    value = value.removeprefix("sha256:")
    if not _SHA256.match(value):
        raise ValueError(f"{value[:80]!r} is not a SHA-256 digest (64 lowercase hex digits)")
    return value


def check_version(value: str) -> str:
    if not _VERSION.match(value):
        raise ValueError(
            f"{value[:80]!r} is not a valid version: lowercase letters, digits, '.' and '-', at most 63 characters, "
            "starting and ending with a letter or digit (e.g. 1.4.2)"
        )
    return value


def check_media_type(value: str) -> str:
    if not _MEDIA_TYPE.match(value):
        raise ValueError(f"{value[:80]!r} is not a media type (type/subtype, e.g. application/gzip)")
    return value


def check_artifact_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH or not _URL.match(value):
        raise ValueError(
            f"{value[:80]!r} must be an absolute http(s) URL without credentials, spaces or fragment "
            f"(at most {MAX_URL_LENGTH} characters)"
        )
    return value


def object_name(name: str, version: str) -> str:
    """The Artifact object's name for artifact ``name`` at ``version``."""
    return f"{name}-{version}"


ArtifactName = Annotated[str, AfterValidator(lambda v: check_dns1123_label(v, max_length=63))]
Sha256 = Annotated[str, AfterValidator(check_sha256)]
Version = Annotated[str, AfterValidator(check_version)]


class ArtifactSpec(Model):
    """One immutable file: its identity, its digest and where its bytes come from."""

    name: ArtifactName = Field(description="Artifact name (a DNS label); Workloads reference {name, version}.")
    version: Version = Field(description="Version: lowercase letters, digits, '.' and '-' (e.g. 1.4.2).")
    sha256: Sha256 = Field(description="SHA-256 digest of the bytes, 64 hex digits; nodes refuse other bytes.")
    size: Count = Field(description=f"Size in bytes (at most {MAX_SIZE}).", le=MAX_SIZE)
    media_type: Annotated[str, AfterValidator(check_media_type)] = Field(
        default=DEFAULT_MEDIA_TYPE, description="Media type of the bytes (e.g. application/gzip)."
    )
    source: Literal["upload", "url"] = Field(
        default="upload",
        description="upload: the bytes are in the cloud's blob store (edgefleet artifact push); url: they are "
        "fetched from url.",
    )
    url: Annotated[str, AfterValidator(check_artifact_url)] | None = Field(
        default=None, description="With source url: the http(s) URL of the bytes."
    )

    @model_validator(mode="after")
    def _url_with_url_source(self) -> ArtifactSpec:
        if self.source == "url" and self.url is None:
            raise FieldValueError(("url",), "required with source: url")
        if self.source == "upload" and self.url is not None:
            raise FieldValueError(("url",), "only with source: url (uploaded bytes are served by the cloud)")
        return self


class Artifact(Resource):
    """An immutable file that Workloads ship to the edge nodes (template.artifacts)."""

    KIND: ClassVar[str] = "Artifact"
    kind: Literal["Artifact"] = "Artifact"
    spec: ArtifactSpec

    @model_validator(mode="after")
    def _named_after_version(self) -> Artifact:
        expected = object_name(self.spec.name, self.spec.version)
        if self.metadata.name and self.metadata.name != expected:
            raise FieldValueError(("metadata", "name"), f"must be {expected!r} (<spec.name>-<spec.version>)")
        return self


def human_size(size: int) -> str:
    """``12.3 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _spec(obj: Resource) -> ArtifactSpec:
    assert isinstance(obj, Artifact)
    return obj.spec


INFO = register(
    KindInfo(
        kind="Artifact",
        plural="artifacts",
        model=Artifact,
        short_names=("art",),
        description="An immutable file (binary, bundle) Workloads ship to the edge nodes through the cache tiers.",
        columns=(
            Column("ARTIFACT", lambda o: _spec(o).name),
            Column("VERSION", lambda o: _spec(o).version),
            Column("SIZE", lambda o: human_size(_spec(o).size)),
            Column("SHA256", lambda o: _spec(o).sha256[:12]),
            Column("SOURCE", lambda o: _spec(o).source),
            Column("URL", lambda o: cell(_spec(o).url), wide=True),
            Column("MEDIA-TYPE", lambda o: _spec(o).media_type, wide=True),
        ),
    )
)
