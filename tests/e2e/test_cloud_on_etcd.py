"""The cloud process on a real etcd: CRUD, preconditions, watch, and restart keeps data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloudproc import CloudProcess, running_cloud
from tests.e2e.test_watch import Collector
from tests.etcd_cluster import EtcdCluster, running_etcd
from tests.fleet import site_doc as site

SITES = "/apis/edgefleet.io/v1/sites"
pytestmark = pytest.mark.etcd


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with running_etcd(tmp_path / "etcd") as cluster:
        yield cluster


def test_crud_and_watch_on_etcd(etcd: EtcdCluster, tmp_path: Path) -> None:
    url = etcd.url
    with running_cloud(url, tmp_path) as cloud:
        with cloud.client() as api:
            start = api.get(SITES).json()["metadata"]["resourceVersion"]
            watcher = Collector(cloud, {"resourceVersion": start, "allowWatchBookmarks": "false"}, 3)
            created = api.post(SITES, json=site("paris"))
            assert created.status_code == 201, created.text
            doc = created.json()
            stale = dict(doc)
            doc["spec"]["capacityGbps"] = 99
            assert api.put(f"{SITES}/paris", json=doc).status_code == 200
            assert api.put(f"{SITES}/paris", json=stale).status_code == 409
            assert api.post(SITES, json=site("paris")).status_code == 409
            assert api.delete(f"{SITES}/paris").status_code == 200
        events = watcher.join()
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        with cloud.client() as api:
            api.post(SITES, json=site("lyon"))
        token = cloud.token
    (tmp_path / "admin-token").unlink()
    restarted = CloudProcess(url, tmp_path)
    restarted.start()
    try:
        assert not (tmp_path / "admin-token").exists(), "the admin token is created once per store"
        restarted.token = token
        with restarted.client() as api:
            assert [d["metadata"]["name"] for d in api.get(SITES).json()["items"]] == ["lyon"]
    finally:
        restarted.stop()
