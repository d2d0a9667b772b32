"""The workload controller's rounds on a real store, reading what the hub's index would hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.api.workloads import Workload, template_revision
from edgefleet.cloud.controllers.workloads import WorkloadController
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store
from edgefleet.sync.views import FleetIndex

from .conftest import site
from .test_identity import node_manifest

NODES, SITES, WORKLOADS = kind_info("Node"), kind_info("Site"), kind_info("Workload")
REVISIONS, EVENTS, DOMAINS = kind_info("WorkloadRevision"), kind_info("Event"), kind_info("Domain")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def workload(args: list[str], **spec: Any) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "web"},
        "spec": {"template": {"command": ["serve"], "args": args}, **spec},
    }


async def index_documents(store: Store, plural: str) -> list[StoredDocument]:
    listing = await store.list("/registry/")
    index = FleetIndex()
    index.load([(kv.key, kv.mod_revision, json.loads(kv.value)) for kv in listing.items], listing.revision)
    return [
        {**doc, "metadata": {**doc["metadata"], "resourceVersion": str(rev)}} for rev, doc in index.documents(plural)
    ]


class Fleet:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = Registry(store)
        self.clock = Clock()
        self.documents: dict[str, list[StoredDocument]] = {}
        self.controller = WorkloadController(self.registry, lambda plural: self.documents[plural], clock=self.clock)

    async def round(self, seconds: float = 1.0) -> int:
        for plural in ("nodes", "sites", "domains", "workloads", "workloadrevisions"):
            self.documents[plural] = await index_documents(self.store, plural)
        written = await self.controller.sync_once()
        await self.controller.flush_events()
        self.clock.now += timedelta(seconds=seconds)
        return written

    async def agents_follow(self) -> None:
        """Every node reports the revision its view assigns it, ready."""
        doc = await self.registry.get(WORKLOADS, "web")
        status = doc.get("status") or {}
        for name in ("a1", "a2"):
            revision = (status.get("nodeRevisions") or {}).get(name, status.get("currentRevision"))
            await self.registry.patch(
                NODES,
                name,
                {
                    "status": {
                        "phase": "Ready",
                        "workloads": {"web": {"revision": revision, "ready": True, "state": "Running"}},
                    }
                },
                status=True,
            )

    async def status(self) -> dict[str, Any]:
        return (await self.registry.get(WORKLOADS, "web")).get("status") or {}


async def make_fleet(store: Store, strategy: dict[str, Any]) -> Fleet:
    fleet = Fleet(store)
    await fleet.registry.create(SITES, site("s1"))
    for name in ("a1", "a2"):
        await fleet.registry.create(NODES, node_manifest(name, "s1"))
    await fleet.registry.create(WORKLOADS, workload(["v1"], strategy=strategy))
    await fleet.round()
    await fleet.agents_follow()
    return fleet


async def test_first_round_adopts_the_template_as_revision_one(store: Store) -> None:
    fleet = await make_fleet(store, {})
    status = await fleet.status()
    revision = (await fleet.registry.get(REVISIONS, "web-1"))["spec"]
    v1 = template_revision(Workload.model_validate(workload(["v1"])).spec.template)
    assert revision["number"] == 1 and revision["revision"] == v1 == status["currentRevision"]
    assert status["desiredCount"] == 2 and "rollout" not in status
    await fleet.round()
    assert await fleet.round() == 0  # nothing changes: nothing is written


async def test_a_template_change_rolls_out_with_drains_and_events(store: Store) -> None:
    fleet = await make_fleet(store, {"drain": {"seconds": 2}, "maxUnavailable": "100%"})
    await fleet.round()
    await fleet.registry.patch(WORKLOADS, "web", {"spec": {"template": {"args": ["v2"]}}})
    drained_seen: set[str] = set()
    for _ in range(15):
        await fleet.round()
        await fleet.agents_follow()
        for name in ("a1", "a2"):
            if (await fleet.registry.get(NODES, name))["status"].get("drains"):
                drained_seen.add(name)
    status = await fleet.status()
    assert status["rollout"]["phase"] == "Completed" and status["currentRevisionNumber"] == 2
    assert drained_seen == {"a1", "a2"}
    for name in ("a1", "a2"):
        assert not (await fleet.registry.get(NODES, name))["status"].get("drains")
    reasons = [e["spec"]["reason"] for e in (await fleet.registry.list(EVENTS)).items]
    assert {"RolloutStarted", "NodeDraining", "NodeUpdating", "NodeUpdated", "RolloutCompleted"} <= set(reasons)
    assert {r["spec"]["number"] for r in (await fleet.registry.list(REVISIONS)).items} == {1, 2}


async def test_old_revisions_beyond_the_limit_are_deleted(store: Store) -> None:
    fleet = await make_fleet(store, {"drain": {"enabled": False}, "maxUnavailable": "100%"})
    await fleet.registry.patch(WORKLOADS, "web", {"spec": {"revisionHistoryLimit": 1}})
    for version in ("v2", "v3", "v4"):
        await fleet.registry.patch(WORKLOADS, "web", {"spec": {"template": {"args": [version]}}})
        for _ in range(6):
            await fleet.round()
            await fleet.agents_follow()
    numbers = sorted(r["spec"]["number"] for r in (await fleet.registry.list(REVISIONS)).items)
    assert numbers == [3, 4]  # the current one and one more
    await fleet.registry.delete(WORKLOADS, "web")
    await fleet.round()
    assert (await fleet.registry.list(REVISIONS)).items == []


async def test_a_stale_read_loses_the_race_and_writes_nothing(store: Store) -> None:
    fleet = await make_fleet(store, {"drain": {"enabled": False}})
    await fleet.registry.patch(WORKLOADS, "web", {"spec": {"template": {"args": ["v2"]}}})
    for plural in ("nodes", "sites", "domains", "workloads", "workloadrevisions"):
        fleet.documents[plural] = await index_documents(store, plural)
    await fleet.registry.patch(WORKLOADS, "web", {"metadata": {"labels": {"touched": "yes"}}})  # after the read
    assert await fleet.controller.sync_once() == 0


async def test_only_facts_the_rule_reads_wake_a_round(store: Store) -> None:
    controller = WorkloadController(Registry(store), lambda plural: [])
    node = node_manifest("a1", "s1")
    node["status"] = {"phase": "Ready", "cache": {"requests": 1}}
    controller.wake("/registry/nodes/a1", node)
    controller._dirty = False
    node["status"]["cache"] = {"requests": 500}  # traffic counters: no round
    node["status"]["lastHeartbeat"] = "2026-12-01T00:00:00Z"
    controller.wake("/registry/nodes/a1", node)
    assert not controller._dirty
    node["status"]["workloads"] = {"web": {"revision": "x", "ready": True}}
    controller.wake("/registry/nodes/a1", node)
    assert controller._dirty
    controller._dirty = False
    controller.wake("/registry/events/e1", {"kind": "Event"})
    assert not controller._dirty
    controller.wake("/registry/workloads/web", {"kind": "Workload"})
    assert controller._dirty


async def test_a_node_scaled_down_with_its_site_waits_and_does_not_fail_the_rollout(store: Store) -> None:
    """Elastic sites: a cache held at zero (ScaledDown, never ready) counts as away, not as a failed node."""
    strategy = {"drain": {"enabled": False}, "maxUnavailable": "100%", "maxUnavailablePerSite": "100%"}
    fleet = await make_fleet(store, strategy)
    v1 = (await fleet.status())["currentRevision"]
    scaled = {"revision": v1, "ready": False, "state": "ScaledDown", "message": "site s1 is Inactive"}
    await fleet.registry.patch(NODES, "a2", {"status": {"workloads": {"web": scaled}}}, status=True)
    await fleet.registry.patch(WORKLOADS, "web", {"spec": {"template": {"args": ["v2"]}}})
    for _ in range(10):
        await fleet.round()
        doc = await fleet.registry.get(WORKLOADS, "web")
        revision = (doc["status"].get("nodeRevisions") or {}).get("a1", doc["status"].get("currentRevision"))
        await fleet.registry.patch(
            NODES,
            "a1",
            {"status": {"workloads": {"web": {"revision": revision, "ready": True, "state": "Running"}}}},
            status=True,
        )
    status = await fleet.status()
    assert status["rollout"]["phase"] == "Completed", status["rollout"]
    assert status["rollout"]["waiting"] == ["a2"], "it moves once its site is active again"
    assert status["nodeRevisions"] == {"a2": v1}
