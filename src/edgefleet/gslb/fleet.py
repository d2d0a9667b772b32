"""Fleet state: the Sites, Nodes and Domains the GSLB routes with, as plain values.

How: the GSLB's watch loop feeds every Site, Node and Domain document (plain
dicts, as the API returns them) to :meth:`FleetState.apply`; a deletion is
``apply(kind, name, None)``. Each document is validated with its API model
and reduced to the few facts routing needs. The state answers:

- :meth:`~FleetState.domain_for`: which Domain serves a DNS name: a
  hostname of the Domain, the closest ``*.`` wildcard among them (exact
  names win, then the longest suffix, as the cache server matches Host
  headers), or ``<domain-name>.<zone>``, the canonical name customers CNAME
  to.
- :meth:`~FleetState.sites_for`: the Sites the Domain's ``spec.sites``
  selector picks (empty selects every site), as
  :class:`~edgefleet.gslb.policy.SiteView` values holding only the nodes fit
  for answers.
- :meth:`~FleetState.routing_for`: the Domain's ``spec.routing`` as a
  :class:`~edgefleet.gslb.policy.RoutingPolicy`.
- :meth:`~FleetState.node_health`: whether a node may be in answers, and why.

Node fitness (docs/architecture.md, "Request path", step 4): a node is fit when it is
not draining (``spec.draining``, set by hand, or any ``status.drains``, held
by a rollout step), has an address, and is healthy. Health comes from the
data plane: the *other nodes of its site* report ``status.peerVotes`` about
it. The votes of a voter with a live hub session (``status.hub`` set) are
fresh for as long as that session lasts: the hub writes votes only when a
verdict changes (an idle fleet writes nothing) and clears them when the
session ends or the node's credential is revoked, and the node lifecycle
controller clears them when it demotes a silent voter. Votes of a voter
without a session are fresh for ``vote_ttl`` after their ``at`` (or never,
without one); an ``at`` more than :data:`MAX_CLOCK_SKEW` seconds in the
future is not fresh (a clock that far ahead is a bug or an attack, and a
vote dated 2099 must not count for ever).

The vote rule (issue 12, item 2: one node must not pull its site out of
DNS). Only *voters* count: the other nodes of the site whose phase is
Ready (the cloud hears them). A node is unhealthy when a strict majority of
its site's voters vote it unhealthy; a tie, or one voter among several, is
not enough. Otherwise it is healthy when at least one fresh vote says so
(a NotReady node that its peers see serving stays in answers), and with no
fresh vote at all (a single-node site, or agents that do not vote) it is
healthy iff ``status.phase`` is Ready. The limit: in a site of two nodes
each one's peer is its only voter, so it decides alone; three or more nodes
per site are needed for the rule to resist one compromised node. A site is
active unless ``status.active`` is explicitly false (the site activation
controller's; false while Draining, Inactive and Activating, so a site
whose caches are still starting gets no users); ``alwaysOn`` sites are
always active.

Why a generation: answers are cached by the DNS server, so it must know
when they may have changed. :meth:`~FleetState.generation_at` changes when
(a) an applied document changes a fact routing uses (a node's heartbeat,
cache counters or a mere refresh of a still-fresh vote do not count, so a
fleet of heartbeating nodes does not empty the cache every millisecond), or
(b) time makes a vote stale: vote expiries sit in a heap, and the next one
is checked with one comparison. "Still fresh" is judged at the latest
``now`` any method was given, i.e. the time of the newest cached answer.

Pure: no clock (callers pass ``now``, seconds since the epoch), no I/O.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from edgefleet.api.common import parse_timestamp
from edgefleet.api.domains import CDN_ZONE, Domain, canonical_hostname
from edgefleet.api.errors import SelectorError
from edgefleet.api.meta import Resource
from edgefleet.api.nodes import Node
from edgefleet.api.selectors import Selector, parse_selector
from edgefleet.api.sites import Site
from edgefleet.gslb.errors import NotServed
from edgefleet.gslb.latency import EMPTY as LATENCY_EMPTY
from edgefleet.gslb.latency import Latency, SiteLatency
from edgefleet.gslb.latency import build as build_latency
from edgefleet.gslb.policy import NodeTarget, RoutingPolicy, SiteView

DEFAULT_ZONE = CDN_ZONE
DEFAULT_VOTE_TTL = 30.0
MAX_CLOCK_SKEW = 5.0
"""Seconds a vote's ``at`` may lie ahead of this clock and still count (votes further ahead never do)."""
KINDS: dict[str, type[Resource]] = {"Site": Site, "Node": Node, "Domain": Domain}


@dataclass(frozen=True, slots=True)
class DomainMatch:
    """Which Domain serves a name, and how the name matched.

    ``via``: ``zone`` for ``<domain>.<zone>``, ``hostname`` for one of its
    hostnames, ``wildcard`` for a ``*.`` hostname (``pattern`` says which).
    ``canonical`` is ``<domain>.<zone>``, the CNAME target for hostnames.
    """

    domain: str
    canonical: str
    via: Literal["zone", "hostname", "wildcard"]
    pattern: str


@dataclass(frozen=True, slots=True)
class _SiteFacts:
    labels: Mapping[str, str]
    region: str
    country: str
    lat: float
    lon: float
    active: bool
    capacity_gbps: float
    load_gbps: float | None
    tier: str = "edge"
    latency: tuple[tuple[str, float], ...] = ()  # status.latency: measured RTTs from the site, by key
    why_inactive: str = ""  # e.g. "activating: 0 of 2 nodes ready (needs 1)", for `edgefleet route`


Vote = tuple[bool, float | None]
"""(healthy, when as seconds since the epoch or None)."""


@dataclass(frozen=True, slots=True)
class _NodeFacts:
    site: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    draining: bool
    phase: str | None
    votes: Mapping[str, Vote]  # this node's votes about its peers, by peer name


@dataclass(frozen=True, slots=True)
class _DomainFacts:
    hostnames: tuple[str, ...]
    selector: Selector
    routing: RoutingPolicy


class FleetState:
    """What the GSLB knows of the fleet; fed documents, asked questions (see the module docstring)."""

    def __init__(self, *, zone: str = DEFAULT_ZONE, vote_ttl: float = DEFAULT_VOTE_TTL) -> None:
        self.zone = zone.lower().rstrip(".")
        self.vote_ttl = vote_ttl
        self._sites: dict[str, _SiteFacts] = {}
        self._nodes: dict[str, _NodeFacts] = {}
        self._domains: dict[str, _DomainFacts] = {}
        self._site_nodes: dict[str, set[str]] = {}
        self._exact: dict[str, str] = {}
        self._wildcard: dict[str, str] = {}  # ".example.com" -> domain name
        self._expiries: list[tuple[float, str, str, float]] = []  # (at + ttl, voter, peer, at)
        self._vote_count = 0
        self._views: dict[str, SiteView] = {}
        self._latency: tuple[int, Latency] = (-1, LATENCY_EMPTY)
        self._now = -math.inf
        self._generation = 0

    # -- feeding -------------------------------------------------------------------------------

    def apply(self, kind: str, name: str, document: Mapping[str, Any] | None) -> str | None:
        """Add, replace (``document``) or remove (None) one object; other kinds are ignored.

        Returns None, or a message when the document is not a valid object
        of its kind; the object is then dropped (as if deleted), so a bad
        document never stops the GSLB.
        """
        model = KINDS.get(kind)
        if model is None:
            return None
        facts: _SiteFacts | _NodeFacts | _DomainFacts | None = None
        error = None
        if document is not None:
            try:
                facts = _facts(model.model_validate(document))
            except (ValidationError, SelectorError, ValueError) as exc:
                error = f"{kind} {name}: ignored, not a valid object: {exc}"
        self._store(kind, name, facts)
        return error

    def load(self, documents: Iterable[Mapping[str, Any]]) -> list[str]:
        """Apply each document (by its ``kind`` and ``metadata.name``); returns the error messages."""
        errors = []
        for document in documents:
            kind, name = document.get("kind"), (document.get("metadata") or {}).get("name")
            if not isinstance(kind, str) or not isinstance(name, str):
                errors.append("document without kind or metadata.name: ignored")
                continue
            error = self.apply(kind, name, document)
            if error is not None:
                errors.append(error)
        return errors

    def clear(self) -> None:
        """Forget everything (before loading a fresh list)."""
        for kind, table in (("Site", self._sites), ("Node", self._nodes), ("Domain", self._domains)):
            for name in list(table):
                self._store(kind, name, None)

    def _store(self, kind: str, name: str, facts: _SiteFacts | _NodeFacts | _DomainFacts | None) -> None:
        if kind == "Node":
            assert facts is None or isinstance(facts, _NodeFacts)
            changed = self._store_node(name, facts)
        elif kind == "Site":
            assert facts is None or isinstance(facts, _SiteFacts)
            changed = _put(self._sites, name, facts)
        else:
            assert facts is None or isinstance(facts, _DomainFacts)
            changed = self._store_domain(name, facts)
        if changed:
            self._bump()

    def _store_node(self, name: str, facts: _NodeFacts | None) -> bool:
        old = self._nodes.get(name)
        if old is not None:
            self._site_nodes.get(old.site, set()).discard(name)
        if facts is None:
            self._nodes.pop(name, None)
            self._vote_count -= len(old.votes) if old else 0
            return old is not None
        self._nodes[name] = facts
        self._site_nodes.setdefault(facts.site, set()).add(name)
        self._schedule_expiries(name, facts.votes, old.votes if old else {})
        return old is None or self._node_changed(old, facts)

    def _node_changed(self, old: _NodeFacts, new: _NodeFacts) -> bool:
        """Whether routing may see a difference (a refreshed, still-fresh vote is none)."""
        if (old.site, old.ipv4, old.ipv6, old.draining, old.phase) != (
            new.site,
            new.ipv4,
            new.ipv6,
            new.draining,
            new.phase,
        ):
            return True
        if old.votes.keys() != new.votes.keys():
            return True
        return any(self._vote_state(old.votes[peer]) != self._vote_state(vote) for peer, vote in new.votes.items())

    def _vote_state(self, vote: Vote) -> tuple[bool, bool]:
        """(healthy, fresh at the latest time routing was asked about)."""
        return vote[0], self._fresh(vote, self._now)

    def _schedule_expiries(self, voter: str, votes: Mapping[str, Vote], old: Mapping[str, Vote]) -> None:
        for peer, (_, at) in votes.items():
            if at is None or at + self.vote_ttl <= self._now or (peer in old and old[peer][1] == at):
                continue
            heapq.heappush(self._expiries, (at + self.vote_ttl, voter, peer, at))
        self._vote_count += len(votes) - len(old)
        if len(self._expiries) > 64 + 4 * self._vote_count:
            self._rebuild_expiries()

    def _rebuild_expiries(self) -> None:
        """Drop the entries of replaced votes (they pile up when nobody asks for a while)."""
        self._expiries = [
            (at + self.vote_ttl, voter, peer, at)
            for voter, node in self._nodes.items()
            for peer, (_, at) in node.votes.items()
            if at is not None
        ]
        heapq.heapify(self._expiries)

    def _store_domain(self, name: str, facts: _DomainFacts | None) -> bool:
        old = self._domains.get(name)
        if old == facts:
            return False
        if old is not None:
            self._unindex_hostnames(name, old.hostnames)
        if facts is None:
            del self._domains[name]
        else:
            self._domains[name] = facts
            for host in facts.hostnames:
                table, key = (self._wildcard, host[1:]) if host.startswith("*.") else (self._exact, host)
                table[key] = name
        return True

    def _unindex_hostnames(self, name: str, hostnames: tuple[str, ...]) -> None:
        for host in hostnames:
            table, key = (self._wildcard, host[1:]) if host.startswith("*.") else (self._exact, host)
            if table.get(key) == name:
                del table[key]

    def _bump(self) -> None:
        self._generation += 1
        self._views.clear()

    # -- time --------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Changes whenever answers may have changed, as of the last ``now`` seen (see generation_at)."""
        return self._generation

    def generation_at(self, now: float) -> int:
        """The generation at ``now``: also changed when a vote went stale since the last call."""
        self._now = max(self._now, now)
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, voter, peer, at = heapq.heappop(expiries)
            node = self._nodes.get(voter)
            vote = node.votes.get(peer) if node else None
            if vote is not None and vote[1] == at:
                self._bump()
        return self._generation

    def _fresh(self, vote: Vote, now: float) -> bool:
        at = vote[1]  # math.inf: the voter's session is live
        return at is not None and (at == math.inf or -MAX_CLOCK_SKEW <= now - at < self.vote_ttl)

    # -- questions ---------------------------------------------------------------------------------

    def domain_for(self, name: str) -> DomainMatch | None:
        """The Domain serving DNS name ``name`` (any case, trailing dot or not); None if none does."""
        host = name.lower().rstrip(".")
        if host == self.zone or host.endswith("." + self.zone):  # the zone's names are the zone's alone
            label = host[: -len(self.zone) - 1]
            return DomainMatch(label, host, "zone", "") if label in self._domains else None
        domain = self._exact.get(host)
        if domain is not None:
            return DomainMatch(domain, self._canonical(domain), "hostname", host)
        dot = host.find(".")
        while dot != -1:
            domain = self._wildcard.get(host[dot:])
            if domain is not None:
                return DomainMatch(domain, self._canonical(domain), "wildcard", "*" + host[dot:])
            dot = host.find(".", dot + 1)
        return None

    def domain_names(self) -> list[str]:
        """Names of the Domains served, sorted."""
        return sorted(self._domains)

    def canonical_host(self, domain: str) -> str:
        """The host the caches key the Domain's zone names under (api.domains.canonical_hostname)."""
        return canonical_hostname(list(self._domains[domain].hostnames))

    def _canonical(self, domain: str) -> str:
        return f"{domain}.{self.zone}"

    def routing_for(self, domain_name: str) -> RoutingPolicy:
        """The Domain's routing policy; raises NotServed for an unknown Domain."""
        return self._domain(domain_name).routing

    def sites_for(self, domain_name: str, now: float) -> list[SiteView]:
        """The edge Sites the Domain selects, by name, each with its nodes fit for answers at ``now``.

        Parent-tier sites are never answered to users: they shield origins. A
        Domain selects them too (e.g. ``tier in (edge,parent)``) only so that
        their caches serve it.
        """
        selector = self._domain(domain_name).selector
        self.generation_at(now)
        return [
            self._site_view(name, now)
            for name, site in sorted(self._sites.items())
            if site.tier != "parent" and selector.matches(site.labels)
        ]

    def _domain(self, domain_name: str) -> _DomainFacts:
        facts = self._domains.get(domain_name)
        if facts is None:
            raise NotServed(f"no Domain named {domain_name!r}")
        return facts

    def latency(self) -> Latency:
        """The measured latency matrix of the edge Sites (:mod:`edgefleet.gslb.latency`), kept per generation."""
        if self._latency[0] != self._generation:
            sites = (
                SiteLatency(name, site.region, site.latency)
                for name, site in sorted(self._sites.items())
                if site.tier != "parent"
            )
            self._latency = (self._generation, build_latency(sites))
        return self._latency[1]

    def _site_view(self, name: str, now: float) -> SiteView:
        """The view of a site, cached until the generation changes."""
        view = self._views.get(name)
        if view is None:
            site = self._sites[name]
            fit = [node for node in sorted(self._site_nodes.get(name, ())) if self._fitness(node, now)[0]]
            view = SiteView(
                name,
                site.region,
                site.country,
                site.lat,
                site.lon,
                site.active,
                site.capacity_gbps,
                site.load_gbps,
                tuple(self._target(node) for node in fit),
                site.why_inactive,
            )
            self._views[name] = view
        return view

    def _target(self, name: str) -> NodeTarget:
        node = self._nodes[name]
        return NodeTarget(name, node.ipv4, node.ipv6)

    def node_health(self, node_name: str, now: float) -> tuple[bool, str]:
        """Whether the node may be put in answers at ``now``, and why (for logs and the CLI)."""
        self.generation_at(now)
        return self._fitness(node_name, now)

    def _fitness(self, name: str, now: float) -> tuple[bool, str]:
        node = self._nodes.get(name)
        if node is None:
            return False, "no such node"
        if node.draining:
            return False, "draining"
        if not node.ipv4 and not node.ipv6:
            return False, "no addresses"
        voters, fresh = self._votes_about(name, node.site, now)
        if fresh:
            healthy = sum(1 for vote in fresh if vote[0])
            against = len(fresh) - healthy
            if 2 * against > voters:
                return False, f"{against} of {voters} peer voters say unhealthy"
            if healthy:
                return True, f"{healthy} of {len(fresh)} fresh peer votes say healthy"
        ready = node.phase == "Ready"
        votes = f"{len(fresh)} of {voters} peer voters say unhealthy (no majority)" if fresh else "no fresh peer votes"
        return ready, f"{votes}; phase {node.phase or 'unknown'}"

    def _votes_about(self, name: str, site: str, now: float) -> tuple[int, list[Vote]]:
        """How many voters ``site`` has about node ``name`` (its other Ready nodes), and their fresh votes."""
        voters, votes = 0, []
        for peer in self._site_nodes.get(site, ()):
            facts = self._nodes[peer]
            if peer == name or facts.phase != "Ready":
                continue
            voters += 1
            vote = facts.votes.get(name)
            if vote is not None and self._fresh(vote, now):
                votes.append(vote)
        return voters, votes


def _put(table: dict[str, _SiteFacts], name: str, facts: _SiteFacts | None) -> bool:
    """Store or delete; True if it changed anything."""
    if table.get(name) == facts:
        return False
    if facts is None:
        del table[name]
    else:
        table[name] = facts
    return True


def _facts(resource: Resource) -> _SiteFacts | _NodeFacts | _DomainFacts:
    if isinstance(resource, Site):
        return _site_facts(resource)
    if isinstance(resource, Node):
        return _node_facts(resource)
    assert isinstance(resource, Domain)
    return _domain_facts(resource)


def _site_facts(site: Site) -> _SiteFacts:
    spec, status = site.spec, site.status
    load_gbps = status.load_gbps
    if load_gbps is None and status.load is not None:
        load_gbps = status.load * spec.capacity_gbps
    return _SiteFacts(
        labels=dict(site.metadata.labels),
        region=spec.region,
        country=spec.location.country,
        lat=spec.location.lat,
        lon=spec.location.lon,
        active=spec.always_on or status.active is not False,
        capacity_gbps=spec.capacity_gbps,
        load_gbps=load_gbps,
        tier=spec.tier,
        latency=tuple(sorted((status.latency or {}).items())),
        why_inactive=_why_inactive(site),
    )


def _why_inactive(site: Site) -> str:
    """Why an elastic site gets no users: its phase, and for Activating what it waits for (its message)."""
    status = site.status
    if site.spec.always_on or status.active is not False:
        return ""
    if status.phase == "Activating" and status.message:
        return status.message.split(";")[0]
    return (status.phase or "inactive").lower()


def _vote_time(at: str | None) -> float | None:
    return None if at is None else parse_timestamp(at).timestamp()


def _node_facts(node: Node) -> _NodeFacts:
    addresses = node.spec.addresses
    connected = node.status.hub is not None  # its votes hold until its session ends (the hub clears them then)
    votes = {
        peer: (vote.healthy, math.inf if connected else _vote_time(vote.at))
        for peer, vote in (node.status.peer_votes or {}).items()
    }
    return _NodeFacts(
        site=node.spec.site,
        ipv4=tuple(address for address in addresses if ":" not in address),
        ipv6=tuple(address for address in addresses if ":" in address),
        draining=node.spec.draining or bool(node.status.drains),
        phase=node.status.phase,
        votes=votes,
    )


def _domain_facts(domain: Domain) -> _DomainFacts:
    routing = domain.spec.routing
    return _DomainFacts(
        hostnames=tuple(domain.spec.hostnames),
        selector=parse_selector(domain.spec.sites),
        routing=RoutingPolicy(
            policy=routing.policy,
            weights=dict(routing.weights),
            failover_order=tuple(routing.failover_order),
            answers=routing.answers,
            ttl=routing.ttl,
            prefer_country=routing.prefer_country,
            shed_threshold=routing.shed_threshold,
            shed_share=routing.shed_share,
        ),
    )
