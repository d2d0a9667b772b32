"""Site status controller: the aggregation and the write bound (pure, plain dicts), then rounds on a real store."""

from __future__ import annotations

from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.sitestatus import (
    NodeHealth,
    NodeLoad,
    SiteStatusController,
    aggregate,
    node_load,
    status_patch,
)
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store

from .conftest import site
from .test_identity import node_manifest

NODES, SITES = kind_info("Node"), kind_info("Site")
NOW = 1_800_000_000.0
AT = "2027-01-15T08:00:00Z"  # NOW as RFC 3339
CAPACITY = 40.0


def par(tier: str = "edge", status: dict[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {**site("par"), "status": status or {}}
    document["spec"] = {**document["spec"], "tier": tier}
    document["metadata"] = {**document["metadata"], "resourceVersion": "7"}
    return document


def load(name: str, client: float | None, egress: float | None = None, **facts: Any) -> NodeLoad:
    fields: dict[str, Any] = {"site": "par", "ready": True, "healthy": True} | facts
    return NodeLoad(name, fields["site"], fields["ready"], fields["healthy"], egress, client)


def test_an_edge_site_sums_what_its_counted_nodes_send_to_clients() -> None:
    nodes = [
        load("par-1", 2.0, 3.0),  # relayed 1 Gbit/s to its peer: stays inside the site
        load("par-2", 6.0, 6.0),
        load("par-3", 9.0, 9.0, healthy=False),  # voted down: its cache's figures are its last ones
        load("par-4", 9.0, 9.0, ready=False),  # NotReady: the hub does not hear it
        load("fra-1", 50.0, 50.0, site="fra"),  # another site
    ]
    assert aggregate(par(), nodes) == {"healthyNodes": 3, "totalNodes": 4, "loadGbps": 8.0, "load": 0.2}


def test_a_parent_site_counts_everything_its_nodes_send() -> None:
    status = aggregate(par("parent"), [load("par-1", 0.5, 2.0), load("par-2", 0.0, 2.0)])
    assert (status["loadGbps"], status["load"]) == (4.0, 0.1)


def test_no_figures_is_no_load_and_no_counted_node_is_zero() -> None:
    unknown = aggregate(par(), [load("par-1", None)])  # Ready, healthy, but no cache reports
    assert unknown == {"healthyNodes": 1, "totalNodes": 1, "loadGbps": None, "load": None}
    empty = aggregate(par(), [])
    assert empty == {"healthyNodes": 0, "totalNodes": 0, "loadGbps": 0.0, "load": 0.0}
    down = aggregate(par(), [load("par-1", 5.0, ready=False, healthy=False)])
    assert (down["healthyNodes"], down["loadGbps"]) == (0, 0.0)


def test_hostile_figures_count_as_nothing() -> None:
    hostile: list[object] = [
        {"clientGbps": -1.0},
        {"clientGbps": True},
        {"clientGbps": "9"},
        {"clientGbps": float("nan")},
        [],
    ]
    documents = [
        {"metadata": {"name": "a"}, "spec": {"site": "par"}, "status": {"phase": "Ready", "cache": bad}}
        for bad in hostile
    ]
    loads = [node_load(document, True) for document in documents]
    assert [item.client_gbps for item in loads] == [None] * 5
    assert aggregate(par(), loads)["loadGbps"] is None


def test_structural_changes_are_written_at_once_load_moves_at_a_bounded_rate() -> None:
    wanted = aggregate(par(), [load("par-1", 4.0)])
    patch = status_patch(par(), wanted, None, NOW)
    assert patch == {"metadata": {"resourceVersion": "7"}, "status": wanted}, "only its own four fields"
    written = par(status={"phase": "Active", "active": True, **wanted})
    assert status_patch(written, wanted, NOW, NOW + 1) is None, "nothing moved"
    moved = aggregate(par(), [load("par-1", 8.0)])
    assert status_patch(written, moved, NOW, NOW + 5) is None, "within the interval"
    assert status_patch(written, moved, NOW, NOW + 10) is not None
    assert status_patch(written, moved, None, NOW) is not None, "a new leader writes at once"
    wobble = aggregate(par(), [load("par-1", 4.1)])
    assert status_patch(written, wobble, NOW, NOW + 60) is None, "2.5% is within the tolerance"
    stopped = aggregate(par(), [load("par-1", 0.0)])
    assert status_patch(written, stopped, NOW, NOW + 10) is not None, "a load that falls to zero moved"
    more = aggregate(par(), [load("par-1", 4.0), load("par-2", 4.1, healthy=False)])
    assert status_patch(written, more, NOW, NOW + 1) is not None, "a new node: at once"
    gone = aggregate(par(), [load("par-1", None)])
    assert status_patch(written, gone, NOW, NOW + 1) is not None, "the load went: at once"


def node(name: str, votes: dict[str, bool] | None = None, **status: Any) -> dict[str, Any]:
    document: dict[str, Any] = {**node_manifest(name, "par"), "status": {"phase": "Ready", **status}}
    if votes is not None:
        document["status"]["peerVotes"] = {peer: {"healthy": healthy, "at": AT} for peer, healthy in votes.items()}
    return document


def healthy(nodes: list[dict[str, Any]]) -> dict[str, bool]:
    health = NodeHealth()
    health.update(nodes)
    return {document["metadata"]["name"]: health.healthy(document["metadata"]["name"], NOW) for document in nodes}


def test_health_is_the_gslbs_rule_and_draining_is_not_health() -> None:
    two_against_one = [node("a", {"c": False}), node("b", {"c": False}), node("c", {"a": True, "b": True})]
    assert healthy(two_against_one) == {"a": True, "b": True, "c": False}
    cut_off = [node("a", {"b": True}), node("b", phase="NotReady")]  # its peer sees it serve
    assert healthy(cut_off) == {"a": True, "b": True}
    draining = node("a", drains={"rollout": AT})
    draining["spec"]["draining"] = True
    no_address = node("b")
    no_address["spec"]["addresses"] = []
    assert healthy([draining, no_address, node("c", phase="Unknown")]) == {"a": True, "b": False, "c": False}


def test_health_follows_changed_and_deleted_nodes() -> None:
    health = NodeHealth()
    voter = {**node("a", {"b": False}), "metadata": {"name": "a", "resourceVersion": "1"}}
    peer = {**node("b"), "metadata": {"name": "b", "resourceVersion": "1"}}
    health.update([voter, peer])
    assert not health.healthy("b", NOW), "its only voter says no"
    health.update([peer])
    assert health.healthy("b", NOW), "the voter was deleted"
    assert not health.healthy("a", NOW)


async def test_the_controller_writes_its_fields_and_leaves_the_activation_fields(store: Store) -> None:
    registry = Registry(store)
    await registry.create(SITES, site("par"))
    await registry.patch(SITES, "par", {"status": {"phase": "Active", "active": True, "message": "on"}}, status=True)
    for name, gbps in (("par-1", 1.0), ("par-2", 3.0)):
        await registry.create(NODES, node_manifest(name, "par"))
        figures = {"phase": "Ready", "cache": {"clientGbps": gbps, "egressGbps": gbps}}
        await registry.patch(NODES, name, {"status": figures}, status=True)
    clock = [NOW]

    async def documents(plural: str) -> list[StoredDocument]:
        return (await registry.list(NODES if plural == "nodes" else SITES)).items

    listed = {"sites": await documents("sites"), "nodes": await documents("nodes")}
    controller = SiteStatusController(
        registry, lambda: listed["sites"], lambda: listed["nodes"], min_interval=10, clock=lambda: clock[0]
    )
    assert await controller.sync_once() == 1
    status = (await registry.get(SITES, "par"))["status"]
    assert status == {
        "phase": "Active",
        "active": True,
        "message": "on",
        "healthyNodes": 2,
        "totalNodes": 2,
        "loadGbps": 4.0,
        "load": 0.1,
    }
    revision = await store.current_revision()
    listed["sites"] = await documents("sites")
    assert await controller.sync_once() == 0
    assert await store.current_revision() == revision, "unchanged figures write nothing"

    await registry.patch(NODES, "par-2", {"status": {"cache": {"clientGbps": 19.0}}}, status=True)
    listed["nodes"] = await documents("nodes")
    assert await controller.sync_once() == 0, "within the interval"
    clock[0] += 10
    stale = listed["sites"]
    assert await controller.sync_once() == 1
    assert (await registry.get(SITES, "par"))["status"]["load"] == 0.5
    listed["sites"] = stale
    clock[0] += 10
    await registry.patch(NODES, "par-2", {"status": {"cache": {"clientGbps": 39.0}}}, status=True)
    listed["nodes"] = await documents("nodes")
    assert await controller.sync_once() == 0, "a stale resourceVersion is a conflict, retried next round"
    listed["sites"] = await documents("sites")
    assert await controller.sync_once() == 1
    assert (await registry.get(SITES, "par"))["status"]["loadGbps"] == 40.0


async def test_many_sites_share_a_write_budget(store: Store) -> None:
    registry = Registry(store)
    for name in ("par", "fra", "ams"):
        await registry.create(SITES, site(name))
        await registry.create(NODES, node_manifest(f"{name}-1", name))
        await registry.patch(
            NODES, f"{name}-1", {"status": {"phase": "Ready", "cache": {"clientGbps": 1.0}}}, status=True
        )
    clock = [NOW]
    listed: dict[str, list[StoredDocument]] = {"sites": [], "nodes": []}

    async def relist() -> None:
        listed["sites"] = (await registry.list(SITES)).items
        listed["nodes"] = (await registry.list(NODES)).items

    controller = SiteStatusController(
        registry,
        lambda: listed["sites"],
        lambda: listed["nodes"],
        min_interval=10,
        writes_per_second=0.1,  # 3 sites: one load write per site every 30 s
        clock=lambda: clock[0],
    )
    await relist()
    assert await controller.sync_once() == 3
    for name in ("par", "fra", "ams"):
        await registry.patch(NODES, f"{name}-1", {"status": {"cache": {"clientGbps": 2.0}}}, status=True)
    await relist()
    clock[0] += 20
    assert await controller.sync_once() == 0, "20 s is within the 30 s the budget allows"
    clock[0] += 10
    assert await controller.sync_once() == 3
