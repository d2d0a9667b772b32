"""The authoritative zone: which question gets which answer.

How: :class:`Resolver` answers one parsed query with ``(rcode, answers,
authority, additional, ecs_scope)`` for :func:`edgefleet.gslb.dnswire.response`.
The names it is authoritative for, and what they hold:

============================== ==================================================
``<zone>`` (the apex)          SOA, NS (glue for in-zone name servers in additional)
``<ns name>`` (in the zone)    A/AAAA from ``Zone.glue``
``<domain>.<zone>``            A/AAAA of the nodes the routing policy picks
a Domain hostname (or wildcard) CNAME to ``<domain>.<zone>``, plus its A/AAAA
``<node>.<domain>.<zone>``     A/AAAA of that node, while it is fit for answers
``whoami.<zone>``              TXT: the client address used and its location
``_route.<domain>.<zone>``     TXT: that, plus the site and nodes chosen and why
============================== ==================================================

The two diagnostic names are answered over TCP only (:meth:`Resolver.tcp_only`:
the server answers them TC=1 over UDP). Other types at those names get NODATA (NOERROR, no answer, the SOA in the
authority section: RFC 2308), other names under the zone NXDOMAIN with the
SOA, names outside the zone and every hostname REFUSED. Opcodes other than
QUERY get NOTIMP, EDNS versions other than 0 BADVERS (RFC 6891 §6.1.3),
classes other than IN and zone transfers REFUSED.

Per-node names are where the HTTP 302 redirector sends users
(:mod:`edgefleet.gslb.redirect`): a node's cache picks the Domain by the Host
header, so the redirect must name the node *and* the Domain. Such a name
exists while the node belongs to a site the Domain's ``spec.sites`` selects
and is fit for answers (not draining, healthy, with an address), whatever
the site's active flag (a user redirected just before the site was
deactivated still reaches a serving node); otherwise it is NXDOMAIN. The
records carry the Domain's routing TTL, so a node leaving answers leaves
resolvers' caches as fast as the Domain's own name. Node and Domain names
may hold dots: every split of ``<node>.<domain>`` is tried, and a
``<domain>.<zone>`` name always wins over a node name spelled the same.

Placing the client (RFC 7871): the Client Subnet address when the query has
one with a non-zero source prefix, else the address the query came from (the
resolver's). The answer's ECS scope prefix is the length of the geo table
prefix that placed the client, capped at the source prefix; when the answer
also depends on the client's subnet itself (``weighted`` policy, or the
client's first-ranked site over its shedding threshold: the ``draw`` is a
hash of the subnet), it is the source prefix.

Measured latency: under the ``latency`` policy, once the fleet's Sites
carry measured RTTs to client networks (:mod:`edgefleet.gslb.latency`), the
client's address is also matched against those networks (longest prefix,
:class:`~edgefleet.gslb.networks.NetworkTable`; only for such Domains, so
other queries pay nothing) and the decision is kept per (location,
network). Such answers carry the source prefix as their scope: a measured
network may lie inside the geo block, so an answer must not be reused for
the whole block.

Why precomputed decisions (issue 15): a routing decision costs tens of
microseconds (site views, ranking, distances, hashing, encoding), while what
it depends on is few: the Domain, the address type and the client's
*location* (the geo table's place: a million prefixes map to a few thousand
cities), plus, only under ``weighted`` or while the client's first site
sheds load, a draw hashed from the subnet. So the site decision is a
:class:`~edgefleet.gslb.policy.SiteChoice` per (Domain, type, location),
built on the first query from that location and shared by every prefix
and subnet placed there (:meth:`Resolver.site_choice`; a real geo table's
locations take ~15 µs each, lazily: no query waits for the others); the
records are built once per (name, type, chosen site) (:class:`_RoutedName`,
compressed against the question only, so one set serves every case variant
of the name). A query from a new subnet so costs a longest-prefix lookup
and table reads; the DNS server goes further with :meth:`Resolver.ecs_route`
(see :mod:`edgefleet.gslb.dns`: no parse, no encode). Everything is dropped
when :attr:`Resolver.generation` moves (the fleet state changed, a peer vote
went stale, or the geo table was reloaded) and rebuilt lazily, and all of
it is bounded (:data:`ANSWER_CACHE_SIZE`, :data:`CHOICE_CACHE_SIZE`). The
``edgefleet route`` CLI and the ``_route`` TXT name call
:func:`~edgefleet.gslb.policy.choose`, whose ranking and shedding steps
``SiteChoice`` reuses; ``tests/gslb/test_fastpath.py`` checks they agree.

Pure: no I/O; the clock is a parameter (``clock``, seconds since the epoch).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from edgefleet.gslb import dnswire
from edgefleet.gslb.dnswire import Query
from edgefleet.gslb.fleet import DEFAULT_ZONE, DomainMatch, FleetState
from edgefleet.gslb.geo import GeoDatabase, Location, Match
from edgefleet.gslb.networks import NetworkTable
from edgefleet.gslb.policy import (
    Client,
    LatencyMatrix,
    NodeTarget,
    RoutingPolicy,
    SiteChoice,
    SiteView,
    choose,
    draw_for,
    rank_nodes,
)

Resolution = tuple[int, Sequence[bytes], Sequence[bytes], Sequence[bytes], int | None]
"""rcode, answer records, authority records, additional records, ECS scope prefix (None: 0)."""

ANSWER_CACHE_SIZE = 65536
"""Security limit: routed questions (name, type) whose answers are kept before they are all dropped
(a flood of distinct names under a wildcard)."""
CHOICE_CACHE_SIZE = 131072
"""Security limit: site decisions kept, one per (Domain, type, client location), before they are all
dropped. A location is a place of the geo table (a city), not a prefix: a million-range table has a
few thousand to a hundred thousand of them."""

DIAGNOSTIC_TTL = 0
_ADDRESS_TYPES = {dnswire.A: "ipv4", dnswire.AAAA: "ipv6"}
_EMPTY: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Zone:
    """The CDN zone's own data: origin, name servers, SOA fields.

    ``hostmaster`` is the SOA RNAME, as a mailbox (``hostmaster@example.com``,
    no dot before the ``@``) or already in DNS form. ``negative_ttl`` is the SOA MINIMUM: how long
    resolvers may cache NXDOMAIN and NODATA (RFC 2308). ``glue`` gives
    addresses for name servers whose names are inside the zone.
    """

    origin: str = DEFAULT_ZONE
    ns: tuple[str, ...] = (f"ns1.{DEFAULT_ZONE}",)
    hostmaster: str = f"hostmaster.{DEFAULT_ZONE}"
    serial: int = 1
    soa_ttl: int = 3600
    refresh: int = 3600
    retry: int = 600
    expire: int = 604800
    negative_ttl: int = 30
    ns_ttl: int = 3600
    glue: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", self.origin.lower().rstrip("."))
        object.__setattr__(self, "ns", tuple(name.lower().rstrip(".") for name in self.ns))
        object.__setattr__(self, "glue", {name.lower().rstrip("."): tuple(a) for name, a in self.glue.items()})
        for name in (self.origin, *self.ns, self.rname):
            dnswire.name_wire(name)  # ValueError now rather than at the first query

    @property
    def rname(self) -> str:
        return self.hostmaster.rstrip(".").replace("@", ".", 1)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A Domain's routing inputs for one address family, valid for one generation."""

    policy: RoutingPolicy
    sites: tuple[SiteView, ...]


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where a query's client is: the address used, its source prefix (ECS) and location."""

    address: str
    source_prefix: int | None
    location: Location | None
    matched_prefix: int | None
    network: str | None = None
    """The longest measured client network (latency matrix row) holding the address, if any."""

    @property
    def subnet(self) -> str:
        return self.address if self.source_prefix is None else f"{self.address}/{self.source_prefix}"

    def scope(self, *, per_subnet: bool) -> int | None:
        """The ECS scope prefix an answer depending on this placement carries."""
        if self.source_prefix is None:
            return None
        if per_subnet or self.matched_prefix is None:
            return self.source_prefix
        return min(self.source_prefix, self.matched_prefix)


_Records = tuple[int, tuple[bytes, ...], tuple[bytes, ...]]
"""rcode, answer records, authority records."""

ChoiceKey = Location | None | tuple[Location | None, str]
"""A site decision's key: the client's location, or (location, measured network) under ``latency``."""


class Resolver:
    """Answers queries for a :class:`Zone` from a :class:`FleetState` and a geo table."""

    def __init__(
        self,
        zone: Zone,
        fleet_state: FleetState,
        geo: GeoDatabase,
        latency: LatencyMatrix | None = None,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = ANSWER_CACHE_SIZE,
    ) -> None:
        if fleet_state.zone != zone.origin:
            raise ValueError(f"the fleet state serves zone {fleet_state.zone!r}, the zone is {zone.origin!r}")
        self.zone = zone
        self.fleet = fleet_state
        self.geo = geo
        self._fixed_latency = latency
        self.latency = latency
        """The latency matrix in use: ``latency`` if given, else the fleet's measured one (per generation)."""
        self.networks = NetworkTable(())
        """The measured client networks of :attr:`latency` (empty when ``latency`` was given)."""
        self.clock = clock
        self.cache_size = cache_size
        self._suffix = "." + zone.origin
        self._generation = 0
        self._seen: tuple[int, object] = (-1, None)
        self._routes: dict[tuple[str, int], _RoutedName] = {}
        self._choices: dict[tuple[str, int], dict[ChoiceKey, SiteChoice]] = {}
        self._plans: dict[tuple[str, int], _Plan] = {}
        self._answered_site: str | None = None  # set by _routed for resolve_site

    # --- generation ------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Moves when answers may change: fleet state (including votes going stale) or geo table."""
        seen = (self.fleet.generation_at(self.clock()), self.geo.table)
        if seen[0] != self._seen[0] or seen[1] is not self._seen[1]:
            self._seen = seen
            self._generation += 1
            self._routes.clear()
            self._choices.clear()
            self._plans.clear()
            if self._fixed_latency is None:
                measured = self.fleet.latency()
                self.latency, self.networks = measured.matrix or None, measured.networks
        return self._generation

    # --- questions ---------------------------------------------------------------------------

    def resolve(self, query: Query, client_address: str) -> Resolution:
        """The answer to ``query`` from a client (or resolver) at ``client_address``."""
        return self.resolve_site(query, client_address)[0]

    def resolve_site(self, query: Query, client_address: str) -> tuple[Resolution, str | None]:
        """:meth:`resolve`, and the site whose nodes the answer names (None: no routed answer)."""
        self._answered_site = None
        return self._resolve(query, client_address), self._answered_site

    def _resolve(self, query: Query, client_address: str) -> Resolution:
        refusal = _refusal(query)
        if refusal is not None:
            return refusal, _EMPTY, _EMPTY, _EMPTY, None
        self.generation  # noqa: B018 -- empties the caches if the fleet or the geo table changed
        name = query.qname
        if name == self.zone.origin:
            return self._apex(query)
        in_zone = name.endswith(self._suffix)
        if in_zone:
            special = self._special_name(query, name[: -len(self._suffix)], client_address)
            if special is not None:
                return special
        match = self.fleet.domain_for(name)
        if match is not None:
            return self._domain_answer(query, match, client_address)
        if in_zone:
            found = self.node_for(name)
            if found is not None:
                return self._node_answer(query, *found)
            return dnswire.NXDOMAIN, _EMPTY, self._soa_authority(query), _EMPTY, None
        return dnswire.REFUSED, _EMPTY, _EMPTY, _EMPTY, None

    def _special_name(self, query: Query, label: str, client_address: str) -> Resolution | None:
        """Answers for ``whoami``, ``_route.<domain>`` and in-zone name servers; None for other names."""
        if label == "whoami":
            if query.qtype not in (dnswire.TXT, dnswire.ANY):
                return self._nodata(query)
            placement = self.place(query, client_address)
            record = dnswire.txt(query.qname, DIAGNOSTIC_TTL, describe_placement(placement), question=query.qname_wire)
            return dnswire.NOERROR, (record,), _EMPTY, _EMPTY, placement.scope(per_subnet=True)
        if label.startswith("_route."):
            match = self.fleet.domain_for(label[len("_route.") :] + self._suffix)
            if match is not None and match.via == "zone":
                return self._route_txt(query, match, client_address)
        if query.qname in self.zone.glue:
            return self._glue_answer(query)
        return None

    def _apex(self, query: Query) -> Resolution:
        qtype, zone = query.qtype, self.zone
        if qtype == dnswire.SOA:
            return dnswire.NOERROR, (self._soa(query, zone.soa_ttl),), _EMPTY, _EMPTY, None
        if qtype == dnswire.NS:
            return dnswire.NOERROR, self._ns_records(query), _EMPTY, self._glue_records(query), None
        if qtype == dnswire.ANY:
            return dnswire.NOERROR, (self._soa(query, zone.soa_ttl), *self._ns_records(query)), _EMPTY, _EMPTY, None
        return self._nodata(query)

    def _ns_records(self, query: Query) -> tuple[bytes, ...]:
        return tuple(
            dnswire.ns(self.zone.origin, self.zone.ns_ttl, target, question=query.qname_wire) for target in self.zone.ns
        )

    def _glue_records(self, query: Query) -> tuple[bytes, ...]:
        return tuple(
            record
            for target in self.zone.ns
            if target in self.zone.glue
            for record in self._address_records(query, target, self.zone.glue[target], self.zone.ns_ttl)
        )

    def _glue_answer(self, query: Query) -> Resolution:
        if query.qtype not in _ADDRESS_TYPES:
            return self._nodata(query)
        want_ipv6 = query.qtype == dnswire.AAAA
        addresses = [address for address in self.zone.glue[query.qname] if (":" in address) == want_ipv6]
        records = tuple(self._address_records(query, query.qname, addresses, self.zone.ns_ttl))
        return (dnswire.NOERROR, records, _EMPTY, _EMPTY, None) if records else self._nodata(query)

    def _address_records(self, query: Query, owner: str, addresses: Sequence[str], ttl: int) -> list[bytes]:
        return [
            dnswire.aaaa(owner, ttl, address, question=query.qname_wire)
            if ":" in address
            else dnswire.a(owner, ttl, address, question=query.qname_wire)
            for address in addresses
        ]

    def _soa(self, query: Query, ttl: int) -> bytes:
        zone = self.zone
        return dnswire.soa(
            zone.origin,
            ttl,
            zone.ns[0] if zone.ns else zone.origin,
            zone.rname,
            zone.serial,
            zone.refresh,
            zone.retry,
            zone.expire,
            zone.negative_ttl,
            question=query.qname_wire,
        )

    def _soa_authority(self, query: Query) -> tuple[bytes, ...]:
        """The SOA for a negative answer, with the negative-caching TTL (RFC 2308 §5)."""
        return (self._soa(query, min(self.zone.soa_ttl, self.zone.negative_ttl)),)

    def _nodata(self, query: Query) -> Resolution:
        return dnswire.NOERROR, _EMPTY, self._soa_authority(query), _EMPTY, None

    # --- Domain names ------------------------------------------------------------------------

    def _domain_answer(self, query: Query, match: DomainMatch, client_address: str) -> Resolution:
        qtype = query.qtype
        routing = self.fleet.routing_for(match.domain)
        if match.via == "zone":
            if qtype == dnswire.ANY:
                qtype = dnswire.A  # RFC 8482: answer ANY with one RRset of our choice
            if qtype not in _ADDRESS_TYPES:
                return self._nodata(query)
            return self._routed(query, match, qtype, client_address, ())
        alias = dnswire.cname(query.qname, routing.ttl, match.canonical, question=query.qname_wire)
        if qtype not in _ADDRESS_TYPES:
            return dnswire.NOERROR, (alias,), _EMPTY, _EMPTY, None
        return self._routed(query, match, qtype, client_address, (alias,))

    def _routed(
        self, query: Query, match: DomainMatch, qtype: int, client_address: str, before: tuple[bytes, ...]
    ) -> Resolution:
        """A/AAAA records of the nodes the policy picks (after ``before``: the CNAME)."""
        placement = self.place(query, client_address)
        route = self._routed_name(query, match, qtype, before)
        network = placement.network if route.needs_network else None
        site, (rcode, answers, authority), per_subnet = route.answer(
            placement.location, lambda: placement.subnet, network
        )
        self._answered_site = site
        return rcode, answers, authority, _EMPTY, placement.scope(per_subnet=per_subnet)

    def _routed_name(self, query: Query, match: DomainMatch, qtype: int, before: tuple[bytes, ...]) -> _RoutedName:
        """The answers for one routed question (name and type), kept until the generation moves."""
        key = (query.qname, query.qtype)
        route = self._routes.get(key)
        if route is None:
            route = _RoutedName(self, query, match, qtype, before)
            if len(self._routes) >= self.cache_size:
                self._routes.clear()
            if self.cache_size:
                self._routes[key] = route
        return route

    def site_choice(self, domain: str, qtype: int, location: Location | None, network: str | None = None) -> SiteChoice:
        """The Domain's site decision for clients at ``location`` (A or AAAA), computed once per generation.

        Shared by every geo block (and so every subnet) placed at the same
        location: a fresh query costs a table read, not a decision. Under the
        ``latency`` policy a client in a measured network (``network``) has a
        decision of its own per (location, network): still a few keys.
        """
        choices = self.choices_for(domain, qtype)
        key: ChoiceKey = location if network is None else (location, network)
        choice = choices.get(key)
        if choice is None:
            plan = self._plan(domain, qtype)
            choice = SiteChoice(Client("", location, network), plan.sites, plan.policy, self.latency)
            if len(choices) >= CHOICE_CACHE_SIZE:
                choices.clear()
            if self.cache_size:
                choices[key] = choice
        return choice

    def choices_for(self, domain: str, qtype: int) -> dict[ChoiceKey, SiteChoice]:
        """The site decisions made so far for the Domain and type, by client location (this generation)."""
        return self._choices.setdefault((domain, qtype), {})

    def ecs_route(self, query: Query) -> EcsRoute | None:
        """For a routed A/AAAA question with a Client Subnet: its answers as a function of the subnet.

        None for every other query (see :meth:`resolve`). The DNS server
        keeps it per query *shape* (the message but for its id and subnet
        address), so a query from a new subnet costs a geo lookup and a
        table read: no parse, no decision, no encoding.
        """
        ecs = query.edns.ecs if query.edns is not None else None
        if ecs is None or ecs.source_prefix == 0:
            return None
        routed = self._shaped_route(query)
        return None if routed is None else EcsRoute(routed, self.geo, ecs.family, ecs.source_prefix, self.networks)

    def address_route(self, query: Query) -> AddressRoute | None:
        """:meth:`ecs_route` for a routed question without a Client Subnet: placed by the sender's address."""
        ecs = query.edns.ecs if query.edns is not None else None
        if ecs is not None and ecs.source_prefix > 0:
            return None
        routed = self._shaped_route(query)
        return None if routed is None else AddressRoute(routed, self.geo, self.networks)

    def _shaped_route(self, query: Query) -> _RoutedName | None:
        """The routed question :meth:`resolve` would answer with :meth:`_routed`; None for any other one."""
        if _refusal(query) is not None:
            return None
        self.generation  # noqa: B018 -- empties the caches if the fleet or the geo table changed
        name = query.qname
        if name == self.zone.origin or self.tcp_only(query) or name in self.zone.glue:
            return None
        match = self.fleet.domain_for(name)
        if match is None:
            return None
        qtype = query.qtype
        if match.via == "zone":
            qtype = dnswire.A if qtype == dnswire.ANY else qtype
            before: tuple[bytes, ...] = ()
        else:
            ttl = self.fleet.routing_for(match.domain).ttl
            before = (dnswire.cname(query.qname, ttl, match.canonical, question=query.qname_wire),)
        if qtype not in _ADDRESS_TYPES:
            return None
        return self._routed_name(query, match, qtype, before)

    def _plan(self, domain: str, qtype: int) -> _Plan:
        """The Domain's policy and sites, nodes narrowed to those with an address of the family."""
        plan = self._plans.get((domain, qtype))
        if plan is None:
            family = _ADDRESS_TYPES[qtype]
            policy = self.fleet.routing_for(domain)
            sites = tuple(
                dataclasses.replace(site, nodes=tuple(n for n in site.nodes if getattr(n, family)))
                for site in self.fleet.sites_for(domain, self.clock())
            )
            plan = _Plan(policy, sites)
            self._plans[(domain, qtype)] = plan
        return plan

    # --- per-node names ----------------------------------------------------------------------

    def node_for(self, name: str) -> tuple[str, NodeTarget] | None:
        """The Domain and node a per-node name ``<node>.<domain>.<zone>`` designates, while it is fit."""
        host = name.lower().rstrip(".")
        if not host.endswith(self._suffix):
            return None
        label = host[: -len(self._suffix)]
        dot = label.find(".")
        while dot != -1:
            match = self.fleet.domain_for(label[dot + 1 :] + self._suffix)
            if match is not None and match.via == "zone":
                node = self._fit_node(match.domain, label[:dot])
                if node is not None:
                    return match.domain, node
            dot = label.find(".", dot + 1)
        return None

    def _fit_node(self, domain: str, node_name: str) -> NodeTarget | None:
        for site in self.fleet.sites_for(domain, self.clock()):
            for node in site.nodes:
                if node.name == node_name:
                    return node
        return None

    def _node_answer(self, query: Query, domain: str, node: NodeTarget) -> Resolution:
        qtype = dnswire.A if query.qtype == dnswire.ANY else query.qtype
        if qtype not in _ADDRESS_TYPES:
            return self._nodata(query)
        addresses = getattr(node, _ADDRESS_TYPES[qtype])
        records = tuple(self._address_records(query, query.qname, addresses, self.fleet.routing_for(domain).ttl))
        return (dnswire.NOERROR, records, _EMPTY, _EMPTY, None) if records else self._nodata(query)

    # --- clients and diagnostics ---------------------------------------------------------------

    def place(self, query: Query, client_address: str) -> _Placement:
        """The client address used for routing (ECS, else the sender) and its location."""
        ecs = query.edns.ecs if query.edns is not None else None
        if ecs is not None and ecs.source_prefix > 0:
            address, source = ecs.address, ecs.source_prefix
        else:
            address, source = client_address, None
        found = self.geo.lookup(address)
        network = self.networks.match(address) if self.networks else None
        if found is None:
            return _Placement(address, source, None, None, network)
        return _Placement(address, source, found[0], found[1], network)

    def tcp_only(self, query: Query) -> bool:
        """Whether ``query`` asks about a diagnostic name (``whoami``, ``_route.*``): answered over TCP only.

        Their TXT answers are large for the query and computed per client, so
        over UDP they would be an amplifier and an uncacheable load; the
        server answers such UDP queries TC=1 and clients (dig included)
        retry over TCP.
        """
        name = query.qname
        if not name.endswith(self._suffix):
            return False
        label = name[: -len(self._suffix)]
        return label == "whoami" or label.startswith("_route.")

    def region_of(self, query: Query, client_address: str) -> str:
        """The placed client's region ("" when the geo table does not know it)."""
        location = self.place(query, client_address).location
        return location.region if location is not None else ""

    def _route_txt(self, query: Query, match: DomainMatch, client_address: str) -> Resolution:
        if query.qtype not in (dnswire.TXT, dnswire.ANY):
            return self._nodata(query)
        placement = self.place(query, client_address)
        plan = self._plan(match.domain, dnswire.A)
        route = choose(
            Client(placement.address, placement.location, placement.network),
            plan.sites,
            plan.policy,
            key=match.canonical,
            draw=draw_for(placement.subnet, match.domain),
            latency=self.latency,
        )
        nodes = " ".join(f"{node.name}={','.join(node.ipv4)}" for node in route.nodes) or "none"
        strings = [
            *describe_placement(placement),
            f"site {route.site or 'none'}",
            f"nodes {nodes}",
            f"reason {route.reason}",
        ]
        record = dnswire.txt(query.qname, DIAGNOSTIC_TTL, strings, question=query.qname_wire)
        return dnswire.NOERROR, (record,), _EMPTY, _EMPTY, placement.scope(per_subnet=True)


def node_hostname(node: str, domain: str, zone: str) -> str:
    """The per-node name ``<node>.<domain>.<zone>`` (answered by :meth:`Resolver.node_for`)."""
    return f"{node}.{domain}.{zone.lower().rstrip('.')}"


def describe_placement(placement: _Placement) -> list[str]:
    """TXT strings saying which client address was used and where the geo table puts it."""
    how = "resolver address" if placement.source_prefix is None else "ECS"
    where = "unknown"
    if placement.location is not None:
        loc = placement.location
        where = f"{loc.country} {loc.region} {loc.lat:g},{loc.lon:g} (prefix /{placement.matched_prefix})"
    described = [f"client {placement.subnet} ({how})", f"location {where}"]
    if placement.network is not None:
        described.append(f"measured network {placement.network}")
    return described


def _refusal(query: Query) -> int | None:
    """The rcode for queries no name lookup can answer; None for ordinary ones."""
    if query.opcode != dnswire.OPCODE_QUERY:
        return dnswire.NOTIMP
    if query.edns is not None and query.edns.version != 0:
        return dnswire.BADVERS
    if query.qtype == dnswire.OPT:
        return dnswire.FORMERR
    if query.qclass != dnswire.CLASS_IN or query.qtype in (dnswire.AXFR, dnswire.IXFR):
        return dnswire.REFUSED
    return None


class _RoutedName:
    """One routed question (lowercase name, type): its answer records per chosen site.

    The records are compressed against the question only, so they hold for
    every case variant of the name and every client placed at that site.
    """

    __slots__ = (
        "_before",
        "_choices",
        "_domain",
        "_family",
        "_key",
        "_owner",
        "_qtype",
        "_query",
        "_records",
        "_resolver",
        "_ttl",
        "needs_network",
    )

    def __init__(
        self, resolver: Resolver, query: Query, match: DomainMatch, qtype: int, before: tuple[bytes, ...]
    ) -> None:
        self._resolver = resolver
        self._domain = match.domain
        self._qtype = qtype
        self._family = _ADDRESS_TYPES[qtype]
        self._key = query.qname
        self._owner = query.qname if match.via == "zone" else match.canonical
        self._before = before
        self._ttl = resolver.fleet.routing_for(match.domain).ttl
        self._records: dict[str | None, tuple[_Records, bool]] = {}
        self._query = query
        self._choices = resolver.choices_for(match.domain, qtype)
        self.needs_network = bool(resolver.networks) and resolver.fleet.routing_for(match.domain).policy == "latency"
        """Whether the answer depends on the client's measured network: callers look it up only then."""

    def answer(
        self, location: Location | None, subnet: Callable[[], str], network: str | None = None
    ) -> tuple[str | None, _Records, bool]:
        """(chosen site, its records, whether the answer depends on the subnet) for a client at ``location``.

        ``subnet`` gives the client subnet's text, asked only when the draw matters; ``network`` is
        the client's measured network (looked up by the caller when :attr:`needs_network`).
        """
        if network is None:
            choice = self._choices.get(location) or self._resolver.site_choice(self._domain, self._qtype, location)
        else:
            choice = self._choices.get((location, network)) or self._resolver.site_choice(
                self._domain, self._qtype, location, network
            )
        draw_matters = choice.draw_matters
        site = choice.site(draw_for(subnet(), self._domain)) if draw_matters else choice.site(0.0)
        name = None if site is None else site.name
        found = self._records.get(name)
        if found is None:
            found = self._records[name] = self._build(site)
        # Whether the answer depends on the subnet is this client's decision's, not the shared records':
        # a drawn answer (or, under measured networks, which may lie inside the geo block, any answer)
        # holds for the subnet only; NODATA holds for everyone.
        return name, found[0], found[1] and (draw_matters or self.needs_network)

    def fixed(self, location: Location | None) -> bool:
        """Whether the answer for clients at ``location`` depends on nothing else (no measured network, no
        draw): then a caller may keep it per location (the DNS server's query shapes do)."""
        if self.needs_network:
            return False
        choice = self._choices.get(location) or self._resolver.site_choice(self._domain, self._qtype, location)
        return not choice.draw_matters

    def _build(self, site: SiteView | None) -> tuple[_Records, bool]:
        """The site's records, and whether they name nodes (False: NODATA with the SOA)."""
        resolver, query = self._resolver, self._query
        policy = resolver.fleet.routing_for(self._domain)
        nodes = rank_nodes(site.nodes, self._key)[: max(1, policy.answers)] if site is not None else ()
        addresses = [address for node in nodes for address in getattr(node, self._family)]
        records = tuple(resolver._address_records(query, self._owner, addresses, self._ttl))
        if not records and not self._before:
            return (dnswire.NOERROR, _EMPTY, resolver._soa_authority(query)), False
        return (dnswire.NOERROR, self._before + records, _EMPTY), True


class EcsRoute:
    """A routed question's answers as a function of the Client Subnet address (:meth:`Resolver.ecs_route`)."""

    __slots__ = ("_family", "_networks", "_route", "_source", "lookup")

    def __init__(
        self, route: _RoutedName, geo: GeoDatabase, family: int, source_prefix: int, networks: NetworkTable
    ) -> None:
        self._route, self._family, self._source = route, family, source_prefix
        self.lookup = geo.wire_lookup(family)
        """The geo table's lookup of a subnet address in wire form (the table of this generation)."""
        self._networks = networks if route.needs_network else None

    def place(self, address_wire: bytes) -> tuple[str | None, _Records, int, str]:
        """(chosen site, records, ECS scope, client region) for a query from subnet ``address_wire``.

        Answers with equal sites are equal (the site is the answer's key; None: no site).
        """
        return self.place_found(address_wire, self.lookup(address_wire))

    def place_found(self, address_wire: bytes, found: Match | None) -> tuple[str | None, _Records, int, str]:
        """:meth:`place` for a subnet whose geo lookup (:attr:`lookup`) gave ``found``."""
        location, matched = found if found is not None else (None, None)
        source = self._source
        network = None if self._networks is None else self._networks.match_wire(self._family, address_wire)
        key, records, per_subnet = self._route.answer(location, lambda: self._subnet(address_wire), network)
        scope = source if per_subnet or matched is None else min(source, matched)
        return key, records, scope, location.region if location is not None else ""

    def fixed(self, location: Location | None) -> bool:
        """Whether every subnet placed at ``location`` gets the same answer and scope rule: the site chosen
        (and the records) depend on the location alone, and the scope is ``min(source prefix, matched prefix)``."""
        return self._route.fixed(location)

    def _subnet(self, address_wire: bytes) -> str:
        return f"{dnswire.address_text(self._family, address_wire)}/{self._source}"


class AddressRoute:
    """A routed question's answers as a function of the sender's address (:meth:`Resolver.address_route`)."""

    __slots__ = ("_geo", "_networks", "_route")

    def __init__(self, route: _RoutedName, geo: GeoDatabase, networks: NetworkTable) -> None:
        self._route, self._geo = route, geo
        self._networks = networks if route.needs_network else None

    def place(self, client_address: str) -> tuple[str | None, _Records, None, str]:
        """(chosen site, records, no ECS scope, client region) for a query sent from ``client_address``."""
        found = self._geo.lookup(client_address)
        location = found[0] if found is not None else None
        network = None if self._networks is None else self._networks.match(client_address)
        key, records, _ = self._route.answer(location, lambda: client_address, network)
        return key, records, None, location.region if location is not None else ""
