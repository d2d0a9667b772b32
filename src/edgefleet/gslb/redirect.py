"""The GSLB's HTTP 302 redirector: the DNS's routing decision, per URL, with the user's own address.

How: a user (or a player fetching video segments, or a download manager)
requests ``http(s)://<host>/<path>?<query>`` where ``<host>`` is a Domain
hostname or ``<domain>.<zone>`` pointed at the redirector. The redirector
answers ``302 Found`` with
``Location: <scheme>://<node>.<domain>.<zone>[:<node port>]/<path>?<query>``:
the per-node name of the node the routing policy picks (answered by the
DNS server, :meth:`edgefleet.gslb.zone.Resolver.node_for`; the node's cache
serves ``*.<domain>.<zone>`` as the Domain). The path and query are copied
byte for byte from the request target (no decoding, no re-encoding), so
signed URLs and odd encodings survive. Answers:

======================================= ===========================================================
GET or HEAD, host served, a node fit    302, ``Location``, ``Cache-Control: private, max-age=<ttl>``
host not served by any Domain           404, saying so
host served but no site eligible        503, with the routing reason
another method                          405, ``Allow: GET, HEAD``
no Host, or a target that is no URL     400
``GET /_route?name=H[&client=IP][&path=P]`` on a host no Domain serves: the decision as JSON
======================================= ===========================================================

The decision (:func:`decide`) is :func:`edgefleet.gslb.policy.choose`, as in
the DNS server, with three differences that make it *better* than DNS: the
client is the user, not its resolver; the node hash key is the URL's cache
key (``http://<host><path>?<query>``, the host lowercased without its port:
the cache server's key format with the query kept as sent), so every user
of one object lands on the node of the site that owns it, and a site's
objects are spread over its nodes as its caches spread them; and the
``draw`` (weighted policy, load shedding) hashes the client's /24 (IPv4) or
/56 (IPv6), written as an ECS subnet is, so that a user gets the same site
from the redirector as from a resolver sending Client Subnet.

The client address (:func:`client_address`) is the TCP peer, unless the peer
is a configured trusted proxy: then ``X-Forwarded-For`` is walked from the
right (the entry the nearest proxy appended) and trusted entries are
skipped; the first untrusted one is the client, since anything to its left
was written by a party we do not trust. An unreadable entry stops the walk
at the last address read. When every entry is trusted, the left-most one
is the client. Only the last :data:`MAX_FORWARDED_HOPS` entries are read
(a security limit: the header is attacker-sized).

Why ``Cache-Control: private``: the answer depends on who asks; a shared
cache must not hand one user's redirect to another, while the browser may
keep it for the Domain's routing TTL like a resolver keeps a DNS answer.

Why ``/_route`` only on hosts no Domain serves: every path of a served host
belongs to the customer and is redirected, ``/_route`` included.

Layout: the functions down to :func:`redirect_target` are pure (data in,
data out; ``now`` is a parameter); :func:`redirect_app` is the aiohttp shell
``edgefleet cloud`` and ``edgefleet dns`` run (see
:mod:`edgefleet.cloud.gslbservice`).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

from edgefleet.gslb.fleet import DomainMatch, FleetState
from edgefleet.gslb.geo import Address, GeoDatabase, GeoLookup, Location, parse_address
from edgefleet.gslb.policy import Client, LatencyMatrix, NodeTarget, Route, choose, draw_for
from edgefleet.gslb.zone import node_hostname

METHODS = ("GET", "HEAD")
ROUTE_PATH = "/_route"
MAX_FORWARDED_HOPS = 32
"""Security limit: X-Forwarded-For entries read, from the right."""
DRAW_PREFIX = {4: 24, 6: 56}
"""Client prefix the draw hashes, as resolvers send Client Subnet (RFC 7871 §11.1)."""
DEFAULT_PORTS = {"http": 80, "https": 443}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ABSOLUTE = re.compile(r"^[hH][tT][tT][pP][sS]?://(?P<authority>[^/?#]*)(?P<rest>.*)$", re.DOTALL)


class Redirect(NamedTuple):
    """What to answer: the status, the Location (302 only) and a one-line explanation."""

    status: int
    location: str | None
    explanation: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A routing decision for one URL: the Domain, who asked and from where, the key and the route."""

    host: str
    domain: DomainMatch
    client: Client
    subnet: str
    matched_prefix: int | None
    key: str
    ttl: int
    route: Route


# -- the client ----------------------------------------------------------------------------------


def parse_trusted(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """Trusted proxy networks from CIDRs (a bare address is a /32 or /128); ValueError naming a bad one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxy {cidr!r} is not an IP network such as 10.0.0.0/8 or 2001:db8::/32"
            ) from None
    return tuple(networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The user's address: the peer, or from X-Forwarded-For behind trusted proxies (see the module docstring)."""
    address = parse_address(peer or "")
    if address is None:
        return peer or ""
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()][-MAX_FORWARDED_HOPS:]
    while hops and _is_trusted(address, trusted):
        hop = parse_address(hops.pop())
        if hop is None:
            break
        address = hop
    return str(address)


def _is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def client_subnet(address: str) -> str:
    """The subnet the draw hashes: ``a.b.c.0/24`` or ``x:y:z::/56``; the text itself if it is no address."""
    parsed = parse_address(address)
    if parsed is None:
        return address
    prefix = DRAW_PREFIX[parsed.version]
    network = ipaddress.ip_network(f"{parsed}/{prefix}", strict=False)
    return f"{network.network_address}/{prefix}"


# -- the URL ---------------------------------------------------------------------------------------


def host_name(host: str) -> str | None:
    """The name of a Host header (port and trailing dot dropped, lowercased); None when empty or malformed."""
    host = host.strip()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        return name.lower() if bracket and name and (not rest or rest[1:].isdigit()) else None
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    name = name.lower().rstrip(".")
    return name or None


def split_target(target: str, host: str) -> tuple[str, str] | None:
    """``(host, path?query)`` of a request target: origin-form as is, absolute-form split (its authority wins
    over Host, RFC 9112 §3.2.2); None for other forms (``*``, authority-form)."""
    if target.startswith("/"):
        return host, target.partition("#")[0]
    match = _ABSOLUTE.match(target)
    if match is None:
        return None
    rest = match["rest"].partition("#")[0]
    if rest and not rest.startswith(("/", "?")):
        return None
    return match["authority"], ("/" + rest if rest.startswith("?") else rest or "/")


def cache_key(host: str, path: str) -> str:
    """The URL's cache key as the cache server builds it (query kept as sent): ``http://<host><path>``."""
    return f"http://{host}{path}"


def location_for(
    node: NodeTarget, decision: Decision, path: str, *, zone: str, node_port: int | None, scheme: str
) -> str:
    """``<scheme>://<node>.<domain>.<zone>[:<port>]<path>``; the port only when not the scheme's default."""
    port = "" if node_port is None or node_port == DEFAULT_PORTS.get(scheme) else f":{node_port}"
    return f"{scheme}://{node_hostname(node.name, decision.domain.domain, zone)}{port}{path}"


# -- the decision ------------------------------------------------------------------------------------


def decide(
    fleet: FleetState,
    geo: GeoLookup,
    *,
    host: str,
    path: str,
    client: str,
    now: float,
    latency: LatencyMatrix | None = None,
) -> Decision | None:
    """The routing decision for ``http://<host><path>`` asked by ``client``; None if no Domain serves ``host``."""
    match = fleet.domain_for(host)
    if match is None:
        return None
    found = geo.lookup(client)
    location, prefix = found if found is not None else (None, None)
    subnet = client_subnet(client)
    # The cache keys a zone name (<domain>.<zone>, <node>.<domain>.<zone>) under the Domain's own hostname.
    key = cache_key(fleet.canonical_host(match.domain) if match.via == "zone" else host, path)
    routing = fleet.routing_for(match.domain)
    measured = fleet.latency()  # the Sites' measured RTTs, unless a matrix is given
    network = measured.networks.match(client) if latency is None and measured.networks else None
    who = Client(client, location, network)
    route = choose(
        who,
        fleet.sites_for(match.domain, now),
        routing,
        key=key,
        draw=draw_for(subnet, match.domain),
        latency=latency if latency is not None else measured.matrix or None,
    )
    return Decision(host, match, who, subnet, prefix, key, routing.ttl, route)


def describe_client(client: Client, prefix: int | None) -> str:
    """``198.51.100.7 (US us-east, geo prefix /24)`` or ``... (location unknown)``."""
    where = _where(client.location, prefix)
    return f"{client.address or 'unknown address'} ({where})"


def _where(location: Location | None, prefix: int | None) -> str:
    if location is None:
        return "location unknown"
    return f"{location.country} {location.region}, geo prefix /{prefix}"


def redirect_for(
    decision: Decision, path: str, *, zone: str, node_port: int | None = None, scheme: str = "http"
) -> Redirect:
    """302 to the first node of the route, or 503 when no site is eligible."""
    route = decision.route
    who = describe_client(decision.client, decision.matched_prefix)
    if route.site is None or not route.nodes:
        return Redirect(503, None, f"no healthy node serves domain {decision.domain.domain} for {who}: {route.reason}")
    node = route.nodes[0]
    location = location_for(node, decision, path, zone=zone, node_port=node_port, scheme=scheme)
    return Redirect(302, location, f"{who} -> site {route.site}, node {node.name}: {route.reason}")


def _answer(
    fleet: FleetState,
    geo: GeoLookup,
    *,
    method: str,
    host: str,
    target: str,
    client: str,
    zone: str,
    node_port: int | None,
    scheme: str,
    now: float,
    latency: LatencyMatrix | None,
) -> tuple[Redirect, Decision | None]:
    if method not in METHODS:
        return Redirect(405, None, f"method {method} not allowed: the redirector answers GET and HEAD"), None
    split = split_target(target, host)
    name = host_name(split[0]) if split is not None else None
    if split is None or name is None:
        what = "no Host header" if split is not None else f"request target {target[:100]!r} is not a path or URL"
        return Redirect(400, None, f"bad request: {what}"), None
    decision = decide(fleet, geo, host=name, path=split[1], client=client, now=now, latency=latency)
    if decision is None:
        return Redirect(
            404,
            None,
            f"no Domain serves host {name!r}: the redirector answers for Domain hostnames and <domain>.{zone}",
        ), None
    return redirect_for(decision, split[1], zone=zone, node_port=node_port, scheme=scheme), decision


def redirect_target(
    fleet: FleetState,
    geo: GeoLookup,
    *,
    method: str,
    host: str,
    target: str,
    client: str,
    zone: str,
    node_port: int | None = None,
    scheme: str = "http",
    now: float,
    latency: LatencyMatrix | None = None,
) -> Redirect:
    """The redirector's answer to ``<method> <target>`` with Host ``host`` from ``client`` (the pure core).

    ``host`` is the Host header as sent (a port is ignored), ``target`` the
    raw request target (origin-form or absolute-form), ``client`` the
    user's address (see :func:`client_address`).
    """
    return _answer(
        fleet,
        geo,
        method=method,
        host=host,
        target=target,
        client=client,
        zone=zone,
        node_port=node_port,
        scheme=scheme,
        now=now,
        latency=latency,
    )[0]


def route_document(decision: Decision, redirect: Redirect) -> dict[str, Any]:
    """The decision as JSON-ready data (``/_route``; infinite scores become null)."""
    client, route = decision.client, decision.route
    location = client.location
    return {
        "name": decision.host,
        "domain": decision.domain.domain,
        "via": decision.domain.via,
        "client": {
            "address": client.address,
            "subnet": decision.subnet,
            "location": None
            if location is None
            else {"country": location.country, "region": location.region, "lat": location.lat, "lon": location.lon},
            "geoPrefix": decision.matched_prefix,
        },
        "key": decision.key,
        "site": route.site,
        "nodes": [{"name": node.name, "ipv4": list(node.ipv4), "ipv6": list(node.ipv6)} for node in route.nodes],
        "candidates": [
            {
                "site": c.site,
                "score": c.score if math.isfinite(c.score) else None,
                "eligible": c.eligible,
                "note": c.note,
            }
            for c in route.candidates
        ],
        "reason": route.reason,
        "status": redirect.status,
        "location": redirect.location,
    }


# -- the aiohttp shell -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    fleet: FleetState
    geo: GeoDatabase
    zone: str
    trusted: tuple[Network, ...]
    node_port: int | None
    scheme: str
    clock: Callable[[], float]
    latency: LatencyMatrix | None


def redirect_app(
    fleet: FleetState,
    geo: GeoDatabase,
    *,
    zone: str,
    trusted_proxies: Sequence[str] = (),
    node_port: int | None = None,
    scheme: str = "http",
    clock: Callable[[], float] = time.time,
    latency: LatencyMatrix | None = None,
) -> web.Application:
    """The redirector as an aiohttp application; ValueError on a bad zone, scheme, port or proxy CIDR."""
    zone = zone.lower().rstrip(".")
    if fleet.zone != zone:
        raise ValueError(f"the fleet state serves zone {fleet.zone!r}, the redirector was given {zone!r}")
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme!r}: use http or https")
    if node_port is not None and not 0 < node_port < 65536:
        raise ValueError(f"node port {node_port}: must be 1-65535")
    settings = _Settings(fleet, geo, zone, parse_trusted(trusted_proxies), node_port, scheme, clock, latency)

    async def handle(request: web.Request) -> web.Response:
        return answer_request(settings, request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def answer_request(settings: _Settings, request: web.Request) -> web.Response:
    """One request: ``/_route`` on a host no Domain serves, else the redirect."""
    client = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), settings.trusted)
    host = request.headers.get("Host", "")
    if request.path == ROUTE_PATH and settings.fleet.domain_for(host_name(host) or "") is None:
        return _route_response(settings, request, client)
    redirect, decision = _answer(
        settings.fleet,
        settings.geo,
        method=request.method,
        host=host,
        target=request.raw_path,
        client=client,
        zone=settings.zone,
        node_port=settings.node_port,
        scheme=settings.scheme,
        now=settings.clock(),
        latency=settings.latency,
    )
    return _response(redirect, decision)


def _response(redirect: Redirect, decision: Decision | None) -> web.Response:
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if redirect.location is not None and decision is not None:
        headers = {"Location": redirect.location, "Cache-Control": f"private, max-age={decision.ttl}"}
        body = f"Found: {redirect.location}\n"
    else:
        body = redirect.explanation + "\n"
    if redirect.status == 405:
        headers["Allow"] = ", ".join(METHODS)
    return web.Response(status=redirect.status, text=body, headers=headers)


def _route_response(settings: _Settings, request: web.Request, client: str) -> web.Response:
    query = request.query
    name = host_name(query.get("name", ""))
    if request.method not in METHODS:
        return _json({"error": "use GET"}, 405, {"Allow": ", ".join(METHODS)})
    if name is None:
        return _json({"error": "give the host to route: /_route?name=HOST[&client=IP][&path=/P]"}, 400)
    asked = query.get("client")
    if asked is not None:
        parsed = parse_address(asked)
        if parsed is None:
            return _json({"error": f"client {asked[:100]!r} is not an IP address"}, 400)
        client = str(parsed)
    path = query.get("path", "/")
    if not path.startswith("/"):
        return _json({"error": "path must start with /"}, 400)
    decision = decide(
        settings.fleet,
        settings.geo,
        host=name,
        path=path,
        client=client,
        now=settings.clock(),
        latency=settings.latency,
    )
    if decision is None:
        return _json({"error": f"no Domain serves host {name!r}"}, 404)
    redirect = redirect_for(decision, path, zone=settings.zone, node_port=settings.node_port, scheme=settings.scheme)
    return _json(route_document(decision, redirect), 200)


def _json(document: Mapping[str, Any], status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(document, indent=2) + "\n",
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


__all__ = [
    "Decision",
    "Redirect",
    "cache_key",
    "client_address",
    "client_subnet",
    "decide",
    "host_name",
    "parse_address",
    "parse_trusted",
    "redirect_app",
    "redirect_for",
    "redirect_target",
    "route_document",
    "split_target",
]
