"""Routing policy: which site, and which of its nodes, answer a client.

How: :func:`choose` takes everything it needs as values (the client and its
location, the candidate sites with their answerable nodes and load, the
Domain's routing policy, an optional latency matrix, a hash key and a
``draw``) and returns a :class:`Route`: the site, the ordered node answers,
every candidate with its score, and a one-line reason. It reads no clock
and no table of its own, so the DNS server, the 302 redirector and the
``edgefleet route`` CLI make and explain the very same decision.

Steps:

1. **Eligibility.** A site is eligible when it is active and has at least
   one node fit for answers (the fleet state already dropped draining and
   unhealthy nodes, and nodes without addresses).
2. **Ranking** of the eligible sites, best first, by policy:

   - ``geo``: great-circle distance from the client's location. With
     ``prefer_country``, sites in the client's country come first, so a user
     in Lille goes to Paris rather than to a nearer Brussels. A client of
     unknown location gets a deterministic order: ``failover_order`` if
     given, then by site name.
   - ``latency``: measured RTT to the client's network (``latency[network]
     [site]``, ms; ``Client.network``: the longest measured network holding
     the client, see :mod:`edgefleet.gslb.latency`), else from its region
     (``latency[region][site]``); equal RTTs by distance. Sites without a
     measurement follow the measured ones, by distance; a client with
     neither row means plain ``geo``.
   - ``weighted``: *weighted rendezvous hashing* of ``draw`` over the sites
     with a positive weight (score ``-ln(u) / weight``, ``u`` a uniform hash
     of draw and site name, lowest first). Each site gets its weight's share
     of draws, and when a site goes away only the clients it had move (a
     cumulative split of [0, 1) would move clients between the survivors).
   - ``failover``: position in ``failover_order``.

   Sites the policy does not name (weight 0 or absent, not in the failover
   order) are a last resort, by name: serving from any healthy site beats
   answering nothing.
3. **Load shedding.** When the first site's load (``load_gbps /
   capacity_gbps``) is above ``shed_threshold``, a share of the answers goes
   to the next ranked site that is itself below its threshold (or of
   unknown load). The share grows linearly from 0 at the threshold to
   ``shed_share`` at 100% load (and stays there above). A client is shed
   iff ``draw < share``: the same clients stay shed while the load stays,
   and more join as it grows.
4. **Nodes.** Rendezvous (highest random weight) hashing of ``key`` over the
   chosen site's nodes; the first ``answers`` nodes in that order. A key's
   answers change only when one of its nodes leaves, and then only that
   node is replaced. The score is :func:`edgefleet.hashing.score`, the one the cache
   tiers use, so a 302 keyed by a cache key sends the client
   straight to the node that owns the object in its site.

``draw`` is a number in [0, 1) the caller derives from a hash of the client
subnet and the query name (see :func:`draw_for`), so a client sticks to its
site under ``weighted`` and shedding, and different names spread
independently.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edgefleet import hashing
from edgefleet.gslb.geo import Location, great_circle_km

POLICIES = ("geo", "latency", "weighted", "failover")

LatencyMatrix = Mapping[str, Mapping[str, float]]
"""Client region -> site name -> round-trip time in ms."""


@dataclass(frozen=True, slots=True)
class NodeTarget:
    """A node that may be put in answers, with its addresses by family."""

    name: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SiteView:
    """A candidate site as the policy sees it; ``nodes`` holds only nodes fit for answers."""

    name: str
    region: str
    country: str
    lat: float
    lon: float
    active: bool
    capacity_gbps: float | None
    load_gbps: float | None
    nodes: tuple[NodeTarget, ...]
    why_inactive: str = ""
    """Why an inactive site is (its phase, e.g. ``activating: 0 of 2 nodes ready``), for explanations."""

    @property
    def eligible(self) -> bool:
        return self.active and bool(self.nodes)

    @property
    def load(self) -> float | None:
        """load / capacity; None when either is unknown."""
        if self.load_gbps is None or not self.capacity_gbps:
            return None
        return self.load_gbps / self.capacity_gbps


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """A Domain's ``spec.routing``, as plain values."""

    policy: str
    weights: Mapping[str, int] = field(default_factory=dict)
    failover_order: tuple[str, ...] = ()
    answers: int = 2
    ttl: int = 30
    prefer_country: bool = True
    shed_threshold: float = 0.85
    shed_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks: the address used for placement and its location, if the geo table knows it."""

    address: str
    location: Location | None
    network: str | None = None
    """The longest measured client network holding ``address`` (a row of the latency matrix), if any."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One site as ranked: ``score`` is km (geo), ms (latency), weight (weighted) or
    position (failover); ``inf`` when it could not be scored."""

    site: str
    score: float
    eligible: bool
    note: str


@dataclass(frozen=True, slots=True)
class Route:
    """The decision: site and node answers (None and () when no site is eligible)."""

    site: str | None
    nodes: tuple[NodeTarget, ...]
    candidates: tuple[Candidate, ...]
    reason: str


@dataclass(slots=True)
class _Ranked:
    """A site with its score and the sort key that ranks it (lower first)."""

    site: SiteView
    score: float
    note: str
    order: tuple[float, ...]


def choose(
    client: Client,
    sites: Sequence[SiteView],
    policy: RoutingPolicy,
    *,
    key: str,
    draw: float,
    latency: LatencyMatrix | None = None,
) -> Route:
    """Pick the site and node answers for ``client`` (see the module docstring)."""
    eligible = [site for site in sites if site.eligible]
    ranked, how = _rank(client, eligible, policy, draw, latency)
    candidates = tuple(_candidate(item) for item in ranked) + _ineligible(client, sites)
    if not ranked:
        return Route(None, (), candidates, f"no eligible site ({_why_none(sites)})")
    chosen, reason = _shed(ranked, policy, draw, f"{policy.policy}: {how}")
    return Route(chosen.name, rank_nodes(chosen.nodes, key)[: max(1, policy.answers)], candidates, reason)


def _rank(
    client: Client,
    eligible: list[SiteView],
    policy: RoutingPolicy,
    draw: float,
    latency: LatencyMatrix | None,
) -> tuple[list[_Ranked], str]:
    """Eligible sites best first, and how they were ranked."""
    if policy.policy == "weighted":
        ranked, how = _by_weight(eligible, policy.weights, draw)
    elif policy.policy == "failover":
        ranked, how = _by_failover_order(eligible, policy.failover_order)
    elif policy.policy == "latency":
        ranked, how = _by_latency(client, eligible, policy, latency)
    else:
        ranked, how = _by_distance(client, eligible, policy)
    ranked.sort(key=lambda item: (item.order, item.site.name))  # ties (last resorts) by name
    return ranked, how


def _by_distance(client: Client, sites: list[SiteView], policy: RoutingPolicy) -> tuple[list[_Ranked], str]:
    location = client.location
    if location is None:
        ranked, _ = _by_failover_order(sites, policy.failover_order)
        for item in ranked:
            item.score, item.note = math.inf, f"client location unknown; {item.note}"
        return ranked, "client location unknown, fixed order"
    home = location.country
    in_country = policy.prefer_country and any(site.country == home for site in sites)
    ranked = []
    for site in sites:
        km = _distance(location, site)
        abroad = in_country and site.country != home
        note = f"{km:.0f} km" + (f", outside {home}: sites in {home} preferred" if abroad else "")
        ranked.append(_Ranked(site, km, note, (float(abroad), km)))
    return ranked, f"nearest site{f' in {home}' if in_country else ''} to {location.region}/{home}"


def _by_latency(
    client: Client, sites: list[SiteView], policy: RoutingPolicy, latency: LatencyMatrix | None
) -> tuple[list[_Ranked], str]:
    region = client.location.region if client.location else None
    source, row = None, None
    if latency is not None:
        for source in (client.network, region):
            row = latency.get(source) if source is not None else None
            if row is not None:
                break
    if row is None:
        ranked, how = _by_distance(client, sites, policy)
        return ranked, f"no latency measurements for region {region or 'unknown'}; {how}"
    ranked = []
    for site in sites:
        rtt = row.get(site.name)
        km = _distance(client.location, site) if client.location else math.inf
        if rtt is None:
            ranked.append(_Ranked(site, math.inf, f"no RTT measured; {km:.0f} km", (1.0, km)))
        else:
            ranked.append(_Ranked(site, float(rtt), f"{rtt:g} ms to {source}", (0.0, float(rtt), km)))
    what = f"network {source}" if source == client.network else f"region {source}"
    return ranked, f"lowest measured RTT to {what}"


def _by_weight(sites: list[SiteView], weights: Mapping[str, int], draw: float) -> tuple[list[_Ranked], str]:
    ranked = []
    for site in sites:
        weight = weights.get(site.name, 0)
        if weight > 0:
            score = -math.log(_unit(draw, site.name)) / weight
            ranked.append(_Ranked(site, float(weight), f"weight {weight}", (0.0, score)))
        else:
            ranked.append(_Ranked(site, 0.0, "weight 0: last resort", (1.0, 0.0)))
    return ranked, "by weight"


def _by_failover_order(sites: list[SiteView], order: Sequence[str]) -> tuple[list[_Ranked], str]:
    position = {name: index for index, name in enumerate(order)}
    ranked = []
    for site in sites:
        if site.name in position:
            index = position[site.name]
            ranked.append(_Ranked(site, float(index), f"#{index + 1} in failover order", (0.0, float(index))))
        else:
            note = "not in failover order: last resort" if order else "by name"
            ranked.append(_Ranked(site, math.inf, note, (1.0, 0.0)))
    return ranked, "first available site of the failover order"


def _shed_plan(ranked: Sequence[_Ranked], policy: RoutingPolicy) -> tuple[SiteView, SiteView | None, float]:
    """The first site, where it sheds to (None: nowhere or no need) and the share of draws shed."""
    first = ranked[0].site
    load = first.load
    if load is None or load <= policy.shed_threshold:
        return first, None, 0.0
    share = shed_share(load, policy.shed_threshold, policy.shed_share)
    target = next((item.site for item in ranked[1:] if _has_room(item.site, policy.shed_threshold)), None)
    return first, target, share


def _shed(ranked: list[_Ranked], policy: RoutingPolicy, draw: float, reason: str) -> tuple[SiteView, str]:
    """The first site, or the next one below its threshold for the shed share of draws."""
    first, target, share = _shed_plan(ranked, policy)
    load = first.load
    if load is None or load <= policy.shed_threshold:
        return first, f"{reason} -> {first.name}"
    overload = f"{first.name} at {load:.0%} load > {policy.shed_threshold:.0%}"
    if target is None:
        return first, f"{reason} -> {overload}, but no other site has room"
    if draw < share:
        return target, f"{reason} -> {overload}: shedding {share:.0%} of answers to {target.name} (this one)"
    return first, f"{reason} -> {first.name} ({overload}: shedding {share:.0%} of answers to {target.name})"


class SiteChoice:
    """:func:`choose`'s site decision for one client location, precomputed; only the draw is left open.

    Why: the decision depends on the client's location, the sites and the
    policy, not on the individual subnet, so a DNS server computes one per
    (Domain, address family, location) when the fleet or the geo table
    changes and answers each query with :meth:`site` (a comparison, or for
    ``weighted`` one hash per weighted site). It reuses :func:`choose`'s
    own ranking and shedding steps, so both always agree
    (``tests/gslb/test_fastpath.py`` checks it on random fleets).
    """

    __slots__ = ("_client", "_eligible", "_first", "_latency", "_policy", "_share", "_target", "draw_matters")

    def __init__(
        self, client: Client, sites: Sequence[SiteView], policy: RoutingPolicy, latency: LatencyMatrix | None = None
    ) -> None:
        self._client, self._policy, self._latency = client, policy, latency
        self._eligible = [site for site in sites if site.eligible]
        self._first: SiteView | None = None
        self._target: SiteView | None = None
        self._share = 0.0
        self.draw_matters = policy.policy == "weighted"
        """Whether :meth:`site` depends on the draw (weighted policy, or a first site shedding load)."""
        if self._eligible and not self.draw_matters:
            ranked, _ = _rank(client, self._eligible, policy, 0.0, latency)
            self._first, self._target, self._share = _shed_plan(ranked, policy)
            load = self._first.load
            self.draw_matters = load is not None and load > policy.shed_threshold

    def site(self, draw: float) -> SiteView | None:
        """The site :func:`choose` picks for this location and ``draw`` (None: no eligible site)."""
        if self._policy.policy == "weighted":
            if not self._eligible:
                return None
            ranked, _ = _rank(self._client, self._eligible, self._policy, draw, self._latency)
            first, target, share = _shed_plan(ranked, self._policy)
            return target if target is not None and draw < share else first
        if self._target is not None and draw < self._share:
            return self._target
        return self._first


def shed_share(load: float, threshold: float, full_share: float) -> float:
    """The share of answers a site at ``load`` sends away: 0 at the threshold, ``full_share`` at 100%."""
    if load <= threshold:
        return 0.0
    if threshold >= 1.0:
        return full_share
    return full_share * min(1.0, (load - threshold) / (1.0 - threshold))


def _has_room(site: SiteView, threshold: float) -> bool:
    load = site.load
    return load is None or load <= threshold


def _candidate(item: _Ranked) -> Candidate:
    return Candidate(item.site.name, item.score, True, item.note)


def _ineligible(client: Client, sites: Sequence[SiteView]) -> tuple[Candidate, ...]:
    out = []
    for site in sorted((site for site in sites if not site.eligible), key=lambda site: site.name):
        km = _distance(client.location, site) if client.location else math.inf
        out.append(Candidate(site.name, km, False, _why_not(site)))
    return tuple(out)


def _why_not(site: SiteView) -> str:
    reasons = []
    if not site.active:
        reasons.append(f"inactive ({site.why_inactive})" if site.why_inactive else "inactive")
    if not site.nodes:
        reasons.append("no healthy, non-draining node with an address")
    return ", ".join(reasons)


def _why_none(sites: Sequence[SiteView]) -> str:
    if not sites:
        return "the domain selects no site"
    return f"{len(sites)} site(s), none active with a usable node"


def _distance(location: Location, site: SiteView) -> float:
    return great_circle_km(location.lat, location.lon, site.lat, site.lon)


def _unit(draw: float, label: str) -> float:
    """A uniform number in (0, 1] from ``draw`` and ``label``, independent across labels."""
    digest = hashlib.blake2b(f"{draw!r}\0{label}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / 2.0**64


def rank_nodes(nodes: Sequence[NodeTarget], key: str) -> tuple[NodeTarget, ...]:
    """Nodes in order of preference for ``key`` (highest rendezvous weight first; ties by name)."""

    def preference(node: NodeTarget) -> tuple[int, str]:
        return -hashing.score(node.name, key), node.name

    return tuple(sorted(nodes, key=preference))


def draw_for(subnet: str, name: str) -> float:
    """A stable number in [0, 1) for a client subnet and a query name (or URL)."""
    digest = hashlib.blake2b(f"{subnet}\0{name}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / 2.0**53
