"""Domain status controller: summing node reports (pure, plain dicts), then rounds on a real store."""

from __future__ import annotations

from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.domainstatus import (
    DomainStatusController,
    NodeReport,
    aggregate,
    desired_status,
    status_patch,
)
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store

from .conftest import site
from .test_identity import node_manifest
from .test_purges import domain, hub_index

NODES, SITES, DOMAINS = kind_info("Node"), kind_info("Site"), kind_info("Domain")


def traffic(requests: int, origin_requests: int, bytes_: int = 0, origin_bytes: int = 0) -> dict[str, int]:
    return {"requests": requests, "originRequests": origin_requests, "bytes": bytes_, "originBytes": origin_bytes}


def cache(**domains: dict[str, int]) -> dict[str, Any]:
    return {"windowSeconds": 300, "domains": domains}


def test_the_sum_counts_user_requests_once_and_what_the_origin_saw() -> None:
    nodes = [
        NodeReport("par-1", "par", True, cache(shop=traffic(60, 0, 6000, 0))),  # relayed from its peer
        NodeReport("par-2", "par", True, cache(shop=traffic(40, 10, 4000, 1000), other=traffic(5, 5))),
        NodeReport("fra-1", "fra", True, cache()),  # serves shop, idle
        NodeReport("ams-1", "ams", False, cache(shop=traffic(1000, 1000))),  # NotReady: its figures are old
    ]
    assert aggregate("shop", nodes) == {
        "servingSites": ["fra", "par"],
        "windowSeconds": 300,
        "requests": 100,
        "originRequests": 10,
        "bytes": 10000,
        "originBytes": 1000,
        "offload": 0.9,
        "byteOffload": 0.9,
        "message": None,
    }


def test_no_figures_no_offload_and_no_ready_node_says_so() -> None:
    idle = aggregate("shop", [NodeReport("par-1", "par", True, {})])
    assert idle["servingSites"] == ["par"] and idle["requests"] is None and idle["offload"] is None
    nobody = aggregate("shop", [NodeReport("par-1", "par", False, cache(shop=traffic(1, 0)))])
    assert nobody["servingSites"] == [] and nobody["message"] == "no Ready node serves this domain"


def test_an_idle_domain_whose_caches_report_has_zero_requests_not_none() -> None:
    idle = aggregate("shop", [NodeReport("par-1", "par", True, cache(other=traffic(3, 1)))])
    assert (idle["requests"], idle["originRequests"], idle["windowSeconds"]) == (0, 0, 300)
    assert idle["offload"] is None  # nothing to offload: `get domains` shows "-" (tests/api/test_domains.py)


def test_hostile_figures_count_as_nothing_and_offload_stays_in_range() -> None:
    nodes = [
        NodeReport("a", "par", True, {"domains": {"shop": {"requests": -5, "originRequests": True, "bytes": "x"}}}),
        NodeReport("b", "par", True, cache(shop=traffic(2, 9))),  # prefetches: the origin did more than users
    ]
    figures = aggregate("shop", nodes)
    assert (figures["requests"], figures["originRequests"], figures["offload"]) == (2, 9, 0.0)


def shop(status: dict[str, Any] | None = None) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop", "resourceVersion": "7", "generation": 1},
        "spec": {},
        "status": status or {},
    }


def test_a_moved_figure_waits_for_the_interval_but_a_new_serving_site_does_not() -> None:
    reports = [NodeReport("par-1", "par", True, cache(shop=traffic(10, 1)))]
    wanted = desired_status(shop(), reports)
    assert wanted["observedGeneration"] == 1
    patch = status_patch(shop(), wanted, None, now=100.0)
    assert patch == {"metadata": {"resourceVersion": "7"}, "status": wanted}
    written = shop(dict(wanted))
    assert status_patch(written, wanted, 100.0, now=101.0) is None, "nothing moved"
    moved = desired_status(written, [NodeReport("par-1", "par", True, cache(shop=traffic(20, 1)))])
    assert status_patch(written, moved, 100.0, now=110.0) is None, "within the interval"
    assert status_patch(written, moved, 100.0, now=120.0) is not None
    more = desired_status(written, [*reports, NodeReport("fra-1", "fra", True, cache(shop=traffic(10, 1)))])
    assert status_patch(written, more, 100.0, now=101.0) is not None, "servingSites changed: at once"


async def test_the_controller_writes_domain_status_from_the_hubs_index(store: Store) -> None:
    registry = Registry(store)
    await registry.create(SITES, site("par", tier="edge"))
    await registry.create(SITES, site("fra", tier="parent"))
    for node, node_site in (("par-1", "par"), ("par-2", "par"), ("fra-1", "fra")):
        await registry.create(NODES, node_manifest(node, node_site))
        figures = cache(shop=traffic(50, 5 if node == "par-1" else 0, 5000, 500 if node == "par-1" else 0))
        await registry.patch(NODES, node, {"status": {"phase": "Ready", "cache": figures}}, status=True)
    await registry.create(DOMAINS, domain("shop", "tier=edge"))
    clock = [1000.0]
    index = await hub_index(store)
    documents = (await registry.list(DOMAINS)).items
    controller = DomainStatusController(registry, lambda: index, lambda: documents, clock=lambda: clock[0])

    assert await controller.sync_once() == 1
    status = (await registry.get(DOMAINS, "shop"))["status"]
    assert status["servingSites"] == ["par"], "fra-1 is Ready but its site is not selected"
    assert (status["requests"], status["originRequests"], status["offload"], status["byteOffload"]) == (
        100,
        5,
        0.95,
        0.95,
    )
    revision = await store.current_revision()
    index = await hub_index(store)
    documents = (await registry.list(DOMAINS)).items
    assert await controller.sync_once() == 0
    assert await store.current_revision() == revision, "unchanged figures write nothing"
