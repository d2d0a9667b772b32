"""Secret: named values (passwords, API keys, token-auth keys) kept out of Workload manifests.

How: ``data`` maps keys to string values. A Workload's environment takes a
value from a Secret by reference (``env: [{name: DB_PASSWORD, valueFrom:
{secretRef: {name: db, key: password}}}]``, see
:mod:`edgefleet.api.workloads`), so the Workload, its WorkloadRevisions and
everything shown about them hold the reference, never the value.

Who sees the values:

- admins read and write Secrets like any object;
- viewers read Secrets *redacted* (:func:`redact`): every value of
  ``data`` is replaced by :data:`REDACTED`, so they see which Secrets and
  keys exist but no value (list, get and watch alike; the API server applies
  the kind's ``redactForViewers`` hook, see ``KindInfo.extra``);
- a node receives a Secret in its view only while a Workload in its view
  references it (see :mod:`edgefleet.sync.views`); the agent resolves the
  references when it starts the process, from its local view store (mode
  0600, like the node credential).

Why a kind rather than a flag on env values: a value used by several
Workloads (and later by edge rules: token-auth keys) is written once, its
visibility is decided in one place, and a node that does not need it never
receives it. Changing a Secret does not restart the workloads using it
(their template did not change): they read the new value at their next
start, or roll them with a template change.

Limits (security limits): at most :data:`MAX_KEYS` keys, keys of at most
253 characters from ``[-._a-zA-Z0-9]``, values without NUL characters (they
become environment variables), :data:`MAX_DATA_BYTES` of keys and values
together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

MAX_KEYS = 64
MAX_DATA_BYTES = 256 * 1024
"""Security limit on one Secret's keys and values together, in UTF-8 bytes."""
REDACTED = "<redacted>"
"""What viewers see in place of every value."""

_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class SecretSpec(Model):
    """The values of a Secret."""

    data: dict[str, str] = Field(
        default_factory=dict,
        description=f"Key to string value; keys [-._a-zA-Z0-9] (at most 253 characters), at most {MAX_KEYS} keys "
        f"and {MAX_DATA_BYTES // 1024} KiB in all. Shown to viewers as {REDACTED!r}.",
    )

    @field_validator("data")
    @classmethod
    def _check_data(cls, data: dict[str, str]) -> dict[str, str]:
        if len(data) > MAX_KEYS:
            raise ValueError(f"{len(data)} keys; the limit is {MAX_KEYS}")
        size = 0
        for key, value in data.items():
            if not _KEY.match(key):
                raise ValueError(f"key {key!r} must be 1-253 characters of [-._a-zA-Z0-9]")
            if "\0" in value:
                raise ValueError(f"the value of {key!r} must not contain NUL characters")
            size += len(key.encode()) + len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_DATA_BYTES:
            raise ValueError(f"keys and values are {size} bytes; the limit is {MAX_DATA_BYTES}")
        return data


class Secret(Resource):
    """Named values a Workload's env references (valueFrom.secretRef); redacted for viewers."""

    KIND: ClassVar[str] = "Secret"
    kind: Literal["Secret"] = "Secret"
    spec: SecretSpec = Field(default_factory=SecretSpec)
    status: None = Field(default=None, description="A Secret has no status.")


def redact(document: StoredDocument) -> StoredDocument:
    """``document`` (a stored Secret) with every value of ``spec.data`` replaced by :data:`REDACTED`."""
    shown = document.copy()
    spec = document.get("spec")
    if isinstance(spec, dict):
        data = spec.get("data")
        shown["spec"] = {**spec, "data": {key: REDACTED for key in data} if isinstance(data, dict) else {}}
    return shown


def secret_value(document: Mapping[str, Any] | None, key: str) -> str | None:
    """The value of ``key`` in a stored Secret document, or None (no such Secret, key or a non-string value)."""
    spec = document.get("spec") if isinstance(document, Mapping) else None
    data = spec.get("data") if isinstance(spec, Mapping) else None
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else None


def _secret(obj: Resource) -> Secret:
    assert isinstance(obj, Secret)
    return obj


INFO = register(
    KindInfo(
        kind="Secret",
        plural="secrets",
        model=Secret,
        short_names=("sec",),
        description="Named values (passwords, keys) that Workload env references; values are redacted for viewers "
        "and sent only to nodes whose Workloads use them.",
        columns=(Column("KEYS", lambda o: str(len(_secret(o).spec.data))),),
        extra={"redactForViewers": redact},
    )
)
