"""Artifacts on an edge node: fetched through the site's cache, verified, kept by digest, installed, collected.

How a node gets the bytes of an Artifact (see :mod:`edgefleet.api.artifacts`):

1. The agent asks its **own cache** for ``http://<cache>/sha256/<digest>/<capability>``
   with ``Host:`` :data:`ARTIFACT_HOST`. Every cache config the agent renders
   has the internal Domain :data:`ARTIFACT_DOMAIN` for that host
   (:func:`internal_domain`), so the cache's tiers do the rest: the key's
   owner node in the site, then the parent site, collapse concurrent misses
   into one fill each, and store the blob (``Cache-Control: immutable``).
2. The internal Domain's origin is the **agent of the node whose cache asks
   it** (``http://<agent listen>/artifact-origin``, :class:`ArtifactOrigin`):
   the top of the tier path (a parent-site node, usually) fetches the bytes
   itself, once per digest however many requests arrive, from the cloud's
   blob store with its node credential and the CA pinned at join (``source:
   upload``), or from the Artifact's ``url`` (``source: url``); it verifies
   the SHA-256 before serving any byte, and serves the file it keeps, with
   ranges (the cache fetches large objects in slices).
3. The asking agent streams the answer into ``<data>/artifacts/partial/``,
   resumes with ``Range`` after a broken connection, checks the SHA-256 and
   moves the file to ``<data>/artifacts/sha256/<ab>/<digest>``. No cache
   (none configured, not ready, failing): it fetches like an origin does.

**Threat model.** Blobs are private (only nodes and admins read them). The
internal host name is not secret: anyone can send ``Host:
artifacts.edgefleet.internal`` to any node. What they cannot do is name a
blob: the cache URL carries a *capability*, the first 128 bits of
HMAC-SHA256(fleet key, digest) (:func:`capability`), and the cache key is
that URL, so a cached blob answers only a request that knows it. The fleet
key is the Secret ``edgefleet-artifacts`` (created by the cloud, in every
node's view, redacted for viewers): nodes and admins know it, nobody else.
A wrong capability is a miss that reaches the top agent, which refuses it
(403, ``no-store``, nothing fetched, so no amplification beyond one request
per tier); digests are public (viewers see Artifacts), capabilities are
not. A capability that leaked (a shipped access log) opens that one blob,
not the others; rotating the key (edit the Secret) changes every URL. The
cloud is never reached through a shared credential: each top agent uses its
own node credential (revoked nodes lose access at once), and bytes from an
external URL or a cache are verified by digest before use, so a poisoned
cache or origin can make a fetch fail, never install wrong bytes.

**Installation** (:func:`install`, blocking): ``extract: none`` copies the
file to ``path`` with ``mode``; ``extract: tar.gz`` unpacks into the
directory ``path`` member by member with :func:`safe_extract`: regular files
and directories only (no links, devices or FIFOs), no absolute names and no
``..``, at most :data:`MAX_MEMBERS` members and :data:`MAX_EXTRACTED_BYTES`
bytes (a gzip bomb stops there), modes without setuid/setgid. Every write is
made through ``O_NOFOLLOW`` descriptors below the working directory, as the
template's files are (:mod:`edgefleet.edge.workdirs`).

**Garbage collection** (:meth:`NodeArtifacts.collect`): blobs that no
desired Workload template of the node references are removed (after
``grace`` seconds unused, so a blob prefetched for a coming rollout or
fetched for a parent-site child survives a while), and stale partial files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import logging
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from edgefleet.api.artifacts import PREFETCH_ANNOTATION
from edgefleet.api.errors import SelectorError
from edgefleet.api.selectors import parse_selector
from edgefleet.api.workloads import WorkloadArtifact, WorkloadTemplate
from edgefleet.edge.users import Account
from edgefleet.edge.workdirs import open_subdirectory

log = logging.getLogger(__name__)

ARTIFACT_HOST = "artifacts.edgefleet.internal"
"""The Host the agent sends to its cache for artifacts (``.internal`` is reserved for private use)."""
ARTIFACT_DOMAIN = "edgefleet-artifacts"
"""The name of the internal Domain in every rendered cache config."""
ORIGIN_PREFIX = "/artifact-origin"
FLEET_SECRET = "edgefleet-artifacts"
FLEET_SECRET_KEY = "key"
BLOB_PATH = "/edge/v1/blobs/sha256/"
MAX_MEMBERS = 100_000
MAX_EXTRACTED_BYTES = 16 * 1024**3
CHUNK = 1024 * 1024
DEFAULT_GRACE_SECONDS = 3600.0
FETCH_ATTEMPTS = 4


class ArtifactError(Exception):
    """An artifact cannot be fetched, verified or installed; the message says which and why."""


# -- pure helpers -------------------------------------------------------------------------------


def capability(key: str, digest: str) -> str:
    """The capability for ``digest`` under the fleet key: 32 hex digits of HMAC-SHA256."""
    return hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()[:32]


def cache_path(key: str, digest: str) -> str:
    return f"/sha256/{digest}/{capability(key, digest)}"


def internal_domain(origin_url: str) -> dict[str, Any]:
    """The cache config entry of the internal artifact Domain, whose origin is this node's agent."""
    return {
        "name": ARTIFACT_DOMAIN,
        "hostnames": [ARTIFACT_HOST],
        "origins": [{"url": origin_url}],
        "cachePolicy": {"defaultTtl": 31536000, "queryString": "ignore"},
    }


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """What the agent knows of one Artifact from its view."""

    name: str
    version: str
    sha256: str
    size: int
    source: str
    url: str | None = None


def artifacts_from_view(documents: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], ArtifactRef]:
    """(name, version) -> ArtifactRef, from the Artifact documents of a view (malformed ones skipped)."""
    found: dict[tuple[str, str], ArtifactRef] = {}
    for document in documents:
        spec = document.get("spec")
        if document.get("kind") != "Artifact" or not isinstance(spec, dict):
            continue
        try:
            ref = ArtifactRef(
                str(spec["name"]), str(spec["version"]), str(spec["sha256"]), int(spec["size"]),
                str(spec.get("source", "upload")), spec.get("url"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            continue
        found[(ref.name, ref.version)] = ref
    return found


def fleet_key(secret: Mapping[str, Any] | None) -> str | None:
    spec = secret.get("spec") if isinstance(secret, dict) else None
    data = spec.get("data") if isinstance(spec, dict) else None
    value = data.get(FLEET_SECRET_KEY) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


# -- the node's content-addressed store -------------------------------------------------------------


class NodeArtifacts:
    """Blobs under ``<root>/sha256/<ab>/<digest>``, partial downloads under ``<root>/partial``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def partial(self, digest: str, suffix: str = "") -> Path:
        return self.root / "partial" / (digest + suffix)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def digests(self) -> list[str]:
        base = self.root / "sha256"
        return sorted(p.name for p in base.glob("*/*") if p.is_file()) if base.is_dir() else []

    def commit(self, digest: str, partial: Path) -> Path:
        """Move the verified file ``partial`` into place."""
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
        return target

    def collect(self, keep: set[str], *, grace: float = DEFAULT_GRACE_SECONDS, now: float | None = None) -> list[str]:
        """Remove blobs not in ``keep`` and unused for ``grace`` seconds, and partials as old; the digests removed."""
        now = time.time() if now is None else now
        removed = []
        for digest in self.digests():
            path = self.path(digest)
            with contextlib.suppress(FileNotFoundError):
                if digest not in keep and now - max(path.stat().st_atime, path.stat().st_mtime) >= grace:
                    path.unlink()
                    removed.append(digest)
        partial = self.root / "partial"
        for path in partial.iterdir() if partial.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                if path.name.split(".")[0] not in keep and now - path.stat().st_mtime >= grace:
                    path.unlink()
        return removed


def hash_prefix(path: Path) -> tuple[Any, int]:
    """(sha256 object over the file, its size): where a resumed download continues from (blocking)."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


# -- fetching -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One place to GET a blob from: a URL, its headers, how to verify TLS."""

    url: str
    headers: Mapping[str, str]
    verify: Any = True


async def download(
    client: httpx.AsyncClient,
    source: Source,
    store: NodeArtifacts,
    ref: ArtifactRef,
    *,
    attempts: int = FETCH_ATTEMPTS,
    progress: Callable[[int], None] | None = None,
    suffix: str = "",
) -> Path:
    """Fetch ``ref`` from ``source`` into ``store``: resume with Range, verify SHA-256; ArtifactError if it cannot.

    ``suffix`` names the partial file apart from other downloads of the same digest that may run at once.
    """
    partial = store.partial(ref.sha256, suffix)
    partial.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(attempts):
        hasher, have = await asyncio.to_thread(hash_prefix, partial)
        if have > ref.size:
            partial.unlink()
            hasher, have = hashlib.sha256(), 0
        try:
            if have < ref.size:
                hasher, have = await _get(client, source, partial, hasher, have, ref.size, progress)
        except (httpx.HTTPError, OSError, _Retry) as exc:
            last = str(exc) or type(exc).__name__
            log.warning("artifact %s %s: fetch from %s failed after byte %d (%s); resuming", ref.name, ref.version,
                        source.url, have, last)  # fmt: skip
            continue
        if have == ref.size and hasher.hexdigest() == ref.sha256:
            return await asyncio.to_thread(store.commit, ref.sha256, partial)
        got = hasher.hexdigest()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise ArtifactError(
            f"artifact {ref.name} {ref.version}: the bytes from {source.url} have SHA-256 {got} ({have} bytes), "
            f"not {ref.sha256} ({ref.size} bytes); nothing was installed"
        )
    raise ArtifactError(f"artifact {ref.name} {ref.version}: cannot fetch it from {source.url}: {last}")


class _Retry(Exception):
    """A response that a new attempt may fix (5xx, a cut body)."""


async def _get(
    client: httpx.AsyncClient,
    source: Source,
    partial: Path,
    hasher: Any,
    have: int,
    size: int,
    progress: Callable[[int], None] | None,
) -> tuple[Any, int]:
    headers = dict(source.headers)
    if have:
        headers["Range"] = f"bytes={have}-"
    async with client.stream("GET", source.url, headers=headers) as response:
        if response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code == 200 and have:
            hasher, have = hashlib.sha256(), 0  # the server ignored the range: start again
            partial.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink, rarely
        elif response.status_code not in (200, 206):
            text = (await response.aread())[:300].decode("utf-8", "replace")
            raise ArtifactError(f"HTTP {response.status_code} from {source.url}: {text}")
        with partial.open("ab") as file:
            async for chunk in response.aiter_bytes():  # as they arrive: a cut keeps what came
                if have + len(chunk) > size:
                    raise ArtifactError(f"{source.url} sent more than the {size} bytes the Artifact says")
                file.write(chunk)
                hasher.update(chunk)
                have += len(chunk)
                if progress is not None:
                    progress(len(chunk))
    if have < size:
        raise _Retry(f"the body ended after {have} of {size} bytes")
    return hasher, have


# -- installing -----------------------------------------------------------------------------------------


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(root: int, parts: list[str], owner: Account | None) -> int:
    """The descriptor of ``root/parts...`` (created as needed), never through a symlink."""
    current = os.dup(root)
    for part in parts:
        if part in ("", ".", ".."):
            os.close(current)
            raise ArtifactError(f"path component {part!r} is not allowed")
        try:
            child = open_subdirectory(current, part, owner)
        except OSError as exc:
            os.close(current)
            raise ArtifactError(f"{part!r} is a symlink or not a directory: {exc.strerror}") from exc
        os.close(current)
        current = child
    return current


class _TooLarge(ArtifactError):
    """More bytes than the caller allowed."""


def _write_file(directory: int, name: str, source: io.BufferedIOBase | Any, mode: int, owner: Account | None,
                limit: int) -> int:  # fmt: skip
    """Write ``source`` to ``name`` in ``directory`` atomically; the bytes written (ArtifactError past ``limit``)."""
    partial = f".edgefleet-artifact-{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial, dir_fd=directory)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=directory)
    written = 0
    try:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise _TooLarge(f"more than {limit} bytes")
            os.write(fd, chunk)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode & 0o777)
        os.replace(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=directory)
        raise
    finally:
        os.close(fd)
    return written


def safe_extract(archive: Path, workdir: Path, target: str, owner: Account | None = None,
                 *, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_EXTRACTED_BYTES) -> int:  # fmt: skip
    """Unpack the tar.gz ``archive`` into ``workdir/target`` (see the module docstring); the files written."""
    root = os.open(workdir, _DIR_FLAGS)
    try:
        base = _open_dir(root, target.split("/"), owner)
    finally:
        os.close(root)
    files = 0
    budget = max_bytes
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise ArtifactError(f"more than {max_members} members in the archive")
                parts = _member_parts(member.name)
                if member.isdir():
                    os.close(_open_dir(base, parts, owner))
                    continue
                if not member.isfile():
                    raise ArtifactError(f"member {member.name!r} is a link or special file: not extracted")
                if not parts:
                    continue
                directory = _open_dir(base, parts[:-1], owner)
                try:
                    reader = tar.extractfile(member)
                    assert reader is not None
                    try:
                        budget -= _write_file(directory, parts[-1], reader, member.mode & 0o777, owner, budget)
                    except _TooLarge:
                        message = f"the archive unpacks to more than {max_bytes} bytes (a limit of the agent)"
                        raise ArtifactError(message) from None
                finally:
                    os.close(directory)
                files += 1
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{archive.name}: not a valid tar.gz archive: {exc}") from exc
    finally:
        os.close(base)
    return files


def _member_parts(name: str) -> list[str]:
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise ArtifactError(f"member {name[:200]!r} has an absolute or odd name: not extracted")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"member {name[:200]!r} leads outside its directory ('..'): not extracted")
    return parts


def install(store: NodeArtifacts, refs: Mapping[tuple[str, str], ArtifactRef], template: WorkloadTemplate,
            workdir: Path, owner: Account | None = None) -> None:  # fmt: skip
    """Install the template's artifacts (already fetched) into ``workdir`` (blocking); ArtifactError on failure."""
    for item in template.artifacts:
        ref = _resolve(refs, item)
        blob = store.path(ref.sha256)
        if not blob.is_file():
            raise ArtifactError(f"artifact {item.name} {item.version} is not on this node yet")
        os.utime(blob)  # used now: the collector keeps it
        if item.extract == "tar.gz":
            safe_extract(blob, workdir, item.path, owner)
            continue
        *parents, name = item.path.split("/")
        root = os.open(workdir, _DIR_FLAGS)
        try:
            directory = _open_dir(root, parents, owner)
        finally:
            os.close(root)
        try:
            with blob.open("rb") as source:
                _write_file(directory, name, source, item.mode, owner, ref.size)
        finally:
            os.close(directory)


def _resolve(refs: Mapping[tuple[str, str], ArtifactRef], item: WorkloadArtifact) -> ArtifactRef:
    ref = refs.get((item.name, item.version))
    if ref is None:
        raise ArtifactError(
            f"artifact {item.name} {item.version} is not known on this node (no Artifact "
            f"{item.name}-{item.version} in its view; `edgefleet get artifacts` lists them)"
        )
    return ref


# -- the agent's side ------------------------------------------------------------------------------------


class ArtifactManager:
    """Fetches, serves (as the internal Domain's origin) and installs artifacts for one agent.

    ``view``: (plural) -> documents of the node's view; ``cache_url``: the
    local cache's base URL or None; ``cloud``: () -> (server base URL,
    credential, TLS verify) for the blob store.
    """

    def __init__(
        self,
        root: Path,
        *,
        view: Callable[[str], list[dict[str, Any]]],
        secret: Callable[[], Mapping[str, Any] | None],
        cache_url: Callable[[], str | None],
        cloud: Callable[[], tuple[str, str, Any]],
        timeout: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = NodeArtifacts(root)
        self._view, self._secret, self._cache_url, self._cloud = view, secret, cache_url, cloud
        self._timeout = timeout
        self._inflight: dict[str, asyncio.Future[Path]] = {}
        self._origin_inflight: dict[str, asyncio.Future[Path]] = {}
        self._client: httpx.AsyncClient | None = None
        self.origin_fetches = 0
        """Fetches this agent made from the cloud or an external URL (not through a cache)."""
        self.pinned: set[str] = set()
        """Digests :meth:`collect` keeps whatever the templates say (the geo table in use, edge.geotable)."""
        self._fetches = Counter(
            "edgefleet_agent_artifact_fetches",
            "Artifact fetches by way: cache (through this node's cache), direct (no cache ready), "
            "direct-after-cache-error, origin (as the internal Domain's origin, for the caches)",
            ["way"],
            registry=registry,
        )

    # views

    def refs(self) -> dict[tuple[str, str], ArtifactRef]:
        return artifacts_from_view(self._view("artifacts"))

    def key(self) -> str | None:
        return fleet_key(self._secret())

    # fetching

    async def fetch_template(self, template: WorkloadTemplate) -> None:
        """Make every artifact of ``template`` present and verified on this node; ArtifactError if one cannot be."""
        refs = self.refs()
        await asyncio.gather(*(self.ensure(_resolve(refs, item)) for item in template.artifacts))

    async def ensure(self, ref: ArtifactRef) -> Path:
        """The verified blob of ``ref`` on this node: fetched through the cache (else directly) once, shared."""
        if self.store.has(ref.sha256):
            return self.store.path(ref.sha256)
        running = self._inflight.get(ref.sha256)
        if running is None:
            running = self._inflight[ref.sha256] = asyncio.ensure_future(self._fetch(ref))
            running.add_done_callback(lambda _: self._inflight.pop(ref.sha256, None))
        return await asyncio.shield(running)

    async def _fetch(self, ref: ArtifactRef) -> Path:
        cache, key = self._cache_url(), self.key()
        if cache is None or key is None:
            self._count("direct")
            return await self._fetch_direct(ref, ".direct")
        source = Source(cache + cache_path(key, ref.sha256), {"Host": ARTIFACT_HOST})
        try:
            path = await download(self.client(), source, self.store, ref)
        except ArtifactError as exc:
            # Whatever went wrong, even bytes a cache holds wrongly: the origin path verifies on its own.
            log.warning("%s; fetching it directly", exc)
            self._count("direct-after-cache-error")
            return await self._fetch_direct(ref, ".direct")
        log.info("artifact %s %s fetched through the cache (%d bytes)", ref.name, ref.version, ref.size)
        self._count("cache")
        return path

    async def _fetch_direct(self, ref: ArtifactRef, suffix: str) -> Path:
        """From the cloud or the Artifact's URL; ``suffix`` keeps its partial file apart from other fetches."""
        self.origin_fetches += 1
        if ref.source == "url" and ref.url:
            source = Source(ref.url, {})
        else:
            server, credential, verify = self._cloud()
            source = Source(
                server.rstrip("/") + BLOB_PATH + ref.sha256, {"Authorization": f"Bearer {credential}"}, verify
            )
        if source.verify is not True:
            async with httpx.AsyncClient(verify=source.verify, timeout=self._timeout) as client:
                return await download(client, source, self.store, ref, suffix=suffix)
        return await download(self.client(), source, self.store, ref, suffix=suffix)

    def _count(self, way: str) -> None:
        self._fetches.labels(way).inc()

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # prefetch before a rollout

    def prefetch_due(self, site_labels: Mapping[str, str]) -> list[ArtifactRef]:
        """Artifacts of the view whose prefetch annotation selects this node's site, not on the node yet."""
        due = []
        for document in self._view("artifacts"):
            metadata = document.get("metadata")
            annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
            wanted = annotations.get(PREFETCH_ANNOTATION) if isinstance(annotations, dict) else None
            if not isinstance(wanted, str) or not _selects(wanted, site_labels):
                continue
            for ref in artifacts_from_view([document]).values():
                if not self.store.has(ref.sha256):
                    due.append(ref)
        return due

    async def prefetch(self, site_labels: Mapping[str, str]) -> None:
        """Fetch what :meth:`prefetch_due` names; failures are logged (a rollout fetches again anyway)."""
        for ref in self.prefetch_due(site_labels):
            try:
                await self.ensure(ref)
                log.info("artifact %s %s prefetched", ref.name, ref.version)
            except ArtifactError as exc:
                log.error("artifact prefetch failed: %s", exc)

    # installing and collecting

    def install(self, template: WorkloadTemplate, workdir: Path, owner: Account | None = None) -> None:
        install(self.store, self.refs(), template, workdir, owner)

    def collect(self, templates: Iterable[WorkloadTemplate], grace: float = DEFAULT_GRACE_SECONDS) -> list[str]:
        """Remove blobs no template in ``templates`` references (blocking); the digests removed."""
        refs = self.refs()
        keep = {ref.sha256 for t in templates for item in t.artifacts if (ref := refs.get((item.name, item.version)))}
        keep |= set(self._inflight) | set(self._origin_inflight) | self.pinned
        removed = self.store.collect(keep, grace=grace)
        for digest in removed:
            log.info("artifact blob %s removed: no workload revision on this node uses it", digest)
        return removed

    # the internal Domain's origin

    async def serve_origin(self, request: web.Request) -> web.StreamResponse:
        """``GET /artifact-origin/sha256/<digest>/<capability>``: the verified blob, with ranges."""
        digest, cap = request.match_info["digest"], request.match_info["cap"]
        key = self.key()
        if key is None or not hmac.compare_digest(capability(key, digest), cap):
            return _refuse(403, "wrong or missing artifact capability")
        ref = next((r for r in self.refs().values() if r.sha256 == digest), None)
        if ref is None:
            return _refuse(404, f"no Artifact with sha256 {digest} in this node's view")
        try:
            path = self.store.path(digest) if self.store.has(digest) else await self._origin_fetch(ref)
        except ArtifactError as exc:
            log.error("artifact origin: %s", exc)
            return _refuse(502, str(exc))
        return web.FileResponse(
            path,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "ETag": f'"{digest}"',
                "Content-Type": "application/octet-stream",
            },
        )

    async def _origin_fetch(self, ref: ArtifactRef) -> Path:
        # Apart from ensure()'s: this node's own fetch through its cache may come back here (the cache falls
        # back to its origin), and must not wait for itself.
        running = self._origin_inflight.get(ref.sha256)
        if running is None:
            self._count("origin")
            running = self._origin_inflight[ref.sha256] = asyncio.ensure_future(self._fetch_direct(ref, ".origin"))
            running.add_done_callback(lambda _: self._origin_inflight.pop(ref.sha256, None))
        return await asyncio.shield(running)

    def routes(self) -> list[web.RouteDef]:
        return [web.get(ORIGIN_PREFIX + "/sha256/{digest:[0-9a-f]{64}}/{cap:[0-9a-f]{32}}", self.serve_origin)]


def _selects(text: str, labels: Mapping[str, str]) -> bool:
    if text in ("", "*"):
        return True
    try:
        return parse_selector(text).matches(labels)
    except (SelectorError, ValueError):
        return False


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers={"Cache-Control": "no-store"})
