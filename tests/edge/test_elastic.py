"""Elastic workloads, the agent's half: which workloads its Site holds at zero, and the lifecycle of a held one.

The rule (:mod:`edgefleet.edge.elastic`) reads the Site of the node's view;
the lifecycle (:class:`~edgefleet.edge.lifecycle.Lifecycle`) shows a held
workload as ``ScaledDown`` (not a failure, no restart), keeps it down across
an agent restart and starts it again on ``scale_up``. test_supervisor.py
proves the same with a real process.
"""

from __future__ import annotations

from typing import Any

from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.edge.backoff import RESTARTS
from edgefleet.edge.elastic import scaled_down, site_phase
from edgefleet.edge.lifecycle import Finished, Found, Lifecycle, Start
from edgefleet.edge.processes import ExitStatus

CACHE = WorkloadTemplate.model_validate({"builtin": "cache", "command": ["edgefleet", "cache"]})
WEB = WorkloadTemplate.model_validate({"command": ["python3", "-m", "http.server"]})


def site(phase: str | None, *, always_on: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "Site", "metadata": {"name": "lab"}, "spec": {"alwaysOn": always_on}}
    if phase is not None:
        doc["status"] = {"phase": phase}
    return doc


def test_only_the_caches_of_an_inactive_elastic_site_are_held_at_zero() -> None:
    desired = {"cache": CACHE, "web": WEB}
    held = scaled_down("lab", site("Inactive"), desired)
    assert list(held) == ["cache"]
    assert "site lab is Inactive" in held["cache"] and "disk tier kept" in held["cache"]
    for phase in ("Active", "Draining", "Activating", None):
        assert scaled_down("lab", site(phase), desired) == {}, phase


def test_an_always_on_or_unknown_site_never_scales_anything_down() -> None:
    assert scaled_down("lab", site("Inactive", always_on=True), {"cache": CACHE}) == {}
    assert scaled_down("lab", None, {"cache": CACHE}) == {}, "no Site in the view yet: run"
    assert site_phase({"spec": {}, "status": {"phase": "Inactive"}}) is None, "alwaysOn defaults to true"
    assert site_phase({"spec": {"alwaysOn": False}, "status": "junk"}) is None


def test_a_held_workload_is_scaled_down_not_failed_and_comes_back_without_a_restart() -> None:
    life = Lifecycle("rev-1", policy="Always", probe=None, backoff=RESTARTS)
    life.starting()
    life.started(pid=42, started_at=100.0)
    life.stopping()
    life.stopped(ExitStatus(code=0))
    life.scaled_down("site lab is Inactive")
    status = life.status()
    assert (status.state, status.ready, status.restarts, status.message) == (
        "ScaledDown",
        False,
        0,
        "site lab is Inactive",
    )
    assert life.readiness_known and life.scaled
    assert life.scale_up() == Start()
    assert not life.scaled and life.restarts == 0


def test_a_scaled_down_record_stays_down_after_an_agent_restart() -> None:
    life = Lifecycle("rev-1", policy="Always", probe=None, backoff=RESTARTS)
    found = Found(revision="rev-1", restarts=2, scaled_down=True, message="site lab is Inactive")
    assert life.resume(found) == Finished()
    assert (life.status().state, life.status().restarts, life.scaled) == ("ScaledDown", 2, True)
    other = Lifecycle("rev-2", policy="Always", probe=None, backoff=RESTARTS)
    assert other.resume(found) == Start(), "a held record of another revision: the new one decides afresh"
