"""Site activation: switch ``alwaysOn: false`` sites on and off with the demand from their region.

The rule (:func:`decide`, pure but for the per-site :class:`SiteState` it
updates), with the thresholds of the Site's ``spec.activation`` (defaults
when left out) and the DNS demand of its ``spec.region`` in queries per
second:

- Inactive -> Activating (``SiteActivating``) when demand has stayed above
  ``activateAbove`` for ``forSeconds``: the agents start the site's cache
  workloads again (they scaled them to zero while it was Inactive, see
  :mod:`edgefleet.edge.elastic`); the site still gets no users;
- Activating -> Active (``SiteActivated``) once ``minReadyNodes`` of the
  nodes that run a cache (capped at their number) are Ready, report every
  cache instance ready (their agents' health probes) and no Purge still
  Pending (one issued while the cache was down must reach its kept disk
  tier first): announced only once its caches pass health checks. Each
  ``readySeconds`` it waits longer records a Warning Event
  ``SiteActivationSlow``; it stays Activating, with ``R of N nodes ready``
  in ``status.message`` (written when the count changes, no Event);
- Activating -> Inactive (``SiteDeactivated``) when demand falls below
  ``deactivateBelow`` for ``forSeconds`` before that: no user was sent there;
- Inactive -> Active directly when no node of the site runs a cache workload
  (a GSLB-only elastic site: nothing to start);
- Active -> Draining (``SiteDraining``) when demand has stayed below
  ``deactivateBelow`` for ``forSeconds``;
- Draining -> Inactive (``SiteDeactivated``) once the site has drained for
  ``drainSeconds`` (counted from ``status.lastTransitionTime``, from the end
  of its whole second, so never less); its agents then scale the caches to
  zero;
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
:class:`~edgefleet.gslb.demand.DemandMeter`; without it demand is zero)
and, when some site is elastic, the Nodes and the Workloads (which ones are
``builtin: cache``) for :func:`readiness`, decides for each site, and for
each transition patches the Site's status
(``phase``, ``active`` true only in Active, ``lastTransitionTime``,
``observedGeneration``, ``message``) through the status path with the
site's resourceVersion as a precondition, then records an Event on the Site
saying why, with the measured demand and the thresholds. A conflict (the
site changed meanwhile) writes nothing and is decided again next round.

Rollouts and scaled-down caches: a node whose cache is ``ScaledDown``
counts as away for the workload controller (not Ready): a rollout skips it
(``rollout.waiting``), completes without it, and moves it, drained and
verified, once its site is active again (it first starts the revision it
was assigned, so the site is announced on a known-good revision).

What it remembers: only since when each site's demand has been past a
threshold (:class:`SiteState`), and when it last warned, in memory. The store cannot hold it
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
from edgefleet.api.nodes import INFO as NODES
from edgefleet.api.sites import INFO as SITES
from edgefleet.api.sites import Activation
from edgefleet.api.workloads import INFO as WORKLOADS
from edgefleet.cloud import events
from edgefleet.cloud.controllers.loop import patch_status, run_periodically
from edgefleet.cloud.registry import Registry, RegistryError
from edgefleet.store.interface import StoreError

log = logging.getLogger("edgefleet.cloud.controllers.siteactivation")

ACTIVE, DRAINING, INACTIVE, ACTIVATING = "Active", "Draining", "Inactive", "Activating"
PHASES = (ACTIVE, DRAINING, INACTIVE, ACTIVATING)
SITE_ACTIVATED, SITE_DRAINING, SITE_DEACTIVATED = "SiteActivated", "SiteDraining", "SiteDeactivated"
SITE_ACTIVATING, SITE_ACTIVATION_SLOW = "SiteActivating", "SiteActivationSlow"
REASONS = {ACTIVE: SITE_ACTIVATED, DRAINING: SITE_DRAINING, INACTIVE: SITE_DEACTIVATED, ACTIVATING: SITE_ACTIVATING}
SOURCE = "site-activation-controller"
ELASTIC_BUILTINS = frozenset({"cache"})
"""The built-in workloads that scale with their site (the agent's rule is :mod:`edgefleet.edge.elastic`)."""
Demand = Callable[[], Mapping[str, float]]
Documents = Callable[[], Iterable[StoredDocument]]


@dataclass(frozen=True, slots=True)
class SiteReadiness:
    """How many of a site's nodes run an elastic (cache) workload, and how many of those have it ready."""

    nodes: int = 0
    ready: int = 0

    def needed(self, activation: Activation) -> int:
        """Ready nodes an Activating site needs: minReadyNodes, capped at the nodes that run a cache."""
        return min(activation.min_ready_nodes, self.nodes)

    def describe(self, activation: Activation) -> str:
        return f"{self.ready} of {self.nodes} nodes ready (needs {self.needed(activation)})"


NO_READINESS = SiteReadiness()


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
    warned_at: float | None = None  # the last SiteActivationSlow Event of this Activating spell

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
            self.phase, self.phase_seen_since, self.warned_at = phase, now, None


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


def readiness(nodes: Iterable[Mapping[str, Any]], workloads: Iterable[Mapping[str, Any]]) -> dict[str, SiteReadiness]:
    """Per site: its nodes that report an instance of an elastic Workload (``builtin: cache``), and those of
    them that are Ready with every such instance Running and ready, and no Purge still Pending (a cache back on
    its kept disk tier applies the purges it missed before it gets users)."""
    elastic = {
        str(_dict(w.get("metadata")).get("name"))
        for w in workloads
        if _dict(_dict(w.get("spec")).get("template")).get("builtin") in ELASTIC_BUILTINS
    }
    counts: dict[str, list[int]] = {}
    for node in nodes:
        status = _dict(node.get("status"))
        reported = _dict(status.get("workloads"))
        instances = [_dict(reported[name]) for name in elastic if name in reported]
        if not instances:
            continue
        count = counts.setdefault(str(_dict(node.get("spec")).get("site", "")), [0, 0])
        count[0] += 1
        if status.get("phase") == "Ready" and all(i.get("state") == "Running" and i.get("ready") for i in instances):
            count[1] += not _purging(status.get("purges"))
    return {site: SiteReadiness(total, ready) for site, (total, ready) in counts.items()}


def _purging(reports: object) -> bool:
    """Whether a node's ``status.purges`` lists one still Pending."""
    return isinstance(reports, list) and any(_dict(report).get("state") == "Pending" for report in reports)


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def current_phase(site: Mapping[str, Any]) -> str:
    """``status.phase``, or what ``status.active`` implies when there is none (Active unless false)."""
    phase = _status(site).get("phase")
    if phase in PHASES:
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


def _drained(site: Mapping[str, Any], state: SiteState, drain_seconds: float, now: float) -> bool:
    """Whether a Draining site has drained ``drain_seconds``, never less.

    ``lastTransitionTime`` has whole seconds: the drain began within the second after it, so it counts
    from the end of that second (at most 1 s more). Cut short, it would stop caches that clients whose
    resolvers hold an answer for a TTL equal to the drain time still use.
    """
    since = _phase_since(site, state, now)
    if isinstance(_status(site).get("lastTransitionTime"), str) and since == int(since):
        since += 1.0
    return now - since >= drain_seconds


def _held(since: float | None, seconds: float, now: float) -> bool:
    return since is not None and now - since >= seconds


def _wanted_phase(
    site: Mapping[str, Any], phase: str, qps: float, ready: SiteReadiness, state: SiteState, now: float
) -> str:
    activation = activation_of(site)
    if _spec(site).get("alwaysOn", True):
        return ACTIVE
    if phase == INACTIVE:
        if not _held(state.above_since, activation.for_seconds, now):
            return INACTIVE
        return ACTIVATING if ready.nodes else ACTIVE  # no cache to start: announce at once
    if phase == ACTIVATING:
        if ready.ready >= ready.needed(activation):
            return ACTIVE
        return INACTIVE if _held(state.below_since, activation.for_seconds, now) else ACTIVATING
    if phase == ACTIVE:
        return DRAINING if _held(state.below_since, activation.for_seconds, now) else ACTIVE
    if qps > activation.activate_above:  # draining, and demand is back: the caches are still warm
        return ACTIVE
    return INACTIVE if _drained(site, state, activation.drain_seconds, now) else DRAINING


def decide(
    site: Mapping[str, Any],
    demand_qps: float,
    state: SiteState,
    now: float,
    ready: SiteReadiness = NO_READINESS,
) -> Transition | None:
    """The transition ``site`` (a stored Site document) is due, or None; see the module docstring.

    ``state`` is the site's memory between rounds: this call records the
    demand sample in it. ``now`` is in seconds since the epoch; ``ready``:
    the site's nodes with cache workloads (:func:`readiness`).
    """
    phase = current_phase(site)
    activation = activation_of(site)
    state.observe(phase, demand_qps, activation, now)
    wanted = _wanted_phase(site, phase, demand_qps, ready, state, now)
    if wanted == phase and _status(site).get("phase") == phase:
        return None
    return Transition(wanted, REASONS[wanted])


def progress(site: Mapping[str, Any], ready: SiteReadiness) -> str | None:
    """The new ``status.message`` of an Activating site whose ready count changed, else None."""
    if _status(site).get("phase") != ACTIVATING:
        return None
    message = activating_message(site, ready)
    return None if _status(site).get("message") == message else message


def activating_message(site: Mapping[str, Any], ready: SiteReadiness) -> str:
    """``activating: R of N nodes ready (needs K); ...``: what an Activating site waits for."""
    return (
        f"activating: {ready.describe(activation_of(site))}; caches starting on their disk tier, "
        "no users until they pass their health checks"
    )


def slow(site: Mapping[str, Any], ready: SiteReadiness, state: SiteState, now: float) -> str | None:
    """The Warning for an Activating site that waited ``readySeconds`` more for its caches, else None.

    Call after :func:`decide` for the same round (it keeps ``state``'s phase current).
    """
    if current_phase(site) != ACTIVATING or _status(site).get("phase") != ACTIVATING:
        return None
    activation = activation_of(site)
    since = state.warned_at if state.warned_at is not None else _phase_since(site, state, now)
    if now - since < activation.ready_seconds:
        return None
    state.warned_at = now
    waited = now - _phase_since(site, state, now)
    return (
        f"activating for {waited:.0f}s: {ready.describe(activation)}; the site gets no users until its caches "
        "are ready (check the nodes' cache workloads: edgefleet describe node <name>)"
    )


def explain(
    site: Mapping[str, Any], transition: Transition, demand_qps: float, ready: SiteReadiness = NO_READINESS
) -> str:
    """The sentence for the Event and ``status.message``: the measured demand and the thresholds."""
    if _spec(site).get("alwaysOn", True):
        return "alwaysOn: the site is active whatever the demand"
    a = activation_of(site)
    demand = f"demand from region {_spec(site).get('region')}: {demand_qps:.1f} qps"
    previous = _status(site).get("phase")
    if transition.phase == ACTIVATING:
        return (
            f"{demand}, above activateAbove {a.activate_above:g} qps for {a.for_seconds}s; starting the caches, "
            f"announced once ready: {activating_message(site, ready).removeprefix('activating: ')}"
        )
    if transition.phase == ACTIVE and previous == ACTIVATING:
        return f"caches ready: {ready.describe(a)}; announced in DNS again ({demand})"
    if transition.phase == INACTIVE and previous == ACTIVATING:
        return (
            f"{demand}, below deactivateBelow {a.deactivate_below:g} qps for {a.for_seconds}s while activating; "
            "its caches scale to zero again"
        )
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
    return (
        f"drained for drainSeconds ({a.drain_seconds}s); {demand} (activateAbove {a.activate_above:g} qps); "
        "its caches scale to zero, keeping their disk tier"
    )


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
        sites: Documents | None = None,
        nodes: Documents | None = None,
        workloads: Documents | None = None,
    ) -> None:
        """``sites``, ``nodes``, ``workloads``: every document of the kind (with metadata.resourceVersion), e.g.
        from the hub's in-memory index; None: one list through the registry per round (nodes and workloads
        only while some site is elastic)."""
        self._registry = registry
        self._demand = demand
        self._period = period
        self._sites = sites
        self._nodes = nodes
        self._workloads = workloads
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
        elastic = any(not _spec(site).get("alwaysOn", True) for site in sites)
        ready = await self._readiness() if elastic else {}
        changed = 0
        for site in sites:
            name = site["metadata"]["name"]
            qps = float(demand.get(str(_spec(site).get("region")), 0.0))
            state = self._states.setdefault(name, SiteState())
            counts = ready.get(name, NO_READINESS)
            transition = decide(site, qps, state, now, counts)
            if transition is not None:
                changed += await self._apply(site, transition, qps, now, counts)
            else:
                await self._report_progress(site, counts, state, now)
        return changed

    async def _readiness(self) -> dict[str, SiteReadiness]:
        nodes = list(self._nodes()) if self._nodes is not None else (await self._registry.list(NODES)).items
        workloads = (
            list(self._workloads()) if self._workloads is not None else (await self._registry.list(WORKLOADS)).items
        )
        return readiness(nodes, workloads)

    async def _report_progress(self, site: StoredDocument, ready: SiteReadiness, state: SiteState, now: float) -> None:
        """An Activating site: its ready count in status.message when it moved; a Warning when it is slow."""
        name = site["metadata"]["name"]
        message = progress(site, ready)
        if message is not None:
            patch: JSONObject = {
                "metadata": {"resourceVersion": site["metadata"].get("resourceVersion")},
                "status": {"message": message},
            }
            await patch_status(self._registry, SITES, name, patch)
        warning = slow(site, ready, state, now)
        if warning is not None:
            log.warning("site is slow to activate", extra={"site": name, "reason": warning})
            await self._event(name, SITE_ACTIVATION_SLOW, warning, now, kind="Warning")

    def _read_demand(self) -> Mapping[str, float] | None:
        try:
            return self._demand()
        except Exception:  # a broken meter must not stop the loop; no decision without data
            log.exception("cannot read the demand; no site decisions this round")
            return None

    async def _apply(
        self, site: StoredDocument, transition: Transition, qps: float, now: float, ready: SiteReadiness = NO_READINESS
    ) -> bool:
        name = site["metadata"]["name"]
        message = explain(site, transition, qps, ready)
        patch = status_patch(site, transition, message, now)
        if transition.phase == ACTIVATING:  # the status shows what it waits for; the Event says why it started
            patch["status"]["message"] = activating_message(site, ready)
        if not await patch_status(self._registry, SITES, name, patch):
            return False  # changed (or deleted) meanwhile: decided again next round
        log.info("site is now %s", transition.phase, extra={"site": name, "reason": message})
        await self._event(name, transition.reason, message, now)
        return True

    async def _event(self, name: str, reason: str, message: str, now: float, kind: str = "Normal") -> None:
        try:
            await events.record(
                self._registry, "Site", name, reason, message, kind, source=SOURCE, now=datetime.fromtimestamp(now, UTC)
            )
        except (StoreError, RegistryError) as exc:
            log.warning("cannot record the %s event of site %s: %s", reason, name, exc)
