"""The backup file format: encoding, checksum and validation, pure (no I/O, no clock).

A backup is a gzip'd stream of JSON lines (UTF-8, one object a line, ``\\n``
after each), in three parts:

1. a **header**: ``{"format": "edgefleet-backup", "version": 1, "revision": R,
   "epoch": E, "source": "sqlite" | "etcd", "created": "2026-12-07T14:50:00Z"}``:
   the store revision every record was read at (one consistent snapshot),
   the store's epoch, its backend and when the backup was made;
2. one **record** per key, in strictly increasing key order:
   ``{"key": "/registry/sites/par", "value": TEXT}`` when the value is UTF-8
   (every object and system key edgefleet writes), else
   ``{"key": K, "base64": B64}``;
3. a **trailer**: ``{"end": true, "count": N, "skippedLeased": S, "sha256": H}``,
   ``H`` the SHA-256 (hex) of the exact bytes of every line before it
   (header and records, each with its ``\\n``), ``N`` the number of records,
   ``S`` the number of keys left out because they were bound to a lease.

Why this shape: JSON lines stream in both directions (a store of any size is
backed up and restored in bounded memory), read with ``zcat | head`` and
``jq``, and need no schema library; a header and a trailer make a truncated
file (no trailer) or a tampered one (checksum) detectable before anything is
written to the target store; the version lets a later format be told apart.

What is in it: every key of the store that is not bound to a lease, so every
object under ``/registry/`` and the system keys under ``/system/``: API tokens
and node credentials (hashed, as stored: a restored cloud accepts the same
tokens and every node keeps its identity), the credential index by node.
Keys bound to a lease belong to live processes or expire by themselves and
are left out: hub replicas' presence objects and leader locks (the new
cloud's processes take their own), bootstrap tokens and API tokens made with
a TTL, and the old credentials of a rotation still in their grace period.
Revisions are not kept: a restored store numbers its changes afresh (objects
get new ``resourceVersion``\\s) and has a new epoch; nodes notice the new epoch
and reconcile by content, so unchanged objects are not sent again.

The checksum detects corruption and truncation, not a forger (anyone who can
write the file can recompute it); a backup holds secrets (token hashes,
Secrets, certificate keys), so keep it like the store itself: mode 0600,
encrypted at rest, readable by the operators of the cloud only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from edgefleet.store.interface import InvalidKey, StoreError
from edgefleet.store.keys import check_key

FORMAT = "edgefleet-backup"
VERSION = 1
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line accepted when reading (a value of etcd's 1.5 MiB limit in base64 is about 2 MiB)."""
SOURCES = ("sqlite", "etcd")

_HEADER_FIELDS = {"format", "version", "revision", "epoch", "source", "created"}
_TRAILER_FIELDS = {"end", "count", "skippedLeased", "sha256"}


class BackupFormatError(StoreError):
    """The file is not a complete, intact backup of a supported version; nothing was written."""


@dataclass(frozen=True, slots=True)
class Header:
    revision: int
    epoch: str
    source: str
    created: str
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Trailer:
    count: int
    skipped_leased: int
    sha256: str


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class Encoder:
    """Turns a header, records in key order and the end into the lines of a backup."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._last_key: str | None = None
        self.count = 0
        self.started = False

    def header(self, header: Header) -> bytes:
        if self.started:
            raise ValueError("the header was already encoded")
        if header.source not in SOURCES:
            raise ValueError(f"unknown source {header.source!r}")
        self.started = True
        line = _line(
            {
                "format": FORMAT,
                "version": VERSION,
                "revision": header.revision,
                "epoch": header.epoch,
                "source": header.source,
                "created": header.created,
            }
        )
        self._hash.update(line)
        return line

    def record(self, key: str, value: bytes) -> bytes:
        if not self.started:
            raise ValueError("encode the header first")
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"records must come in strictly increasing key order: {key!r} after {self._last_key!r}")
        check_key(key)
        self._last_key = key
        try:
            document: dict[str, Any] = {"key": key, "value": value.decode()}
        except UnicodeDecodeError:
            document = {"key": key, "base64": base64.b64encode(value).decode()}
        line = _line(document)
        self._hash.update(line)
        self.count += 1
        return line

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the lines encoded so far: the trailer's checksum."""
        return self._hash.hexdigest()

    def trailer(self, skipped_leased: int) -> bytes:
        if not self.started:
            raise ValueError("encode the header first")
        return _line({"end": True, "count": self.count, "skippedLeased": skipped_leased, "sha256": self.digest})


class Decoder:
    """Checks a backup line by line: header first, records in key order, then a trailer that matches.

    ``line()`` returns what each line holds; ``finish()`` (after the last
    line) returns the trailer or raises if the file ended early. Every
    problem raises :class:`BackupFormatError` naming the line.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._number = 0
        self._last_key: str | None = None
        self.header: Header | None = None
        self.trailer: Trailer | None = None
        self.count = 0

    def line(self, raw: bytes) -> Header | Record | Trailer:
        self._number += 1
        if self.trailer is not None:
            raise self._error("data after the trailer")
        if len(raw) > MAX_LINE_BYTES:
            raise self._error(f"line longer than {MAX_LINE_BYTES} bytes")
        if not raw.endswith(b"\n"):
            raise self._error("the file ends in the middle of a line (truncated)")
        document = self._json(raw)
        if self.header is None:
            self.header = self._header(document)
            self._hash.update(raw)
            return self.header
        if "end" in document:
            self.trailer = self._trailer(document)
            return self.trailer
        record = self._record(document)
        self._hash.update(raw)
        self.count += 1
        return record

    def finish(self) -> Trailer:
        if self.header is None:
            raise BackupFormatError("the file is empty: not an edgefleet backup")
        if self.trailer is None:
            raise BackupFormatError(
                f"the backup is truncated: no trailer after {self.count} records (the copy or the backup "
                "was cut short); use another backup"
            )
        return self.trailer

    def _error(self, message: str) -> BackupFormatError:
        return BackupFormatError(f"line {self._number}: {message}; this backup cannot be restored")

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise self._error("not a JSON line (corrupt file?)") from None
        if not isinstance(document, dict):
            raise self._error("not a JSON object")
        return document

    def _header(self, document: dict[str, Any]) -> Header:
        if document.get("format") != FORMAT:
            raise self._error(f"not an edgefleet backup (no {FORMAT!r} header)")
        if document.get("version") != VERSION:
            raise self._error(
                f"backup format version {document.get('version')!r}; this edgefleet reads version {VERSION}"
            )
        if set(document) != _HEADER_FIELDS:
            raise self._error(f"header fields must be {sorted(_HEADER_FIELDS)}")
        revision, epoch, source, created = (document[f] for f in ("revision", "epoch", "source", "created"))
        if not _is_int(revision) or revision < 0:
            raise self._error("header revision must be a non-negative integer")
        if not isinstance(epoch, str) or not isinstance(created, str) or len(epoch) > 200 or len(created) > 64:
            raise self._error("header epoch and created must be short strings")
        if source not in SOURCES:
            raise self._error(f"header source must be one of {', '.join(SOURCES)}")
        return Header(revision, epoch, source, created)

    def _record(self, document: dict[str, Any]) -> Record:
        key = document.get("key")
        if not isinstance(key, str):
            raise self._error("a record needs a string key")
        try:
            check_key(key)
        except InvalidKey as exc:
            raise self._error(f"bad key: {exc}") from None
        if self._last_key is not None and key <= self._last_key:
            raise self._error(f"key {key[:200]!r} is out of order or repeated")
        self._last_key = key
        if set(document) == {"key", "value"} and isinstance(document["value"], str):
            value = document["value"].encode()
        elif set(document) == {"key", "base64"} and isinstance(document["base64"], str):
            try:
                value = base64.b64decode(document["base64"], validate=True)
            except binascii.Error:
                raise self._error(f"{key[:200]}: bad base64 value") from None
        else:
            raise self._error(f"{key[:200]}: a record is {{key, value}} or {{key, base64}}")
        if key.startswith("/registry/"):
            check_object(key, value, self._error)
        return Record(key, value)

    def _trailer(self, document: dict[str, Any]) -> Trailer:
        if set(document) != _TRAILER_FIELDS or document["end"] is not True:
            raise self._error(f"trailer fields must be {sorted(_TRAILER_FIELDS)}")
        count, skipped, digest = document["count"], document["skippedLeased"], document["sha256"]
        if not _is_int(count) or not _is_int(skipped) or skipped < 0 or not isinstance(digest, str):
            raise self._error("bad trailer values")
        if count != self.count:
            raise self._error(f"the trailer counts {count} records but the file holds {self.count} (altered?)")
        if digest != self._hash.hexdigest():
            raise self._error("checksum mismatch: the file was altered or corrupted after it was written")
        return Trailer(count, skipped, digest)


def check_object(key: str, value: bytes, error: Any = BackupFormatError) -> None:
    """A ``/registry/<plural>/<name>`` value must be a JSON object with a kind and the key's name."""
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        raise error(f"{key[:200]}: the object is not JSON") from None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(document.get("kind"), str) or not isinstance(metadata, dict):
        raise error(f"{key[:200]}: not a resource (kind and metadata missing)")
    if key.rsplit("/", 1)[-1] != metadata.get("name"):
        raise error(f"{key[:200]}: metadata.name does not match the key")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
