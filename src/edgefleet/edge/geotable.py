"""The GSLB's geo table on an edge node: fetched like an artifact, kept on disk, rendered into cache.yaml.

Why: the caches' edge rules match on the client's country and region; they must place clients with the
same table as the GSLB, which is the operator's ``edgefleet cloud --geo FILE``. The cloud publishes that
file as a labelled Artifact (:mod:`edgefleet.cloud.geotable`, :mod:`edgefleet.api.geotables`); no such
Artifact means the table packaged with edgefleet (what the GSLB of ``edgefleet up`` uses too).

How (:class:`NodeGeoTable`, woken by every batch that touches Artifacts):

1. pick the current table from the view (:func:`edgefleet.api.geotables.current_table`);
2. if ``<data>/geo/<sha256>.<csv|mmdb>`` is not there yet, fetch it with the agent's
   :class:`~edgefleet.edge.artifacts.ArtifactManager`: through this node's cache, so the site's owner
   node and the parent site collapse the fetches and only the top of a tier path asks the cloud; else
   directly from the cloud with the node credential; the SHA-256 is checked before the file is used, so
   a hostile cache or parent can make a fetch fail but cannot change where clients are placed. The
   verified blob is hard-linked (else copied) under the table's file name (the reader picks CSV or
   MaxMind by suffix) and pinned, so the artifact collector keeps it for the node's children;
3. switch: remember the file in ``<data>/geo/current`` (so a restarted agent renders it at once, cloud
   or not) and call ``on_change``: the agent renders ``geoTable: <file>`` into every cache config, and
   the usual rewrite and SIGHUP make the caches read it
   (:class:`~edgefleet.cache.front.edgerules.GeoCache` loads a new path in a thread).

Never blind: until the new table is on disk the node renders the table it had (the previous one, or the
packaged one), and a failed fetch is retried with back-off (2 s doubling to 5 min, jittered), logged and
counted (``edgefleet_agent_geo_table_fetch_failures_total``); ``edgefleet_agent_geo_table_behind`` is 1
while the node does not use the published table, and the agent's ``/status`` says why (``geoTable``).
Limits: a table over :data:`~edgefleet.api.geotables.MAX_TABLE_BYTES` is refused; a MaxMind table on a
node without the ``maxminddb`` library is not fetched (the node keeps its table and says so), since the
caches could not read it. The previous table's file is kept until the next switch (a cache that reloads
between the switch and its new config still finds it); older ones are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from edgefleet.api.geotables import ARTIFACT_NAME, MAX_TABLE_BYTES, GeoTableRef, current_table, version_for
from edgefleet.edge.artifacts import ArtifactError, ArtifactManager, ArtifactRef
from edgefleet.edge.backoff import Backoff, Random
from edgefleet.edge.workdirs import write_atomic

log = logging.getLogger("edgefleet.edge.geotable")

CURRENT_FILE = "current"
GEO_FETCH = Backoff(initial=2.0, maximum=300.0, jitter=0.5)
"""Retries of a failed geo table fetch: 2 s doubling to 5 minutes, each wait drawn from its upper half."""


def mmdb_supported() -> bool:
    """Whether this Python can read MaxMind tables (the optional ``maxminddb`` library)."""
    return importlib.util.find_spec("maxminddb") is not None


def install_file(blob: Path, target: Path) -> None:
    """Put the verified ``blob`` at ``target`` (blocking): a hard link, else a copy; atomic, mode 0644."""
    partial = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        os.link(blob, partial)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copyfile(blob, partial)
    os.chmod(partial, 0o644)
    os.replace(partial, target)


class NodeGeoTable:
    """The geo table this node's caches use (module docstring); :attr:`path` None is the packaged table."""

    def __init__(
        self,
        root: Path,
        artifacts: ArtifactManager,
        view: Callable[[str], list[dict[str, Any]]],
        on_change: Callable[[], None],
        *,
        registry: CollectorRegistry | None = None,
        backoff: Backoff = GEO_FETCH,
        rand: Random = random.random,
        can_read_mmdb: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self._artifacts, self._view, self._on_change = artifacts, view, on_change
        self._backoff, self._rand = backoff, rand
        self._mmdb = mmdb_supported() if can_read_mmdb is None else can_read_mmdb
        self._wake = asyncio.Event()
        self._failures = 0
        self.path: Path | None = self._restore()
        self.wanted: GeoTableRef | None = None
        self.state = "current"
        self.error = ""
        if self.path is not None:
            artifacts.pinned = {self.path.stem}
        self.fetch_failures = Counter(
            "edgefleet_agent_geo_table_fetch_failures",
            "Failed fetches of the GSLB's geo table (retried with back-off; the node keeps its previous table)",
            registry=registry,
        )
        self.behind = Gauge(
            "edgefleet_agent_geo_table_behind",
            "1 while this node's caches do not use the geo table the cloud publishes (fetching, failing, unsupported)",
            registry=registry,
        )

    @property
    def digest(self) -> str | None:
        """The SHA-256 of the table in use; None for the packaged table."""
        return None if self.path is None else self.path.stem

    def _restore(self) -> Path | None:
        """The table the node used before a restart (``<root>/current``), if its file is still there."""
        try:
            name = (self.root / CURRENT_FILE).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        path = self.root / name
        if not name or "/" in name or name.startswith(".") or not path.is_file():
            return None
        return path

    # the loop

    def view_changed(self) -> None:
        """The view's Artifacts changed: look again."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: reconcile on each wake; after a failure, again after the back-off delay."""
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            retry = await self.reconcile()
            if retry is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=retry)
                self._wake.set()

    async def reconcile(self) -> float | None:
        """Make the published table (or the packaged one) the one in use; seconds until a retry, or None."""
        ref = self.wanted = current_table(self._view("artifacts"), in_use=self.digest)
        if ref is None:
            await self._use(None)
            return None
        target = self.root / (ref.sha256 + ref.suffix)
        if target.is_file():
            await self._use(target)
            return None
        refused = self._refusal(ref)
        if refused:
            self._behind(refused, "refused")
            return None
        self._behind("", "fetching")
        try:
            blob = await self._artifacts.ensure(
                ArtifactRef(ARTIFACT_NAME, version_for(ref.sha256), ref.sha256, ref.size, "upload")
            )
            self.root.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(install_file, blob, target)
        except (ArtifactError, OSError) as exc:
            self._failures += 1
            self.fetch_failures.inc()
            delay = self._backoff.delay(self._failures - 1, self._rand)
            self.state, self.error = "retrying", str(exc)
            log.error("geo table %s not fetched (%s); the caches keep %s; trying again in %.0f s",
                      ref.object_name, exc, self._describe_path(), delay)  # fmt: skip
            return delay
        await self._use(target)
        return None

    def _refusal(self, ref: GeoTableRef) -> str:
        if ref.size > MAX_TABLE_BYTES:
            return f"the geo table {ref.object_name} has {ref.size} bytes, over the limit of {MAX_TABLE_BYTES}"
        if ref.suffix == ".mmdb" and not self._mmdb:
            return (
                f"the geo table {ref.object_name} is a MaxMind database and this node lacks the maxminddb "
                "library (pip install maxminddb in the agent's environment)"
            )
        return ""

    def _behind(self, error: str, state: str) -> None:
        if error and error != self.error:
            log.error("geo table: %s; the caches keep %s", error, self._describe_path())
        self.state, self.error = state, error
        self.behind.set(1)

    def _describe_path(self) -> str:
        return "the packaged table" if self.path is None else f"the table {self.path.name}"

    async def _use(self, path: Path | None) -> None:
        self._failures = 0
        self.state, self.error = "current", ""
        self.behind.set(0)
        if path == self.path:
            return
        previous, self.path = self.path, path
        self._artifacts.pinned = set() if path is None else {path.stem}
        await asyncio.to_thread(self._remember, path, previous)
        log.info("geo table: the caches now use %s", self._describe_path())
        self._on_change()

    def _remember(self, path: Path | None, previous: Path | None) -> None:
        """Write ``current`` and remove table files other than ``path`` and ``previous`` (blocking)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the caches may run as another user
        write_atomic(self.root / CURRENT_FILE, (path.name if path is not None else "").encode() + b"\n", mode=0o644)
        keep = {CURRENT_FILE, *(p.name for p in (path, previous) if p is not None)}
        for entry in self.root.iterdir():
            if entry.name not in keep and not entry.name.startswith("."):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def describe(self) -> dict[str, Any]:
        """For the agent's ``/status``: the table in use, the one published, and why they differ."""
        return {
            "inUse": "packaged" if self.path is None else str(self.path),
            "published": None if self.wanted is None else self.wanted.object_name,
            "state": self.state,
            **({"error": self.error} if self.error else {}),
        }
