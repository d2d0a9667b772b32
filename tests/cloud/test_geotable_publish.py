"""Publishing the GSLB's geo table: blob store and Artifact, idempotent, against a real SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from importlib import resources
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edgefleet.api.geotables import MMDB_MEDIA_TYPE, SELECTOR, artifact_document, table_object_name
from edgefleet.api.meta import kind_info
from edgefleet.api.selectors import parse_selector
from edgefleet.cloud.blobs import BlobStore
from edgefleet.cloud.geotable import (
    GeoAgreement,
    GeoPublisher,
    GeoPublishError,
    disagreement,
    file_digest,
    packaged_digest,
    publish,
    start_file_publisher,
    store_blob,
)
from edgefleet.cloud.gslbservice import GslbOptions, GslbService
from edgefleet.cloud.registry import Registry
from edgefleet.geo import GeoTableError
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


async def test_a_cloud_without_a_gslb_publishes_its_table_and_refuses_a_bad_reload(
    store: Store, blobs: BlobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``edgefleet cloud --dns-listen off --geo FILE``: the nodes get the table all the same."""
    registry = Registry(store)
    table = tmp_path / "custom.csv"
    table.write_text("127.0.0.0/8,FR,eu-west,48.8566,2.3522\n127.0.0.0/8,DE,eu-central,50.1,8.7\n")
    with pytest.raises(GeoTableError, match="repeats line 1"):  # refused at start, as the GSLB would
        await start_file_publisher(registry, blobs, table)
    table.write_text(TABLE)
    task, reloader = await start_file_publisher(registry, blobs, table)
    try:
        first = table_object_name(hashlib.sha256(TABLE.encode()).hexdigest())
        await eventually(lambda: published(registry), what="the table published")
        assert await published(registry) == [first]
        table.write_text("not,a,table\n")
        with caplog.at_level("INFO", logger="edgefleet.cloud.geotable"):
            await asyncio.to_thread(reloader.reload().join)
        assert "reload refused, the nodes keep the published table" in caplog.text
        assert "publishing it to the nodes" not in caplog.text
        second = TABLE.replace("AQ", "GB")
        table.write_text(second)
        await asyncio.to_thread(reloader.reload().join)
        name = table_object_name(hashlib.sha256(second.encode()).hexdigest())

        async def replaced() -> bool:
            return await published(registry) == [name]

        await eventually(replaced, what="the reloaded table replaces the first")
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_nodes_agree_with_a_gslb_only_on_the_same_table() -> None:
    mine = hashlib.sha256(TABLE.encode()).hexdigest()
    other = hashlib.sha256(b"other").hexdigest()
    published_other = [artifact_document(other, 5, "text/csv")]
    assert disagreement([], packaged_digest()) is None, "nothing published: the nodes use the packaged table"
    assert "the table packaged with edgefleet (none is published)" in (disagreement([], mine) or "")
    assert disagreement([artifact_document(mine, len(TABLE), "text/csv")], mine) is None
    problem = disagreement(published_other, mine) or ""
    assert table_object_name(other) in problem and f"sha256 {mine[:12]}" in problem
    assert "give edgefleet cloud the same --geo file" in problem


async def test_edgefleet_dns_checks_that_the_nodes_use_its_table(
    store: Store, blobs: BlobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(store)
    table = tmp_path / "custom.csv"
    table.write_text(TABLE)
    now = [100.0]
    agreement = GeoAgreement(registry, table, grace=10, clock=lambda: now[0])

    def warnings() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]

    with caplog.at_level("INFO", logger="edgefleet.cloud.geotable"):
        assert "packaged with edgefleet" in (await agreement.check() or "")
        assert warnings() == [], "not within the grace time: the cloud may publish in a moment"
        now[0] += 10
        assert "packaged with edgefleet" in (await agreement.check() or "")
        now[0] += 60
        await agreement.check()
        assert len(warnings()) == 1 and "give edgefleet cloud the same --geo file" in warnings()[0], "once"
        await publish(registry, blobs, table)  # the cloud, given the same --geo
        assert await agreement.check() is None and agreement.agreed
        digest = hashlib.sha256(TABLE.encode()).hexdigest()
        assert f"the nodes use this GSLB's geo table {table} ({table_object_name(digest)})" in caplog.text
        table.write_text(TABLE.replace("AQ", "GB"))  # edgefleet dns reloads another file
        assert table_object_name(digest) in (await agreement.check() or "")
        now[0] += 10
        await agreement.check()
        assert len(warnings()) == 2 and table_object_name(digest) in warnings()[1]
