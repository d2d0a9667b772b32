"""What ``edgefleet up`` runs, decided without touching the machine: the fleet's shape, its manifests,
its ports, how far it is from ready, the DNS probe it sends, its ``up.json`` and the text it prints.

How: :func:`plan_fleet` turns ``--sites``/``--nodes`` and the ports into a
:class:`FleetPlan`: a parent site in Frankfurt (``fra-parent``, one node)
and edge sites in the cities of :data:`EDGE_CITIES`, Paris first, each with
its nodes on ``127.0.<octet>.<n>``. The octet of a city is the one of its
``127.0.<octet>.0/24`` line in the packaged geo table
(``edgefleet/data/geo.csv``), so a client posing with an address or an EDNS
Client Subnet in that /24 is placed in that city, and the nodes that serve
it sit in the same /24: what the geo policy picks and what the map shows
line up. :func:`manifests` renders the Sites (real coordinates and
countries), the ``demo`` Certificate (PEM issued by the shell from a demo
CA of its own, for :func:`certificate_hosts`), the ``demo`` Domain (served
by the edge sites and the parent, origin the local origin, HTTPS with that
certificate) and the built-in cache Workload (every node, ports
``--cache-port``, ``--cache-admin-port`` and ``--cache-https-port`` on each
node's own address).

The rest serves the I/O shell (:mod:`edgefleet.cli.up`) with plain data:
:func:`port_needs` lists every socket the fleet will bind and the option
that moves it (checked before anything starts); :func:`progress` and
:func:`waiting_for` say which nodes, caches and DNS answers are not there
yet and where to look; :func:`dns_query` and :func:`a_records` are the few
bytes of DNS (RFC 1035, with an RFC 7871 Client Subnet) needed to ask the
GSLB like ``dig +subnet`` does; :class:`UpRecord` is ``DATA/up.json``;
:func:`try_it` is the text printed at the end, commands that work as
printed.

Why a plan module: the shape decides a lot (names, addresses, ports, which
client subnet goes where) and is easy to get subtly wrong; as data it is
tested in milliseconds, and the shell only starts what the plan says.
"""

from __future__ import annotations

import ipaddress
import shlex
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgefleet.api.common import parse_timestamp
from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.domains import CDN_ZONE
from edgefleet.api.meta import API_VERSION
from edgefleet.gslb.dnswire import name_wire, skip_name
from edgefleet.gslb.errors import DnsFormatError

DOMAIN = "demo"
DEMO_HOST = "demo.edgefleet.test"
DEMO_PATH = "/static/app.js"
CERTIFICATE = "demo"
"""The demo Domain's Certificate, issued by a CA of its own that ``up`` keeps in DATA/demo-tls."""
WORKLOAD = "cache"
MAX_NODES_PER_SITE = 20
CLIENT_HOST = 10
"""A client in a site's /24 for `edgefleet route --client` (any host of the /24 is placed alike)."""


@dataclass(frozen=True, slots=True)
class City:
    """Where a site is; ``octet`` is the third octet of its ``127.0.<octet>.0/24`` geo table line."""

    code: str
    name: str
    country: str
    region: str
    lat: float
    lon: float
    octet: int


PARENT_CITY = City("fra", "Frankfurt", "DE", "eu-central", 50.1109, 8.6821, 3)
EDGE_CITIES = (
    City("par", "Paris", "FR", "eu-west", 48.8566, 2.3522, 1),
    City("ams", "Amsterdam", "NL", "eu-west", 52.3676, 4.9041, 2),
    City("lon", "London", "GB", "eu-west", 51.5074, -0.1278, 4),
    City("nyc", "New York", "US", "us-east", 40.7128, -74.0060, 5),
    City("sfo", "San Francisco", "US", "us-west", 37.7749, -122.4194, 6),
    City("tyo", "Tokyo", "JP", "ap-northeast", 35.6762, 139.6503, 7),
    City("sin", "Singapore", "SG", "ap-southeast", 1.3521, 103.8198, 8),
    City("sao", "Sao Paulo", "BR", "sa-east", -23.5505, -46.6333, 9),
    City("syd", "Sydney", "AU", "ap-southeast", -33.8688, 151.2093, 10),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, option: str) -> Endpoint:
    """``HOST:PORT`` (``[v6]:PORT``) -> Endpoint; ValueError naming ``option`` otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option} {text!r}: expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:7440")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{option} {text!r}: HOST must be an IP address, e.g. 127.0.0.1") from None
    return Endpoint(host, int(port))


@dataclass(frozen=True, slots=True)
class Ports:
    """Every address the fleet listens on besides the nodes' own (which take ``cache_http``/``cache_admin``)."""

    api: Endpoint
    dns: Endpoint
    origin: Endpoint
    cache_http: int = 8081
    cache_admin: int = 9081
    cache_https: int = 8443


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    site: str
    address: str


@dataclass(frozen=True, slots=True)
class SitePlan:
    name: str
    city: City
    tier: str
    nodes: tuple[NodePlan, ...]

    @property
    def client_subnet(self) -> str:
        """The /24 the geo table places in this site's city (for ``dig +subnet``)."""
        return f"127.0.{self.city.octet}.0/24"

    @property
    def sample_client(self) -> str:
        return f"127.0.{self.city.octet}.{CLIENT_HOST}"

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(node.address for node in self.nodes)


@dataclass(frozen=True, slots=True)
class FleetPlan:
    sites: tuple[SitePlan, ...]
    ports: Ports

    @property
    def parent(self) -> SitePlan:
        return self.sites[0]

    @property
    def edges(self) -> tuple[SitePlan, ...]:
        return self.sites[1:]

    @property
    def nodes(self) -> tuple[NodePlan, ...]:
        return tuple(node for site in self.sites for node in site.nodes)

    @property
    def server(self) -> str:
        return f"https://{self.ports.api}"


def _site(city: City, tier: str, count: int) -> SitePlan:
    name = f"{city.code}-{tier}"
    nodes = tuple(NodePlan(f"{name}-{n}", name, f"127.0.{city.octet}.{n}") for n in range(1, count + 1))
    return SitePlan(name, city, tier, nodes)


def plan_fleet(edge_sites: int, nodes_per_site: int, ports: Ports) -> FleetPlan:
    """The parent site (one node) and ``edge_sites`` edge sites of ``nodes_per_site`` nodes; ValueError if absurd."""
    if not 1 <= edge_sites <= len(EDGE_CITIES):
        raise ValueError(
            f"--sites {edge_sites}: choose 1 to {len(EDGE_CITIES)} edge sites "
            f"({', '.join(city.name for city in EDGE_CITIES)})"
        )
    if not 1 <= nodes_per_site <= MAX_NODES_PER_SITE:
        raise ValueError(f"--nodes {nodes_per_site}: choose 1 to {MAX_NODES_PER_SITE} nodes per edge site")
    if ports.cache_http == ports.cache_admin:
        raise ValueError(f"--cache-port and --cache-admin-port are both {ports.cache_http}; they must differ")
    if ports.cache_https in (ports.cache_http, ports.cache_admin):
        raise ValueError(f"--cache-https-port {ports.cache_https} is the cache's HTTP or admin port; choose another")
    parent = _site(PARENT_CITY, "parent", 1)
    edges = tuple(_site(city, "edge", nodes_per_site) for city in EDGE_CITIES[:edge_sites])
    return FleetPlan((parent, *edges), ports)


# -- manifests ----------------------------------------------------------------------------


def site_manifest(site: SitePlan, parent: str) -> Document:
    city = site.city
    spec: Document = {
        "region": city.region,
        "location": {"lat": city.lat, "lon": city.lon, "country": city.country},
        "tier": site.tier,
        "capacityGbps": 40 if site.tier == "parent" else 10,
        "alwaysOn": True,
    }
    if site.tier == "edge":
        spec["parents"] = [parent]
    return {
        "apiVersion": API_VERSION,
        "kind": "Site",
        "metadata": {
            "name": site.name,
            "labels": {"tier": site.tier, "region": city.region},
            "annotations": {"edgefleet.io/city": city.name},
        },
        "spec": spec,
    }


def domain_manifest(origin: Endpoint) -> Document:
    return {
        "apiVersion": API_VERSION,
        "kind": "Domain",
        "metadata": {"name": DOMAIN, "labels": {"customer": "demo"}},
        "spec": {
            "hostnames": [DEMO_HOST, f"*.{DEMO_HOST}"],
            "origins": [{"url": f"http://{origin}", "hostHeader": f"origin.{DEMO_HOST}"}],
            "cachePolicy": {
                "defaultTtl": 300,
                "rules": [{"pathPrefix": "/static/", "ttl": 86400}, {"pathPrefix": "/api/", "bypass": True}],
                "serveStaleOnError": True,
                "heuristicFreshness": True,
            },
            # The parent site must serve the Domain too: a node's view holds the Domains that select its own
            # site, and a parent cache answers 421 for a host it does not serve (users still go to the
            # edge sites: in the cities of their clients they are the nearest).
            "sites": "tier in (edge,parent)",
            "routing": {"policy": "geo", "answers": 2, "ttl": 30},
            "tls": {"certificate": CERTIFICATE},
        },
    }


def certificate_hosts(zone: str = CDN_ZONE) -> list[str]:
    """The names the demo certificate covers: the Domain's hostnames and the GSLB's names for it in ``zone``."""
    return [DEMO_HOST, f"*.{DEMO_HOST}", f"{DOMAIN}.{zone}", f"*.{DOMAIN}.{zone}"]


def certificate_manifest(chain: str, key: str) -> Document:
    """The demo Domain's Certificate (PEM chain and key, issued by the shell from the demo CA)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Certificate",
        "metadata": {"name": CERTIFICATE, "labels": {"customer": "demo"}},
        "spec": {"certificate": chain, "key": key},
    }


def cache_workload_manifest(ports: Ports) -> Document:
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {"name": WORKLOAD},
        "spec": {
            "nodeSelector": "",
            "template": {
                "builtin": "cache",
                "command": ["edgefleet", "cache"],
                "env": {"PYTHONUNBUFFERED": "1"},
                "ports": [
                    {"name": "http", "port": ports.cache_http},
                    {"name": "admin", "port": ports.cache_admin},
                    {"name": "https", "port": ports.cache_https},
                ],
                "healthProbe": {
                    "http": {"path": "/healthz", "port": ports.cache_admin},
                    "periodSeconds": 2,
                    "timeoutSeconds": 2,
                    "failureThreshold": 3,
                },
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 10,
            },
        },
    }


def manifests(plan: FleetPlan, certificate: Document | None = None) -> list[Document]:
    """Sites (parent first), the demo Certificate (when given: :func:`certificate_manifest`), the demo Domain
    and the cache Workload, in the order they are applied (the Certificate before the Domain that names it)."""
    sites = [site_manifest(site, plan.parent.name) for site in plan.sites]
    certificates = [certificate] if certificate is not None else []
    return [*sites, *certificates, domain_manifest(plan.ports.origin), cache_workload_manifest(plan.ports)]


# -- ports ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortNeed:
    """A socket the fleet binds: who, on which address and protocol, and the option that moves it."""

    endpoint: Endpoint
    protocol: str
    what: str
    option: str

    def taken_message(self) -> str:
        return (
            f"port {self.endpoint.port}/{self.protocol} on {self.endpoint.host} ({self.what}) is taken; "
            f"choose another with {self.option}"
        )


def port_needs(plan: FleetPlan) -> list[PortNeed]:
    ports = plan.ports
    needs = [
        PortNeed(ports.api, "tcp", "the cloud's API and dashboard", "--listen"),
        PortNeed(ports.dns, "udp", "the GSLB's DNS", "--dns-listen"),
        PortNeed(ports.dns, "tcp", "the GSLB's DNS", "--dns-listen"),
        PortNeed(ports.origin, "tcp", "the demo origin", "--origin-listen"),
    ]
    for node in plan.nodes:
        needs.append(
            PortNeed(Endpoint(node.address, ports.cache_http), "tcp", f"the cache of {node.name}", "--cache-port")
        )
        needs.append(
            PortNeed(
                Endpoint(node.address, ports.cache_admin),
                "tcp",
                f"the cache admin endpoint of {node.name}",
                "--cache-admin-port",
            )
        )
        needs.append(
            PortNeed(
                Endpoint(node.address, ports.cache_https),
                "tcp",
                f"the cache's HTTPS listener on {node.name}",
                "--cache-https-port",
            )
        )
    return needs


# -- readiness ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeProgress:
    node: NodePlan
    phase: str
    cache: str
    """``ready``, or what the workload status says instead (``Starting``, ``not started``)."""

    @property
    def ready(self) -> bool:
        return self.phase == "Ready" and self.cache == "ready"


def _status(document: Mapping[str, Any] | None) -> Mapping[str, Any]:
    status = (document or {}).get("status")
    return status if isinstance(status, Mapping) else {}


def _fresh(status: Mapping[str, Any], since: datetime) -> bool:
    """Whether the node reported after ``since`` (its status may be left over from an earlier run)."""
    stamp = status.get("lastHeartbeat")
    try:
        return isinstance(stamp, str) and parse_timestamp(stamp) >= since.replace(microsecond=0)
    except ValueError:
        return False


def node_progress(node: NodePlan, document: Mapping[str, Any] | None, since: datetime, listening: bool) -> NodeProgress:
    """Phase and cache state of ``node`` from its Node document (None: not created yet).

    A node is Pending until its agent reports after ``since``; its cache is
    ready when that report says so and its port accepts connections
    (``listening``).
    """
    status = _status(document)
    if not _fresh(status, since):
        return NodeProgress(node, "Pending", "not reported")
    workloads = status.get("workloads")
    cache = workloads.get(WORKLOAD) if isinstance(workloads, Mapping) else None
    if not isinstance(cache, Mapping):
        cache_state = "not started"
    elif not cache.get("ready"):
        cache_state = str(cache.get("state") or "starting")
    else:
        cache_state = "ready" if listening else "not listening"
    return NodeProgress(node, str(status.get("phase") or "Pending"), cache_state)


def progress(
    plan: FleetPlan, documents: Iterable[Mapping[str, Any]], since: datetime, listening: Iterable[str]
) -> list[NodeProgress]:
    """Every planned node's progress, in plan order, from a listing of Nodes and the nodes whose cache listens."""
    by_name = {str(doc.get("metadata", {}).get("name")): doc for doc in documents}
    up = set(listening)
    return [node_progress(node, by_name.get(node.name), since, node.name in up) for node in plan.nodes]


def dns_ready(site: SitePlan, answer: Iterable[str]) -> bool:
    """The GSLB answers a client of ``site``'s /24 with nodes of that site (the geo policy's choice)."""
    found = set(answer)
    return bool(found) and found <= site.addresses


@dataclass(frozen=True, slots=True)
class Logs:
    """Where each process of the fleet logs (paths as text, for messages)."""

    data: str

    @property
    def cloud(self) -> str:
        return f"{self.data}/logs/cloud.log"

    @property
    def origin(self) -> str:
        return f"{self.data}/logs/origin.log"

    def agent(self, node: str) -> str:
        return f"{self.data}/logs/agent-{node}.log"

    def cache(self, node: str) -> str:
        return f"{self.data}/nodes/{node}/logs/{WORKLOAD}.log"


def waiting_for(nodes: Sequence[NodeProgress], dns: Mapping[str, bool], logs: Logs) -> list[str]:
    """One line per thing not ready yet, saying where its log is; empty when all is ready."""
    lines = []
    for item in nodes:
        name = item.node.name
        if item.phase != "Ready":
            lines.append(f"node {name} is {item.phase}, not Ready: see its agent's log {logs.agent(name)}")
        elif item.cache != "ready":
            lines.append(f"the cache on {name} is {item.cache}, not ready: see {logs.cache(name)}")
    lines.extend(
        f"the GSLB does not yet answer {DEMO_HOST} for clients of {site} with {site}'s nodes: see {logs.cloud}"
        for site, ok in dns.items()
        if not ok
    )
    return lines


# -- DNS probe ----------------------------------------------------------------------------

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
TYPE_A, TYPE_OPT, CLASS_IN, OPTION_ECS = 1, 41, 1, 8
EDNS_PAYLOAD = 1232


def dns_query(name: str, subnet: str, query_id: int) -> bytes:
    """An A query for ``name`` with EDNS and a Client Subnet option for the IPv4 ``subnet``, like ``dig +subnet``."""
    network = ipaddress.IPv4Network(subnet, strict=False)
    prefix = network.prefixlen
    address = network.network_address.packed[: (prefix + 7) // 8]
    ecs = struct.pack("!HBB", 1, prefix, 0) + address
    option = struct.pack("!HH", OPTION_ECS, len(ecs)) + ecs
    opt = b"\x00" + struct.pack("!HHIH", TYPE_OPT, EDNS_PAYLOAD, 0, len(option)) + option
    header = _HEADER.pack(query_id, 0x0100, 1, 0, 0, 1)
    return header + name_wire(name) + struct.pack("!HH", TYPE_A, CLASS_IN) + opt


def a_records(reply: bytes, query_id: int) -> list[str]:
    """The IPv4 addresses in the answer section of ``reply``; ValueError if it is not a reply to ``query_id``."""
    try:
        reply_id, flags, questions, answers, _, _ = _HEADER.unpack_from(reply)
        if reply_id != query_id or not flags & 0x8000:
            raise ValueError("not the reply to this query")
        pos = _HEADER.size
        for _ in range(questions):
            pos = skip_name(reply, pos) + 4
        found = []
        for _ in range(answers):
            pos = skip_name(reply, pos)
            rtype, _, _, length = _RR.unpack_from(reply, pos)
            pos += _RR.size
            if rtype == TYPE_A and length == 4 and pos + 4 <= len(reply):
                found.append(str(ipaddress.IPv4Address(reply[pos : pos + 4])))
            pos += length
        return found
    except (struct.error, DnsFormatError) as exc:
        raise ValueError(f"malformed DNS reply: {exc}") from None


# -- up.json ----------------------------------------------------------------------------

UP_RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class ProcessEntry:
    """One process ``up`` started (or, for ``cache``, that an agent started): identity beyond the pid."""

    role: str
    """cloud, origin, agent or cache."""
    name: str
    pid: int
    start_time: int
    boot_id: str
    data_dir: str = ""
    """For an agent: its node's data directory (``edge stop-workloads --data-dir``)."""

    def to_document(self) -> Document:
        return {
            "role": self.role,
            "name": self.name,
            "pid": self.pid,
            "startTime": self.start_time,
            "bootId": self.boot_id,
            "dataDir": self.data_dir,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ProcessEntry:
        return cls(
            str(doc["role"]),
            str(doc["name"]),
            int(doc["pid"]),
            int(doc["startTime"]),
            str(doc["bootId"]),
            str(doc.get("dataDir", "")),
        )


@dataclass(frozen=True, slots=True)
class UpRecord:
    """``DATA/up.json``: what runs, so that ``edgefleet down`` (and a second ``up``) can find it."""

    server: str
    dns: str
    origin: str
    cache_ports: tuple[int, int]
    nodes: Mapping[str, str]
    """Node name -> address."""
    processes: tuple[ProcessEntry, ...] = field(default=())
    detached: bool = False

    def to_document(self) -> Document:
        return {
            "version": UP_RECORD_VERSION,
            "server": self.server,
            "dns": self.dns,
            "origin": self.origin,
            "cachePorts": {"http": self.cache_ports[0], "admin": self.cache_ports[1]},
            "nodes": dict(self.nodes),
            "detached": self.detached,
            "processes": [entry.to_document() for entry in self.processes],
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> UpRecord:
        """ValueError when ``doc`` is not an up.json this version understands."""
        try:
            if doc.get("version") != UP_RECORD_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {UP_RECORD_VERSION}")
            ports = doc["cachePorts"]
            return cls(
                str(doc["server"]),
                str(doc["dns"]),
                str(doc["origin"]),
                (int(ports["http"]), int(ports["admin"])),
                dict(doc["nodes"]),
                tuple(ProcessEntry.from_document(item) for item in doc["processes"]),
                bool(doc.get("detached", False)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"missing or bad field {exc}") from None

    def by_role(self, role: str) -> list[ProcessEntry]:
        return [entry for entry in self.processes if entry.role == role]


# -- the text printed at the end -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TryIt:
    """What :func:`try_it` needs besides the plan."""

    cli: str
    """How to run edgefleet from the user's shell (``edgefleet`` or a path)."""
    data: str
    admin_token: str
    viewer_token: str
    first_node: str
    """The address the GSLB answers for the first edge site's clients."""
    geo_argument: str = ""
    """Extra ``--geo PATH`` for ``edgefleet route`` when its default table is not the one in use."""
    detached: bool = False
    ca_file: str = ""
    """The fleet's CA certificate (DATA/tls/ca.crt): the CLI trusts it alone (EDGEFLEET_CA_FILE)."""
    demo_ca_file: str = ""
    """The CA of the demo Domain's certificate (DATA/demo-tls/ca.crt), for ``curl --cacert``; empty: no HTTPS."""


def try_it(plan: FleetPlan, how: TryIt) -> str:
    """The instructions printed once the fleet is ready; every command runs as printed."""
    first, ports, cli = plan.edges[0], plan.ports, how.cli
    data = shlex.quote(how.data)
    resolve = f"{DEMO_HOST}:{ports.cache_http}:{how.first_node}"
    route = f"{cli} route {DOMAIN} --client {first.sample_client}{how.geo_argument}"
    stop = (
        f"{cli} down --data {data}"
        if how.detached
        else f"Ctrl-C here (or from another shell: {cli} down --data {data})"
    )
    sites = ", ".join(f"{site.name} ({site.city.name}, {_count(len(site.nodes), 'node')})" for site in plan.edges)
    ca = shlex.quote(how.ca_file) if how.ca_file else "its CA"
    trust = f" EDGEFLEET_CA_FILE={shlex.quote(how.ca_file)}" if how.ca_file else ""
    return "\n".join(
        [
            f"edgefleet is up: {_count(len(plan.nodes), 'node')}, each an agent running its cache; "
            f"parent site {plan.parent.name}, edge sites {sites}.",
            "",
            "Dashboard (log in with the viewer token; the browser does not know the fleet's own CA: import "
            f"{ca} or accept its certificate once):",
            f"  {plan.server}/ui",
            f"  viewer token: {how.viewer_token}",
            "",
            "The CLI as admin, in this shell (TLS, checked against the fleet's CA):",
            f"  export EDGEFLEET_SERVER={plan.server}{trust} EDGEFLEET_TOKEN={how.admin_token}",
            f"  {cli} get nodes -o wide",
            "",
            f"Where the GSLB sends a user in {first.city.name}, and why:",
            f"  dig @{ports.dns.host} -p {ports.dns.port} {DEMO_HOST} +subnet={first.client_subnet}",
            f"  {route}",
            "",
            f"Fetch through the {first.city.name} node it answers, twice: X-Cache says MISS, then HIT "
            "(from the node of the site that stores this URL):",
            f"  curl --resolve {resolve} http://{DEMO_HOST}:{ports.cache_http}{DEMO_PATH} -sI",
            "",
            *_https_lines(plan, how),
            "Purge it on every node (the next fetch is a MISS):",
            f"  {cli} purge {DOMAIN} {DEMO_PATH}",
            "",
            f"Logs: {data}/logs/ (caches: {data}/nodes/<node>/logs/)",
            f"Stop everything: {stop}",
        ]
    )


def _https_lines(plan: FleetPlan, how: TryIt) -> list[str]:
    if not how.demo_ca_file:
        return []
    port = plan.ports.cache_https
    return [
        f"The same over HTTPS (certificate {CERTIFICATE} from the cloud, issued by the demo CA):",
        f"  curl --cacert {shlex.quote(how.demo_ca_file)} --resolve {DEMO_HOST}:{port}:{how.first_node} "
        f"https://{DEMO_HOST}:{port}{DEMO_PATH} -sI",
        "",
    ]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
