"""Typed access to resources kept in a :class:`~edgefleet.store.interface.Store`.

How: each object lives at ``/registry/<plural>/<name>`` as compact JSON
*without* ``metadata.resourceVersion``; the resource version is the key's
``mod_revision`` and is put into the document on every read, as the
Kubernetes apiserver does on etcd. That keeps the stored bytes independent of
the revision they land at, so a write is one compare-and-swap.

Writes validate through the pure rules of :mod:`edgefleet.api` (parse,
lifecycle) and then do one optimistic-concurrency store operation. Reads
return plain documents typed as
:class:`~edgefleet.api.documents.StoredDocument` (a ``TypedDict``: a
``dict`` at run time) because the stored bytes were validated on the way in:
decoding JSON is much cheaper than re-validating a model, and the API server
only forwards documents.

Watches (:meth:`Registry.watch`) yield :class:`WatchEvent` (ADDED, MODIFIED,
DELETED) and, when the store reports an idle stretch, :class:`Bookmark`; the
caller closes them with ``aclose`` (they are
:class:`~edgefleet.store.interface.Watch` objects).

Admission: the write methods take an optional ``admit`` hook, called with
(the document about to be stored, the one stored) right before the store
operation (``None`` for the missing side: old on create, new on delete),
after merge patches and server-owned metadata were applied, and only when
the stored bytes would change. It raises to refuse the write. The API
server passes one per request (:mod:`edgefleet.cloud.admission`); the
cloud's own components pass none. Status writes are never admitted.

Lists page with an opaque ``continue`` token holding the revision of the
first page and the last key sent, so every page of one list is read at the
same revision (a consistent snapshot) until that revision is compacted.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgefleet.api import lifecycle, patches
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.errors import FieldError, ValidationFailed
from edgefleet.api.meta import KindInfo, Resource, parse
from edgefleet.api.selectors import Selector
from edgefleet.store.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    EventType,
    KeyValue,
    ListResult,
    NotFound,
    Progress,
    Store,
)

REGISTRY_PREFIX = "/registry/"
MAX_PATCH_RETRIES = 8

Admit = Callable[[StoredDocument | None, StoredDocument | None], Awaitable[None]]
"""``admit(new, old)``: raises to refuse a write (see the module docstring)."""


class RegistryError(Exception):
    """Base of the errors of the resource layer; each maps to one HTTP status."""

    status = 500
    reason = "InternalError"


class ObjectNotFound(RegistryError):
    status = 404
    reason = "NotFound"


class ObjectExists(RegistryError):
    status = 409
    reason = "AlreadyExists"


class VersionConflict(RegistryError):
    status = 409
    reason = "Conflict"


class Gone(RegistryError):
    status = 410
    reason = "Expired"


class BadRequest(RegistryError):
    status = 400
    reason = "BadRequest"


def key_for(info: KindInfo, name: str = "") -> str:
    return f"{REGISTRY_PREFIX}{info.plural}/{name}"


def decode(kv: KeyValue) -> StoredDocument:
    """Stored bytes -> document, with ``metadata.resourceVersion`` filled in."""
    doc: StoredDocument = json.loads(kv.value)
    doc["metadata"]["resourceVersion"] = str(kv.mod_revision)
    return doc


def encode(obj: Resource, *, status: object = None) -> bytes:
    """Stored bytes of ``obj``; ``status`` (not None): that stored status instead of ``obj``'s."""
    doc = obj.to_dict()
    doc["metadata"].pop("resourceVersion", None)
    if status is not None:
        doc["status"] = status
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _without_status(document: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``document`` without its status (a spec write does not read it)."""
    return {key: value for key, value in document.items() if key != "status"}


def labels_of(doc: StoredDocument) -> dict[str, str]:
    labels: dict[str, str] = doc.get("metadata", {}).get("labels") or {}
    return labels


def parse_resource_version(value: str | None, *, field: str = "metadata.resourceVersion") -> int:
    """``""``/None -> 0 (no precondition); otherwise a non-negative integer."""
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()):  # str.isdigit() also accepts "¹", which int() refuses
        raise ValidationFailed([FieldError(field, f"must be a decimal store revision (got {value!r})")])
    return int(value)


@dataclass(frozen=True, slots=True)
class ListPage:
    items: list[StoredDocument]
    revision: int
    continue_token: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """``type`` is ADDED, MODIFIED or DELETED; ``obj`` the object after the change (before it, for DELETED)."""

    type: str
    obj: StoredDocument
    revision: int


@dataclass(frozen=True, slots=True)
class Bookmark:
    """Every change of the watched kind up to ``revision`` was yielded (the watch was idle)."""

    revision: int


def encode_continue(revision: int, last_key: str) -> str:
    raw = json.dumps({"rev": revision, "start": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        revision, start = int(data["rev"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("the continue token is malformed; restart the list without it") from None
    if revision <= 0:
        raise BadRequest("the continue token is malformed; restart the list without it")
    return revision, start


class Registry:
    """Resources of every registered kind, kept in one store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.store = store
        self._clock = clock
        self._new_uid = new_uid

    # reads -----------------------------------------------------------------

    async def get(self, info: KindInfo, name: str) -> StoredDocument:
        kv = await self.store.get(key_for(info, name))
        if kv is None:
            raise ObjectNotFound(f'{info.singular} "{name}" not found')
        return decode(kv)

    async def list(
        self,
        info: KindInfo,
        *,
        selector: Selector | None = None,
        limit: int = 0,
        continue_token: str = "",
    ) -> ListPage:
        revision, start = decode_continue(continue_token) if continue_token else (0, "")
        items: list[StoredDocument] = []
        while True:
            want = 0 if limit == 0 else max(limit - len(items), 1)
            result = await self._read_page(info, revision, start, want)
            revision = result.revision
            for kv in result.items:
                doc = decode(kv)
                if selector is None or selector.matches(labels_of(doc)):
                    items.append(doc)
            if not result.more:
                return ListPage(items, revision, "")
            start = result.items[-1].key
            if limit and len(items) >= limit:
                return ListPage(items, revision, encode_continue(revision, start))

    async def _read_page(self, info: KindInfo, revision: int, start: str, limit: int) -> ListResult:
        try:
            return await self.store.list(key_for(info), revision=revision, start_after=start, limit=limit)
        except Compacted:
            raise Gone(
                "the continue token has expired (its revision was compacted); restart the list without it"
            ) from None

    # writes ----------------------------------------------------------------

    async def create(
        self, info: KindInfo, document: object, *, lease: int = 0, admit: Admit | None = None
    ) -> StoredDocument:
        """Create; with ``lease``, the object is deleted when that store lease ends (later writes keep it)."""
        obj = parse(document, expected_kind=info.kind)
        obj = lifecycle.prepare_create(obj, uid=self._new_uid(), now=self._clock())
        data = encode(obj)
        if admit is not None:
            await admit(json.loads(data), None)
        try:
            kv = await self.store.create(key_for(info, obj.name), data, lease=lease)
        except AlreadyExists:
            raise ObjectExists(f'{info.singular} "{obj.name}" already exists') from None
        return decode(kv)

    async def replace(
        self, info: KindInfo, name: str, document: object, *, status: bool = False, admit: Admit | None = None
    ) -> StoredDocument:
        """Replace spec (or, with ``status``, only status) of an existing object.

        ``metadata.resourceVersion`` in the document, when set, is a
        precondition: a stale one is a VersionConflict, never an overwrite.
        """
        new = parse(document, expected_kind=info.kind)
        if new.name != name:
            raise ValidationFailed([FieldError("metadata.name", f"must match the name in the URL ({name!r})")])
        expected = parse_resource_version(new.metadata.resource_version)
        kv = await self.store.get(key_for(info, name))
        if kv is None:
            raise ObjectNotFound(f'{info.singular} "{name}" not found')
        if expected and kv.mod_revision != expected:
            raise self._conflict(info, name)
        return await self._write(info, kv, new, status=status, admit=admit)

    async def patch(
        self,
        info: KindInfo,
        name: str,
        patch: object,
        *,
        status: bool = False,
        admit: Admit | None = None,
    ) -> StoredDocument:
        """JSON merge patch (RFC 7386). Retried on concurrent writes unless the
        patch itself sets ``metadata.resourceVersion`` (then it is a precondition)."""
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object")
        expected = parse_resource_version(_patch_resource_version(patch))
        for _ in range(MAX_PATCH_RETRIES):
            kv = await self._read_at(info, name, expected)
            stored = decode(kv)
            if status:
                merged = patches.merge_patch(stored, patch)
            else:  # a spec write keeps the stored status: not copied, validated nor dumped (see _write)
                merged = patches.merge_patch(_without_status(stored), _without_status(patch))
            new = parse(merged, expected_kind=info.kind)
            if new.name != name:
                raise ValidationFailed([FieldError("metadata.name", "cannot be changed")])
            try:
                return await self._write(
                    info, kv, new, status=status, admit=admit, keep_status=not status, stored=stored
                )
            except VersionConflict:
                if expected:
                    raise
        raise self._conflict(info, name)

    async def _read_at(self, info: KindInfo, name: str, expected: int) -> KeyValue:
        """The stored object; ObjectNotFound, or VersionConflict when ``expected`` (non-zero) is not its revision."""
        kv = await self.store.get(key_for(info, name))
        if kv is None:
            raise ObjectNotFound(f'{info.singular} "{name}" not found')
        if expected and kv.mod_revision != expected:
            raise self._conflict(info, name)
        return kv

    async def _write(
        self,
        info: KindInfo,
        kv: KeyValue,
        new: Resource,
        *,
        status: bool,
        admit: Admit | None = None,
        keep_status: bool = False,
        stored: StoredDocument | None = None,
    ) -> StoredDocument:
        """Store ``new`` over ``kv``. ``keep_status`` (a spec write): the stored status is kept as stored.

        A spec write keeps the old status anyway (prepare_update), and a Workload's status grows with
        the fleet (counts per site): parsing, copying and dumping it was most of a push's PATCH
        (issue 10). The stored status was validated when written, so it is spliced back as stored.
        ``stored``: ``decode(kv)`` when the caller has it (read only).
        """
        stored = decode(kv) if stored is None else stored
        old = parse(_without_status(stored) if keep_status else stored, expected_kind=info.kind)
        if status:
            merged = lifecycle.prepare_status_update(old, new)
        else:
            merged = lifecycle.prepare_update(old, new)
        data = encode(merged, status=stored.get("status") if keep_status else None)
        if data == kv.value:
            return decode(kv)  # nothing changed: no new revision, no event
        if admit is not None and not status:
            await admit(json.loads(data), decode(kv))
        try:
            written = await self.store.update(kv.key, data, expected_revision=kv.mod_revision, lease=kv.lease)
        except (Conflict, NotFound):
            raise self._conflict(info, new.name) from None
        return decode(written)

    async def delete(
        self, info: KindInfo, name: str, *, resource_version: int = 0, admit: Admit | None = None
    ) -> StoredDocument:
        """Delete; ``resource_version`` (non-zero) is a precondition. With ``admit``, the object is read
        first and deleted only at the revision that was admitted (retried on concurrent writes)."""
        if admit is not None:
            return await self._admitted_delete(info, name, resource_version, admit)
        try:
            kv = await self.store.delete(key_for(info, name), expected_revision=resource_version)
        except NotFound:
            raise ObjectNotFound(f'{info.singular} "{name}" not found') from None
        except Conflict:
            raise self._conflict(info, name) from None
        return decode(kv)

    async def _admitted_delete(self, info: KindInfo, name: str, expected: int, admit: Admit) -> StoredDocument:
        for _ in range(MAX_PATCH_RETRIES):
            kv = await self._read_at(info, name, expected)
            await admit(None, decode(kv))
            try:
                return decode(await self.store.delete(kv.key, expected_revision=kv.mod_revision))
            except NotFound:
                raise ObjectNotFound(f'{info.singular} "{name}" not found') from None
            except Conflict:
                if expected:
                    raise self._conflict(info, name) from None
        raise self._conflict(info, name)

    @staticmethod
    def _conflict(info: KindInfo, name: str) -> VersionConflict:
        return VersionConflict(
            f'{info.singular} "{name}" was changed by someone else; get it again and retry with the new resourceVersion'
        )

    # watch -----------------------------------------------------------------

    async def ensure_watchable(self, after_revision: int) -> None:
        """Gone (410) when the history after ``after_revision`` was compacted."""
        compacted = await self.store.compacted_revision()
        if after_revision + 1 < compacted:
            raise Gone(
                f"resourceVersion {after_revision} is too old (history starts at "
                f"{compacted}); list again and watch from the list's resourceVersion"
            )

    async def watch(
        self,
        info: KindInfo,
        *,
        after_revision: int,
        selector: Selector | None = None,
    ) -> AsyncGenerator[WatchEvent | Bookmark, None]:
        """Changes of one kind after ``after_revision``, as API watch events, and bookmarks when idle.

        With a selector, an object that stops matching is reported DELETED and
        one that starts matching ADDED, so a client's cache stays exact.
        """
        stream = self.store.watch(key_for(info), after_revision)
        try:
            async for item in stream:
                if isinstance(item, Progress):
                    yield Bookmark(item.revision)
                    continue
                event = _to_watch_event(item, selector)
                if event is not None:
                    yield event
        except Compacted as exc:
            raise Gone(str(exc)) from None
        finally:
            await stream.aclose()


def _patch_resource_version(patch: JSONObject) -> str | None:
    metadata = patch.get("metadata")
    if isinstance(metadata, dict):
        value = metadata.get("resourceVersion")
        if value is None or isinstance(value, str):
            return value
        raise ValidationFailed([FieldError("metadata.resourceVersion", "must be a string")])
    return None


def bookmark_document(info: KindInfo, revision: int) -> JSONObject:
    """The ``object`` of a BOOKMARK watch line: apiVersion, kind and only ``metadata.resourceVersion``."""
    return {
        "apiVersion": info.model.model_fields["api_version"].default,
        "kind": info.kind,
        "metadata": {"resourceVersion": str(revision)},
    }


def _to_watch_event(event: Event, selector: Selector | None) -> WatchEvent | None:
    doc = decode(event.kv)
    revision = event.revision
    if event.type is EventType.DELETE:
        if selector is None or selector.matches(labels_of(doc)):
            return WatchEvent("DELETED", doc, revision)
        return None
    if selector is None:
        return WatchEvent("ADDED" if event.created else "MODIFIED", doc, revision)
    now_matches = selector.matches(labels_of(doc))
    was_matching = event.prev is not None and selector.matches(labels_of(decode(event.prev)))
    if now_matches:
        return WatchEvent("MODIFIED" if was_matching else "ADDED", doc, revision)
    if was_matching:
        return WatchEvent("DELETED", doc, revision)
    return None
