"""The cloud's blob store: artifact bytes, content-addressed on disk, uploaded by admins, read by nodes.

How: :class:`BlobStore` keeps each blob at ``<root>/sha256/<first 2 hex>/<digest>``
(written once, never changed: the name *is* the content). An upload streams
the request body to a temporary file in ``<root>/tmp`` while hashing it,
refuses it past the announced ``Content-Length`` or :attr:`BlobStore.max_bytes`,
checks the digest, fsyncs and renames it into place; a body never sits in
memory whole, and a failed or cut upload leaves nothing behind.

:class:`BlobEndpoint` is a raw ASGI wrapper around the API application (the
API's 1 MiB body limit would refuse uploads, and JSON routes are the wrong
tool for bytes). It answers under :data:`BLOB_ROOT`:

- ``PUT /edge/v1/blobs/sha256/<hex>``: upload (role admin only), with
  ``Content-Length``; 201 when stored, 200 when it was already there (the
  body is still read and checked, so a wrong digest is never "accepted");
  422 when the bytes do not match the digest; 413 over the size limit.
- ``GET`` / ``HEAD`` of the same path: role admin, or an approved node
  credential; viewers get 403 (blobs are private: binaries may hold secrets
  of the operators' own). ``Cache-Control: public, max-age=31536000,
  immutable`` (caches in front may keep it forever: it cannot change),
  ``ETag: "<digest>"`` (``If-None-Match`` gives 304), single byte ranges
  (``Range: bytes=a-b``, ``a-``, ``-n``: 206; unsatisfiable: 416; several
  ranges are answered with the whole body, which RFC 9110 allows).

The edge never reaches this path through a shared URL: each agent fetches
with its node credential (see :mod:`edgefleet.edge.artifacts`). Several hub
replicas need a shared ``--blob-dir`` (a network filesystem) or artifacts
with ``source: url``; each replica serves only the blobs it can see.

The fleet artifact key: :func:`ensure_fleet_key` creates the Secret
:data:`FLEET_SECRET` once (a random key) at cloud start. It is in every
node's view (:mod:`edgefleet.sync.views`) and no viewer sees its value; the
agents derive from it the capability in the cache URLs of artifacts
(:func:`edgefleet.edge.artifacts.capability`), so that only nodes and
admins can name a blob to a cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.api.meta import kind_info
from edgefleet.cloud import events
from edgefleet.cloud.auth import AuthError, Principal, Role, Unauthorized
from edgefleet.cloud.registry import ObjectExists, Registry

log = logging.getLogger(__name__)

BLOB_ROOT = "/edge/v1/blobs/sha256/"
DEFAULT_MAX_BLOB_BYTES = 8 * 1024**3
CHUNK = 1024 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
FLEET_SECRET = "edgefleet-artifacts"
FLEET_SECRET_KEY = "key"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

Authenticate = Callable[[str | None], Awaitable[Principal]]


class BlobError(Exception):
    """An upload or read that cannot be done; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BlobStore:
    """Blobs content-addressed under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise BlobError(400, f"{digest[:80]!r} is not a SHA-256 digest (64 lowercase hex digits)")
        return self.root / "sha256" / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open_upload(self, digest: str, size: int) -> Upload:
        self.path(digest)  # checks the digest's shape
        if size > self.max_bytes:
            raise BlobError(413, f"{size} bytes is over the blob limit of {self.max_bytes} (cloud --max-blob-bytes)")
        return Upload(self, digest, size)


class Upload:
    """One upload in progress: :meth:`write` chunks, then :meth:`finish` (or :meth:`abort`)."""

    def __init__(self, store: BlobStore, digest: str, size: int) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.received = 0
        self._hash = hashlib.sha256()
        fd, name = _mkstemp(store.root / "tmp")
        self._file = os.fdopen(fd, "wb")
        self._temp = Path(name)

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.size:
            raise BlobError(400, f"the body is longer than its Content-Length ({self.size})")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> bool:
        """Check and move into place (blocking); True if stored now, False if it was there already."""
        if self.received != self.size:
            raise BlobError(400, f"the body ended after {self.received} of {self.size} bytes")
        got = self._hash.hexdigest()
        if got != self.digest:
            raise BlobError(422, f"the bytes have SHA-256 {got}, not {self.digest}: nothing was stored")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target = self.store.path(self.digest)
        if target.is_file():
            self._temp.unlink()
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self._temp, 0o644)
        os.replace(self._temp, target)
        return True

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._temp.unlink()


def _mkstemp(directory: Path) -> tuple[int, str]:
    name = directory / f"upload-{secrets.token_hex(8)}"
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), str(name)


# -- ranges (pure) ------------------------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte a single ``Range`` asks for; None for the whole body; BlobError(416) if unsatisfiable."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges or another unit: the whole body (RFC 9110 §14.2 lets a server ignore Range)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0 or size == 0:
            raise BlobError(416, "unsatisfiable range")
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise BlobError(416, "unsatisfiable range")
    return start, end


# -- the ASGI endpoint ----------------------------------------------------------------------------


class BlobEndpoint:
    """Serves :data:`BLOB_ROOT` itself and hands every other request to ``app``."""

    def __init__(
        self, app: ASGIApp, store: BlobStore, authenticate: Authenticate, registry: CollectorRegistry | None = None
    ) -> None:
        self.app, self.store, self.authenticate = app, store, authenticate
        self.requests = Counter(
            "edgefleet_blob_requests", "Blob store requests by method and status code", ["method", "code"],
            registry=registry,
        )  # fmt: skip
        self.bytes_served = Counter(
            "edgefleet_blob_bytes_served", "Body bytes of blobs sent (GET, ranges included)", registry=registry
        )
        self.bytes_stored = Counter("edgefleet_blob_bytes_received", "Body bytes of blob uploads", registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(BLOB_ROOT):
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.requests.labels(method, str(message["status"])).inc()
            elif message["type"] == "http.response.body" and method == "GET":
                self.bytes_served.inc(len(message.get("body", b"")))
            await send(message)

        try:
            await self._serve(scope, receive, counting)
        except BlobError as exc:
            await _problem(counting, exc.status, str(exc))
        except AuthError as exc:
            await _problem(counting, 401 if isinstance(exc, Unauthorized) else 403, str(exc))

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        digest = str(scope["path"])[len(BLOB_ROOT) :]
        method = scope.get("method", "GET")
        principal = await self.authenticate(headers.get("authorization"))
        if method == "PUT":
            principal.require_admin("uploading a blob")
            await self._upload(digest, headers, receive, send)
        elif method in ("GET", "HEAD"):
            if not (principal.role is Role.ADMIN or (principal.role is Role.NODE and not principal.pending)):
                raise BlobError(
                    403, f"{principal.name!r} has role {principal.role.value}: blobs are for admins and nodes"
                )
            await self._download(digest, headers, method == "HEAD", send)
        else:
            raise BlobError(405, f"{method} is not allowed here: GET, HEAD or PUT")

    async def _upload(self, digest: str, headers: dict[str, str], receive: Receive, send: Send) -> None:
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            raise BlobError(411, "send Content-Length with the upload (edgefleet artifact push does)")
        upload = self.store.open_upload(digest, int(length))
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BlobError(400, "the client went away during the upload")
                upload.write(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            created = await asyncio.to_thread(upload.finish)
            self.bytes_stored.inc(upload.size)
        except BaseException:
            upload.abort()
            raise
        log.info("blob %s %s (%d bytes)", digest, "stored" if created else "already stored", upload.size)
        body = json.dumps({"sha256": digest, "size": upload.size, "created": created}).encode()
        await _respond(send, 201 if created else 200, [(b"content-type", b"application/json")], body)

    async def _download(self, digest: str, headers: dict[str, str], head: bool, send: Send) -> None:
        path = self.store.path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BlobError(
                404, f"no blob sha256:{digest} in this cloud (edgefleet artifact push uploads it)"
            ) from None
        etag = f'"{digest}"'
        common = [(b"etag", etag.encode()), (b"cache-control", IMMUTABLE.encode()), (b"accept-ranges", b"bytes")]
        if etag in (headers.get("if-none-match") or ""):
            await _respond(send, 304, common, b"")
            return
        wanted = None if headers.get("if-range", etag) != etag else parse_range(headers.get("range"), size)
        first, last = wanted if wanted is not None else (0, size - 1)
        fields = [
            *common,
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(last - first + 1).encode()),
        ]
        if wanted is not None:
            fields.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
        await send({"type": "http.response.start", "status": 206 if wanted else 200, "headers": fields})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return
        await _stream_file(path, first, last + 1, send)


async def _stream_file(path: Path, start: int, end: int, send: Send) -> None:
    with path.open("rb") as file:
        file.seek(start)
        left = end - start
        while left > 0:
            chunk = await asyncio.to_thread(file.read, min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
    if left > 0:  # the file shrank under us: end the body short (the client sees a broken response)
        raise RuntimeError(f"blob {path.name} ended {left} bytes early")


async def _respond(send: Send, status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> None:
    fields = [*fields, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Send, status: int, message: str) -> None:
    body = json.dumps({"kind": "Status", "code": status, "message": message}).encode()
    await _respond(send, status, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], body)


# -- the fleet artifact key -----------------------------------------------------------------------


async def ensure_fleet_key(registry: Registry) -> None:
    """Create the Secret :data:`FLEET_SECRET` with a random key unless it exists (several replicas may race)."""
    info = kind_info("Secret")
    document = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Secret",
        "metadata": {"name": FLEET_SECRET, "labels": {"edgefleet.io/system": "artifacts"}},
        "spec": {"data": {FLEET_SECRET_KEY: secrets.token_urlsafe(32)}},
    }
    with contextlib.suppress(ObjectExists):
        await registry.create(info, document)
        log.info("created the fleet artifact key (Secret %s)", FLEET_SECRET)


def blob_dir(configured: Path | None, store_url: str) -> Path:
    """``--blob-dir``, else ``blobs/`` beside a SQLite store file, else ``./edgefleet-data/blobs``."""
    if configured is not None:
        return configured
    if store_url.startswith("sqlite:///"):
        return Path(store_url.removeprefix("sqlite:///")).parent / "blobs"
    return Path("edgefleet-data") / "blobs"


# -- failed updates become Events -------------------------------------------------------------------

FAILED_UPDATE = "update to revision "
"""How an agent's workload status message starts when a new revision's artifacts failed (edge.supervisor)."""


def failed_updates(old: Any, new: Any) -> list[tuple[str, str]]:
    """(workload, message) for every workload whose status now says its update failed, and did not say so before."""
    before = old.get("workloads") if isinstance(old, dict) else None
    after = new.get("workloads") if isinstance(new, dict) else None
    found = []
    for name, status in (after if isinstance(after, dict) else {}).items():
        message = status.get("message") if isinstance(status, dict) else None
        if not isinstance(message, str) or not message.startswith(FAILED_UPDATE):
            continue
        previous = (before or {}).get(name) if isinstance(before, dict) else None
        if not (isinstance(previous, dict) and previous.get("message") == message):
            found.append((str(name), message))
    return found


async def record_failed_updates(registry: Registry, node: str, old: Any, new: Any) -> None:
    """A Warning Event ``ArtifactsFailed`` on each Workload whose update failed on ``node`` (logged, never raised)."""
    for workload, message in failed_updates(old, new):
        try:
            await events.record(
                registry, "Workload", workload, "ArtifactsFailed", f"node {node}: {message}", "Warning",
                source="edgefleet-hub",
            )  # fmt: skip
        except Exception as exc:  # an Event is a courtesy; the status already says it
            log.warning("cannot record the failed update of %s on %s: %s", workload, node, exc)
