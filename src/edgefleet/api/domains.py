"""Domain: a customer's hostnames, their origins, cache policy and routing.

How: users reach ``spec.hostnames`` (CNAMEd into the CDN zone); the GSLB
answers with nodes of a site chosen among those ``spec.sites`` selects, by
``spec.routing``; the cache servers of those sites fetch misses from
``spec.origins`` (or the site's parents) and keep responses as
``spec.cachePolicy`` says.

Cache policy, in the order the cache server applies it: the first rule whose
``pathPrefix`` or ``pathRegex`` matches decides (``bypass`` skips the cache,
``ttl`` overrides the origin's freshness); otherwise the origin's
Cache-Control/Expires, then (if ``heuristicFreshness``) RFC 9111 heuristic
freshness from Last-Modified, then ``defaultTtl``. ``queryString`` shapes
the cache key: ``keep`` as sent, ``ignore`` dropped, ``sort`` sorted by
parameter, ``allowList`` only the listed parameters, sorted.

Why ``sites`` is a label selector over Site labels (``tier=edge,region in
(eu,us)``) and not a list of names: sites come and go with demand, and a
selector keeps the Domain valid and current without edits. Routing names
sites directly (weights, failover order) because those are explicit
choices. Hostname uniqueness across Domains is checked by the API server,
which sees them all.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from edgefleet.api.common import (
    Name,
    Ratio,
    Seconds,
    cell,
    check_unique,
    check_unique_by,
    percent,
    short_list,
)
from edgefleet.api.errors import FieldValueError
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register
from edgefleet.api.rules import Rules
from edgefleet.api.selectors import Selector, SelectorText, parse_selector

MAX_REGEX_LENGTH = 1024
"""Security limit on the length of a cache rule's regular expression."""

CDN_ZONE = "cdn.edgefleet.test"
"""The CDN zone by default: a Domain answers as ``<domain>.<zone>`` (the name customers CNAME to), and each
of its nodes as ``<node>.<domain>.<zone>`` (where the HTTP 302 redirector sends users). The GSLB serves the
zone and the edge caches accept those names as Host headers, so both sides must agree on it."""


def canonical_hostname(hostnames: list[str]) -> str:
    """The host a Domain's content is keyed and fetched under when asked by another name.

    Requests that reach a cache under a CDN zone name (``demo.<zone>``, or a
    node name ``par-edge-1.demo.<zone>`` after a 302) are cached and sent to
    the origin as this host, so they share entries with requests for the
    customer's own hostname. It is the first hostname that is not a
    wildcard, else the first one without its ``*.``.
    """
    for host in hostnames:
        if not host.startswith("*."):
            return host
    return hostnames[0][2:]


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_URL = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?P<tail>.*)$",
    re.DOTALL,
)
_LOOSE_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")


def check_hostname(name: str) -> str:
    """A DNS name users request, lowercased; ``*.`` allowed as the leftmost label."""
    host = name.lower()
    labels = host.split(".")
    if len(host) > 253 or host.endswith("."):
        raise ValueError(f"{name!r}: at most 253 characters, without a trailing dot")
    if "*" in host and (labels[0] != "*" or "*" in labels[1:] or len(labels) < 2):
        raise ValueError(f"{name!r}: '*' is only allowed as the whole leftmost label ('*.a.b')")
    first = 1 if labels[0] == "*" else 0
    if not all(_DNS_LABEL.match(label) for label in labels[first:]):
        raise ValueError(
            f"{name!r} is not a valid DNS name: labels of 1-63 letters, digits and '-', "
            "not starting or ending with '-' (use punycode for IDNs)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{name!r} is an IP address or has a numeric top-level label")
    return host


def _is_ip(host: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return version is None or address.version == version


def _split_authority(authority: str) -> tuple[str, str | None] | None:
    """``host[:port]`` or ``[v6][:port]`` -> (host, port or None); None if malformed."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or not _is_ip(host, 6) or (rest and not rest.startswith(":")):
            return None
        return host, rest[1:] if rest else None
    host, colon, port = authority.partition(":")
    if ":" in port:
        return None
    return host, port if colon else None


def check_origin_url(url: str) -> str:
    """An absolute http(s) URL without credentials, query or fragment.

    Parsed here rather than with ``urllib.parse`` to keep the package's
    imports to the pure modules the layer check allows.
    """
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("must not contain spaces or control characters")
    match = _URL.match(url)
    if not match or match["scheme"].lower() not in ("http", "https") or not match["authority"]:
        raise ValueError("not an absolute http(s) URL")
    if "@" in match["authority"]:
        raise ValueError("must not contain user:password@ credentials")
    if match["tail"]:
        raise ValueError("must not contain a query or fragment")
    parts = _split_authority(match["authority"])
    if parts is None or not _valid_host(parts[0]) or not _valid_port(parts[1]):
        raise ValueError(f"invalid host or port in {url!r}")
    return url


def _valid_host(host: str) -> bool:
    return _is_ip(host) or (bool(_LOOSE_HOST.match(host)) and ".." not in host)


def _valid_port(port: str | None) -> bool:
    if port is None:
        return True
    return len(port) <= 5 and port.isascii() and port.isdigit() and 0 < int(port) < 65536


def check_host_header(value: str) -> str:
    """``host``, ``host:port`` or ``[v6]:port``, sent as the Host header to the origin."""
    parts = _split_authority(value)
    if parts is None or not _valid_host(parts[0]):
        raise ValueError(f"{value!r} is not a valid host name (host or host:port)")
    if not _valid_port(parts[1]):
        raise ValueError(f"{value!r}: invalid port")
    return value


def _check_path_prefix(prefix: str) -> str:
    if not prefix.startswith("/") or any(ch.isspace() or ord(ch) < 32 for ch in prefix):
        raise ValueError("must start with '/' and contain no spaces or control characters")
    return prefix


def _check_regex(pattern: str) -> str:
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"at most {MAX_REGEX_LENGTH} characters (got {len(pattern)})")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"does not compile: {exc}") from None
    return pattern


Hostname = Annotated[str, AfterValidator(check_hostname)]


class Origin(Model):
    """A server the cache fetches misses from."""

    url: Annotated[str, AfterValidator(check_origin_url)] = Field(
        description="Absolute http(s) URL of the origin; its path is prefixed to request "
        "paths. No credentials, query or fragment."
    )
    host_header: Annotated[str, AfterValidator(check_host_header)] | None = Field(
        default=None,
        description="Host header sent to the origin; by default the user's requested host.",
    )
    weight: int = Field(default=1, ge=1, le=1000, description="Relative share of fetches among origins.")
    backup: bool = Field(default=False, description="Used only when every non-backup origin is failing.")


class CacheRule(Model):
    """Caching for matching paths: exactly one matcher, then ttl or bypass."""

    path_prefix: Annotated[str, AfterValidator(_check_path_prefix)] | None = Field(
        default=None, description="Matches paths starting with this prefix, e.g. /static/."
    )
    path_regex: Annotated[str, AfterValidator(_check_regex)] | None = Field(
        default=None,
        description="Python regular expression searched in the path; anchor with ^ as needed.",
    )
    ttl: Seconds | None = Field(
        default=None,
        description="Seconds responses stay fresh, overriding the origin's Cache-Control; applies to the "
        "heuristically cacheable statuses (200, 301, 404...) and 302/303/307, never to errors the origin "
        "did not make explicitly fresh.",
    )
    bypass: bool = Field(default=False, description="Do not cache; always ask the origin.")

    @model_validator(mode="after")
    def _one_matcher_one_action(self) -> CacheRule:
        if (self.path_prefix is None) == (self.path_regex is None):
            raise ValueError("set exactly one of pathPrefix or pathRegex")
        if self.bypass and self.ttl is not None:
            raise FieldValueError(("ttl",), "not allowed with bypass: true")
        if not self.bypass and self.ttl is None:
            raise ValueError("set ttl or bypass: true")
        return self


def _query_mode_shorthand(value: Any) -> Any:
    """``queryString: sort`` is short for ``queryString: {mode: sort}``."""
    return {"mode": value} if isinstance(value, str) else value


class QueryStringPolicy(Model):
    """How the query string takes part in the cache key."""

    mode: Literal["keep", "ignore", "sort", "allowList"] = Field(
        default="keep",
        description="keep: as sent; ignore: dropped; sort: sorted by name; "
        "allowList: only the allowList parameters, sorted.",
    )
    allow_list: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=64,
        description="Parameter names kept in the cache key when mode is allowList.",
    )

    @field_validator("allow_list")
    @classmethod
    def _unique_params(cls, params: list[str]) -> list[str]:
        return check_unique(params, "parameter")

    @model_validator(mode="after")
    def _list_matches_mode(self) -> QueryStringPolicy:
        if self.mode == "allowList" and not self.allow_list:
            raise FieldValueError(("allowList",), "required when mode is allowList")
        if self.mode != "allowList" and self.allow_list:
            raise FieldValueError(("allowList",), "only used when mode is allowList")
        return self


class CachePolicy(Model):
    """What the cache keeps, for how long, and under which key."""

    default_ttl: Seconds = Field(
        default=3600,
        description="Seconds a response stays fresh when neither a rule nor the origin "
        "says (0: do not cache such responses).",
    )
    rules: list[CacheRule] = Field(
        default_factory=list, max_length=256, description="Per-path rules; the first match wins."
    )
    query_string: Annotated[QueryStringPolicy, BeforeValidator(_query_mode_shorthand)] = Field(
        default_factory=QueryStringPolicy,
        description="Query string handling in the cache key; a bare mode string is accepted.",
    )
    serve_stale_on_error: bool = Field(
        default=True,
        description="Serve a stale copy when the origin fails or returns 5xx (stale-if-error).",
    )
    heuristic_freshness: bool = Field(
        default=True,
        description="Allow RFC 9111 heuristic freshness from Last-Modified when the origin sends no explicit lifetime.",
    )
    cache_cookie_requests: bool = Field(
        default=False,
        description="Store responses to requests that carry a Cookie. Off: such responses are "
        "relayed but never stored, since the origin may have personalised them.",
    )
    preset: Literal["oci-registry"] | None = Field(
        default=None,
        description="Rules for a known kind of origin, applied after rules (see edgefleet.api.presets). "
        "oci-registry: a pull-through mirror of an OCI/Docker registry: blobs and manifests by digest are "
        "cached for a year (content-addressed, immutable), everything else under /v2/ (tags, the catalog, "
        "uploads) goes to the registry.",
    )


class Routing(Model):
    """How the GSLB picks a site for each user."""

    policy: Literal["geo", "latency", "weighted", "failover"] = Field(
        default="geo",
        description="geo: nearest site; latency: lowest measured latency; weighted: by "
        "weights; failover: first healthy site of failoverOrder.",
    )
    weights: dict[Name, Annotated[int, Field(ge=0, le=1000)]] = Field(
        default_factory=dict, description="Site name to relative weight (policy weighted)."
    )
    failover_order: list[Name] = Field(
        default_factory=list,
        max_length=64,
        description="Site names, most preferred first (policy failover).",
    )
    answers: int = Field(default=2, ge=1, le=8, description="Node addresses per DNS answer, 1 to 8.")
    ttl: int = Field(default=30, ge=0, le=86400, description="DNS answer TTL in seconds.")
    prefer_country: bool = Field(
        default=True,
        description="Policy geo: when a usable site is in the client's country, only such sites "
        "compete, even if a site abroad is nearer.",
    )
    shed_threshold: float = Field(
        default=0.85,
        gt=0,
        le=10,
        description="Load (status.load, i.e. loadGbps / capacityGbps) above which the chosen site "
        "sends part of its new answers to the next best site.",
    )
    shed_share: Ratio = Field(
        default=0.5,
        description="Share of answers moved away from a site at 100% load or more, 0 to 1; it grows "
        "linearly from 0 at shedThreshold.",
    )

    @field_validator("failover_order")
    @classmethod
    def _unique_order(cls, order: list[str]) -> list[str]:
        return check_unique(order, "site")

    @model_validator(mode="after")
    def _fields_match_policy(self) -> Routing:
        if self.policy == "weighted" and not any(self.weights.values()):
            raise FieldValueError(("weights",), "policy weighted needs a site with weight > 0")
        if self.policy != "weighted" and self.weights:
            raise FieldValueError(("weights",), "only used with policy weighted")
        if self.policy == "failover" and not self.failover_order:
            raise FieldValueError(("failoverOrder",), "required for policy failover")
        if self.policy != "failover" and self.failover_order:
            raise FieldValueError(("failoverOrder",), "only used with policy failover")
        return self


class DomainTls(Model):
    """HTTPS for a Domain: which Certificate the edge caches present, and how strictly."""

    certificate: Name = Field(description="Name of the Certificate served for this domain's hostnames.")
    redirect_http: bool = Field(
        default=False, description="Answer plain-HTTP requests with a redirect to the same URL over HTTPS."
    )
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="Lowest TLS version accepted.")


class DomainSpec(Model):
    """Desired state of a Domain."""

    hostnames: list[Hostname] = Field(
        min_length=1,
        max_length=100,
        description="DNS names served, e.g. www.example.com or *.example.com (stored lowercase; unique).",
    )
    origins: list[Origin] = Field(min_length=1, max_length=32, description="Servers cache misses are fetched from.")
    cache_policy: CachePolicy = Field(
        default_factory=CachePolicy, description="Freshness, per-path rules and cache key."
    )
    sites: SelectorText = Field(
        default="",
        description="Label selector over Site labels choosing the sites that serve the "
        "domain, e.g. 'tier=edge'; empty selects every site.",
    )
    routing: Routing = Field(default_factory=Routing, description="How the GSLB picks a site for each user.")
    tls: DomainTls | None = Field(default=None, description="HTTPS at the edge; none serves plain HTTP only.")
    rules: Rules = Field(
        default_factory=list,
        description="Edge rules run by every cache serving the domain, in order: match, actions, stop "
        "(see docs/rules.md).",
    )

    @field_validator("hostnames")
    @classmethod
    def _unique_hostnames(cls, hostnames: list[str]) -> list[str]:
        return check_unique(hostnames, "hostname")

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: list[Origin]) -> list[Origin]:
        check_unique_by(origins, lambda origin: origin.url, "url", "origin")
        if all(origin.backup for origin in origins):
            raise ValueError("at least one origin must not be a backup")
        return origins

    def site_selector(self) -> Selector:
        return parse_selector(self.sites)


class DomainStatus(Model):
    """Observed state of a Domain, summed by the domain status controller from its Ready nodes' reports.

    The traffic figures cover each node's last ``windowSeconds`` (see Node.status.cache): ``requests`` counts
    each user request once (requests between caches of the fleet are not in it), ``originRequests`` the
    requests the fleet sent to the origins, so ``offload`` is the share of user requests the origin did not
    see.
    """

    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    serving_sites: list[str] | None = Field(
        default=None, description="Sites with a Ready node whose cache serves the domain."
    )
    window_seconds: int | None = Field(default=None, ge=0, description="The window the traffic figures cover.")
    requests: int | None = Field(default=None, ge=0, description="User requests answered by the fleet.")
    origin_requests: int | None = Field(default=None, ge=0, description="Requests the fleet sent to the origins.")
    bytes: int | None = Field(default=None, ge=0, description="Response body bytes sent to users.")
    origin_bytes: int | None = Field(default=None, ge=0, description="Body bytes the fleet received from origins.")
    offload: Ratio | None = Field(
        default=None,
        description="Origin offload: 1 - originRequests / requests (0 when the origin got as many requests or more).",
    )
    byte_offload: Ratio | None = Field(default=None, description="1 - originBytes / bytes, likewise.")
    message: str | None = Field(default=None, description="Why the domain is in this state.")


class Domain(Resource):
    """A customer's hostnames served by the CDN."""

    KIND: ClassVar[str] = "Domain"
    kind: Literal["Domain"] = "Domain"
    spec: DomainSpec
    status: DomainStatus = Field(default_factory=DomainStatus)


def _offload_cell(ratio: float | None, requests: int | None) -> str:
    """An offload ratio; ``-`` when the window had no requests (nothing to offload), ``<none>`` before figures."""
    return "-" if ratio is None and requests == 0 else percent(ratio)


def _domain(obj: Resource) -> Domain:
    assert isinstance(obj, Domain)
    return obj


INFO = register(
    KindInfo(
        kind="Domain",
        plural="domains",
        model=Domain,
        short_names=("dom",),
        description="Customer hostnames: origins, cache policy, serving sites and routing.",
        columns=(
            Column("HOSTNAMES", lambda o: short_list(_domain(o).spec.hostnames)),
            Column("ORIGINS", lambda o: short_list([x.url for x in _domain(o).spec.origins], 1)),
            Column("ROUTING", lambda o: _domain(o).spec.routing.policy),
            Column("SITES", lambda o: _domain(o).spec.sites or "<all>"),
            Column("REQUESTS", lambda o: cell(_domain(o).status.requests)),
            Column("OFFLOAD", lambda o: _offload_cell(_domain(o).status.offload, _domain(o).status.requests)),
            Column("BYTE-OFFLOAD", lambda o: _offload_cell(_domain(o).status.byte_offload, _domain(o).status.requests)),
            Column("SERVING", lambda o: cell(_domain(o).status.serving_sites), wide=True),
            Column("DEFAULT-TTL", lambda o: f"{_domain(o).spec.cache_policy.default_ttl}s", wide=True),
        ),
    )
)
