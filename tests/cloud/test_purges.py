"""Purge controller: counting node reports (pure), then rounds on a real store with the hub's index."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.purges import PurgeController, Tally, status_patch, tally
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store
from edgefleet.sync.views import FleetIndex

from .conftest import site
from .test_identity import node_manifest

NODES, SITES, DOMAINS = kind_info("Node"), kind_info("Site"), kind_info("Domain")
PURGES, PREFETCHES = kind_info("Purge"), kind_info("Prefetch")
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def task(kind: str = "Purge", uid: str = "u-1", status: dict[str, Any] | None = None) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": kind,
        "metadata": {"name": "p", "uid": uid, "resourceVersion": "9"},
        "spec": {"domain": "shop", "urls": ["/a"]},
        "status": status or {},
    }


def report(uid: str, state: str, message: str = "") -> dict[str, Any]:
    return {"name": "p", "uid": uid, "state": state, "message": message}


# -- counting -------------------------------------------------------------------------


def test_tally_counts_reports_of_this_uid_from_target_nodes_only() -> None:
    statuses: dict[str, dict[str, Any]] = {
        "a": {"purges": [report("u-1", "Done")]},
        "b": {"purges": [report("u-0", "Done"), report("u-1", "Failed", "HTTP 503")]},
        "c": {"purges": [report("u-1", "Pending")]},
        "d": {"prefetches": [report("u-1", "Done")]},  # another kind's report
        "outsider": {"purges": [report("u-1", "Done")]},
    }
    counts = tally(task(), ["a", "b", "c", "d", "e"], statuses.get)
    assert counts == Tally(targets=5, completed=1, failed=1, failures=("b: HTTP 503",))
    assert tally(task("Prefetch"), ["a", "d"], statuses.get) == Tally(2, 1, 0)


def test_status_patch_counts_then_completes_when_every_target_reported() -> None:
    partial = status_patch(task(), Tally(3, 2, 0), domain_exists=True, now=NOW)
    assert partial == {
        "metadata": {"resourceVersion": "9"},
        "status": {
            "targetNodes": 3,
            "completedNodes": 2,
            "failedNodes": 0,
            "message": "waiting for 1 node(s)",
            "completedAt": None,
        },
    }
    done = status_patch(task(status=partial["status"]), Tally(3, 3, 0), domain_exists=True, now=NOW)
    assert done is not None and done["status"]["completedAt"] == "2026-05-01T12:00:00Z"
    assert done["status"]["message"] is None, "the waiting message is removed"
    failed = status_patch(task(), Tally(2, 1, 1, ("b: gave up",)), domain_exists=True, now=NOW)
    assert failed is not None and failed["status"]["completedAt"] and "b: gave up" in failed["status"]["message"]


def test_status_patch_writes_nothing_when_unchanged_or_completed() -> None:
    first = status_patch(task(), Tally(3, 1, 0), domain_exists=True, now=NOW)
    assert first is not None
    current = {k: v for k, v in first["status"].items() if v is not None}
    assert status_patch(task(status=current), Tally(3, 1, 0), domain_exists=True, now=NOW) is None
    final = {"targetNodes": 3, "completedNodes": 3, "completedAt": "2026-05-01T11:00:00Z"}
    assert status_patch(task(status=final), Tally(5, 0, 0), domain_exists=True, now=NOW) is None


def test_missing_domain_stays_open_and_unserved_domain_completes_empty() -> None:
    missing = status_patch(task(), Tally(0, 0, 0), domain_exists=False, now=NOW)
    assert missing is not None and missing["status"]["completedAt"] is None
    assert "does not exist" in missing["status"]["message"]
    unserved = status_patch(task(), Tally(0, 0, 0), domain_exists=True, now=NOW)
    assert unserved is not None and unserved["status"]["completedAt"]
    assert "no node serves" in unserved["status"]["message"]


# -- the controller on a store ------------------------------------------------------------


def domain(name: str, sites: str) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {"hostnames": [f"www.{name}.example"], "origins": [{"url": "http://127.0.0.1:8080"}], "sites": sites},
    }


def purge(name: str, domain_name: str) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Purge",
        "metadata": {"name": name},
        "spec": {"domain": domain_name, "tags": ["t"]},
    }


async def hub_index(store: Store) -> FleetIndex:
    """What the hub's index holds (it is fed by a store watch; here by one list)."""
    listing = await store.list("/registry/")
    index = FleetIndex()
    index.load([(kv.key, kv.mod_revision, json.loads(kv.value)) for kv in listing.items], listing.revision)
    return index


async def agent_reports(registry: Registry, node: str, uid: str, state: str) -> None:
    """What the hub writes from an agent's status report."""
    await registry.patch(NODES, node, {"status": {"purges": [{"name": "p1", "uid": uid, "state": state}]}}, status=True)


async def test_controller_counts_nodes_of_serving_sites_and_completes(store: Store) -> None:
    registry = Registry(store)
    await registry.create(SITES, site("par", tier="edge"))
    await registry.create(SITES, site("fra", tier="parent"))
    for node, node_site in (("par-1", "par"), ("par-2", "par"), ("fra-1", "fra")):
        await registry.create(NODES, node_manifest(node, node_site))
    await registry.create(DOMAINS, domain("shop", "tier=edge"))
    created = await registry.create(PURGES, purge("p1", "shop"))
    await registry.create(PURGES, purge("p2", "nowhere"))
    uid = created["metadata"]["uid"]
    index = await hub_index(store)
    controller = PurgeController(registry, lambda: index, clock=lambda: NOW)

    assert await controller.sync_once() == 2
    status = (await registry.get(PURGES, "p1"))["status"]
    assert status == {"targetNodes": 2, "completedNodes": 0, "failedNodes": 0, "message": "waiting for 2 node(s)"}
    assert "does not exist" in (await registry.get(PURGES, "p2"))["status"]["message"]
    revision = await store.current_revision()
    index = await hub_index(store)
    assert await controller.sync_once() == 0
    assert await store.current_revision() == revision, "unchanged counts write nothing"

    await agent_reports(registry, "par-1", uid, "Done")
    await agent_reports(registry, "fra-1", uid, "Done")  # not a target: its site does not serve shop
    await agent_reports(registry, "par-2", "another-uid", "Done")  # a re-created purge of the same name
    index = await hub_index(store)
    assert await controller.sync_once() == 1
    assert (await registry.get(PURGES, "p1"))["status"]["completedNodes"] == 1

    await agent_reports(registry, "par-2", uid, "Done")
    index = await hub_index(store)
    await controller.sync_once()
    final = (await registry.get(PURGES, "p1"))["status"]
    assert final == {"targetNodes": 2, "completedNodes": 2, "failedNodes": 0, "completedAt": "2026-05-01T12:00:00Z"}
    index = await hub_index(store)
    assert "/registry/purges/p1" not in index.view("par-1"), "a completed purge leaves the views"
    await agent_reports(registry, "par-2", uid, "Failed")
    index = await hub_index(store)
    assert await controller.sync_once() == 0, "a completed status is final"
