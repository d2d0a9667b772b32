"""``edgefleet route DOMAIN --client IP``: explain the GSLB's decision for one client.

How: the command lists the Sites, Nodes and Domains from the cloud's REST
API, feeds them to a :class:`~edgefleet.gslb.fleet.FleetState` (the GSLB's
own model of the fleet: the same node health from peer votes and phase,
the same draining rule), places the client with the geo table (``--geo``;
by default the table the cloud publishes to its nodes, its GSLB's own, as
``edgefleet rules test`` does, :mod:`edgefleet.cli.geosource`; without one,
``examples/geo.csv`` when it exists, and a note says which) and calls the routing
policy the DNS server and the 302 redirector call,
:func:`edgefleet.gslb.policy.choose`, with the same inputs they would use:

- DNS (the default): the client is a resolver address, or with ``IP/LEN``
  an EDNS Client Subnet; the node hash key is the name asked; only nodes
  with an address of the ``--type`` (A or AAAA) are candidates, as in the
  DNS answer for that type.
- HTTP 302 (``--path /P``): the client is the user's address, the key the
  URL's cache key and the draw the client's /24 or /56, as in
  :mod:`edgefleet.gslb.redirect`; the output adds the Location.

It prints where the client was placed (and by which geo table prefix),
every candidate site with its distance, load, fit nodes, eligibility,
score and the policy's note, the chosen site with the ordered node answers
and their addresses, the nodes left out and why, and the reason; ``-o
json`` or ``-o yaml`` give the same as data for scripts.

Why a fresh FleetState from a listing rather than asking the running GSLB:
the command works against any cloud, with or without a GSLB running, and
explains what the data in the store implies. (A running GSLB answers the
same question at ``_route.<domain>.<zone>`` TXT and at the redirector's
``/_route``.) The ``latency`` policy is explained with the measured
RTTs the Sites' ``status.latency`` hold (the GSLB's matrix is built from
them, :meth:`~edgefleet.gslb.fleet.FleetState.latency`): the client's
measured network, and each candidate's RTT in its score and note.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.domains import CDN_ZONE
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, console, fail

if TYPE_CHECKING:
    from rich.table import Table

    from edgefleet.gslb.fleet import DomainMatch, FleetState
    from edgefleet.gslb.geo import GeoLookup, Location
    from edgefleet.gslb.policy import Route, RoutingPolicy, SiteView

DEFAULT_GEO = Path("examples/geo.csv")
MODES = ("A", "AAAA")
FAMILIES = {"A": "ipv4", "AAAA": "ipv6"}
ECS = "EDNS Client Subnet"


def register(app: typer.Typer) -> None:
    """Add ``route`` to the ``edgefleet`` app."""
    app.command("route")(route)


@dataclass(frozen=True, slots=True)
class Placement:
    """The client as the GSLB sees it: the address placed, the subnet hashed, how it was given, where it is."""

    address: str
    subnet: str
    how: str
    location: Location | None
    geo_prefix: str | None
    network: str | None = None
    """The longest client network with measured RTTs holding the address (a row of the latency matrix)."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything the command prints."""

    name: str
    match: DomainMatch
    policy: RoutingPolicy
    mode: str
    placement: Placement
    key: str
    sites: tuple[SiteView, ...]
    members: Mapping[str, tuple[str, ...]]
    left_out: tuple[tuple[str, str, str], ...]
    route: Route
    zone: str
    location: str | None


# -- inputs ----------------------------------------------------------------------------------------


def parse_client(text: str, *, redirect: bool) -> tuple[str, str, str]:
    """``(address, subnet, how)`` of ``--client``: an address, or (DNS only) a Client Subnet ``IP/LEN``."""
    from edgefleet.gslb.redirect import client_subnet, parse_address

    if "/" in text:
        if redirect:
            raise ValueError("--client: the 302 redirector sees the user's own address; give an IP, not a subnet")
        network = ipaddress.ip_network(text, strict=False)
        address = str(network.network_address)
        return address, f"{address}/{network.prefixlen}", ECS
    parsed = parse_address(text)
    if parsed is None:
        raise ValueError(f"--client {text!r} is not an IP address or subnet")
    address = str(parsed)
    if redirect:
        return address, client_subnet(address), "user address, HTTP 302"
    return address, address, "resolver address, no Client Subnet"


def geo_prefix(geo_text: str | None, address: str) -> str | None:
    """The most specific prefix of a CSV geo table that holds ``address`` (the one that placed it)."""
    if geo_text is None:
        return None
    from edgefleet.gslb.geo import parse_address

    ip = parse_address(address)
    if ip is None:
        return None
    best: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    for line in geo_text.splitlines():
        cidr = line.split("#", 1)[0].split(",", 1)[0].strip()
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            continue  # blank, comment or header line
        if network.version == ip.version and ip in network and (best is None or network.prefixlen > best.prefixlen):
            best = network
    return str(best) if best is not None else None


def place(geo: GeoLookup, geo_text: str | None, client: tuple[str, str, str]) -> Placement:
    address, subnet, how = client
    found = geo.lookup(address)
    location = found[0] if found is not None else None
    prefix = geo_prefix(geo_text, address) if found is not None else None
    if found is not None and prefix is None:
        prefix = f"/{found[1]}"  # a MaxMind database: its network's length
    return Placement(address, subnet, how, location, prefix)


def find_domain(fleet: FleetState, name: str) -> tuple[DomainMatch, str] | None:
    """The Domain and the name asked: DOMAIN as a Domain name (asked as ``<domain>.<zone>``) first, then as a
    name the GSLB answers (hostname, wildcard, ``<domain>.<zone>``)."""
    name = name.lower().rstrip(".")
    asked = f"{name}.{fleet.zone}" if name in fleet.domain_names() else name
    match = fleet.domain_for(asked)
    return None if match is None else (match, asked)


# -- the decision ------------------------------------------------------------------------------------


def explain(
    fleet: FleetState,
    nodes: Sequence[Document],
    match: DomainMatch,
    placement: Placement,
    *,
    name: str,
    mode: str,
    path: str | None,
    now: float,
) -> Explanation:
    """The decision for the client, as the DNS server (``mode`` A/AAAA) or the redirector (``path``) makes it."""
    from edgefleet.gslb.policy import Client, choose, draw_for
    from edgefleet.gslb.redirect import cache_key

    policy = fleet.routing_for(match.domain)
    sites = fleet.sites_for(match.domain, now)
    if path is None:  # DNS: the answer for one address type holds only nodes with such an address
        family = FAMILIES[mode]
        sites = [dataclasses.replace(s, nodes=tuple(n for n in s.nodes if getattr(n, family))) for s in sites]
    key = name if path is None else cache_key(name, path)
    measured = fleet.latency()
    network = measured.networks.match(placement.address) if measured.networks else None
    route = choose(
        Client(placement.address, placement.location, network),
        sites,
        policy,
        key=key,
        draw=draw_for(placement.subnet, match.domain),
        latency=measured.matrix or None,
    )
    placement = dataclasses.replace(placement, network=network)
    members = _members(nodes, {site.name for site in sites})
    health = {node: fleet.node_health(node, now) for names in members.values() for node in names}
    left_out = tuple(
        (node, site, health[node][1]) for site, names in members.items() for node in names if not health[node][0]
    )
    location = _location(route, match.domain, fleet.zone, path)
    return Explanation(
        name,
        match,
        policy,
        "302" if path is not None else mode,
        placement,
        key,
        tuple(sites),
        members,
        left_out,
        route,
        fleet.zone,
        location,
    )


def _members(nodes: Sequence[Document], sites: set[str]) -> dict[str, tuple[str, ...]]:
    """Node names by site, for the selected sites."""
    members: dict[str, list[str]] = {site: [] for site in sorted(sites)}
    for node in nodes:
        site = (node.get("spec") or {}).get("site")
        if site in members:
            members[site].append(node["metadata"]["name"])
    return {site: tuple(sorted(names)) for site, names in members.items()}


def _location(route: Route, domain: str, zone: str, path: str | None) -> str | None:
    from edgefleet.gslb.zone import node_hostname

    if path is None or not route.nodes:
        return None
    return f"http://{node_hostname(route.nodes[0].name, domain, zone)}{path}"


# -- output ------------------------------------------------------------------------------------------


def _distance(location: Location | None, site: SiteView) -> float | None:
    from edgefleet.gslb.geo import great_circle_km

    if location is None:
        return None
    return round(great_circle_km(location.lat, location.lon, site.lat, site.lon), 1)


def candidate_rows(explanation: Explanation) -> list[Document]:
    """One row per candidate site, in ranking order (ineligible ones last)."""
    views = {site.name: site for site in explanation.sites}
    rows = []
    for candidate in explanation.route.candidates:
        site = views[candidate.site]
        rows.append(
            {
                "site": site.name,
                "region": site.region,
                "country": site.country,
                "distanceKm": _distance(explanation.placement.location, site),
                "load": None if site.load is None else round(site.load, 4),
                "fitNodes": len(site.nodes),
                "nodes": len(explanation.members.get(site.name, ())),
                "eligible": candidate.eligible,
                "score": candidate.score if math.isfinite(candidate.score) else None,
                "note": candidate.note,
            }
        )
    return rows


def explanation_document(explanation: Explanation) -> Document:
    """The explanation as data (``-o json|yaml``)."""
    placement, route, policy = explanation.placement, explanation.route, explanation.policy
    location = placement.location
    from edgefleet.gslb.zone import node_hostname

    return {
        "name": explanation.name,
        "domain": explanation.match.domain,
        "canonical": explanation.match.canonical,
        "mode": "redirect" if explanation.mode == "302" else f"dns-{explanation.mode}",
        "policy": {
            "policy": policy.policy,
            "answers": policy.answers,
            "ttl": policy.ttl,
            "preferCountry": policy.prefer_country,
            "weights": dict(policy.weights),
            "failoverOrder": list(policy.failover_order),
            "shedThreshold": policy.shed_threshold,
        },
        "client": {
            "address": placement.address,
            "subnet": placement.subnet,
            "how": placement.how,
            "location": None
            if location is None
            else {"country": location.country, "region": location.region, "lat": location.lat, "lon": location.lon},
            "geoPrefix": placement.geo_prefix,
            "measuredNetwork": placement.network,
        },
        "key": explanation.key,
        "candidates": candidate_rows(explanation),
        "site": route.site,
        "answers": [
            {
                "node": node.name,
                "hostname": node_hostname(node.name, explanation.match.domain, explanation.zone),
                "ipv4": list(node.ipv4),
                "ipv6": list(node.ipv6),
            }
            for node in route.nodes
        ],
        "leftOut": [{"node": node, "site": site, "reason": reason} for node, site, reason in explanation.left_out],
        "location": explanation.location,
        "reason": route.reason,
    }


def _cell(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}{suffix}"
    return f"{value}{suffix}"


def candidate_table(rows: list[Document]) -> Table:
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header in ("SITE", "REGION", "DISTANCE", "LOAD", "FIT NODES", "ELIGIBLE", "SCORE", "NOTE"):
        grid.add_column(header, no_wrap=header != "NOTE")
    for row in rows:
        load = None if row["load"] is None else f"{row['load']:.0%}"
        score = None if row["score"] is None else round(row["score"], 1)
        grid.add_row(
            row["site"],
            f"{row['region']} ({row['country']})",
            _cell(row["distanceKm"], " km"),
            _cell(load),
            f"{row['fitNodes']}/{row['nodes']}",
            _cell(row["eligible"]),
            _cell(score),
            row["note"],
        )
    return grid


def text_lines(document: Document) -> tuple[list[str], list[str]]:
    """The lines before and after the candidate table."""
    client, policy = document["client"], document["policy"]
    where = "location unknown (not in the geo table)"
    if client["location"] is not None:
        loc = client["location"]
        where = f"{loc['country']} {loc['region']} {loc['lat']:g},{loc['lon']:g}, geo prefix {client['geoPrefix']}"
    asked = "HTTP 302" if document["mode"] == "redirect" else document["mode"].replace("dns-", "DNS ")
    canonical = "" if document["name"] == document["canonical"] else f"; canonical name {document['canonical']}"
    head = [
        f"Domain:   {document['domain']} (asked as {document['name']}, {asked}){canonical}",
        f"Policy:   {policy['policy']}, {policy['answers']} answer(s), ttl {policy['ttl']}s{_policy_extra(policy)}",
        f"Client:   {_who(client)}: {where}",
        *([f"Measured: network {client['measuredNetwork']} (RTTs by site)"] if client["measuredNetwork"] else []),
        "",
    ]
    tail = ["", f"Chosen:   {document['site'] or 'none'}"]
    for index, node in enumerate(document["answers"], start=1):
        addresses = ", ".join(node["ipv4"] + node["ipv6"]) or "no address"
        tail.append(f"{'Answers:' if index == 1 else '':<10}{index}. {node['node']}  {addresses}  ({node['hostname']})")
    if document["location"]:
        tail.append(f"Location: {document['location']}")
    for index, item in enumerate(document["leftOut"]):
        tail.append(f"{'Left out:' if index == 0 else '':<10}{item['node']} ({item['site']}): {item['reason']}")
    tail.append(f"Reason:   {document['reason']}")
    return head, tail


def _policy_extra(policy: Document) -> str:
    if policy["weights"]:
        return ", weights " + ", ".join(f"{site}={weight}" for site, weight in policy["weights"].items())
    if policy["failoverOrder"]:
        return ", failover order " + " > ".join(policy["failoverOrder"])
    return ""


def _who(client: Document) -> str:
    if client["how"] == ECS:
        return f"{client['subnet']} ({ECS})"
    hashed = "" if client["subnet"] == client["address"] else f"; draw subnet {client['subnet']}"
    return f"{client['address']} ({client['how']}{hashed})"


# -- the command -------------------------------------------------------------------------------------


def _geo(path: Path | None) -> tuple[GeoLookup, str | None, str]:
    """The geo table, its CSV text (None for MaxMind or none) and a name for it."""
    from edgefleet.gslb.geo import GeoDatabase, GeoTable

    if path is None:
        path = DEFAULT_GEO if DEFAULT_GEO.exists() else None
    if path is None:
        return GeoDatabase.from_table(GeoTable.empty()), None, "no geo table"
    database = GeoDatabase(path)  # GeoTableError names file:line
    text = None if path.suffix.lower() == ".mmdb" else path.read_text(encoding="utf-8")
    return database, text, str(path)


def _default_geo(published: Path | None, notes: list[str]) -> tuple[GeoLookup, str | None, str]:
    """:func:`_geo` of the published table, else of the local default (with a note); exits on a bad table."""
    from edgefleet.cli.geosource import local_note
    from edgefleet.gslb.errors import GeoTableError

    if published is None:
        notes.append(local_note(DEFAULT_GEO if DEFAULT_GEO.exists() else None))
    try:
        return _geo(published)
    except (ValueError, GeoTableError, OSError) as exc:
        fail(f"geo table {published or DEFAULT_GEO}: {exc}")


def _fleet_documents(
    server: str | None, token: str | None, context: str | None, notes: list[str] | None = None
) -> tuple[list[Document], Path | None]:
    """The Sites, Nodes and Domains; with ``notes``, also the geo table the cloud publishes (None: none)."""
    from edgefleet.api.domains import INFO as DOMAINS
    from edgefleet.api.nodes import INFO as NODES
    from edgefleet.api.sites import INFO as SITES
    from edgefleet.cli.geosource import published_geo

    documents: list[Document] = []
    with api(server, token, context) as client:
        for info in (SITES, NODES, DOMAINS):
            documents += [{**item, "kind": info.kind} for item in client.list(info)["items"]]
        published = published_geo(client, notes) if notes is not None else None
    return documents, published


def route(
    domain: Annotated[
        str, typer.Argument(help="A Domain name, or a name it serves (www.example.com, <domain>.<zone>)")
    ],
    client: Annotated[
        str,
        typer.Option("--client", help="The client's IP address; for DNS also a Client Subnet such as 203.0.113.0/24"),
    ],
    geo: Annotated[
        Path | None,
        typer.Option(
            help="Geo table (CSV cidr,country,region,lat,lon or a MaxMind .mmdb); default: the table the cloud "
            f"publishes to its nodes (the GSLB's --geo; needs an admin token), else {DEFAULT_GEO} if it exists"
        ),
    ] = None,
    rdtype: Annotated[str, typer.Option("--type", help="DNS answer type whose nodes compete: A or AAAA")] = "A",
    path: Annotated[
        str | None,
        typer.Option(help="Explain the HTTP 302 redirect of this URL path (and query) instead of the DNS answer"),
    ] = None,
    zone: Annotated[str, typer.Option(help="The CDN zone (as the GSLB's --zone)")] = CDN_ZONE,
    output: Annotated[str, typer.Option("--output", "-o", help="text, json or yaml")] = "text",
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Explain which site and nodes the GSLB gives a client for a domain: candidates, scores, choice, reason."""
    from edgefleet.cli.output import dump
    from edgefleet.gslb.errors import GeoTableError
    from edgefleet.gslb.fleet import FleetState

    if output not in ("text", "json", "yaml"):
        fail(f"unknown output format {output!r}; use text, json or yaml")
    if rdtype.upper() not in MODES:
        fail(f"--type {rdtype!r}: use A or AAAA")
    if path is not None and not path.startswith("/"):
        fail(f"--path {path!r} must start with /")
    notes: list[str] = []
    try:
        client_parts = parse_client(client, redirect=path is not None)
        if geo is not None:  # a bad file fails before any request
            geo_table, geo_text, geo_name = _geo(geo)
        fleet = FleetState(zone=zone)
    except (ValueError, GeoTableError, OSError) as exc:
        fail(str(exc))
    documents, published = _fleet_documents(server, token, context, notes if geo is None else None)
    if geo is None:
        geo_table, geo_text, geo_name = _default_geo(published, notes)
    for problem in fleet.load(documents):
        typer.echo(f"warning: {problem}", err=True)
    found = find_domain(fleet, domain)
    if found is None:
        fail(f"no Domain named or serving {domain!r}", f"Domains: {', '.join(fleet.domain_names()) or 'none'}")
    match, asked = found
    nodes = [document for document in documents if document["kind"] == "Node"]
    explanation = explain(
        fleet,
        nodes,
        match,
        place(geo_table, geo_text, client_parts),
        name=asked,
        mode=rdtype.upper(),
        path=path,
        now=time.time(),
    )
    document = {**explanation_document(explanation), "geoTable": geo_name, "notes": notes}
    if output != "text":
        print(dump(document, output))
        return
    head, tail = text_lines(document)
    out = console()
    out.print("\n".join(head), markup=False, highlight=False)
    out.print(candidate_table(document["candidates"]))
    out.print("\n".join(tail + [f"note: {note}" for note in notes]), markup=False, highlight=False)
