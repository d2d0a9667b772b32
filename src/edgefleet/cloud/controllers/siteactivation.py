"""Site activation: switch ``alwaysOn: false`` sites on and off with the demand from their region.

The rule (:func:`decide`, pure but for the per-site :class:`SiteState` it
updates), with the thresholds of the Site's ``spec.activation`` (defaults
when left out) and the DNS demand of its ``spec.region`` in queries per
second:

- Inactive -> Active (``SiteActivated``) when demand has stayed above
  ``activateAbove`` for ``forSeconds``;
- Active -> Draining (``SiteDraining``) when demand has stayed below
  ``deactivateBelow`` for ``forSeconds``;
- Draining -> Inactive (``SiteDeactivated``) once the site has drained for
  ``drainSeconds`` (counted from ``status.lastTransitionTime``);
- Draining -> Active (``SiteActivated``) as soon as demand is above
  ``activateAbove`` again: the site still has its nodes and warm caches;
- ``alwaysOn`` sites are Active, whatever the demand;
- a site without ``status.phase`` (new, or from before phases existed)
  starts in the phase its ``status.active`` implies: Active unless it says
  false. Starting Active rather than Inactive means a new on-demand site is
  never cut off abruptly: it drains like any other when demand is low.

Two thresholds and a hold time are the hysteresis: demand hovering around
one value does not flap the site.

How: every ``period`` seconds the controller lists Sites, reads the demand
(``demand()``: region -> qps, wired by the cloud to its DNS server's
:class:`~edgefleet.gslb.demand.DemandMeter`; without it demand is zero),
decides for each site, and for each transition patches the Site's status
(``phase``, ``active`` true only in Active, ``lastTransitionTime``,
``observedGeneration``, ``message``) through the status path with the
site's resourceVersion as a precondition, then records an Event on the Site
saying why, with the measured demand and the thresholds. A conflict (the
site changed meanwhile) writes nothing and is decided again next round.

What it remembers: only since when each site's demand has been past a
threshold (:class:`SiteState`), in memory. The store cannot hold it
without a write per site per round, and losing it is safe: a new leader
(or a restart) simply watches the demand for ``forSeconds`` again before
acting. The drain start is in the store (``lastTransitionTime``). It runs
on one cloud replica at a time, under the leader election
``/system/leader/siteactivation``; with several replicas, the demand it
sees is its own replica's DNS server's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from edgefleet.api.common import format_timestamp, parse_timestamp
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.sites import INFO as SITES
from edgefleet.api.sites import Activation
from edgefleet.cloud import events
from edgefleet.cloud.controllers.loop import run_periodically
from edgefleet.cloud.registry import ObjectNotFound, Registry, RegistryError, VersionConflict
from edgefleet.store.interface import StoreError

log = logging.getLogger("edgefleet.cloud.controllers.siteactivation")

ACTIVE, DRAINING, INACTIVE = "Active", "Draining", "Inactive"
SITE_ACTIVATED, SITE_DRAINING, SITE_DEACTIVATED = "SiteActivated", "SiteDraining", "SiteDeactivated"
REASONS = {ACTIVE: SITE_ACTIVATED, DRAINING: SITE_DRAINING, INACTIVE: SITE_DEACTIVATED}
SOURCE = "site-activation-controller"
Demand = Callable[[], Mapping[str, float]]


def no_demand() -> Mapping[str, float]:
    """The demand when nothing measures it: none from anywhere."""
    return {}


class Transition(NamedTuple):
    """The phase a site moves to, and the Event reason that says so."""

    phase: str
    reason: str


@dataclass(slots=True)
class SiteState:
    """What the controller remembers about one site between rounds (in memory; see the module docstring)."""

    above_since: float | None = None  # demand above activateAbove since then (None: not now)
    below_since: float | None = None  # demand below deactivateBelow since then
    phase: str | None = None  # the phase seen last round
    phase_seen_since: float | None = None  # when that phase was first seen, if the status does not say

    def observe(self, phase: str, qps: float, activation: Activation, now: float) -> None:
        if qps > activation.activate_above:
            self.above_since = self.above_since if self.above_since is not None else now
        else:
            self.above_since = None
        if qps < activation.deactivate_below:
            self.below_since = self.below_since if self.below_since is not None else now
        else:
            self.below_since = None
        if phase != self.phase:
            self.phase, self.phase_seen_since = phase, now


# -- the rule (pure) ---------------------------------------------------------------------------


def _spec(site: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = site.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(site: Mapping[str, Any]) -> Mapping[str, Any]:
    status = site.get("status")
    return status if isinstance(status, dict) else {}


def activation_of(site: Mapping[str, Any]) -> Activation:
    """The site's thresholds (the defaults when ``spec.activation`` is left out)."""
    try:
        return Activation.model_validate(_spec(site).get("activation") or {})
    except ValidationError:  # stored objects were validated; be lenient anyway
        return Activation()


def current_phase(site: Mapping[str, Any]) -> str:
    """``status.phase``, or what ``status.active`` implies when there is none (Active unless false)."""
    phase = _status(site).get("phase")
    if phase in (ACTIVE, DRAINING, INACTIVE):
        return str(phase)
    return INACTIVE if _status(site).get("active") is False else ACTIVE


def _phase_since(site: Mapping[str, Any], state: SiteState, now: float) -> float:
    stamp = _status(site).get("lastTransitionTime")
    if isinstance(stamp, str):
        try:
            return parse_timestamp(stamp).timestamp()
        except ValueError:
            pass
    return state.phase_seen_since if state.phase_seen_since is not None else now


def _held(since: float | None, seconds: float, now: float) -> bool:
    return since is not None and now - since >= seconds


def _wanted_phase(
    site: Mapping[str, Any], phase: str, qps: float, activation: Activation, state: SiteState, now: float
) -> str:
    if _spec(site).get("alwaysOn", True):
        return ACTIVE
    if phase == INACTIVE:
        return ACTIVE if _held(state.above_since, activation.for_seconds, now) else INACTIVE
    if phase == ACTIVE:
        return DRAINING if _held(state.below_since, activation.for_seconds, now) else ACTIVE
    if qps > activation.activate_above:  # draining, and demand is back: the caches are still warm
        return ACTIVE
    drained = now - _phase_since(site, state, now) >= activation.drain_seconds
    return INACTIVE if drained else DRAINING


def decide(site: Mapping[str, Any], demand_qps: float, state: SiteState, now: float) -> Transition | None:
    """The transition ``site`` (a stored Site document) is due, or None; see the module docstring.

    ``state`` is the site's memory between rounds: this call records the
    demand sample in it. ``now`` is in seconds since the epoch.
    """
    phase = current_phase(site)
    activation = activation_of(site)
    state.observe(phase, demand_qps, activation, now)
    wanted = _wanted_phase(site, phase, demand_qps, activation, state, now)
    if wanted == phase and _status(site).get("phase") == phase:
        return None
    return Transition(wanted, REASONS[wanted])


def explain(site: Mapping[str, Any], transition: Transition, demand_qps: float) -> str:
    """The sentence for the Event and ``status.message``: the measured demand and the thresholds."""
    if _spec(site).get("alwaysOn", True):
        return "alwaysOn: the site is active whatever the demand"
    a = activation_of(site)
    demand = f"demand from region {_spec(site).get('region')}: {demand_qps:.1f} qps"
    previous = _status(site).get("phase")
    if previous is None:
        return (
            f"{demand}; starts {transition.phase} (activateAbove {a.activate_above:g} qps, "
            f"deactivateBelow {a.deactivate_below:g} qps, forSeconds {a.for_seconds})"
        )
    if transition.phase == ACTIVE and previous == DRAINING:
        return f"{demand}, above activateAbove {a.activate_above:g} qps while draining: active again"
    if transition.phase == ACTIVE:
        return f"{demand}, above activateAbove {a.activate_above:g} qps for {a.for_seconds}s"
    if transition.phase == DRAINING:
        return (
            f"{demand}, below deactivateBelow {a.deactivate_below:g} qps for {a.for_seconds}s; "
            f"no new users, deactivated in {a.drain_seconds}s unless demand exceeds {a.activate_above:g} qps"
        )
    return f"drained for drainSeconds ({a.drain_seconds}s); {demand} (activateAbove {a.activate_above:g} qps)"


def status_patch(site: Mapping[str, Any], transition: Transition, message: str, now: float) -> JSONObject:
    """The status merge patch for a transition, with the site's resourceVersion as a precondition."""
    metadata = site.get("metadata") or {}
    return {
        "metadata": {"resourceVersion": metadata.get("resourceVersion")},
        "status": {
            "phase": transition.phase,
            "active": transition.phase == ACTIVE,
            "lastTransitionTime": format_timestamp(datetime.fromtimestamp(now, UTC)),
            "observedGeneration": metadata.get("generation"),
            "message": message,
        },
    }


# -- the loop ----------------------------------------------------------------------------------


class SiteActivationController:
    """Every ``period`` seconds: decide each Site's phase from its region's demand; write transitions."""

    def __init__(
        self,
        registry: Registry,
        demand: Demand = no_demand,
        *,
        period: float = 5.0,
        clock: Callable[[], float] = time.time,
        sites: Callable[[], Iterable[StoredDocument]] | None = None,
    ) -> None:
        """``sites``: every Site document (with metadata.resourceVersion), e.g. from the hub's in-memory
        index; None: one list through the registry per round."""
        self._registry = registry
        self._demand = demand
        self._period = period
        self._sites = sites
        self._clock = clock
        self._states: dict[str, SiteState] = {}

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        await run_periodically("site activation", self.sync_once, self._period, log)

    async def sync_once(self) -> int:
        """One round; returns how many sites changed phase."""
        sites = list(self._sites()) if self._sites is not None else (await self._registry.list(SITES)).items
        demand = self._read_demand()
        if demand is None:
            return 0
        now = self._clock()
        names = {site["metadata"]["name"] for site in sites}
        self._states = {name: state for name, state in self._states.items() if name in names}
        changed = 0
        for site in sites:
            qps = float(demand.get(str(_spec(site).get("region")), 0.0))
            state = self._states.setdefault(site["metadata"]["name"], SiteState())
            transition = decide(site, qps, state, now)
            if transition is not None and await self._apply(site, transition, qps, now):
                changed += 1
        return changed

    def _read_demand(self) -> Mapping[str, float] | None:
        try:
            return self._demand()
        except Exception:  # a broken meter must not stop the loop; no decision without data
            log.exception("cannot read the demand; no site decisions this round")
            return None

    async def _apply(self, site: StoredDocument, transition: Transition, qps: float, now: float) -> bool:
        name = site["metadata"]["name"]
        message = explain(site, transition, qps)
        try:
            await self._registry.patch(SITES, name, status_patch(site, transition, message, now), status=True)
        except (VersionConflict, ObjectNotFound):
            return False  # changed (or deleted) meanwhile: decided again next round
        log.info("site is now %s", transition.phase, extra={"site": name, "reason": message})
        try:
            await events.record(
                self._registry,
                "Site",
                name,
                transition.reason,
                message,
                source=SOURCE,
                now=datetime.fromtimestamp(now, UTC),
            )
        except (StoreError, RegistryError) as exc:
            log.warning("cannot record the %s event of site %s: %s", transition.reason, name, exc)
        return True
