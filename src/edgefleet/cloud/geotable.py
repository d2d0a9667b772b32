"""Publishing the GSLB's geo table to the edge: blob store + one Artifact, so every node uses the GSLB's table.

Why: edge rules match on the client's country and region (:mod:`edgefleet.cache.policy.rules`); if the
nodes placed clients with another table than the GSLB's, the GSLB and the edge could disagree about where a
client is. So when ``edgefleet cloud`` runs its GSLB with ``--geo FILE``, it ships that file to every node.

How (:class:`GeoPublisher`, on every replica, at start and after every successful SIGHUP reload of the
table; :func:`publish`):

1. hash the file (in a thread: tables are tens of MB);
2. copy it into the blob store (:mod:`edgefleet.cloud.blobs`), content-addressed: a file already there is
   not copied again, and a file that changed between hashing and copying is refused by the store's own
   digest check and tried again;
3. apply :func:`edgefleet.api.geotables.plan_publish`: create the Artifact ``gslb-geo-table-<digest>``
   unless it exists (same digest: no write, so replicas and restarts cost nothing), then delete the
   Artifacts of older tables.

Agents fetch the bytes through the artifact path (:mod:`edgefleet.edge.geotable`), never inside a view.
A table equal to the one packaged with edgefleet (what ``edgefleet up`` gives the GSLB) is not published:
nodes have it already, so the plan only removes older publications. Every replica publishes into its own
blob directory, so a node reaching any replica finds the bytes (replicas should all get the same
``--geo`` file; with different files, the last one started or reloaded wins). A failure (a full disk, the
store unreachable) is logged, counted in ``edgefleet_geo_table_publish_failures_total`` and retried with
back-off; ``edgefleet_geo_table_published_bytes`` is the size of the table this replica last published (0:
the packaged table).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from importlib import resources
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from edgefleet.api.geotables import MAX_TABLE_BYTES, SELECTOR, media_type_for, plan_publish
from edgefleet.api.meta import kind_info
from edgefleet.api.selectors import parse_selector
from edgefleet.cloud.blobs import CHUNK, BlobError, BlobStore
from edgefleet.cloud.registry import ObjectExists, ObjectNotFound, Registry, RegistryError

log = logging.getLogger("edgefleet.cloud.geotable")

RETRY_INITIAL = 1.0
RETRY_MAXIMUM = 60.0


class GeoPublishError(Exception):
    """The geo table cannot be published now (the message says why); the publisher tries again."""


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file (blocking); GeoPublishError if it cannot be read or is too large."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                size += len(chunk)
                if size > MAX_TABLE_BYTES:
                    raise GeoPublishError(f"{path}: larger than {MAX_TABLE_BYTES} bytes, the geo table limit")
                digest.update(chunk)
    except OSError as exc:
        raise GeoPublishError(f"{path}: cannot read the geo table: {exc}") from None
    return digest.hexdigest(), size


@functools.cache
def packaged_digest() -> str:
    """The SHA-256 of the geo table packaged with edgefleet (what nodes use when none is published)."""
    return hashlib.sha256(resources.files("edgefleet").joinpath("data/geo.csv").read_bytes()).hexdigest()


def store_blob(blobs: BlobStore, path: Path, digest: str, size: int) -> bool:
    """Copy ``path`` into the blob store under ``digest`` (blocking); True if copied, False if it was there."""
    if blobs.has(digest):
        return False
    try:
        upload = blobs.open_upload(digest, size)
    except BlobError as exc:
        raise GeoPublishError(f"{path}: {exc}") from None
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                upload.write(chunk)
        upload.finish()
    except (OSError, BlobError) as exc:
        upload.abort()
        raise GeoPublishError(
            f"{path}: cannot copy it into the blob store ({exc}); was it changed meanwhile?"
        ) from None
    return True


async def publish(registry: Registry, blobs: BlobStore, path: Path) -> tuple[str | None, int]:
    """Publish the table at ``path`` (module docstring); (its digest, or None for the packaged table; its size).

    GeoPublishError when it cannot be done now.
    """
    digest, size = await asyncio.to_thread(file_digest, path)
    if digest == packaged_digest():
        published: str | None = None
    else:
        await asyncio.to_thread(store_blob, blobs, path, digest, size)
        published = digest
    info = kind_info("Artifact")
    try:
        existing = (await registry.list(info, selector=parse_selector(SELECTOR))).items
        plan = plan_publish(existing, published, size, media_type_for(path.name))
        if plan.create is not None:
            with contextlib.suppress(ObjectExists):  # another replica published the same table just now
                await registry.create(info, plan.create)
                log.info("published the geo table %s as Artifact %s (%d bytes)", path, plan.create["metadata"]["name"],
                         size)  # fmt: skip
        for name in plan.delete:
            with contextlib.suppress(ObjectNotFound):
                await registry.delete(info, name)
                log.info("removed Artifact %s: an older geo table", name)
    except RegistryError as exc:
        raise GeoPublishError(f"cannot write the geo table's Artifact: {exc}") from None
    return published, size


class GeoPublisher:
    """Publishes the GSLB's geo table at start and on :meth:`request` (after a reload), retrying on failure."""

    def __init__(
        self, registry: Registry, blobs: BlobStore, path: Path, metrics: CollectorRegistry | None = None
    ) -> None:
        self.registry, self.blobs, self.path = registry, blobs, path
        self._wake = asyncio.Event()
        self._wake.set()  # publish once at start
        self.failures = Counter(
            "edgefleet_geo_table_publish_failures",
            "Failed attempts to publish the GSLB's geo table to the nodes (blob store or Artifact write)",
            registry=metrics,
        )
        self.published_bytes = Gauge(
            "edgefleet_geo_table_published_bytes",
            "Size of the geo table this replica last published to the nodes (0: the packaged table, nothing shipped)",
            registry=metrics,
        )

    def request(self) -> None:
        """Publish again soon (the table was reloaded); call on the publisher's event loop."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: wait for a request, publish, retry failures with back-off (1 s doubling to 60 s)."""
        delay = RETRY_INITIAL
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                digest, size = await publish(self.registry, self.blobs, self.path)
            except GeoPublishError as exc:
                self.failures.inc()
                log.error("geo table not published to the nodes: %s; trying again in %.0f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                delay = min(RETRY_MAXIMUM, delay * 2)
                self._wake.set()
                continue
            delay = RETRY_INITIAL
            self.published_bytes.set(0 if digest is None else size)
            if digest is None:
                log.info("geo table %s is the packaged one: nodes use theirs, nothing shipped", self.path)
