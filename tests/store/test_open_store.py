"""open_store: which URL opens which backend, and what a bad URL says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.store import open_store
from edgefleet.store.etcd import EtcdStore, grpc_target, parse_endpoints
from edgefleet.store.interface import InvalidStoreURL
from edgefleet.store.sqlite import SqliteStore
from tests.etcd_cluster import EtcdCluster


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/sub/store.db")
    try:
        assert isinstance(store, SqliteStore)
        await store.create("/x", b"1")
        assert (tmp_path / "data" / "sub" / "store.db").exists()
    finally:
        await store.close()


async def test_sqlite_absolute_path_takes_four_slashes(tmp_path: Path) -> None:
    path = tmp_path / "abs" / "store.db"
    store = open_store(f"sqlite:///{path}", progress_interval=0.5)  # f"sqlite:///" + "/tmp/..."
    try:
        assert isinstance(store, SqliteStore)
        assert os.path.isabs(str(path))
        assert path.exists()
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgres://db/x",
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:///dir/",
        "etcd://",
        "etcd://no-port",
        "etcd://host:port",
        "etcd://h:1,,h:2",
    ],
)
def test_bad_urls_name_the_accepted_forms(url: str) -> None:
    with pytest.raises(InvalidStoreURL, match=r"sqlite:///|host:port"):
        open_store(url)


def test_several_endpoints_become_one_multi_address_target() -> None:
    endpoints = parse_endpoints("127.0.0.1:2379, 127.0.0.2:2380,localhost:2381")
    assert endpoints == [("127.0.0.1", 2379), ("127.0.0.2", 2380), ("localhost", 2381)]
    assert grpc_target(endpoints) == "ipv4:127.0.0.1:2379,127.0.0.2:2380,127.0.0.1:2381"
    assert grpc_target([("etcd.example", 2379)]) == "etcd.example:2379"
    assert grpc_target(parse_endpoints("[::1]:2379")) == "[::1]:2379"


@pytest.mark.etcd
async def test_etcd_url_with_members_and_root(etcd_server: EtcdCluster) -> None:
    store = open_store("etcd://" + ",".join(etcd_server.endpoints) + "/url-root/")
    other = EtcdStore(etcd_server.endpoints, root="/url-root")
    try:
        assert isinstance(store, EtcdStore)
        kv = await store.create("/k", b"v")
        assert await other.get("/k") == kv
        assert other.epoch == store.epoch
    finally:
        await store.close()
        await other.close()
