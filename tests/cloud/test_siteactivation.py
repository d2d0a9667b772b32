"""Site activation: the spec, the pure decisions on a fake clock, and the controller on a real store.

Also the cloud's event helper (record, retention), which the controller
uses to say why each site changed phase.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.common import format_timestamp
from edgefleet.api.errors import ValidationFailed
from edgefleet.api.events import INFO as EVENTS
from edgefleet.api.sites import INFO as SITES
from edgefleet.api.sites import Activation, Site
from edgefleet.cloud import events
from edgefleet.cloud.controllers.siteactivation import (
    ACTIVE,
    DRAINING,
    INACTIVE,
    SiteActivationController,
    SiteState,
    Transition,
    decide,
    explain,
)
from edgefleet.cloud.registry import Registry
from edgefleet.store import open_store
from tests.waiting import eventually

Doc = dict[str, Any]
T0 = 1_700_000_000.0
THRESHOLDS = {"activateAbove": 50, "deactivateBelow": 10, "forSeconds": 60, "drainSeconds": 120}


def site(name: str = "ams-edge", *, always_on: bool = False, region: str = "eu-west", **status: Any) -> Doc:
    doc: Doc = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "generation": 1},
        "spec": {
            "region": region,
            "location": {"lat": 52.37, "lon": 4.9, "country": "NL"},
            "capacityGbps": 10,
            "alwaysOn": always_on,
            "activation": dict(THRESHOLDS),
        },
        "status": status,
    }
    return doc


def at(seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(T0 + seconds, UTC))


def run(doc: Doc, samples: Sequence[tuple[float, float]], state: SiteState | None = None) -> list[Transition | None]:
    """decide() at each (seconds after T0, qps), with one state."""
    state = state if state is not None else SiteState()
    return [decide(doc, qps, state, T0 + t) for t, qps in samples]


# -- the spec ------------------------------------------------------------------------------------


def test_activation_thresholds_must_be_apart() -> None:
    doc = site()
    doc["spec"]["activation"] = {"activateAbove": 10, "deactivateBelow": 10}
    with pytest.raises(ValidationFailed) as info:
        parse(doc)
    assert [str(e) for e in info.value.errors] == [
        "spec.activation.deactivateBelow: must be less than activateAbove (10), or the site would flap"
    ]


def test_activation_is_optional_with_defaults_and_phase_is_typed() -> None:
    doc = site(phase="Draining", active=False, lastTransitionTime=at(0))
    del doc["spec"]["activation"]
    parsed = parse(doc)
    assert isinstance(parsed, Site)
    assert parsed.spec.activation is None
    assert Activation().deactivate_below < Activation().activate_above
    doc["status"]["phase"] = "Sleeping"
    with pytest.raises(ValidationFailed, match=r"status\.phase"):
        parse(doc)


# -- decisions -------------------------------------------------------------------------------------


def test_an_always_on_site_is_active_whatever_the_demand() -> None:
    assert run(site(always_on=True), [(0, 0.0)]) == [Transition(ACTIVE, "SiteActivated")]
    assert run(site(always_on=True, phase=ACTIVE, active=True), [(0, 0.0), (600, 0.0)]) == [None, None]
    assert run(site(always_on=True, phase=INACTIVE, active=False), [(0, 0.0)])[0] == (ACTIVE, "SiteActivated")


def test_a_site_without_a_phase_starts_active_unless_it_says_inactive() -> None:
    assert run(site(), [(0, 0.0)]) == [(ACTIVE, "SiteActivated")]
    assert run(site(active=False), [(0, 500.0)]) == [(INACTIVE, "SiteDeactivated")]


def test_an_inactive_site_activates_after_demand_stays_above_for_the_period() -> None:
    samples = [(0, 80.0), (30, 80.0), (59, 80.0), (60, 80.0)]
    assert run(site(phase=INACTIVE, active=False), samples) == [None, None, None, (ACTIVE, "SiteActivated")]


def test_a_dip_restarts_the_hold_and_demand_between_thresholds_changes_nothing() -> None:
    samples = [(0, 80.0), (50, 30.0), (55, 80.0), (110, 80.0), (115, 80.0)]
    assert run(site(phase=INACTIVE, active=False), samples) == [None, None, None, None, (ACTIVE, "SiteActivated")]
    between = [(t, 30.0) for t in range(0, 600, 30)]
    assert set(run(site(phase=ACTIVE, active=True), between)) == {None}
    assert set(run(site(phase=INACTIVE, active=False), between)) == {None}


def test_an_active_site_drains_after_demand_stays_below_for_the_period() -> None:
    samples = [(0, 5.0), (59, 5.0), (60, 5.0)]
    assert run(site(phase=ACTIVE, active=True), samples) == [None, None, (DRAINING, "SiteDraining")]
    assert run(site(phase=ACTIVE, active=True), [(0, 10.0), (600, 10.0)]) == [None, None], "not below"


def test_a_draining_site_is_deactivated_after_the_drain_time() -> None:
    doc = site(phase=DRAINING, active=False, lastTransitionTime=at(0))
    # the stamp has whole seconds: the drain began within [0, 1), so it counts from 1 and is never short
    assert run(doc, [(60, 0.0), (120, 0.0), (121, 0.0)]) == [None, None, (INACTIVE, "SiteDeactivated")]
    precise = site(phase=DRAINING, active=False, lastTransitionTime="2023-11-14T22:13:20.5Z")  # T0 + 0.5
    assert run(precise, [(120.4, 0.0), (120.5, 0.0)]) == [None, (INACTIVE, "SiteDeactivated")]


def test_the_drain_time_is_counted_from_first_sight_when_the_status_has_no_time() -> None:
    doc = site(phase=DRAINING, active=False)
    assert run(doc, [(1000, 0.0), (1119, 0.0), (1120, 0.0)]) == [None, None, (INACTIVE, "SiteDeactivated")]


def test_demand_rising_while_draining_makes_the_site_active_at_once() -> None:
    doc = site(phase=DRAINING, active=False, lastTransitionTime=at(0))
    assert run(doc, [(10, 30.0), (20, 51.0)]) == [None, (ACTIVE, "SiteActivated")]


def test_explanations_carry_the_measured_demand_and_the_thresholds() -> None:
    draining = explain(site(phase=ACTIVE), Transition(DRAINING, "SiteDraining"), 3.25)
    assert "eu-west: 3.2 qps" in draining and "deactivateBelow 10 qps for 60s" in draining
    assert "120s" in draining
    activated = explain(site(phase=INACTIVE), Transition(ACTIVE, "SiteActivated"), 81.0)
    assert "81.0 qps" in activated and "activateAbove 50 qps for 60s" in activated
    again = explain(site(phase=DRAINING), Transition(ACTIVE, "SiteActivated"), 70.0)
    assert "while draining" in again
    off = explain(site(phase=DRAINING), Transition(INACTIVE, "SiteDeactivated"), 0.0)
    assert "drainSeconds (120s)" in off
    assert "alwaysOn" in explain(site(always_on=True), Transition(ACTIVE, "SiteActivated"), 0.0)


# -- the controller on a real store -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    yield Registry(store)
    await store.close()


async def phase_of(registry: Registry, name: str) -> str | None:
    phase: str | None = ((await registry.get(SITES, name)).get("status") or {}).get("phase")
    return phase


async def events_of(registry: Registry, name: str) -> list[tuple[str, str]]:
    items = (await registry.list(EVENTS)).items
    mine = [e for e in items if e["spec"]["involvedObject"] == {"kind": "Site", "name": name}]
    mine.sort(key=lambda e: (e["spec"]["lastTimestamp"], int(e["metadata"]["resourceVersion"])))
    return [(e["spec"]["reason"], e["spec"]["message"]) for e in mine]


async def test_the_controller_walks_a_site_through_its_phases_and_records_events(registry: Registry) -> None:
    for doc in (
        site("ams-edge"),
        site("par-edge", always_on=True, region="eu-west"),
        site("nyc-edge", region="us-east"),
    ):
        await registry.create(SITES, doc)
    demand = {"eu-west": 0.0, "us-east": 80.0}
    clock = Clock()
    controller = SiteActivationController(registry, lambda: demand, clock=clock)

    assert await controller.sync_once() == 3  # every site gets its first phase
    ams = await registry.get(SITES, "ams-edge")
    assert (ams["status"]["phase"], ams["status"]["active"]) == (ACTIVE, True)
    assert ams["status"]["observedGeneration"] == 1
    assert await controller.sync_once() == 0, "nothing due: no writes"

    clock.now += 60
    assert await controller.sync_once() == 1
    ams = await registry.get(SITES, "ams-edge")
    assert (ams["status"]["phase"], ams["status"]["active"]) == (DRAINING, False)
    assert ams["status"]["lastTransitionTime"] == at(60)

    clock.now += 120
    assert await controller.sync_once() == 0, "the stamp has whole seconds: the drain counts from its end"
    clock.now += 1
    assert await controller.sync_once() == 1
    assert (await registry.get(SITES, "ams-edge"))["status"]["phase"] == INACTIVE

    demand["eu-west"] = 75.0
    assert await controller.sync_once() == 0
    clock.now += 60
    assert await controller.sync_once() == 1
    ams = await registry.get(SITES, "ams-edge")
    assert (ams["status"]["phase"], ams["status"]["active"]) == (ACTIVE, True)

    reasons = [reason for reason, _ in await events_of(registry, "ams-edge")]
    assert reasons == ["SiteActivated", "SiteDraining", "SiteDeactivated", "SiteActivated"]
    last_message = (await events_of(registry, "ams-edge"))[-1][1]
    assert "75.0 qps" in last_message and "activateAbove 50 qps" in last_message
    assert (await registry.get(SITES, "par-edge"))["status"]["phase"] == ACTIVE
    assert (await registry.get(SITES, "nyc-edge"))["status"]["phase"] == ACTIVE
    assert [r for r, _ in await events_of(registry, "par-edge")] == ["SiteActivated"]


async def test_no_demand_source_means_zero_demand(registry: Registry) -> None:
    await registry.create(SITES, site())
    clock = Clock()
    controller = SiteActivationController(registry, clock=clock)
    await controller.sync_once()
    clock.now += 60
    await controller.sync_once()
    assert (await registry.get(SITES, "ams-edge"))["status"]["phase"] == DRAINING


async def test_a_broken_demand_source_decides_nothing(registry: Registry) -> None:
    await registry.create(SITES, site())

    def broken() -> dict[str, float]:
        raise RuntimeError("meter gone")

    assert await SiteActivationController(registry, broken, clock=Clock()).sync_once() == 0
    assert (await registry.get(SITES, "ams-edge")).get("status", {}).get("phase") is None


async def test_a_site_changed_meanwhile_is_decided_again_next_round(registry: Registry) -> None:
    await registry.create(SITES, site())
    clock = Clock()
    controller = SiteActivationController(registry, clock=clock)
    await controller.sync_once()
    stale = await registry.get(SITES, "ams-edge")
    await registry.patch(SITES, "ams-edge", {"metadata": {"labels": {"touched": "yes"}}})
    clock.now += 60
    assert not await controller._apply(stale, Transition(DRAINING, "SiteDraining"), 0.0, clock.now)
    assert (await registry.get(SITES, "ams-edge"))["status"]["phase"] == ACTIVE
    assert [r for r, _ in await events_of(registry, "ams-edge")] == ["SiteActivated"], "no event without a write"
    assert await controller.sync_once() == 1
    assert (await registry.get(SITES, "ams-edge"))["status"]["phase"] == DRAINING


async def test_the_loop_runs_until_cancelled(registry: Registry) -> None:
    await registry.create(SITES, site())
    task = asyncio.create_task(SiteActivationController(registry, period=0.01).run())
    try:
        await eventually(lambda: phase_of(registry, "ams-edge"))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (await registry.get(SITES, "ams-edge"))["status"]["phase"] == ACTIVE


# -- events: record and retention --------------------------------------------------------------


async def test_record_names_the_event_after_its_object(registry: Registry) -> None:
    now = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    first = await events.record(
        registry, "Site", "ams-edge", "SiteDraining", "low demand", "Warning", source="tests", now=now
    )
    second = await events.record(registry, "Site", "ams-edge", "SiteDraining", "low demand", now=now)
    assert first["metadata"]["name"].startswith("ams-edge.") and first["metadata"]["name"] != second["metadata"]["name"]
    assert first["spec"] == {
        "involvedObject": {"kind": "Site", "name": "ams-edge"},
        "reason": "SiteDraining",
        "message": "low demand",
        "type": "Warning",
        "count": 1,
        "firstTimestamp": "2026-01-01T10:00:00Z",
        "lastTimestamp": "2026-01-01T10:00:00Z",
        "source": "tests",
    }
    with pytest.raises(ValidationFailed, match="CamelCase"):
        await events.record(registry, "Site", "ams-edge", "not camel", "x")


def test_event_names_fit_and_long_messages_are_cut() -> None:
    name = events.event_name("a" * 253, "0123456789ab")
    assert len(name) == 253 and name.endswith(".0123456789ab")
    doc = events.event_document(
        "Site", "x", "Why", "m" * 5000, type="Normal", source="s", now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert parse(doc).spec.message.endswith("...")


async def test_events_older_than_an_hour_are_deleted(registry: Registry) -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    old = await events.record(registry, "Site", "a", "SiteActivated", "old", now=now - timedelta(hours=1, seconds=1))
    fresh = await events.record(registry, "Site", "a", "SiteActivated", "fresh", now=now - timedelta(minutes=59))
    collector = events.EventCollector(registry, clock=lambda: now)
    assert await collector.collect_once() == 1
    names = {e["metadata"]["name"] for e in (await registry.list(EVENTS)).items}
    assert names == {fresh["metadata"]["name"]}
    assert old["metadata"]["name"] not in names
    assert await collector.collect_once() == 0
