"""The types of resources as plain JSON documents: what the store holds and the API serves.

How: :class:`StoredDocument` is a ``TypedDict`` with the shape every stored
object has (``apiVersion``, ``kind``, ``metadata``, and optional ``spec``
and ``status``), and :class:`ObjectMetadata` types ``metadata`` field by
field. ``spec`` and ``status`` stay :data:`JSONObject`: their shape is the
kind's, checked by its pydantic model (:mod:`edgefleet.api.meta`) when the
document is written, and read with ``.get`` by the code that needs a field.
:data:`JSONObject` names every other decoded JSON object (merge patches,
status reports, request bodies, messages) whose shape is checked elsewhere.

Why TypedDicts and not the models: the registry returns documents decoded
from bytes that were validated on the way in, and the hub's index, the
sync views and the controllers read them on hot paths (thousands of
documents per round). A ``TypedDict`` costs nothing at run time (it *is* a
``dict``) yet lets strict mypy check ``doc["metadata"]["name"]`` (a ``str``),
catch a misspelt key, and tell a stored document from an arbitrary JSON
object. Code that needs the rules of a kind parses the document into its
model (``Workload.model_validate(doc)``), as the workload controller does.

Writing one: a literal with ``apiVersion``, ``kind`` and ``metadata`` (with
``name``) type-checks as a StoredDocument; ``json.loads`` returns ``Any``,
so annotate the variable. A StoredDocument can be passed where a
``Mapping[str, Any]`` is expected, but not a ``dict[str, Any]`` (mypy cannot
prove the function keeps the required keys): take a Mapping for reading.

See docs/architecture.md, "Resources".
"""

from __future__ import annotations

from typing import Any, Required, TypedDict

JSONObject = dict[str, Any]
"""A decoded JSON object whose shape is checked elsewhere (by a model, a decoder, or the reader)."""


class ObjectMetadata(TypedDict, total=False):
    """``metadata`` of a stored object (the wire names of :class:`edgefleet.api.meta.ObjectMeta`).

    ``name`` is always there; the server sets ``uid``, ``generation`` and
    ``creationTimestamp`` on create, and the registry fills
    ``resourceVersion`` (the store's ``mod_revision``) on every read.
    """

    name: Required[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str


class StoredDocument(TypedDict, total=False):
    """A resource as the store holds it and the API serves it (the wire form of a model)."""

    apiVersion: Required[str]
    kind: Required[str]
    metadata: Required[ObjectMetadata]
    spec: JSONObject
    status: JSONObject


__all__ = ["JSONObject", "ObjectMetadata", "StoredDocument"]
