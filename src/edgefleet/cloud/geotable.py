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

Who publishes: the cloud, whenever it has ``--geo``, with or without its embedded GSLB. The nodes fetch the
bytes from the cloud's blob store, which ``edgefleet dns`` does not have and no node reaches, so a GSLB
that runs apart (``edgefleet cloud --dns-listen off`` plus ``edgefleet dns --geo FILE`` on etcd) gets its
table to the nodes through the cloud: give the cloud the same ``--geo`` file. Without an embedded GSLB
the cloud still reads the file (:func:`check_table`, in a thread) before publishing it, at start (a bad
file stops the start, as it would stop the GSLB) and on every SIGHUP (a bad file is refused and the nodes
keep the published table) (:class:`GeoFileReloader`). And ``edgefleet dns --geo`` checks that the nodes
use its table (:class:`GeoAgreement`: its file's digest against the published Artifact, at start, after
each reload and every minute, every 5 s while they differ): when they differ for 10 s, it logs a warning
that says what to do, once per change, and it logs when they agree. A table equal to the packaged one
agrees with nothing published.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from edgefleet.api.geotables import MAX_TABLE_BYTES, SELECTOR, current_table, media_type_for, plan_publish
from edgefleet.api.meta import kind_info
from edgefleet.api.selectors import parse_selector
from edgefleet.cloud.blobs import CHUNK, BlobError, BlobStore
from edgefleet.cloud.registry import ObjectExists, ObjectNotFound, Registry, RegistryError
from edgefleet.geo import GeoDatabase, GeoTableError

log = logging.getLogger("edgefleet.cloud.geotable")

RETRY_INITIAL = 1.0
RETRY_MAXIMUM = 60.0
AGREEMENT_INTERVAL = 60.0
AGREEMENT_RETRY = 5.0
AGREEMENT_GRACE = 10.0


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


def check_table(path: Path) -> None:
    """Read the table as the GSLB would (blocking); GeoTableError naming file:line if it would refuse it."""
    GeoDatabase(path)


class GeoFileReloader:
    """The cloud's ``--geo`` without an embedded GSLB: read on SIGHUP, then published (module docstring)."""

    def __init__(self, path: Path, publisher: GeoPublisher, loop: asyncio.AbstractEventLoop) -> None:
        self.path, self.publisher, self.loop = path, publisher, loop
        self._lock = threading.Lock()

    def reload(self) -> threading.Thread:
        """Check the file in a thread of its own (tables are tens of MB), then ask for a publication."""
        thread = threading.Thread(target=self._reload, name="geo-reload", daemon=True)
        thread.start()
        return thread

    def _reload(self) -> None:
        with self._lock:
            try:
                check_table(self.path)
            except GeoTableError as exc:
                log.error("geo table reload refused, the nodes keep the published table: %s", exc)
                return
        log.info("geo table %s reloaded: publishing it to the nodes", self.path)
        self.loop.call_soon_threadsafe(self.publisher.request)


async def start_file_publisher(
    registry: Registry, blobs: BlobStore, path: Path, metrics: CollectorRegistry | None = None
) -> tuple[asyncio.Task[None], GeoFileReloader]:
    """Publish ``--geo`` from a cloud that runs no GSLB: checked now (GeoTableError stops the start), then on
    every SIGHUP; the publisher's task and the reloader."""
    await asyncio.to_thread(check_table, path)
    publisher = GeoPublisher(registry, blobs, path, metrics)
    loop = asyncio.get_running_loop()
    reloader = GeoFileReloader(path, publisher, loop)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    return asyncio.create_task(publisher.run(), name="geo-publisher"), reloader


def disagreement(artifacts: Iterable[Mapping[str, Any]], digest: str) -> str | None:
    """Why the nodes place clients with another table than the one of SHA-256 ``digest``; None if they do not.

    ``artifacts``: the labelled Artifacts in the store (none published: the nodes use the packaged table).
    """
    ref = current_table(artifacts)
    if (ref.sha256 if ref is not None else packaged_digest()) == digest:
        return None
    uses = "the table packaged with edgefleet (none is published)" if ref is None else f"{ref.object_name}"
    return (
        f"the nodes place clients with {uses}, not with this GSLB's geo table (sha256 {digest[:12]}): edge "
        "rules on country or region may disagree with DNS; give edgefleet cloud the same --geo file (and "
        "SIGHUP it after each change): the cloud publishes it to the nodes"
    )


class GeoAgreement:
    """``edgefleet dns --geo``: checks that the nodes use this GSLB's table, and warns when not.

    A disagreement is warned about once it has lasted ``grace`` seconds (a cloud started with the DNS
    publishes its table a moment later), then once per change; it is checked again every ``retry``
    seconds until it is gone, else every ``interval``. Agreement is logged once each time it begins.
    """

    def __init__(
        self,
        registry: Registry,
        path: Path,
        *,
        interval: float = AGREEMENT_INTERVAL,
        retry: float = AGREEMENT_RETRY,
        grace: float = AGREEMENT_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.path = registry, path
        self.interval, self.retry, self.grace, self.clock = interval, retry, grace, clock
        self.problem: str | None = None
        """The last check's :func:`disagreement` (None: the nodes use this table, or not checked yet)."""
        self.agreed = False
        self._since = 0.0
        self._warned: str | None = None
        self._wake = asyncio.Event()

    def request(self) -> None:
        """Check again now (the table was reloaded); call on the checker's event loop."""
        self._wake.set()

    async def check(self) -> str | None:
        """One check: the file's digest against the published Artifact; logs as the class docstring says."""
        digest, _ = await asyncio.to_thread(file_digest, self.path)
        items = (await self.registry.list(kind_info("Artifact"), selector=parse_selector(SELECTOR))).items
        problem, now = disagreement(items, digest), self.clock()
        if problem is None:
            if not self.agreed:
                ref = current_table(items)
                name = "the packaged table" if ref is None else ref.object_name
                log.info("the nodes use this GSLB's geo table %s (%s)", self.path, name)
            self.agreed, self._warned = True, None
        else:
            if problem != self.problem:
                self._since = now
            if now - self._since >= self.grace and problem != self._warned:
                log.warning("%s", problem)
                self._warned = problem
            self.agreed = False
        self.problem = problem
        return problem

    async def run(self) -> None:
        """Forever: check, then wait for a reload or the next round; a failed check is logged and retried."""
        while True:
            self._wake.clear()
            try:
                await self.check()
            except (GeoPublishError, RegistryError) as exc:
                log.warning("cannot check which geo table the nodes use: %s", exc)
            timeout = self.interval if self.problem is None else self.retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
