"""Publishing the GSLB's geo table: blob store and Artifact, idempotent, against a real SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edgefleet.api.geotables import MMDB_MEDIA_TYPE, SELECTOR, table_object_name
from edgefleet.api.meta import kind_info
from edgefleet.api.selectors import parse_selector
from edgefleet.cloud.blobs import BlobStore
from edgefleet.cloud.geotable import GeoPublisher, GeoPublishError, file_digest, publish, store_blob
from edgefleet.cloud.gslbservice import GslbOptions, GslbService
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store
from tests.waiting import eventually

TABLE = "127.0.0.0/8,FR,eu-west,48.8566,2.3522\n127.0.77.0/24,AQ,antarctica,-75.0,0.0\n"


async def published(registry: Registry) -> list[str]:
    items = (await registry.list(kind_info("Artifact"), selector=parse_selector(SELECTOR))).items
    return sorted(item["metadata"]["name"] for item in items)


def sample(metrics: CollectorRegistry, name: str) -> float:
    return metrics.get_sample_value(name) or 0.0


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


async def test_a_table_is_published_once_whatever_the_number_of_publications(
    store: Store, blobs: BlobStore, tmp_path: Path
) -> None:
    registry = Registry(store)
    table = tmp_path / "custom.csv"
    table.write_text(TABLE)
    digest = hashlib.sha256(TABLE.encode()).hexdigest()
    assert await publish(registry, blobs, table) == (digest, len(TABLE))
    assert blobs.path(digest).read_text() == TABLE
    assert await published(registry) == [table_object_name(digest)]
    revision = await store.current_revision()
    await asyncio.gather(publish(registry, blobs, table), publish(registry, blobs, table))  # replicas, a SIGHUP
    assert await store.current_revision() == revision, "the same digest again must not write"
    artifact = await registry.get(kind_info("Artifact"), table_object_name(digest))
    assert artifact["spec"]["sha256"] == digest and artifact["spec"]["size"] == len(TABLE)


async def test_a_changed_table_replaces_the_old_one(store: Store, blobs: BlobStore, tmp_path: Path) -> None:
    registry = Registry(store)
    table = tmp_path / "custom.csv"
    table.write_text(TABLE)
    first, _ = await publish(registry, blobs, table)
    table.write_text(TABLE.replace("AQ", "GB"))
    second, _ = await publish(registry, blobs, table)
    assert first and second and first != second
    assert await published(registry) == [table_object_name(second)]
    mmdb = tmp_path / "city.mmdb"
    mmdb.write_bytes(b"not really maxmind")
    third, _ = await publish(registry, blobs, mmdb)
    assert third is not None
    artifact = await registry.get(kind_info("Artifact"), table_object_name(third))
    assert artifact["spec"]["mediaType"] == MMDB_MEDIA_TYPE


async def test_the_packaged_table_is_not_shipped(store: Store, blobs: BlobStore, tmp_path: Path) -> None:
    registry = Registry(store)
    table = tmp_path / "custom.csv"
    table.write_text(TABLE)
    await publish(registry, blobs, table)
    packaged = resources.files("edgefleet").joinpath("data/geo.csv")
    assert await publish(registry, blobs, Path(str(packaged))) == (None, len(packaged.read_bytes()))
    assert await published(registry) == [], "back to the packaged table: older publications removed"


def test_a_file_that_changes_while_it_is_copied_is_refused(blobs: BlobStore, tmp_path: Path) -> None:
    table = tmp_path / "custom.csv"
    table.write_text(TABLE)
    digest, size = file_digest(table)
    table.write_text(TABLE.upper().replace("EU-WEST", "eu-west"))
    with pytest.raises(GeoPublishError, match="changed meanwhile"):
        store_blob(blobs, table, digest, size)
    assert not blobs.has(digest)


async def test_the_publisher_retries_a_missing_file_and_counts_failures(
    store: Store, blobs: BlobStore, tmp_path: Path
) -> None:
    registry = Registry(store)
    table = tmp_path / "later.csv"
    metrics = CollectorRegistry()
    publisher = GeoPublisher(registry, blobs, table, metrics)
    task = asyncio.create_task(publisher.run())
    try:
        failed = "edgefleet_geo_table_publish_failures_total"
        await eventually(lambda: sample(metrics, failed) >= 1, what="a failed first attempt (no file yet)")
        table.write_text(TABLE)
        publisher.request()  # as a SIGHUP reload does
        await eventually(lambda: published(registry), what="the table published")
        assert sample(metrics, "edgefleet_geo_table_published_bytes") == len(TABLE)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_only_a_successful_reload_asks_for_a_publication(store: Store, tmp_path: Path) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(TABLE)
    service = GslbService(store, GslbOptions(dns_port=0, geo_path=table))
    calls: list[str] = []
    service.geo_listeners.append(lambda: calls.append("publish"))
    await asyncio.to_thread(service.reload_geo().join)
    assert calls == ["publish"]
    table.write_text("not,a,table\n")
    await asyncio.to_thread(service.reload_geo().join)
    assert calls == ["publish"], "a refused reload keeps the published table"
