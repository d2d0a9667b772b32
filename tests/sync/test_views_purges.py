"""Purges and Prefetches in views: they follow their Domain while open, and incremental changes equal recomputation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.sync.views import FleetIndex

from .fleet import Cloud, domain_doc, key, node_doc, small_fleet
from .test_views import NODES, SELECTORS, node_change, replay, site_change

Doc = StoredDocument


def task_doc(kind: str, name: str, domain: str, *, completed: bool = False, **spec: Any) -> Doc:
    body: JSONObject = {"domain": domain, **spec} if spec else {"domain": domain, "urls": ["/a"]}
    doc: Doc = {
        "apiVersion": "edgefleet.io/v1",
        "kind": kind,
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": body,
    }
    if completed:
        doc["status"] = {"targetNodes": 1, "completedNodes": 1, "completedAt": "2026-05-01T12:00:00Z"}
    return doc


def purge_key(name: str) -> str:
    return key("purges", name)


def test_open_tasks_are_in_the_views_of_nodes_serving_their_domain() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.put(key("domains", "lyo"), domain_doc("lyo", "edgefleet.io/site=lyo-edge"))
    cloud.put(purge_key("p-shop"), task_doc("Purge", "p-shop", "shop"))
    cloud.put(key("prefetches", "w-lyo"), task_doc("Prefetch", "w-lyo", "lyo"))
    cloud.put(purge_key("p-gone"), task_doc("Purge", "p-gone", "missing-domain"))
    cloud.put(purge_key("p-done"), task_doc("Purge", "p-done", "shop", completed=True))
    assert {k for k in cloud.view("par-1") if "purges" in k or "prefetches" in k} == {purge_key("p-shop")}
    assert {k for k in cloud.view("lyo-1") if "purges" in k or "prefetches" in k} == {
        purge_key("p-shop"),
        key("prefetches", "w-lyo"),
    }
    assert not any("purges" in k for k in cloud.view("fra-1")), "the parent site does not serve shop"
    projected = cloud.view("par-1")[purge_key("p-shop")].object
    assert "status" not in projected and projected["spec"]["domain"] == "shop"


def test_completion_removes_a_task_and_status_counts_move_nobody() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    index.register("par-1")
    index.register("fra-1")
    doc = task_doc("Purge", "p", "shop")
    assert index.apply(purge_key("p"), 100, doc) == {"par-1": {purge_key("p"): index.view("par-1")[purge_key("p")]}}
    progress = copy.deepcopy(doc)
    progress["status"] = {"targetNodes": 3, "completedNodes": 1}
    assert index.apply(purge_key("p"), 101, progress) == {}
    done = copy.deepcopy(progress)
    done["status"]["completedAt"] = "2026-05-01T12:00:00Z"
    assert index.apply(purge_key("p"), 102, done) == {"par-1": {purge_key("p"): None}}
    assert index.apply(purge_key("p"), 103, None) == {}, "a completed task is in no view to leave"


def test_a_domain_brings_its_open_tasks_along() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    index.register("par-1")
    index.apply(purge_key("p"), 100, task_doc("Purge", "p", "news"))
    index.apply(purge_key("q"), 101, task_doc("Purge", "q", "news", completed=True))
    changes = index.apply(key("domains", "news"), 102, domain_doc("news", "tier=edge"))
    assert set(changes["par-1"]) == {key("domains", "news"), purge_key("p")}
    changes = index.apply(key("domains", "news"), 103, domain_doc("news", "tier=parent"))
    assert changes == {"par-1": {key("domains", "news"): None, purge_key("p"): None}}


def test_nodes_serving_a_domain_follow_the_view_rule() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    assert index.nodes_serving("shop") == {"par-1", "par-2", "par-3", "lyo-1"}
    assert index.nodes_serving("origin-shield") == {"fra-1"}
    assert index.nodes_serving("nope") == set()
    for domain in ("shop", "origin-shield"):
        assert index.nodes_serving(domain) == {
            node for node in ("par-1", "par-2", "par-3", "lyo-1", "fra-1") if key("domains", domain) in index.view(node)
        }
    cloud.put(key("nodes", "par-4"), node_doc("par-4", "par-edge"))
    assert "par-4" in index.nodes_serving("shop")


def test_load_indexes_tasks_like_apply() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.put(purge_key("p"), task_doc("Purge", "p", "shop"))
    fresh = FleetIndex()
    fresh.load([(k, 1, doc) for k, doc in cloud.docs.items()], cloud.revision)
    assert fresh.view("par-1") == cloud.view("par-1")


# --- incremental changes == recomputation, with tasks and domains moving ------------------

DOMAINS = ["a", "b"]


def domain_change(draw: st.DrawFn) -> tuple[str, Doc | None]:
    name = draw(st.sampled_from(DOMAINS))
    if draw(st.integers(0, 4)) == 0:
        return key("domains", name), None
    doc = domain_doc(name, draw(st.sampled_from(SELECTORS)))
    doc["status"] = {"hitRatio": draw(st.sampled_from([0.1, 0.2]))}
    return key("domains", name), doc


def task_change(draw: st.DrawFn) -> tuple[str, Doc | None]:
    kind, plural = draw(st.sampled_from([("Purge", "purges"), ("Prefetch", "prefetches")]))
    name = draw(st.sampled_from(["t1", "t2", "t3"]))
    if draw(st.integers(0, 5)) == 0:
        return key(plural, name), None
    doc = task_doc(
        kind,
        name,
        draw(st.sampled_from([*DOMAINS, "other"])),
        completed=draw(st.integers(0, 3)) == 0,
        urls=[draw(st.sampled_from(["/x", "/y"]))],
    )
    if "status" not in doc:
        doc["status"] = {"completedNodes": draw(st.integers(0, 2))}
    return key(plural, name), doc


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, Doc | None]:
    make: Callable[[st.DrawFn], tuple[str, Doc | None]] = draw(
        st.sampled_from([site_change, node_change, domain_change, task_change, task_change])
    )
    return make(draw)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(changes(), min_size=1, max_size=40), st.lists(st.sampled_from(NODES), max_size=4, unique=True))
def test_incremental_changes_equal_recomputed_views(history: list[Any], registered: list[str]) -> None:
    def serving_matches_views(index: FleetIndex) -> None:
        for domain in DOMAINS:
            serving = {n for n in NODES if key("domains", domain) in index.view(n)}
            assert index.nodes_serving(domain) == serving

    replay(FleetIndex(), history, registered, serving_matches_views)
