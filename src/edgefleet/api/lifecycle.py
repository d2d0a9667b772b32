"""Server-side rules for the life of an object: create, update, status, apply.

How: each function takes the object(s) as the client sent them (and as the
store holds them) and returns the object to store, with the server-owned
metadata set: ``uid``, ``creationTimestamp``, ``generation`` and
``status``. Clock and uid generator are parameters, so these rules are
tested without either, and the store/API layer stays a thin shell.

The rules (Kubernetes', minus what edgefleet does not need):

- create: uid and creationTimestamp (RFC 3339 UTC, ``Z``) are set,
  generation is 1, resourceVersion is cleared and status is reset to the
  kind's default: status is written only through the status path, by the
  component that owns it.
- update: uid, creationTimestamp and status are kept from the stored object;
  generation is bumped only when the spec changed (labels and annotations do
  not count), so controllers can compare ``status.observedGeneration``.
  The name and kind cannot change, nor can a uid sent by the client differ.
- status update: only status is taken from the request; generation is kept.
- apply: an object is unchanged when spec, labels and annotations are equal.

resourceVersion is the decimal store revision of the object's last change.
The store sets it when reading; a client sends it back on update as the
revision it expects (optimistic concurrency). :func:`prepare_update` keeps
the client's value for that purpose; :func:`get_resource_version` reads it.

All functions are pure: inputs are never modified, outputs share nothing
with them.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, TypeVar

from edgefleet.api.common import format_timestamp
from edgefleet.api.errors import FieldError, ValidationFailed
from edgefleet.api.meta import Resource

R = TypeVar("R", bound=Resource)


def default_status(kind: type[Resource]) -> Any:
    """A fresh instance of the kind's default status (``None`` if it has none)."""
    return kind.model_fields["status"].get_default(call_default_factory=True)


def prepare_create(obj: R, *, uid: str, now: datetime) -> R:
    """The object to store for a create request (see the module docstring)."""
    if not uid:
        raise ValueError("uid must not be empty")
    result = obj.model_copy(deep=True)
    result.metadata.uid = uid
    result.metadata.creation_timestamp = format_timestamp(now)
    result.metadata.generation = 1
    result.metadata.resource_version = None
    result.status = default_status(type(obj))
    return result


def prepare_update(old: R, new: R) -> R:
    """The object to store when ``new`` replaces the stored ``old``.

    Raises ValidationFailed naming ``kind``, ``metadata.name`` or
    ``metadata.uid`` when ``new`` is not the same object as ``old``.
    """
    _check_same_object(old, new)
    result = _copy_but_status(new)
    result.metadata.uid = old.metadata.uid
    result.metadata.creation_timestamp = old.metadata.creation_timestamp
    generation = old.metadata.generation or 1
    result.metadata.generation = generation + 1 if spec_changed(old, new) else generation
    result.status = copy.deepcopy(old.status)
    return result


def prepare_status_update(old: R, new: R) -> R:
    """The object to store for a status write: ``old`` with ``new``'s status."""
    _check_same_object(old, new)
    result = _copy_but_status(old)
    result.status = copy.deepcopy(new.status)
    return result


def _copy_but_status(obj: R) -> R:
    """A deep copy of ``obj`` whose status the caller replaces: the status is not copied first.

    A Workload's status grows with the fleet (counts per site), so a copy of
    it costs as much as the rest of the write (issue 10: a push's PATCH).
    """
    return obj.model_copy(update={"status": None}).model_copy(deep=True)


def spec_changed(old: Resource, new: Resource) -> bool:
    """Whether the specs differ in their wire form (what generation counts)."""
    return bool(old.spec.model_dump(mode="json") != new.spec.model_dump(mode="json"))


def is_unchanged(old: Resource, new: Resource) -> bool:
    """For ``apply``: same kind, spec, labels and annotations."""
    return (
        type(old) is type(new)
        and not spec_changed(old, new)
        and old.metadata.labels == new.metadata.labels
        and old.metadata.annotations == new.metadata.annotations
    )


def _check_same_object(old: Resource, new: Resource) -> None:
    errors: list[FieldError] = []
    if type(old) is not type(new) or old.kind != new.kind:
        errors.append(FieldError("kind", f"cannot change from {old.kind!r} to {new.kind!r}"))
    if old.metadata.name != new.metadata.name:
        errors.append(FieldError("metadata.name", f"cannot change from {old.name!r} to {new.name!r}"))
    if new.metadata.uid is not None and new.metadata.uid != old.metadata.uid:
        errors.append(FieldError("metadata.uid", "does not match the stored object (was it re-created?)"))
    if errors:
        raise ValidationFailed(errors)


def format_resource_version(revision: int) -> str:
    if revision < 0:
        raise ValueError(f"store revisions are never negative (got {revision})")
    return str(revision)


def parse_resource_version(text: str) -> int:
    """A resourceVersion sent by a client; ValidationFailed unless a decimal revision."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ValidationFailed([FieldError("metadata.resourceVersion", f"{text!r} is not a store revision")])
    return int(text)


def get_resource_version(obj: Resource) -> int | None:
    """The object's resourceVersion as a store revision, or None when unset."""
    text = obj.metadata.resource_version
    return None if text is None else parse_resource_version(text)


def set_resource_version(obj: R, revision: int | None) -> R:
    """A copy of ``obj`` with resourceVersion set to ``revision`` (None clears it)."""
    result = obj.model_copy(deep=True)
    result.metadata.resource_version = None if revision is None else format_resource_version(revision)
    return result
