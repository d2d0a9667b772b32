"""GslbService in-process: the DNS server runs on its own thread and follows the store through posted changes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import pytest

from edgefleet.cloud.gslbservice import GslbOptions, GslbService
from edgefleet.store import open_store
from edgefleet.store.interface import Store
from tests.gslb.test_zone import NAME, addresses, fleet_documents
from tests.waiting import eventually

GEO = "127.0.7.0/24,JP,ap-northeast,35.6762,139.6503\n203.0.113.0/24,JP,ap-northeast,35.6762,139.6503\n"


def key(document: dict[str, object]) -> str:
    plural = {"Site": "sites", "Node": "nodes", "Domain": "domains"}[str(document["kind"])]
    return f"/registry/{plural}/{document['metadata']['name']}"  # type: ignore[index]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/store.db")
    for document in fleet_documents():
        await opened.create(key(document), json.dumps(document).encode())
    yield opened
    await opened.close()


async def ask(port: int) -> list[str]:
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption("203.0.113.0", 24)])
    return addresses(await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2.0))


async def answers_only(port: int, wanted: list[str]) -> bool:
    return await ask(port) == wanted


async def test_the_dns_server_runs_on_its_own_thread_and_follows_store_changes(store: Store, tmp_path: Path) -> None:
    geo = tmp_path / "geo.csv"
    geo.write_text(GEO)
    service = GslbService(store, GslbOptions(dns_port=0, geo_path=geo, demand_window=2))
    await service.start()
    try:
        assert service.dns_thread.loop is not asyncio.get_running_loop()
        assert any(thread.name == "edgefleet-dns" for thread in threading.enumerate())
        assert await ask(service.dns.port) == ["127.0.7.1", "127.0.7.2"]
        node = next(d for d in fleet_documents() if d["metadata"]["name"] == "tyo-edge-1")
        node["spec"]["draining"] = True
        current = await store.get(key(node))
        assert current is not None
        await store.update(key(node), json.dumps(node).encode(), expected_revision=current.mod_revision)
        # the watch delivers, the DNS thread applies: well within a second
        await eventually(lambda: answers_only(service.dns.port, ["127.0.7.2"]), within=2.0)
        await asyncio.sleep(1.2)  # one demand sample
        assert service.demand().get("ap-northeast", 0) > 0
    finally:
        await service.close()
    assert not any(thread.name == "edgefleet-dns" for thread in threading.enumerate())


async def test_a_geo_table_reload_loads_off_the_loops_and_reaches_the_answers(store: Store, tmp_path: Path) -> None:
    geo = tmp_path / "geo.csv"
    geo.write_text(GEO)
    service = GslbService(store, GslbOptions(dns_port=0, geo_path=geo))
    await service.start()
    try:
        assert await ask(service.dns.port) == ["127.0.7.1", "127.0.7.2"]  # Tokyo
        geo.write_text(
            GEO.replace("203.0.113.0/24,JP,ap-northeast,35.6762,139.6503", "203.0.113.0/24,US,us-east,40.7,-74")
        )
        loader = service.reload_geo()
        assert loader is not threading.current_thread()
        await asyncio.get_running_loop().run_in_executor(None, loader.join, 10.0)
        await eventually(lambda: answers_only(service.dns.port, ["127.0.5.1", "127.0.5.2"]), within=2.0)  # New York
        geo.write_text("not,a,geo,table\n")
        await asyncio.get_running_loop().run_in_executor(None, service.reload_geo().join, 10.0)
        assert await ask(service.dns.port) == ["127.0.5.1", "127.0.5.2"]  # a bad file keeps the table
    finally:
        await service.close()
