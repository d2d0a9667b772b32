"""Elastic sites, the cloud's half: Activating, readiness-gated announcement, slow-activation warnings.

Pure decisions on a fake clock (readiness from Node and Workload documents,
the Inactive -> Activating -> Active path, the timeout Warning, demand
falling while activating), then the controller on a real store with
in-memory Node and Workload lists: every step in status and Events, the
ready count in ``status.message``, and the GSLB's explanation of an
Activating site.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from edgefleet.api import parse
from edgefleet.api.documents import StoredDocument
from edgefleet.api.events import INFO as EVENTS
from edgefleet.api.sites import INFO as SITES
from edgefleet.api.sites import Activation, Site
from edgefleet.cloud.controllers.siteactivation import (
    ACTIVATING,
    ACTIVE,
    INACTIVE,
    SiteActivationController,
    SiteReadiness,
    SiteState,
    Transition,
    decide,
    progress,
    readiness,
    slow,
)
from edgefleet.cloud.fleetmetrics import FleetCollector
from edgefleet.cloud.registry import Registry
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.policy import Client, RoutingPolicy, choose
from edgefleet.store import open_store
from edgefleet.sync.views import FleetIndex, project_site
from tests.cloud.test_siteactivation import T0, Clock, at, site

Doc = dict[str, Any]
ELASTIC = {"activateAbove": 50, "deactivateBelow": 10, "forSeconds": 60, "drainSeconds": 120, "readySeconds": 30}


def elastic_site(name: str = "ams-edge", min_ready: int = 1, **status: Any) -> Doc:
    doc = site(name, **status)
    doc["spec"]["activation"] = {**ELASTIC, "minReadyNodes": min_ready}
    return doc


def node(name: str, site_name: str = "ams-edge", *, phase: str = "Ready", **workloads: Doc) -> Doc:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"site": site_name, "addresses": ["192.0.2.1"]},
        "status": {"phase": phase, "workloads": workloads},
    }


def workload(name: str, builtin: str | None = "cache") -> Doc:
    template: Doc = {"command": ["edgefleet", "cache"]}
    if builtin is not None:
        template["builtin"] = builtin
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name},
        "spec": {"template": template},
    }


DOMAIN = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Domain",
    "metadata": {"name": "shop"},
    "spec": {"hostnames": ["shop.test"], "origins": [{"url": "http://127.0.0.1:9"}]},
}
RUNNING = {"state": "Running", "ready": True}
STARTING = {"state": "Running", "ready": False}
DOWN = {"state": "ScaledDown", "ready": False}
WORKLOADS = [workload("cache"), workload("web", builtin=None)]


def run(doc: Doc, samples: Sequence[tuple[float, float, SiteReadiness]], state: SiteState) -> list[Transition | None]:
    return [decide(doc, qps, state, T0 + t, ready) for t, qps, ready in samples]


# -- readiness ---------------------------------------------------------------------------------------


def test_readiness_counts_nodes_with_a_cache_and_those_ready() -> None:
    nodes = [
        node("a1", cache=RUNNING),
        node("a2", cache=STARTING),
        node("a3", cache=DOWN),
        node("a4", phase="NotReady", cache=RUNNING),  # its report may be stale
        node("a5", web=RUNNING),  # no cache: nothing to wait for
        node("b1", "bcn-edge", cache=RUNNING, web={"state": "Failed"}),
        node("b2", "bcn-edge", cache=RUNNING),
    ]
    nodes[-1]["status"]["purges"] = [{"name": "p1", "uid": "u1", "state": "Pending"}]  # missed while scaled down
    assert readiness(nodes, WORKLOADS) == {"ams-edge": SiteReadiness(4, 1), "bcn-edge": SiteReadiness(2, 1)}
    nodes[-1]["status"]["purges"] = [{"name": "p1", "uid": "u1", "state": "Done"}]
    assert readiness(nodes, WORKLOADS)["bcn-edge"] == SiteReadiness(2, 2)
    assert readiness(nodes, [workload("web", builtin=None)]) == {}, "no elastic workload, nothing counted"
    assert readiness([{"status": "junk"}, {}], WORKLOADS) == {}


def test_min_ready_nodes_is_capped_at_the_nodes_that_run_a_cache() -> None:
    activation = Activation.model_validate({"minReadyNodes": 3})
    assert SiteReadiness(2, 0).needed(activation) == 2
    assert SiteReadiness(5, 1).describe(activation) == "1 of 5 nodes ready (needs 3)"


# -- decisions ------------------------------------------------------------------------------------


def test_demand_makes_an_inactive_site_activating_then_active_once_caches_are_ready() -> None:
    doc = elastic_site(min_ready=2, phase=INACTIVE, active=False, lastTransitionTime=at(0))
    state = SiteState()
    assert run(doc, [(0, 80.0, SiteReadiness(2, 0)), (60, 80.0, SiteReadiness(2, 0))], state) == [
        None,
        Transition(ACTIVATING, "SiteActivating"),
    ]
    doc["status"] |= {"phase": ACTIVATING, "lastTransitionTime": at(60)}
    samples = [(61, 80.0, SiteReadiness(2, 0)), (62, 80.0, SiteReadiness(2, 1)), (63, 80.0, SiteReadiness(2, 2))]
    assert run(doc, samples, state) == [None, None, Transition(ACTIVE, "SiteActivated")]


def test_a_site_without_caches_is_announced_at_once() -> None:
    doc = elastic_site(phase=INACTIVE, active=False)
    assert run(doc, [(0, 80.0, SiteReadiness()), (60, 80.0, SiteReadiness())], SiteState())[-1] == (
        ACTIVE,
        "SiteActivated",
    )


def test_demand_falling_while_activating_deactivates_again() -> None:
    doc = elastic_site(phase=ACTIVATING, active=False, lastTransitionTime=at(0))
    waiting = SiteReadiness(1, 0)
    samples = [(0, 30.0, waiting), (10, 5.0, waiting), (69, 5.0, waiting), (70, 5.0, waiting)]
    assert run(doc, samples, SiteState()) == [None, None, None, Transition(INACTIVE, "SiteDeactivated")]


def test_an_always_on_site_never_waits_for_its_caches() -> None:
    doc = site(always_on=True, phase=ACTIVATING, active=False)
    assert run(doc, [(0, 0.0, SiteReadiness(3, 0))], SiteState()) == [Transition(ACTIVE, "SiteActivated")]


def test_a_slow_activation_warns_every_ready_seconds_and_the_message_follows_the_count() -> None:
    doc = elastic_site(phase=ACTIVATING, active=False, lastTransitionTime=at(0), message="x")
    state, waiting = SiteState(), SiteReadiness(2, 0)
    warnings = []
    for t in (10, 29, 30, 45, 59, 60):
        decide(doc, 80.0, state, T0 + t, waiting)
        warnings.append(slow(doc, waiting, state, T0 + t))
    assert [w is not None for w in warnings] == [False, False, True, False, False, True]
    assert warnings[2] is not None and warnings[2].startswith("activating for 30s: 0 of 2 nodes ready (needs 1)")
    message = progress(doc, waiting)
    assert message is not None and message.startswith("activating: 0 of 2")
    doc["status"]["message"] = message
    assert progress(doc, waiting) is None, "unchanged: no write"
    assert progress(elastic_site(phase=ACTIVE), waiting) is None


def test_activating_is_a_phase_of_the_site_model() -> None:
    parsed = parse(elastic_site(phase=ACTIVATING, active=False))
    assert isinstance(parsed, Site) and parsed.status.phase == ACTIVATING
    assert parsed.spec.activation is not None and parsed.spec.activation.ready_seconds == 30


# -- the controller on a real store ----------------------------------------------------------------


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    yield Registry(store)
    await store.close()


async def reasons(registry: Registry, name: str = "ams-edge") -> list[tuple[str, str]]:
    items = (await registry.list(EVENTS)).items
    mine = [e for e in items if e["spec"]["involvedObject"] == {"kind": "Site", "name": name}]
    mine.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["spec"]["type"], e["spec"]["reason"]) for e in mine]


async def test_the_controller_gates_the_announcement_on_ready_caches(registry: Registry) -> None:
    await registry.create(SITES, elastic_site())
    inactive = {"phase": INACTIVE, "active": False, "lastTransitionTime": at(0)}
    await registry.patch(SITES, "ams-edge", {"status": inactive}, status=True)
    nodes = [node("a1", cache=DOWN), node("a2", cache=DOWN)]
    demand, clock = {"eu-west": 80.0}, Clock()
    controller = SiteActivationController(
        registry,
        lambda: demand,
        clock=clock,
        nodes=lambda: cast(list[StoredDocument], nodes),
        workloads=lambda: cast(list[StoredDocument], WORKLOADS),
    )
    await controller.sync_once()
    clock.now += 60
    assert await controller.sync_once() == 1
    status = (await registry.get(SITES, "ams-edge"))["status"]
    assert (status["phase"], status["active"]) == (ACTIVATING, False)
    assert status["message"].startswith("activating: 0 of 2 nodes ready (needs 1)")

    fleet = FleetState()  # what `edgefleet route` and the DNS answers see: no users, and why
    fleet.apply("Site", "ams-edge", await registry.get(SITES, "ams-edge"))
    fleet.apply("Domain", "shop", DOMAIN)
    [view] = fleet.sites_for("shop", clock.now)
    assert not view.eligible and view.why_inactive == "activating: 0 of 2 nodes ready (needs 1)"
    route = choose(Client("198.51.100.7", None), [view], RoutingPolicy("geo"), key="shop.test", draw=0.5)
    assert route.site is None
    assert route.candidates[0].note.startswith("inactive (activating: 0 of 2 nodes ready (needs 1))")

    nodes[0] = node("a1", cache=STARTING)
    clock.now += 31
    assert await controller.sync_once() == 0
    assert ("Warning", "SiteActivationSlow") in await reasons(registry)
    nodes[0] = node("a1", cache=RUNNING)
    assert await controller.sync_once() == 1
    status = (await registry.get(SITES, "ams-edge"))["status"]
    assert (status["phase"], status["active"]) == (ACTIVE, True)
    assert status["message"].startswith("caches ready: 1 of 2 nodes ready")
    assert await reasons(registry) == [
        ("Normal", "SiteActivating"),
        ("Warning", "SiteActivationSlow"),
        ("Normal", "SiteActivated"),
    ]


# -- what nodes and Prometheus see -----------------------------------------------------------------


def test_nodes_see_their_sites_phase_and_nothing_else_of_its_status() -> None:
    doc = elastic_site(phase=INACTIVE, active=False, loadGbps=1.5, healthyNodes=2, message="drained")
    assert project_site(doc)["status"] == {"phase": INACTIVE}
    assert "status" not in project_site(site())


def test_the_cloud_exports_each_sites_phase_as_a_gauge() -> None:
    index = FleetIndex()
    index.apply("/registry/sites/ams-edge", 2, cast(StoredDocument, elastic_site(phase=ACTIVATING, active=False)))
    index.apply("/registry/sites/bcn-edge", 3, cast(StoredDocument, site("bcn-edge")))
    families = {family.name: family for family in FleetCollector(lambda: index, dict).collect()}
    samples = {(s.labels["site"], s.labels["phase"]): s.value for s in families["edgefleet_site_phase"].samples}
    assert samples == {
        ("ams-edge", "Active"): 0.0,
        ("ams-edge", "Draining"): 0.0,
        ("ams-edge", "Inactive"): 0.0,
        ("ams-edge", "Activating"): 1.0,
    }, "one series per phase of a site with a phase; none for a site without"
