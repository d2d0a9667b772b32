"""Shared read-only snapshots of the hub index's documents, for the controllers' rounds.

Why: the controllers of a replica read the fleet from its hub's index (no store round trip), in
the API's form (``metadata.resourceVersion`` set from the mod revision). Building that form per
round copied every document of every kind read (a new dict and a new metadata per document):
13-20% of the hub's CPU at 2,000 nodes, with six controllers reading every Node every few
seconds, and the copies grew with the fleet whether or not anything changed.

How: :class:`IndexSnapshots` keeps, for each kind somebody has read, the API form of each of its
documents, updated incrementally by :meth:`IndexSnapshots.changed` (a hub index listener: one copy
per store event of that kind, none for the kinds nobody reads) and hands out one tuple per kind,
the same object to every reader until the next change of that kind. A round that reads 10,000
unchanged Nodes costs no copy at all. Order is the index's own (:meth:`FleetIndex.documents`:
store order at load, new keys last, an update keeps its place), so a controller sees exactly the
sequence it saw before. A reload of the hub's index (a new :class:`FleetIndex` object, after a
compacted watch) drops everything: the next read rebuilds from the new index.

Contract: what :meth:`IndexSnapshots.documents` returns is shared by every controller and every
round, and by the index (sub-objects: spec, status, labels), so readers must not mutate it.
``tests/cloud/test_snapshots.py`` runs a round of every controller over shared snapshots and
compares them with deep copies taken before.
"""

from __future__ import annotations

from collections.abc import Callable

from edgefleet.api.documents import StoredDocument
from edgefleet.sync.messages import KEY_PREFIX
from edgefleet.sync.views import FleetIndex


def api_form(revision: int, document: StoredDocument) -> StoredDocument:
    """``document`` as the API returns it: a shallow copy with ``metadata.resourceVersion`` set."""
    return {**document, "metadata": {**document["metadata"], "resourceVersion": str(revision)}}


def _plural(key: str) -> str:
    """``/registry/<plural>/<name>`` -> plural ("" for any other key)."""
    if not key.startswith(KEY_PREFIX):
        return ""
    plural, _, name = key[len(KEY_PREFIX) :].partition("/")
    return plural if name else ""


class IndexSnapshots:
    """Per kind, one shared tuple of the API form of the documents of the current hub index."""

    def __init__(self, index: Callable[[], FleetIndex]) -> None:
        """``index`` returns the hub's current index (it is replaced when the hub reloads)."""
        self._index_of = index
        self._index: FleetIndex | None = None
        self._kinds: dict[str, dict[str, StoredDocument]] = {}  # plural -> key -> API form, in index order
        self._snapshots: dict[str, tuple[StoredDocument, ...]] = {}

    def changed(self, key: str, document: StoredDocument | None) -> None:
        """Index listener: ``key`` was just applied to the index (``document`` None: deleted)."""
        plural = _plural(key)
        kind = self._kinds.get(plural)
        if kind is None or self._index is not self._index_of():
            return  # nobody read this kind yet, or the index was replaced: the next read rebuilds
        self._snapshots.pop(plural, None)
        entry = None if document is None else self._index.get(key)
        if entry is None:
            kind.pop(key, None)
        else:
            kind[key] = api_form(*entry)

    def documents(self, plural: str) -> tuple[StoredDocument, ...]:
        """Every document of the kind in the API's form; shared and read-only: never mutate it."""
        index = self._index_of()
        if index is not self._index:
            self._index, self._kinds, self._snapshots = index, {}, {}
        snapshot = self._snapshots.get(plural)
        if snapshot is None:
            kind = self._kinds.get(plural)
            if kind is None:
                prefix = f"{KEY_PREFIX}{plural}/"
                kind = self._kinds[plural] = {
                    f"{prefix}{document['metadata']['name']}": api_form(revision, document)
                    for revision, document in index.documents(plural)
                }
            snapshot = self._snapshots[plural] = tuple(kind.values())
        return snapshot
