"""Shared index snapshots: incremental updates equal a fresh copy, and no controller mutates them.

The controllers of a replica read one shared tuple per kind (:mod:`edgefleet.cloud.snapshots`)
instead of a copy per round; a controller that mutated a document would change what every other
controller (and the next round) reads, so every controller's round runs here over shared
snapshots, compared with deep copies taken before the round.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.certificates import CertificateController
from edgefleet.cloud.controllers.domainstatus import DomainStatusController
from edgefleet.cloud.controllers.latency import LatencyController
from edgefleet.cloud.controllers.nodelifecycle import NodeLifecycleController
from edgefleet.cloud.controllers.siteactivation import SiteActivationController
from edgefleet.cloud.controllers.sitestatus import SiteStatusController
from edgefleet.cloud.controllers.workloads import WorkloadController
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.snapshots import IndexSnapshots, api_form
from edgefleet.store.interface import Store
from edgefleet.sync.views import FleetIndex

from .conftest import site
from .test_identity import node_manifest
from .test_purges import domain

NODES, SITES, WORKLOADS = kind_info("Node"), kind_info("Site"), kind_info("Workload")
DOMAINS = kind_info("Domain")
KINDS = ("nodes", "sites", "workloads", "workloadrevisions", "domains", "probetargets", "certificates", "secrets")


def fresh(index: FleetIndex, plural: str) -> list[StoredDocument]:
    """What the controllers read before snapshots: a new API-form copy of every document."""
    return [api_form(revision, document) for revision, document in index.documents(plural)]


def doc(kind: str, name: str, **spec: Any) -> StoredDocument:
    return {"apiVersion": "edgefleet.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_incremental_updates_keep_the_documents_and_the_order_of_a_fresh_copy() -> None:
    index = FleetIndex()
    index.load([(f"/registry/nodes/n{i}", i + 1, doc("Node", f"n{i}", site="par")) for i in range(4)], 4)
    snapshots = IndexSnapshots(lambda: index)
    assert list(snapshots.documents("nodes")) == fresh(index, "nodes")
    events: list[tuple[str, StoredDocument | None]] = [
        ("/registry/nodes/n1", doc("Node", "n1", site="fra")),  # an update keeps its place
        ("/registry/nodes/n2", None),  # a delete
        ("/registry/nodes/n9", doc("Node", "n9", site="par")),  # a new key comes last
        ("/registry/nodes/n2", doc("Node", "n2", site="ams")),  # re-created: last too
        ("/registry/sites/par", doc("Site", "par")),  # another kind
    ]
    for revision, (key, document) in enumerate(events, start=10):
        index.apply(key, revision, document)
        snapshots.changed(key, document)
        assert list(snapshots.documents("nodes")) == fresh(index, "nodes")
    assert [d["metadata"]["name"] for d in snapshots.documents("nodes")] == ["n0", "n1", "n3", "n9", "n2"]
    assert snapshots.documents("nodes")[1]["metadata"]["resourceVersion"] == "10"
    assert list(snapshots.documents("sites")) == fresh(index, "sites")


def test_an_unchanged_kind_is_the_same_tuple_and_a_reload_rebuilds() -> None:
    holder = [FleetIndex()]
    holder[0].load([("/registry/nodes/n0", 1, doc("Node", "n0", site="par"))], 1)
    snapshots = IndexSnapshots(lambda: holder[0])
    nodes = snapshots.documents("nodes")
    holder[0].apply("/registry/sites/par", 2, doc("Site", "par"))
    snapshots.changed("/registry/sites/par", doc("Site", "par"))
    assert snapshots.documents("nodes") is nodes, "a change to another kind copies nothing"
    holder[0] = FleetIndex()  # the hub reloaded its index (no listener call for a load)
    holder[0].load([("/registry/nodes/n5", 7, doc("Node", "n5", site="ams"))], 7)
    assert list(snapshots.documents("nodes")) == fresh(holder[0], "nodes")
    snapshots.changed("/registry/nodes/n0", None)  # a late event for the old index changes nothing
    assert [d["metadata"]["name"] for d in snapshots.documents("nodes")] == ["n5"]


class Hub:
    """What the hub does for the snapshots: its index follows the store, each event is told to them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = FleetIndex()
        self.snapshots = IndexSnapshots(lambda: self.index)

    async def follow(self) -> None:
        listing = await self.store.list("/registry/")
        present = {kv.key for kv in listing.items}
        for kv in sorted(listing.items, key=lambda kv: kv.mod_revision):
            entry = self.index.get(kv.key)
            if entry is None or entry[0] != kv.mod_revision:
                document = json.loads(kv.value)
                self.index.apply(kv.key, kv.mod_revision, document)
                self.snapshots.changed(kv.key, document)
        for plural in KINDS:
            for document in list(self.snapshots.documents(plural)):
                key = f"/registry/{plural}/{document['metadata']['name']}"
                if key not in present:
                    self.index.apply(key, listing.revision, None)
                    self.snapshots.changed(key, None)


async def make_fleet(registry: Registry) -> None:
    await registry.create(SITES, site("par", tier="edge"))
    await registry.create(SITES, site("fra", tier="parent"))
    traffic = {"requests": 50, "originRequests": 5, "bytes": 5000, "originBytes": 500}
    for name, site_name in (("par-1", "par"), ("par-2", "par"), ("fra-1", "fra")):
        await registry.create(NODES, node_manifest(name, site_name, role="cache"))
        status = {
            "phase": "Ready",
            "lastHeartbeat": "2026-12-01T00:00:00Z",
            "cache": {"clientGbps": 1.0, "egressGbps": 1.5, "domains": {"shop": traffic}},
            "latency": {"203.0.113.0/24": 12.0},
            "workloads": {"web": {"revision": "x", "ready": True, "state": "Running"}},
        }
        await registry.patch(NODES, name, {"status": status}, status=True)
    workload = doc("Workload", "web", nodeSelector="role=cache", template={"command": ["serve"]})
    workload["spec"]["strategy"] = {"maxUnavailable": 1}
    await registry.create(WORKLOADS, workload)
    await registry.create(DOMAINS, domain("shop", "tier=edge"))


async def test_no_controller_mutates_the_shared_snapshots(store: Store) -> None:
    registry = Registry(store)
    await make_fleet(registry)
    hub = Hub(store)
    read = hub.snapshots.documents
    rounds: list[Callable[[], Awaitable[int]]] = [
        NodeLifecycleController(registry, liveness=lambda: {"par-1"}, nodes=lambda: read("nodes")).sync_once,
        SiteActivationController(
            registry, sites=lambda: read("sites"), nodes=lambda: read("nodes"), workloads=lambda: read("workloads")
        ).sync_once,
        DomainStatusController(registry, lambda: hub.index, lambda: read("domains")).sync_once,
        SiteStatusController(registry, lambda: read("sites"), lambda: read("nodes")).sync_once,
        LatencyController(registry, read).sync_once,
        WorkloadController(registry, read, clock=lambda: datetime(2026, 12, 1, tzinfo=UTC)).sync_once,
        CertificateController(registry, documents=read).sync_once,
    ]
    written = 0
    for _ in range(3):  # the workload controller adopts a revision, then assigns it, then settles
        for sync_once in rounds:
            await hub.follow()
            shared = {plural: read(plural) for plural in KINDS}
            before = copy.deepcopy(shared)
            written += await sync_once()
            assert shared == before, f"{sync_once.__qualname__} mutated what it read"
            assert all(read(plural) is shared[plural] for plural in KINDS), "a round alone changes no snapshot"
    assert written > 0, "the rounds wrote (so they read the documents they were given)"
    await hub.follow()
    assert all(list(read(plural)) == fresh(hub.index, plural) for plural in KINDS)
