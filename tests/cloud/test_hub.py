"""The hub's index recovers when its store watch falls behind compacted history."""

from __future__ import annotations

import asyncio
import contextlib
import json

from edgefleet.cloud.hub import Hub
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store
from tests.waiting import eventually


async def never_authenticated(_: str | None) -> str:
    raise AssertionError("no agent connects in this test")


def workload(name: str) -> bytes:
    doc = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name},
        "spec": {"nodeSelector": "", "template": {"command": ["true"]}},
    }
    return json.dumps(doc).encode()


async def test_index_reloads_after_its_watch_is_compacted(store: Store) -> None:
    hub = Hub(Registry(store), hub_id="test", authenticate=never_authenticated)
    await hub.start()
    try:
        watch = hub._tasks[0]
        assert watch.get_name() == "hub-watch"
        watch.cancel()  # the hub falls behind: its watch stops reading
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        for i in range(5):
            await store.create(f"/registry/workloads/w{i}", workload(f"w{i}"))
        await store.compact(await store.current_revision())
        stale_index = hub.index
        hub._tasks[0] = asyncio.create_task(hub._watch_forever())  # resumes from its old revision
        await eventually(lambda: hub.index is not stale_index and hub.index.get("/registry/workloads/w4") is not None)
        assert hub.index is not stale_index, "the index was reloaded from a fresh list"
        assert all(hub.index.get(f"/registry/workloads/w{i}") is not None for i in range(5))
        assert hub.index.revision >= await store.current_revision()
    finally:
        await hub.close()


async def test_fleet_demand_sums_every_replica_and_liveness_unites_their_sessions(store: Store) -> None:
    hub = Hub(Registry(store), hub_id="cloud-1:7440", authenticate=never_authenticated, demand=lambda: {"eu": 10.0})
    for name, hub_id, nodes, demand in [
        ("cloud-1-7440", "cloud-1:7440", ["a"], {"eu": 9.0}),
        ("cloud-2", "cloud-2", ["b", "c"], {"eu": 5.0, "us": 2.5}),
    ]:
        hub._note_replica(
            f"/registry/hubs/{name}",
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Hub",
                "metadata": {"name": name},
                "spec": {"hubId": hub_id, "url": f"http://{name}"},
                "status": {"connections": len(nodes), "nodes": nodes, "demand": demand},
            },
        )
    assert hub.fleet_demand() == {"eu": 15.0, "us": 2.5}, "this replica counts its live figure, not its published one"
    assert hub.live_nodes() == {"a", "b", "c"}
    holder = hub.holder_of("c")
    assert holder is not None and holder.url == "http://cloud-2" and hub.holder_of("a") is None
    hub._note_replica("/registry/hubs/cloud-2", None)  # its lease ended
    assert hub.live_nodes() == {"a"} and hub.fleet_demand() == {"eu": 10.0}
