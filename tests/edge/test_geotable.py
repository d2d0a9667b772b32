"""The node's geo table: fetched and verified once, kept across restarts, never blind while it is fetched."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edgefleet.api.geotables import CSV_MEDIA_TYPE, MAX_TABLE_BYTES, MMDB_MEDIA_TYPE, artifact_document
from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.edge.artifacts import ArtifactError, ArtifactManager, ArtifactRef
from edgefleet.edge.backoff import Backoff
from edgefleet.edge.cacheconfig import render_cache_config
from edgefleet.edge.geotable import CURRENT_FILE, NodeGeoTable

TABLE = b"127.0.77.0/24,AQ,antarctica,-75.0,0.0\n"
OTHER = b"127.0.77.0/24,GB,eu-west,51.5,-0.1\n"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Fetcher(ArtifactManager):
    """The agent's artifact manager with the network replaced by a dict of bytes (or errors) by digest."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            root, view=lambda _: [], secret=lambda: None, cache_url=lambda: None, cloud=lambda: ("", "", True)
        )
        self.served: dict[str, bytes | Exception] = {}
        self.asked: list[ArtifactRef] = []

    async def ensure(self, ref: ArtifactRef) -> Path:
        self.asked.append(ref)
        answer = self.served.get(ref.sha256, ArtifactError("HTTP 404"))
        if isinstance(answer, Exception):
            raise answer
        partial = self.store.partial(ref.sha256)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(answer)
        return self.store.commit(ref.sha256, partial)


class World:
    def __init__(self, root: Path, **options: Any) -> None:
        self.root = root
        self.view: list[dict[str, Any]] = []
        self.fetcher = Fetcher(root / "artifacts")
        self.changes = 0
        self.options = options
        self.geo = self.restart()

    def restart(self) -> NodeGeoTable:
        """A new NodeGeoTable on the same directory, as after an agent restart (with fresh metrics)."""
        self.metrics = CollectorRegistry()

        def changed() -> None:
            self.changes += 1

        self.geo = NodeGeoTable(
            self.root / "geo", self.fetcher, lambda _: self.view, changed, registry=self.metrics,
            backoff=Backoff(initial=2.0, maximum=8.0, jitter=0.5), rand=lambda: 1.0, **self.options,
        )  # fmt: skip
        return self.geo

    def publish(self, data: bytes, created: str = "2026-01-01T00:00:00Z", media: str = CSV_MEDIA_TYPE) -> None:
        document = artifact_document(digest(data), len(data), media)
        document["metadata"]["creationTimestamp"] = created
        self.view = [document]
        self.fetcher.served[digest(data)] = data

    def metric(self, name: str) -> float:
        return self.metrics.get_sample_value(name) or 0.0


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_without_a_published_table_the_packaged_one_is_used(world: World) -> None:
    assert await world.geo.reconcile() is None
    assert world.geo.path is None and world.changes == 0 and world.fetcher.asked == []
    assert world.geo.describe() == {"inUse": "packaged", "published": None, "state": "current"}


async def test_a_published_table_is_fetched_verified_and_used(world: World) -> None:
    world.publish(TABLE)
    assert await world.geo.reconcile() is None
    path = world.geo.path
    assert path is not None and path.name == digest(TABLE) + ".csv" and path.read_bytes() == TABLE
    assert path.stat().st_mode & 0o777 == 0o644
    assert world.changes == 1 and world.fetcher.pinned == {digest(TABLE)}
    assert (world.root / "geo" / CURRENT_FILE).read_text().strip() == path.name
    await world.geo.reconcile()  # nothing new: no fetch, no change
    assert len(world.fetcher.asked) == 1 and world.changes == 1
    assert world.metric("edgefleet_agent_geo_table_behind") == 0


async def test_a_failed_fetch_keeps_the_previous_table_and_backs_off(world: World) -> None:
    world.publish(TABLE)
    await world.geo.reconcile()
    first = world.geo.path
    world.publish(OTHER, created="2026-01-01T00:00:05Z")
    world.fetcher.served[digest(OTHER)] = ArtifactError("sha256 mismatch from the cache")
    delays = [await world.geo.reconcile() for _ in range(4)]
    assert delays == [2.0, 4.0, 8.0, 8.0]
    assert world.geo.path == first and world.changes == 1, "never blind: the table it had stays"
    assert world.geo.describe()["state"] == "retrying" and "mismatch" in world.geo.describe()["error"]
    assert world.metric("edgefleet_agent_geo_table_fetch_failures_total") == 4
    assert world.metric("edgefleet_agent_geo_table_behind") == 1
    world.fetcher.served[digest(OTHER)] = OTHER
    assert await world.geo.reconcile() is None
    assert world.geo.path is not None and world.geo.path.read_bytes() == OTHER and world.changes == 2
    assert first is not None and first.exists(), "the previous file stays until the next switch"
    world.view = []  # the cloud publishes none any more: the packaged table, older files removed
    await world.geo.reconcile()
    assert world.geo.path is None and world.changes == 3 and not first.exists()


async def test_a_restarted_agent_uses_its_table_at_once(world: World) -> None:
    world.publish(TABLE)
    await world.geo.reconcile()
    before = world.geo.path
    world.fetcher.served.clear()  # the cloud is out of reach
    geo = world.restart()
    assert geo.path == before and world.fetcher.pinned == {digest(TABLE)}
    assert await geo.reconcile() is None and geo.path == before and len(world.fetcher.asked) == 1


async def test_tables_over_the_limit_are_not_fetched(world: World) -> None:
    world.publish(TABLE)
    world.view[0]["spec"]["size"] = MAX_TABLE_BYTES + 1
    assert await world.geo.reconcile() is None
    assert world.fetcher.asked == [] and world.geo.path is None and world.geo.state == "refused"


async def test_a_maxmind_table_needs_the_library(tmp_path: Path) -> None:
    without = World(tmp_path / "without", can_read_mmdb=False)
    without.publish(TABLE, media=MMDB_MEDIA_TYPE)
    await without.geo.reconcile()
    assert without.fetcher.asked == [] and without.geo.path is None
    assert "maxminddb" in without.geo.describe()["error"]
    with_library = World(tmp_path / "with", can_read_mmdb=True)
    with_library.publish(TABLE, media=MMDB_MEDIA_TYPE)
    await with_library.geo.reconcile()
    assert with_library.geo.path is not None and with_library.geo.path.suffix == ".mmdb"


def test_the_cache_config_names_the_nodes_table(tmp_path: Path) -> None:
    node = {"apiVersion": "edgefleet.io/v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"site": "lab"}}
    template = WorkloadTemplate.model_validate({"builtin": "cache", "command": ["edgefleet", "cache"]})
    packaged = render_cache_config("n1", [node], template, tmp_path)
    assert packaged.geo_table is None
    shipped = render_cache_config("n1", [node], template, tmp_path, geo_table=tmp_path / "geo" / "x.csv")
    assert shipped.geo_table == tmp_path / "geo" / "x.csv"
