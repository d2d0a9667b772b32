"""Latency controller: per-site medians, what a hostile node can and cannot do, the write bound, the targets.

Pure rules on plain dicts first, then rounds on a real store through the
registry (admission of Site.status.latency and ProbeTargets included).
"""

from __future__ import annotations

from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.latency import (
    LatencyController,
    current_keys,
    latency_patch,
    resolver_targets,
    site_latency,
    site_targets,
)
from edgefleet.cloud.registry import Registry
from edgefleet.gslb.networks import SeenNetwork
from edgefleet.store.interface import Store

from .conftest import site
from .test_identity import node_manifest

NODES, SITES, TARGETS = kind_info("Node"), kind_info("Site"), kind_info("ProbeTargets")
NOW = 1_800_000_000.0
NET = "10.0.0.0/8"
ALLOWED = {NET, "192.0.2.0/24", "site/ams"}


def test_a_site_figure_is_the_median_over_its_nodes() -> None:
    reports = [{NET: 10.0, "site/ams": 7.0}, {NET: 12.0}, {NET: 900.0}]
    assert site_latency(reports, ALLOWED) == {NET: 12.0, "site/ams": 7.0}


def test_a_hostile_node_cannot_add_targets_nor_move_a_median_alone() -> None:
    honest = [{NET: 20.0}, {NET: 22.0}]
    liar = {NET: 0.0, "0.0.0.0/0": 0.0, "site/evil": 0.0, "192.0.2.0/24": -5, "junk": "fast"}
    figures = site_latency([*honest, liar], ALLOWED)
    assert figures == {NET: 20.0, "192.0.2.0/24": 0.0}  # unknown keys ignored; negative clamped to 0
    assert site_latency([{NET: 1e12}, {NET: float("nan")}, {NET: True}], ALLOWED) == {NET: 60000.0}


def test_the_keys_nodes_may_report_are_the_targets_and_the_sites() -> None:
    targets = [{"spec": {"targets": [{"network": NET, "address": "192.0.2.1"}, {"site": "nyc", "address": "x"}]}}]
    assert current_keys(targets, ["par"]) == {NET, "site/nyc", "site/par"}


def par(latency: dict[str, float] | None) -> dict[str, Any]:
    return {**site("par"), "metadata": {"name": "par", "resourceVersion": "7"}, "status": {"latency": latency}}


def test_new_and_gone_targets_are_written_at_once_figures_at_a_bounded_rate() -> None:
    assert latency_patch(par({NET: 10.0}), {NET: 10.0}, None, NOW) is None
    patch = latency_patch(par({NET: 10.0, "site/ams": 3.0}), {NET: 10.0}, NOW, NOW)
    assert patch == {"metadata": {"resourceVersion": "7"}, "status": {"latency": {"site/ams": None, NET: 10.0}}}
    assert latency_patch(par({NET: 10.0}), {NET: 50.0}, NOW - 1, NOW) is None  # within the interval
    assert latency_patch(par({NET: 10.0}), {NET: 11.0}, NOW - 60, NOW) is None  # within tolerance
    assert latency_patch(par({NET: 1.0}), {NET: 1.9}, NOW - 60, NOW) is None  # under 1 ms of change
    assert latency_patch(par({NET: 10.0}), {NET: 50.0}, NOW - 60, NOW) is not None
    assert latency_patch(par(None), {NET: 5.0}, NOW, NOW) is not None
    gone = latency_patch(par({NET: 5.0}), {}, NOW, NOW)
    assert gone is not None and gone["status"] == {"latency": {NET: None}}


def test_the_clouds_targets_one_address_per_site_and_the_busy_resolvers() -> None:
    nodes = [("p2", "par", True, ["127.0.0.2"]), ("p1", "par", False, ["127.0.0.1"]), ("a1", "ams", True, [])]
    assert site_targets(["ams", "par"], nodes) == [{"site": "par", "address": "127.0.0.2"}]
    seen = [SeenNetwork("198.51.100.0/24", "198.51.100.9", 80.0), SeenNetwork("192.0.2.0/24", "192.0.2.7", 90.0)]
    assert [target["network"] for target in resolver_targets(seen)] == ["192.0.2.0/24", "198.51.100.0/24"]
    assert resolver_targets(seen)[0] == {"network": "192.0.2.0/24", "address": "192.0.2.7", "port": 53, "method": "tcp"}


async def test_rounds_write_site_figures_and_the_clouds_probe_targets(store: Store) -> None:
    registry = Registry(store)
    await registry.create(SITES, site("par"))
    await registry.create(SITES, site("ams"))
    operator = {"apiVersion": "edgefleet.io/v1", "kind": "ProbeTargets", "metadata": {"name": "clients"}}
    operator["spec"] = {"targets": [{"network": NET, "address": "192.0.2.1", "method": "http", "port": 8080}]}
    await registry.create(TARGETS, operator)
    nodes = (("p1", "par", 10.0), ("p2", "par", 14.0), ("p3", "par", 500.0), ("a1", "ams", 40.0))
    for index, (name, site_name, rtt) in enumerate(nodes, start=1):
        manifest = node_manifest(name, site_name)
        manifest["spec"]["addresses"] = [f"127.0.0.{index}"]
        await registry.create(NODES, manifest)
        status = {"phase": "Ready", "latency": {NET: rtt, "203.0.113.0/24": 0.1}}
        await registry.patch(NODES, name, {"status": status}, status=True)
    clock = [NOW]
    seen = [SeenNetwork("198.51.100.0/24", "198.51.100.9", 80.0)]

    async def listing(plural: str) -> list[StoredDocument]:
        return (await registry.list(kind_info({"sites": "Site", "nodes": "Node"}.get(plural, "ProbeTargets")))).items

    listed = {plural: await listing(plural) for plural in ("sites", "nodes", "probetargets")}
    controller = LatencyController(
        registry, lambda plural: listed[plural], networks=lambda: seen, min_interval=10, clock=lambda: clock[0]
    )
    assert await controller.sync_once() == 4  # two sites, fleet-sites, gslb-resolvers
    assert (await registry.get(SITES, "par"))["status"]["latency"] == {NET: 14.0}  # the liar's 500 is outvoted
    assert (await registry.get(SITES, "ams"))["status"]["latency"] == {NET: 40.0}
    sites = (await registry.get(TARGETS, "fleet-sites"))["spec"]["targets"]
    assert [target["site"] for target in sites] == ["ams", "par"]
    resolvers = (await registry.get(TARGETS, "gslb-resolvers"))["spec"]["targets"]
    assert resolvers == [
        {"network": "198.51.100.0/24", "address": "198.51.100.9", "port": 53, "method": "tcp", "path": "/"}
    ]
    listed = {plural: await listing(plural) for plural in ("sites", "nodes", "probetargets")}
    revision = await store.current_revision()
    assert await controller.sync_once() == 0
    assert await store.current_revision() == revision, "unchanged figures and targets write nothing"
    seen = []
    assert await controller.sync_once() == 0, "the resolvers' list is written at most every targets_interval"
    clock[0] += 60
    assert await controller.sync_once() == 1
    assert [doc["metadata"]["name"] for doc in (await registry.list(TARGETS)).items] == ["clients", "fleet-sites"]
