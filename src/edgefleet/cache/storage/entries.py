"""The stored-object model shared by the memory and disk tiers.

An ``EntryMeta`` is everything the cache knows about one stored response
except its body: the two keys it is stored under, its status line and
end-to-end fields, the RFC 9111 timestamps the freshness code computed at
store time, its purge tags and its soft-purge mark.

Keys. A response is stored under its primary cache key (``key``, the
normalised URL) and a secondary key (``variant``) derived from the request
fields its ``Vary`` names, "" when it has no ``Vary``. ``entry_id`` hashes the
pair into the hex name the disk tier uses for files and index rows: fixed
length, safe in a path, and the same in every process.

Serialisation. The disk tier stores the meta as JSON. ``to_json`` writes a
compact ASCII object (lone surrogates from ``surrogateescape``-decoded
fields survive as ``\\udcXX`` escapes); ``from_json`` checks every field's
type and raises ``StorageError`` on anything else, because a file on disk is
untrusted input: a torn or foreign file must become a cache miss, never a
crash or a wrong response. Unknown keys are ignored so that a newer writer
sharing the directory does not make an older reader drop its objects.
JSON allows trailing whitespace, which the disk tier uses to pad metas.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from edgefleet.cache.errors import StorageError


def entry_id(key: str, variant: str) -> str:
    """The hex sha256 of ``key + "\\0" + variant``: the object's file name and index id."""
    raw = f"{key}\0{variant}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()


@dataclass(slots=True)
class EntryMeta:
    """One stored response, minus its body (see the module docstring)."""

    key: str
    variant: str
    vary: tuple[str, ...]
    status: int
    reason: str
    headers: list[tuple[str, str]]
    request_time: float
    response_time: float
    initial_age: float
    fresh_until: float
    stale_while_revalidate_until: float
    stale_if_error_until: float
    must_revalidate: bool
    no_cache: bool
    size: int
    tags: tuple[str, ...]
    invalidated: bool = False

    @property
    def id(self) -> str:
        return entry_id(self.key, self.variant)

    def to_json(self) -> bytes:
        fields = {name: getattr(self, name) for name in _FIELDS}
        fields["headers"] = [[name, value] for name, value in self.headers]
        return json.dumps(fields, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> EntryMeta:
        try:
            fields = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StorageError(f"entry meta is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise StorageError("entry meta is not a JSON object")
        return cls(**_checked(fields))


# Scalar fields and the exact JSON types each may have (bool is not an int here).
_NUMBER = (int, float)
_SCALARS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "variant": (str,),
    "status": (int,),
    "reason": (str,),
    "request_time": _NUMBER,
    "response_time": _NUMBER,
    "initial_age": _NUMBER,
    "fresh_until": _NUMBER,
    "stale_while_revalidate_until": _NUMBER,
    "stale_if_error_until": _NUMBER,
    "must_revalidate": (bool,),
    "no_cache": (bool,),
    "size": (int,),
    "invalidated": (bool,),
}
_STRING_LISTS = ("vary", "tags")
_FIELDS = (*_SCALARS, *_STRING_LISTS, "headers")


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from a decoded meta object; StorageError names the first bad field.

    Written as type-table loops rather than a function per field: this runs
    on every disk hit.
    """
    fields.setdefault("invalidated", False)
    values: dict[str, Any] = {}
    for name, types in _SCALARS.items():
        value: Any = fields.get(name)
        if type(value) not in types:
            raise _bad_field(name, fields, "of the wrong type")
        values[name] = float(value) if types is _NUMBER else value
    if values["size"] < 0:
        raise _bad_field("size", fields, "negative")
    for name in _STRING_LISTS:
        items = fields.get(name)
        if type(items) is not list or any(type(item) is not str for item in items):
            raise _bad_field(name, fields, "not a list of strings")
        values[name] = tuple(items)
    values["headers"] = _header_fields(fields)
    return values


def _header_fields(fields: dict[str, Any]) -> list[tuple[str, str]]:
    items = fields.get("headers")
    if type(items) is not list:
        raise _bad_field("headers", fields, "not a list")
    pairs = []
    for item in items:
        if type(item) is not list or len(item) != 2 or type(item[0]) is not str or type(item[1]) is not str:
            raise _bad_field("headers", fields, "not a list of [name, value] string pairs")
        pairs.append((item[0], item[1]))
    return pairs


def _bad_field(name: str, fields: dict[str, Any], problem: str) -> StorageError:
    if name not in fields:
        return StorageError(f"entry meta: missing field {name!r}")
    return StorageError(f"entry meta: field {name!r} is {problem}")
