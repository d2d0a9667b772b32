"""The cache server's config file: what it serves, where it keeps objects, whom it asks.

How: one YAML document, validated by pydantic with the same conventions as
the resources (camelCase keys, unknown fields rejected, errors by field path).
Run alone, an operator writes it (``edgefleet cache --config FILE``); on an
edge node the agent renders it from the node's view (its site's Domains, its
site peers, its parent sites) and sends SIGHUP when it changes. A reload swaps
domains, peers and parents atomically; listen address, worker count and
storage paths are fixed for the life of the process (changing them needs a
restart, and the server says so in its log).

A Domain entry reuses the API's ``Origin`` and ``CachePolicy`` models so that
a Domain resource and a standalone config mean exactly the same thing.

Example::

    node: par-edge-1
    listen: 127.0.0.1:8081
    workers: 2
    admin: {listen: 127.0.0.1:9081, tokenFile: admin.token}
    storage:
      memoryBytes: 268435456
      disk: {path: /var/cache/edgefleet, maxBytes: 10737418240}
    domains:
      - name: demo
        hostnames: [demo.edgefleet.test]
        origins: [{url: "http://127.0.0.1:8080"}]
    site:
      self: par-edge-1
      peers: [{name: par-edge-1, url: "http://127.0.0.1:8081"}, {name: par-edge-2, url: "http://127.0.0.2:8081"}]
      parents: [{site: fra-parent, nodes: [{name: fra-parent-1, url: "http://127.0.0.3:8081"}]}]
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from edgefleet.api.common import check_unique, check_unique_by
from edgefleet.api.domains import CachePolicy, DomainTls, Hostname, Origin, check_origin_url
from edgefleet.api.meta import Model, validation_errors
from edgefleet.api.rules import Rules
from edgefleet.cache.errors import ConfigError

MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""Security limit on the config file's size."""


def _check_listen(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8081 or [::1]:8081)")
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class AdminConfig(Model):
    """The local admin endpoint: purge, prefetch, status, metrics."""

    listen: Listen = Field(default="127.0.0.1:9081", description="HOST:PORT of the admin endpoint.")
    token: str | None = Field(default=None, min_length=16, description="Bearer token for purge/prefetch.")
    token_file: Path | None = Field(default=None, description="File holding the bearer token (one line).")

    def bearer(self, base: Path) -> str | None:
        """The token, read from ``token_file`` (relative to the config file) if set."""
        if self.token_file is None:
            return self.token
        path = self.token_file if self.token_file.is_absolute() else base / self.token_file
        try:
            return path.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"admin.tokenFile: cannot read {path}: {exc.strerror}") from None


class DiskConfig(Model):
    """The disk tier, shared by all workers."""

    path: Path = Field(description="Directory for cached objects and their index.")
    max_bytes: int = Field(default=10 * 2**30, ge=2**20, description="Size limit of the disk tier.")


class HotObjectsConfig(Model):
    """Small objects a node relays from the site peer that owns them, kept briefly in each worker's memory.

    So that a hot object costs a non-owner one hop per ``seconds`` per worker instead of one per request;
    never beyond the freshness the owner's copy had (see ``edgefleet.cache.storage.hot``). Any 0 disables it.
    """

    max_bytes: int = Field(default=32 * 2**20, ge=0, description="Memory for hot objects per worker, in bytes.")
    max_object_bytes: int = Field(default=256 * 1024, ge=0, description="Largest body kept as a hot object.")
    seconds: float = Field(default=2.0, ge=0, le=3600, description="How long a hot object is served at most.")


class StorageConfig(Model):
    """Where cached objects live."""

    memory_bytes: int = Field(default=256 * 2**20, ge=0, description="Memory tier size per worker, in bytes.")
    memory_object_bytes: int = Field(
        default=8 * 2**20, ge=0, description="Largest body kept in memory; larger ones are served from disk."
    )
    disk: DiskConfig | None = Field(default=None, description="Disk tier; none keeps only the memory tier.")
    slice_bytes: int = Field(
        default=4 * 2**20,
        ge=64 * 1024,
        description="Objects larger than this are fetched in slices of this size, so a range miss "
        "does not pull the whole object.",
    )
    hot_objects: HotObjectsConfig = Field(
        default_factory=HotObjectsConfig,
        description="Small objects relayed from the owner peer, served from this node's memory for a few seconds.",
    )


class DomainConfig(Model):
    """A Domain as the cache sees it."""

    name: str = Field(min_length=1, max_length=253, description="Domain name (for metrics and logs).")
    hostnames: list[Hostname] = Field(min_length=1, max_length=100, description="Host headers served.")
    origins: list[Origin] = Field(min_length=1, max_length=32, description="Where misses are fetched.")
    cache_policy: CachePolicy = Field(default_factory=CachePolicy, description="Freshness and cache key.")
    aliases: list[Hostname] = Field(
        default_factory=list,
        max_length=16,
        description="Other Host names served (the agent adds the CDN zone names <domain>.<zone> and "
        "*.<domain>.<zone>): cached and fetched as the canonical hostname, so they share its entries.",
    )
    tls: DomainTls | None = Field(
        default=None, description="HTTPS: the certificate (by name, from `certificates`) and TLS settings."
    )
    rules: Rules = Field(
        default_factory=list,
        description="Edge rules, as the Domain's spec.rules (docs/rules.md): compiled once per config load and "
        "evaluated by the node the client reached.",
    )

    @field_validator("hostnames")
    @classmethod
    def _unique(cls, hostnames: list[str]) -> list[str]:
        return check_unique(hostnames, "hostname")


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


class Peer(Model):
    """A cache server of this site or of a parent site."""

    name: str = Field(min_length=1, max_length=253, description="Node name; the hash input.")
    url: Annotated[str, AfterValidator(check_origin_url)] = Field(description="http://address:port of its cache.")


class ParentSite(Model):
    """A parent site: misses go to the node of it that owns the key."""

    site: str = Field(min_length=1, max_length=253, description="Parent Site name.")
    nodes: list[Peer] = Field(min_length=1, description="Cache servers of the parent site.")


class SiteConfig(Model):
    """This node's place in the tiers: its site peers and parent sites."""

    self_name: str = Field(alias="self", description="This node's name among peers.")
    peers: list[Peer] = Field(default_factory=list, description="Cache servers of this site, this node included.")
    parents: list[ParentSite] = Field(
        default_factory=list,
        description="Parent sites in order of preference; misses an owner "
        "cannot serve go to the first parent site with a healthy node, then to the origin.",
    )

    trusted: list[Annotated[str, AfterValidator(_check_network)]] = Field(
        default_factory=list,
        max_length=4096,
        description="Client addresses (IPs or CIDR networks) whose tier header fields (X-Edgefleet-Hops, "
        "X-Edgefleet-Tier, node names in Via) are trusted, besides the addresses of peers and parents; "
        "the agent lists every node of its view. Everyone else's are stripped.",
    )

    @field_validator("peers")
    @classmethod
    def _unique_peers(cls, peers: list[Peer]) -> list[Peer]:
        check_unique_by(peers, lambda peer: peer.name, "name", "peer")
        return peers


class UpstreamConfig(Model):
    """How the cache talks to peers, parents and origins."""

    connect_timeout: float = Field(default=3.0, gt=0, le=120, description="Seconds to connect.")
    response_timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds to the response head.")
    idle_body_timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds between body chunks.")
    peer_timeout: float = Field(default=2.0, gt=0, le=60, description="Connect timeout for site peers.")
    keepalive_per_host: int = Field(default=32, ge=1, le=4096, description="Pooled connections per upstream.")
    peer_down_seconds: float = Field(default=5.0, ge=0, le=600, description="A failed peer is skipped this long.")


class LimitsConfig(Model):
    """Security limits on client requests."""

    max_url_bytes: int = Field(default=8192, ge=256, le=1 << 20, description="Longer request-targets get 414.")
    max_header_bytes: int = Field(default=32768, ge=1024, le=1 << 22, description="Larger header blocks get 431.")
    max_headers: int = Field(default=100, ge=8, le=1000, description="More header fields get 431.")
    max_body_bytes: int = Field(
        default=2**20,
        ge=0,
        le=1 << 30,
        description="Largest request body buffered whole before it is forwarded (a buffered body can be "
        "retried on the next tier). A larger one (or a chunked one) of POST, PUT, PATCH, DELETE or OPTIONS is "
        "streamed to the upstream as it arrives; of GET or HEAD it gets 413.",
    )
    max_upload_bytes: int = Field(
        default=2**30,
        ge=0,
        le=1 << 40,
        description="Largest streamed request body: a larger Content-Length gets 413 before any of it is "
        "read, a chunked body that grows past it is cut off with 413. Memory per connection stays bounded.",
    )
    idle_timeout: float = Field(default=60.0, gt=0, description="Seconds a keep-alive connection may idle.")
    header_timeout: float = Field(default=10.0, gt=0, description="Seconds to receive a request head.")
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to receive a whole request, buffered body included, from its "
        "first byte (408 after; a slow body cannot hold its buffer longer); for a streamed body, seconds "
        "without a piece of it while one is due (not while the upstream is slow to take it).",
    )
    max_pipeline: int = Field(default=32, ge=1, le=1024, description="Requests queued per connection.")
    max_connections: int = Field(
        default=16384, ge=1, le=1 << 20, description="Open client connections per worker; more get 503 and close."
    )
    max_connections_per_client: int = Field(
        default=1024,
        ge=1,
        le=1 << 20,
        description="Open connections per worker from one client address; more get 503 and close.",
    )


AccessLogField = Literal[
    "time",
    "client",
    "method",
    "host",
    "target",
    "protocol",
    "status",
    "bytes",
    "cache",
    "upstreamMs",
    "ms",
    "tls",
    "userAgent",
    "referer",
    "node",
    "domain",
]
"""Fields of access log lines (described in edgefleet.cache.front.logformat and docs/cache.md)."""


def _check_sink_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


class LogSinkConfig(Model):
    """Where flushed access log batches are POSTed besides the file (a collector's HTTP endpoint)."""

    url: Annotated[str, AfterValidator(_check_sink_url)] = Field(
        description="http(s)://collector/path; each batch is one POST of lines (NDJSON with format json)."
    )
    max_batch_bytes: int = Field(
        default=1024 * 1024, ge=4096, le=64 * 2**20, description="Largest POST body; more lines wait for the next."
    )
    max_queue_bytes: int = Field(
        default=16 * 2**20,
        ge=4096,
        le=2**30,
        description="Lines waiting to be shipped per worker; when full the oldest batch is dropped (and counted).",
    )
    timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds a POST may take.")


class AccessLogConfig(Model):
    """The access log: every request (or a sample), written in batches off the request path."""

    enabled: bool = Field(default=True, description="false: no access log at all.")
    path: str = Field(
        default="access.log",
        min_length=1,
        max_length=4096,
        description="File the workers append to (relative: to the config file's directory); '-': stderr.",
    )
    format: Literal["json", "cdn", "combined"] = Field(
        default="json",
        description="json: JSON lines; cdn: the fields separated by spaces; combined: Apache/nginx combined.",
    )
    fields: list[AccessLogField] | None = Field(
        default=None,
        min_length=1,
        description="Fields of json and cdn lines, in order (default: all of them); combined's are fixed.",
    )
    sample: float = Field(default=1.0, ge=0, le=1, description="Share of requests logged, 0 to 1 (0: none).")
    flush_ms: int = Field(
        default=200,
        ge=10,
        le=5000,
        description="Lines are written at least this often. A worker that crashes (SIGKILL) loses the lines of "
        "at most the last flush window (flushMs, or flushBytes of lines if that comes first).",
    )
    flush_bytes: int = Field(
        default=256 * 1024, ge=4096, le=64 * 2**20, description="Lines are written as soon as about this many wait."
    )
    max_bytes: int | None = Field(
        default=None,
        ge=64 * 1024,
        description="Rotate the file when it is larger (checked each second by the master): access.log becomes "
        "access.log.1, .1 becomes .2, ... up to keep; none: no size rotation (SIGUSR1 reopens after a mv).",
    )
    keep: int = Field(default=5, ge=1, le=1000, description="Rotated files kept with maxBytes.")
    sink: LogSinkConfig | None = Field(default=None, description="Also POST the lines to a collector.")

    @field_validator("fields")
    @classmethod
    def _unique_fields(cls, fields: list[str] | None) -> list[str] | None:
        return None if fields is None else check_unique(fields, "field")

    @property
    def active(self) -> bool:
        return self.enabled and self.sample > 0

    def file(self, base: Path) -> Path | None:
        """The log file (``path`` resolved against ``base``, the config file's directory); None for stderr."""
        if self.path == "-":
            return None
        path = Path(self.path)
        return path if path.is_absolute() else base / path


class RateLimitConfig(Model):
    """The node's shared rate-limit table (module edgefleet.cache.storage.ratetable)."""

    slots: int = Field(
        default=262_144,
        ge=64,
        le=4_194_304,
        description="Buckets the node keeps for all its rate-limit rules together, in memory shared by the "
        "workers (24 bytes each; least recently used evicted per set of 8). Fixed while the cache runs.",
    )


class CertificateFiles(Model):
    """A certificate the TLS listener can present (chosen by SNI through the Domain that names it)."""

    name: str = Field(min_length=1, max_length=253, description="Certificate name, as Domains' tls.certificate.")
    cert_file: Path = Field(description="PEM chain, leaf first (relative paths: to the config file's directory).")
    key_file: Path = Field(description="PEM private key of the leaf.")
    fingerprint: str | None = Field(
        default=None,
        max_length=128,
        description="Digest of both files' contents, written by the agent so that a rotated certificate "
        "changes the config text (and so triggers a reload); not checked by the cache.",
    )


class CacheConfig(Model):
    """The whole cache server config file."""

    node: str = Field(default="edgefleet", min_length=1, max_length=253, description="Name in X-Cache headers.")
    listen: Listen = Field(default="127.0.0.1:8081", description="HOST:PORT to serve HTTP on.")
    tls_listen: Listen | None = Field(default=None, description="HOST:PORT to serve HTTPS on; none: no TLS.")
    certificates: list[CertificateFiles] = Field(
        default_factory=list, max_length=4096, description="Certificates for the TLS listener."
    )
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes sharing the port (SO_REUSEPORT).")
    admin: AdminConfig = Field(default_factory=AdminConfig, description="Local admin endpoint.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Memory and disk tiers.")
    domains: list[DomainConfig] = Field(default_factory=list, description="What is served.")
    site: SiteConfig | None = Field(default=None, description="Site peers and parents; none: origin only.")
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig, description="Upstream timeouts and pools.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Client request limits.")
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig, description="Access log.")
    rate_limit: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="The shared table of the edge rules' rate limits."
    )
    unknown_host_status: Literal[404, 421] = Field(
        default=421, description="Status for a Host no domain serves (421 Misdirected Request or 404)."
    )
    geo_table: Path | None = Field(
        default=None,
        description="Geo table for the edge rules' country/region conditions (CSV cidr,country,region,lat,lon or "
        "a MaxMind .mmdb; relative: to the working directory), read only when a rule needs it; none: the table "
        "shipped in the package (the one `edgefleet up` gives the GSLB).",
    )
    secrets: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        max_length=4096,
        description="Secret name -> its data: the Secrets the Domains' edge rules reference (token-auth keys). "
        "The agent renders only those and writes the file with mode 0600. A rule naming a Secret or key that is "
        "missing here denies its requests (never serves them unchecked).",
    )

    @model_validator(mode="after")
    def _tls_port_apart(self) -> CacheConfig:
        """tlsListen on listen's (or admin's) port would mix TLS and cleartext on one SO_REUSEPORT port."""
        if self.tls_listen is not None:
            host, port = split_listen(self.tls_listen)
            for name, other in (("listen", self.listen), ("admin.listen", self.admin.listen)):
                other_host, other_port = split_listen(other)
                if port == other_port and (host == other_host or {host, other_host} & {"0.0.0.0", "::"}):
                    raise ValueError(f"tlsListen {self.tls_listen} overlaps {name} {other}: choose another port")
        return self

    @field_validator("certificates")
    @classmethod
    def _unique_certificates(cls, certificates: list[CertificateFiles]) -> list[CertificateFiles]:
        check_unique_by(certificates, lambda certificate: certificate.name, "name", "certificate")
        return certificates

    @model_validator(mode="after")
    def _hostnames_unique_across_domains(self) -> CacheConfig:
        seen: dict[str, str] = {}
        for domain in self.domains:
            for host in [*domain.hostnames, *domain.aliases]:
                if host in seen:
                    raise ValueError(f"hostname {host!r} is in domains {seen[host]!r} and {domain.name!r}")
                seen[host] = domain.name
        return self


def parse_config(document: Any) -> CacheConfig:
    """Validate a decoded document; ConfigError lists every bad field by path."""
    if not isinstance(document, dict):
        raise ConfigError("the cache config must be a mapping")
    try:
        return CacheConfig.model_validate(document)
    except ValidationError as exc:
        lines = [f"{error.path or '<root>'}: {error.message}" for error in validation_errors(exc)]
        raise ConfigError("invalid cache config:\n  " + "\n  ".join(lines)) from None


def load_config(path: Path) -> CacheConfig:
    """Read and validate a config file."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(document)


def dump_config(config: CacheConfig) -> str:
    """The config as YAML, as the agent writes it."""
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
