"""Node lifecycle: the pure verdicts, then the controller on a real store (test clock, then real time)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgefleet.api.common import format_timestamp
from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.nodelifecycle import (
    NEVER_HEARD,
    NodeLifecycleController,
    Thresholds,
    Verdict,
    expected_phase,
    status_patch,
)
from edgefleet.cloud.registry import Registry, VersionConflict
from edgefleet.store.interface import Store
from tests.waiting import eventually

from .conftest import site
from .test_identity import Clock, node_manifest

NODES = kind_info("Node")
SITES = kind_info("Site")
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
HB = format_timestamp(T0)
DEFAULT = Thresholds()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the pure rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "phase"),
    [
        (0, "Ready"),
        (39.9, "Ready"),
        (40, "NotReady"),
        (299, "NotReady"),
        (300, "Unknown"),
        (86400, "Unknown"),
        (-5, "Ready"),
    ],  # a heartbeat from a clock slightly ahead is fresh
)
def test_phase_follows_the_silence(seconds: float, phase: str) -> None:
    assert expected_phase(HB, at(seconds), DEFAULT).phase == phase


def test_messages_name_the_heartbeat_and_do_not_change_with_time() -> None:
    late = expected_phase(HB, at(41), DEFAULT)
    assert late == expected_phase(HB, at(100), DEFAULT)
    assert late.message is not None and HB in late.message and "40s" in late.message
    assert "keeps its workloads" in late.message
    assert expected_phase(HB, at(1), DEFAULT) == Verdict("Ready", None)


def test_a_heartbeat_from_the_future_is_not_believed() -> None:
    """A forged lastHeartbeat dated 2099 must not keep a silent node Ready for ever (issue 12, item 2)."""
    forged = "2099-01-01T00:00:00Z"
    assert expected_phase(forged, at(0), DEFAULT) == Verdict("Unknown", NEVER_HEARD)
    assert expected_phase(forged, at(41), DEFAULT, last_alive=at(0)).phase == "NotReady"
    assert expected_phase(format_timestamp(at(6)), at(0), DEFAULT).phase == "Unknown"  # beyond the 5 s of skew


def test_a_node_never_heard_from_is_unknown() -> None:
    assert expected_phase(None, at(0), DEFAULT) == Verdict("Unknown", NEVER_HEARD)
    assert "edgefleet edge join" in NEVER_HEARD


def test_silence_counts_from_when_the_controller_started_observing() -> None:
    since = at(1000)  # a cloud outage: the controller (re)started long after the last heartbeat
    assert expected_phase(HB, at(1010), DEFAULT, observing_since=since).phase == "Ready"
    assert expected_phase(HB, at(1040), DEFAULT, observing_since=since).phase == "NotReady"
    assert expected_phase(HB, at(1300), DEFAULT, observing_since=since).phase == "Unknown"


def node_doc(status: dict[str, Any] | None = None, revision: str = "7") -> StoredDocument:
    doc = node_manifest()
    doc["metadata"]["resourceVersion"] = revision
    doc["status"] = status or {}
    return doc


def test_status_patch_only_demotes_and_carries_a_precondition() -> None:
    fresh = node_doc({"phase": "NotReady", "lastHeartbeat": HB})
    assert status_patch(fresh, at(1), DEFAULT) is None, "Ready is the hub's to write"
    late = status_patch(node_doc({"phase": "Ready", "lastHeartbeat": HB}), at(41), DEFAULT)
    assert late is not None
    assert late["metadata"] == {"resourceVersion": "7"}
    assert set(late) == {"metadata", "status"} and set(late["status"]) == {"phase", "message"}
    assert late["status"]["phase"] == "NotReady"


def test_status_patch_is_none_when_nothing_changes() -> None:
    verdict = expected_phase(HB, at(41), DEFAULT)
    done = node_doc({"phase": verdict.phase, "message": verdict.message, "lastHeartbeat": HB})
    assert status_patch(done, at(45), DEFAULT) is None
    assert status_patch(node_doc({"phase": "Unknown", "message": NEVER_HEARD}), at(0), DEFAULT) is None
    assert status_patch(node_doc(), at(0), DEFAULT) is not None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"not_ready_after": 0}, "must be positive"),
        ({"period": -1}, "must be positive"),
        ({"not_ready_after": 60, "unknown_after": 60}, "--node-unknown-after (60s) must be longer"),
    ],
)
def test_bad_thresholds_say_which_flag(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Thresholds(**kwargs)


# -- the controller on a store -------------------------------------------------------


async def heartbeat(registry: Registry, name: str, moment: datetime) -> None:
    """What the hub writes on each status report."""
    patch = {"status": {"phase": "Ready", "message": None, "lastHeartbeat": format_timestamp(moment), "hub": "h1"}}
    await registry.patch(NODES, name, patch, status=True)


async def phase(registry: Registry, name: str) -> str | None:
    doc = await registry.get(NODES, name)
    value: str | None = (doc.get("status") or {}).get("phase")
    return value


async def test_controller_demotes_a_silent_node_and_touches_nothing_else(store: Store) -> None:
    registry = Registry(store)
    clock = Clock()
    clock.now = T0
    await registry.create(SITES, site("par-edge"))
    await registry.create(NODES, node_manifest("par-edge-1"))
    await registry.create(NODES, node_manifest("par-edge-2"))
    await heartbeat(registry, "par-edge-1", T0)
    await heartbeat(registry, "par-edge-2", T0)
    site_before = await registry.get(SITES, "par-edge")
    spec_before = (await registry.get(NODES, "par-edge-1"))["spec"]
    controller = NodeLifecycleController(registry, Thresholds(40, 300), clock=clock)

    clock.now = at(30)
    assert await controller.sync_once() == 0
    await heartbeat(registry, "par-edge-2", at(30))  # par-edge-2 keeps reporting
    clock.now = at(45)
    assert await controller.sync_once() == 1
    assert (await phase(registry, "par-edge-1"), await phase(registry, "par-edge-2")) == ("NotReady", "Ready")
    revision = await store.current_revision()
    assert await controller.sync_once() == 0
    assert await store.current_revision() == revision, "an unchanged verdict writes nothing"
    clock.now = at(400)
    assert await controller.sync_once() == 2
    assert (await phase(registry, "par-edge-1"), await phase(registry, "par-edge-2")) == ("Unknown", "Unknown")

    node = await registry.get(NODES, "par-edge-1")
    assert node["spec"] == spec_before and node["metadata"]["generation"] == 1
    assert await registry.get(SITES, "par-edge") == site_before
    assert len((await registry.list(NODES)).items) == 2

    await heartbeat(registry, "par-edge-1", at(400))  # the node comes back: the hub promotes it
    assert await controller.sync_once() == 0
    assert await phase(registry, "par-edge-1") == "Ready"


async def test_a_stale_verdict_loses_to_a_heartbeat(store: Store) -> None:
    registry = Registry(store)
    await registry.create(NODES, node_manifest())
    await heartbeat(registry, "par-edge-1", T0)
    stale = await registry.get(NODES, "par-edge-1")
    patch = status_patch(stale, at(100), DEFAULT)
    assert patch is not None
    await heartbeat(registry, "par-edge-1", at(99))  # lands between the controller's read and write
    with pytest.raises(VersionConflict):
        await registry.patch(NODES, "par-edge-1", patch, status=True)
    assert await phase(registry, "par-edge-1") == "Ready"


async def test_controller_loop_in_real_time(store: Store) -> None:
    registry = Registry(store)
    await registry.create(NODES, node_manifest("par-edge-1"))
    await registry.create(NODES, node_manifest("never-joined"))
    await heartbeat(registry, "par-edge-1", datetime.now(UTC))
    controller = NodeLifecycleController(registry, Thresholds(not_ready_after=0.5, unknown_after=1.0, period=0.05))
    seen: list[str | None] = []

    async def reached(wanted: str) -> bool:
        current = await phase(registry, "par-edge-1")
        if not seen or seen[-1] != current:
            seen.append(current)
        return current == wanted

    task = asyncio.create_task(controller.run())
    try:
        await eventually(lambda: reached("NotReady"))
        await eventually(lambda: reached("Unknown"))
        assert seen == ["Ready", "NotReady", "Unknown"]
        assert await phase(registry, "never-joined") == "Unknown"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- liveness from the hubs' session lists -----------------------------------------


def test_an_alive_node_is_ready_whatever_its_last_heartbeat() -> None:
    assert expected_phase(HB, at(3600), DEFAULT, alive=True) == Verdict("Ready", None)
    assert expected_phase(None, at(0), DEFAULT, alive=True) == Verdict("Ready", None)


def test_silence_counts_from_the_last_time_the_node_was_seen_alive() -> None:
    assert expected_phase(HB, at(100), DEFAULT, last_alive=at(70)).phase == "Ready"
    assert expected_phase(HB, at(111), DEFAULT, last_alive=at(70)).phase == "NotReady"
    assert expected_phase(None, at(10), DEFAULT, last_alive=at(0)).phase == "Ready", "seen alive: not 'never heard'"


def test_an_alive_node_is_promoted_and_a_silent_one_loses_its_hub_and_votes() -> None:
    demoted = node_doc({"phase": "NotReady", "lastHeartbeat": HB})
    demoted["metadata"]["resourceVersion"] = "9"
    promote = status_patch(demoted, at(500), DEFAULT, alive=True)
    assert promote == {"metadata": {"resourceVersion": "9"}, "status": {"phase": "Ready", "message": None}}
    assert status_patch(node_doc({"phase": "Ready", "lastHeartbeat": HB}), at(500), DEFAULT, alive=True) is None
    voter = node_doc({"phase": "Ready", "lastHeartbeat": HB, "hub": "h1", "peerVotes": {"b": {"healthy": False}}})
    patch = status_patch(voter, at(41), DEFAULT)
    assert patch is not None
    assert patch["status"]["hub"] is None and patch["status"]["peerVotes"] is None, "a silent voter's votes go"


async def test_controller_reads_liveness_and_writes_nothing_for_idle_alive_nodes(store: Store) -> None:
    registry = Registry(store)
    clock = Clock()
    clock.now = T0
    await registry.create(SITES, site("par-edge"))
    for name in ("par-edge-1", "par-edge-2"):
        await registry.create(NODES, node_manifest(name))
        await heartbeat(registry, name, T0)
    alive = {"par-edge-1", "par-edge-2"}
    controller = NodeLifecycleController(registry, Thresholds(40, 300), clock=clock, liveness=lambda: alive)
    revision = await store.current_revision()
    for minute in range(1, 30):
        clock.now = at(60 * minute)
        assert await controller.sync_once() == 0
    assert await store.current_revision() == revision, "alive nodes cost no writes however long they idle"
    alive.discard("par-edge-2")
    clock.now = at(60 * 29 + 39)
    assert await controller.sync_once() == 0, "within the grace measured from when it was last seen alive"
    clock.now = at(60 * 29 + 41)
    assert await controller.sync_once() == 1
    assert await phase(registry, "par-edge-2") == "NotReady"
    alive.add("par-edge-2")
    assert await controller.sync_once() == 1
    assert await phase(registry, "par-edge-2") == "Ready", "back in a hub's list: promoted"
