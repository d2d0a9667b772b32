"""The built-in cache workload (``builtin: cache``): its config from the node's view, its command, its reloads.

How: a Workload whose template says ``builtin: cache`` runs the edgefleet
cache server, and the agent supplies what only it knows. Before every start
of the process (:meth:`BuiltinCache.prepare`, called by the supervisor after
the template's own files are written) it renders the cache's config from
the node's view and writes it as ``cache.yaml`` in the working directory.
Afterwards, whenever the view changes (a Domain edited, a peer added, a
parent site changed), the agent renders again and, if the text differs,
replaces the file atomically and sends SIGHUP to the running process: the
cache reloads domains, peers and parents without dropping connections or
cached objects. The template (and so its revision) does not change, so the
workload is never restarted for it.

Rendering (:func:`render_cache_config`, pure; "address" is the node's first
``spec.addresses`` entry, 127.0.0.1 when it has none):

- ``node``: the node name; ``listen``: ``<address>:<port "http">`` (8081 by
  default); ``admin.listen``: ``<address>:<port "admin">`` (9081 by default).
  The node's address and not 127.0.0.1, because several nodes of a test
  fleet share one machine on 127.0.0.x addresses with the same ports.
- ``admin.tokenFile``: ``admin.token`` in the working directory, a random
  token the agent writes once (mode 0600) and sends with purges.
- ``storage.disk.path``: ``<data dir>/cache-data/<workload name>``, outside
  the per-revision working directory, so that an upgrade of the cache
  workload (a new template revision) keeps the cached objects.
- ``accessLog.path``: ``<data dir>/cache-logs/<workload name>/access.log``,
  outside the working directory too, so an upgrade keeps appending to it.
- ``domains``: the Domains of the view (name, hostnames, origins,
  cachePolicy); one that does not validate, or repeats a hostname of an
  earlier one (by name), is left out with a warning rather than failing
  the whole config. Each Domain's hostnames also get ``<domain>.<zone>``
  and ``*.<domain>.<zone>`` (``zone``: the CDN zone, the agent's
  ``--cdn-zone``): the names the GSLB hands out, the second one covering
  the per-node names ``<node>.<domain>.<zone>`` the HTTP 302 redirector
  sends users to, so the cache picks the Domain by those Host headers too.
  A Domain whose zone names would not be valid hostnames (too long) or
  would pass the cache's hostname limit keeps its own hostnames only, with a
  warning.
- ``rules`` of each Domain: its ``spec.rules`` (edge rules) as they are; ``secrets``: the data of
  the Secrets those rules reference (token-auth keys: any ``{secret, key}`` under ``rules``, the
  same rule by which :mod:`edgefleet.sync.views` projects them to this node), and no other, so the
  file is written with mode 0600. A referenced Secret missing from the view is left out with a
  warning: the cache's token check then fails closed (403), never serves unchecked; and
  :meth:`BuiltinCache.conditions` says so in the agent's report (``RulesReady: False``, reason
  ``SecretMissing``: :mod:`edgefleet.edge.rulestatus`).
- ``geoTable``: the GSLB's geo table as this node keeps it (:mod:`edgefleet.edge.geotable`), for the
  rules' country/region conditions; left out (the packaged table) while the cloud publishes none.
- ``tls`` of each Domain whose ``spec.tls.certificate`` is in the view (a
  Domain naming a Certificate the view lacks is rendered without TLS, with a
  warning); ``certificates``: the Certificates those Domains name, as files
  in ``certs/`` of the working directory (``certFile``, ``keyFile`` and
  ``fingerprint``, the SHA-256 of chain and key; written by :meth:`BuiltinCache.sync`
  before the config, see :mod:`edgefleet.edge.certfiles`), so a rotated
  certificate changes the config text and the usual SIGHUP reloads it;
  ``tlsListen``: ``<address>:<port "https">`` (8443 by default), only when
  some Domain has TLS.
- ``site``: ``self`` is the node; ``peers`` the Nodes of its own site in the
  view, itself included and draining ones too (draining is for the GSLB),
  as ``http://<address>:<http port>``; ``parents`` the Site's
  ``spec.parents`` in order, each with its Nodes found in the view (a parent
  without any is left out). Peers and parents are assumed to run the same
  template, so the same http port. ``trusted``: every IP address of every
  Node in the view (the site's peers, its parents and their ancestors, and
  the nodes of its child sites, which :mod:`edgefleet.sync.views` projects
  to a parent for exactly this): the cache trusts tier header fields only
  from those (see :mod:`edgefleet.cache.upstream.tiers`), so a parent takes
  a child's edge-rules decision instead of running the rules again.

The command: a leading ``edgefleet`` in ``command`` becomes
``<the agent's python> -m edgefleet`` (so it runs from the agent's
virtualenv whatever PATH says), and ``--config cache.yaml`` is appended
after ``args``. The health probe connects to the node's address (see
:mod:`edgefleet.edge.probes`).

Why the cache's own config model (:mod:`edgefleet.cache.config`): the agent
writes exactly what the server validates, so the two cannot drift.

"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.domains import CDN_ZONE
from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.cache.config import CacheConfig, DomainConfig, dump_config, load_config, parse_config, split_listen
from edgefleet.cache.errors import CacheError
from edgefleet.edge import certfiles
from edgefleet.edge.rulestatus import SecretProblem, conditions_of, secret_problems
from edgefleet.edge.workdirs import write_atomic
from edgefleet.sync.views import domain_secret_refs

log = logging.getLogger("edgefleet.edge.cache")

CONFIG_FILE = "cache.yaml"
TOKEN_FILE = "admin.token"
HTTP_PORT_NAME, DEFAULT_HTTP_PORT = "http", 8081
ADMIN_PORT_NAME, DEFAULT_ADMIN_PORT = "admin", 9081
HTTPS_PORT_NAME, DEFAULT_HTTPS_PORT = "https", 8443
DEFAULT_HOST = "127.0.0.1"
RELOAD_AFTER_SECONDS = 2.0
"""Without a health probe, a process younger than this is not sent SIGHUP (it may not handle it yet)."""
REPEAT_WARNING_SECONDS = 600.0
"""A warning about the same missing certificate is logged again after this long (the view is rendered every
heartbeat)."""


class CacheConfigError(CacheError):
    """The node's view cannot make a cache config (the node's own Node is not in it yet)."""


@dataclass(frozen=True, slots=True)
class AdminEndpoint:
    """Where a running cache's admin endpoint is, and the bearer token it wants."""

    url: str
    token: str


# -- rendering (pure) -------------------------------------------------------------------------


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(document: Mapping[str, Any]) -> str:
    name = _dict(document.get("metadata")).get("name")
    return name if isinstance(name, str) else ""


def template_port(template: WorkloadTemplate, name: str, default: int) -> int:
    """The template's port called ``name``, else ``default``."""
    return next((port.port for port in template.ports if port.name == name), default)


def node_host(node: Mapping[str, Any] | None) -> str:
    """A Node document's first address, or 127.0.0.1."""
    addresses = _dict(node.get("spec") if node else None).get("addresses")
    first = addresses[0] if isinstance(addresses, list) and addresses else None
    return first if isinstance(first, str) and first else DEFAULT_HOST


def host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class _View:
    nodes: dict[str, Document]
    sites: dict[str, Document]
    domains: list[Document]
    certificates: dict[str, Document]
    secrets: dict[str, Document]


def _split_view(documents: Iterable[Document]) -> _View:
    view = _View({}, {}, [], {}, {})
    for document in documents:
        kind = document.get("kind")
        if kind == "Node":
            view.nodes[_name(document)] = document
        elif kind == "Site":
            view.sites[_name(document)] = document
        elif kind == "Domain":
            view.domains.append(document)
        elif kind == "Certificate":
            view.certificates[_name(document)] = document
        elif kind == "Secret":
            view.secrets[_name(document)] = document
    view.domains.sort(key=_name)
    return view


def _site_of(node: Mapping[str, Any]) -> str:
    site = _dict(node.get("spec")).get("site")
    return site if isinstance(site, str) else ""


def _members(view: _View, site: str, port: int, self_name: str) -> list[dict[str, str]]:
    """The cache servers of ``site`` in the view, by node name; nodes without an address are left out."""
    peers = []
    for name, node in sorted(view.nodes.items()):
        addresses = _dict(node.get("spec")).get("addresses")
        if _site_of(node) == site and (addresses or name == self_name):
            peers.append({"name": name, "url": f"http://{host_port(node_host(node), port)}"})
    return peers


def _fleet_addresses(view: _View) -> list[str]:
    """Every address of every Node in the view (peers, parents and their ancestors, child sites' nodes), sorted."""
    found: set[str] = set()
    for node in view.nodes.values():
        addresses = _dict(node.get("spec")).get("addresses")
        for address in addresses if isinstance(addresses, list) else []:
            with contextlib.suppress(ValueError):
                found.add(str(ipaddress.ip_address(address)))
    return sorted(found)


def _parents(view: _View, site: str, port: int) -> list[dict[str, Any]]:
    names = _dict(_dict(view.sites.get(site)).get("spec")).get("parents")
    parents = []
    for parent in names if isinstance(names, list) else []:
        nodes = _members(view, parent, port, "") if isinstance(parent, str) else []
        if nodes:
            parents.append({"site": parent, "nodes": nodes})
    return parents


def _domains(view: _View, zone: str) -> list[dict[str, Any]]:
    """The view's Domains as cache entries; invalid ones and repeated hostnames are left out, with a warning."""
    entries: list[dict[str, Any]] = []
    taken: dict[str, str] = {}
    for document in view.domains:
        spec = _dict(document.get("spec"))
        entry = {"name": _name(document), "hostnames": spec.get("hostnames"), "origins": spec.get("origins")}
        if "cachePolicy" in spec:
            entry["cachePolicy"] = spec["cachePolicy"]
        if spec.get("rules"):
            entry["rules"] = spec["rules"]
        _add_tls(entry, spec, view)
        try:
            domain = _domain_config(entry, zone)
        except ValidationError as exc:
            log.warning("domain %s left out of the cache config: %s", entry["name"], exc.errors()[0]["msg"])
            continue
        clash = next((host for host in domain.hostnames if host in taken), None)
        if clash is not None:
            log.warning(
                "domain %s left out of the cache config: hostname %s is domain %s's", domain.name, clash, taken[clash]
            )
            continue
        taken.update((host, domain.name) for host in domain.hostnames)
        entries.append(entry)
    return entries


def _add_tls(entry: dict[str, Any], spec: Mapping[str, Any], view: _View) -> None:
    """``spec.tls`` into the cache entry, when its Certificate is in the view; else a warning (served without)."""
    tls = _dict(spec.get("tls"))
    name = tls.get("certificate")
    if not isinstance(name, str):
        return
    if name not in view.certificates:
        _warn_now_and_then(f"domain {entry['name']} served without TLS: certificate {name} is not in this node's view")
        return
    entry["tls"] = dict(tls)


_warned: dict[str, float] = {}


def _warn_now_and_then(message: str) -> None:
    """Log ``message`` as a warning at most every :data:`REPEAT_WARNING_SECONDS` (renders run every heartbeat)."""
    now = time.monotonic()
    if now - _warned.get(message, -REPEAT_WARNING_SECONDS) >= REPEAT_WARNING_SECONDS:
        if len(_warned) >= 1024:
            _warned.clear()
        _warned[message] = now
        log.warning("%s", message)


def _rule_secrets(domains: list[dict[str, Any]], view: _View) -> dict[str, dict[str, str]]:
    """The data of the Secrets the rendered Domains' edge rules reference (token-auth keys).

    A referenced Secret that is not in the view (not created yet, deleted) is left out with a warning: the
    cache then denies the requests its rule would check (it never serves them unchecked).
    """
    found: dict[str, dict[str, str]] = {}
    for entry in domains:
        for name in sorted(domain_secret_refs(entry)):
            data = _dict(_dict(view.secrets.get(name)).get("spec")).get("data")
            if isinstance(data, dict):
                found[name] = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
            else:
                _warn_now_and_then(
                    f"domain {entry['name']}: Secret {name} of its edge rules is not in this node's view; "
                    "the requests its rules check are denied until it is"
                )
    return found


def certificate_pems(documents: Iterable[Document]) -> dict[str, tuple[str, str]]:
    """Certificate name -> (PEM chain, PEM key), from the Certificates of a view."""
    pems = {}
    for document in documents:
        spec = _dict(document.get("spec"))
        chain, key = spec.get("certificate"), spec.get("key")
        if document.get("kind") == "Certificate" and isinstance(chain, str) and isinstance(key, str):
            pems[_name(document)] = (chain, key)
    return pems


def _certificates(domains: list[dict[str, Any]], view: _View, directory: Path) -> list[dict[str, str]]:
    """The files of the Certificates the rendered Domains use (see :mod:`edgefleet.edge.certfiles`)."""
    used = sorted({entry["tls"]["certificate"] for entry in domains if "tls" in entry})
    pems = certificate_pems(view.certificates[name] for name in used)
    entries = []
    for name in used:
        chain, key = pems.get(name, ("", ""))
        digest = certfiles.fingerprint(chain, key)
        cert_file, key_file = certfiles.paths(directory, name, digest)
        entries.append({"name": name, "certFile": str(cert_file), "keyFile": str(key_file), "fingerprint": digest})
    return entries


def zone_hostnames(domain: str, zone: str) -> list[str]:
    """The names the GSLB hands out for a Domain: ``<domain>.<zone>`` and ``*.<domain>.<zone>`` (its node names)."""
    zone = zone.lower().rstrip(".")
    return [f"{domain}.{zone}", f"*.{domain}.{zone}"] if zone else []


def _domain_config(entry: dict[str, Any], zone: str) -> DomainConfig:
    """Validate ``entry`` with the zone's names added to its hostnames (in place); without them if they do not fit."""
    own = entry["hostnames"]
    if not isinstance(own, list):
        return DomainConfig.model_validate(entry)  # let validation say what is wrong
    extra = [host for host in zone_hostnames(entry["name"], zone) if host not in own]
    entry["aliases"] = extra
    try:
        return DomainConfig.model_validate(entry)
    except ValidationError:
        entry["aliases"] = []
        domain = DomainConfig.model_validate(entry)  # raises when the Domain itself is bad
    log.warning(
        "domain %s: served without its CDN zone names %s (not valid hostnames, or too many hostnames)",
        entry["name"],
        ", ".join(extra),
    )
    return domain


def render_cache_config(
    node_name: str,
    view_documents: Iterable[Document],
    template: WorkloadTemplate,
    workdir: Path,
    *,
    zone: str = CDN_ZONE,
    internal_domains: Sequence[dict[str, Any]] = (),
    geo_table: Path | None = None,
) -> CacheConfig:
    """The cache config of ``node_name`` from its view (see the module docstring); CacheConfigError without its Node.

    ``internal_domains`` (the agent's own, e.g. the artifact Domain of :mod:`edgefleet.edge.artifacts`) come
    first; a Domain of the view with the same name or a hostname of theirs is left out, with a warning.
    ``geo_table``: the GSLB's geo table on this node (:mod:`edgefleet.edge.geotable`); None: the packaged one.
    """
    view = _split_view(view_documents)
    node = view.nodes.get(node_name)
    if node is None:
        raise CacheConfigError(f"the node's view does not hold Node {node_name!r} yet")
    host = node_host(node)
    http_port = template_port(template, HTTP_PORT_NAME, DEFAULT_HTTP_PORT)
    admin_port = template_port(template, ADMIN_PORT_NAME, DEFAULT_ADMIN_PORT)
    site = _site_of(node)
    domains = _without_internal(_domains(view, zone), internal_domains)
    document: dict[str, Any] = {
        "node": node_name,
        "listen": host_port(host, http_port),
        "admin": {"listen": host_port(host, admin_port), "tokenFile": str(workdir / TOKEN_FILE)},
        "storage": {"disk": {"path": str(storage_dir(workdir))}},
        "accessLog": {"path": str(access_log_path(workdir))},
        "domains": domains,
        "site": {
            "self": node_name,
            "peers": _members(view, site, http_port, node_name),
            "parents": _parents(view, site, http_port),
            "trusted": _fleet_addresses(view),
        },
    }
    secrets = _rule_secrets(domains, view)
    if secrets:
        document["secrets"] = secrets
    if geo_table is not None:
        document["geoTable"] = str(geo_table)
    certificates = _certificates(domains, view, workdir / certfiles.CERTS_DIR)
    if certificates:
        document["certificates"] = certificates
        document["tlsListen"] = host_port(host, template_port(template, HTTPS_PORT_NAME, DEFAULT_HTTPS_PORT))
    return parse_config(document)


def _without_internal(domains: list[dict[str, Any]], internal: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``internal`` then the ``domains`` that clash with none of them (by name or hostname)."""
    names = {entry["name"] for entry in internal}
    hosts = {host for entry in internal for host in entry["hostnames"]}
    kept = []
    for entry in domains:
        own = {*(entry.get("hostnames") or []), *(entry.get("aliases") or [])}
        if entry["name"] in names or own & hosts:
            _warn_now_and_then(f"domain {entry['name']} left out of the cache config: it clashes with an internal one")
            continue
        kept.append(entry)
    return [*(dict(entry) for entry in internal), *kept]


def cache_argv(template: WorkloadTemplate, python: str = sys.executable) -> list[str]:
    """The cache's command line: ``edgefleet`` run as ``python -m edgefleet``, then ``--config cache.yaml``."""
    command = list(template.command)
    if command[0] == "edgefleet":
        command = [python, "-m", "edgefleet", *command[1:]]
    return [*command, *template.args, "--config", CONFIG_FILE]


def admin_url(config: CacheConfig) -> str:
    host, port = split_listen(config.admin.listen)
    return f"http://{host_port(host, port)}"


# -- files ------------------------------------------------------------------------------------


def storage_dir(workdir: Path) -> Path:
    """The disk tier's directory, per workload and shared by its revisions.

    ``workdir`` is ``<data>/workloads/<name>/<revision>``.
    """
    return workdir.parent.parent.parent / "cache-data" / workdir.parent.name


def access_log_path(workdir: Path) -> Path:
    """The access log, per workload and kept across its revisions: ``<data>/cache-logs/<name>/access.log``."""
    return workdir.parent.parent.parent / "cache-logs" / workdir.parent.name / "access.log"


def ensure_token(workdir: Path) -> str:
    """The admin token in ``workdir``, generated (mode 0600) the first time."""
    path = workdir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if not token:
        token = secrets.token_urlsafe(32)
        workdir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (token + "\n").encode(), mode=0o600)
    return token


def write_config(workdir: Path, text: str) -> bool:
    """Replace ``cache.yaml`` atomically if its content differs; True if it was written.

    Mode 0600: it may hold the values of the Secrets the Domains' edge rules reference (``secrets``).
    """
    path = workdir / CONFIG_FILE
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text.encode(), mode=0o600)
    return True


# -- the agent's side ---------------------------------------------------------------------------


class BuiltinCache:
    """The agent's part of ``builtin: cache`` workloads (a supervisor :class:`~edgefleet.edge.instances.Builtin`).

    :meth:`update_view` is called from the agent's event loop; :meth:`prepare`
    runs in an executor thread right before each spawn; :meth:`sync` (also
    blocking) renders and writes for a running process, and
    :meth:`reload_due` / :meth:`reloaded` track which config text each process
    is known to have loaded, so SIGHUP is sent once per change.
    """

    def __init__(self, node_name: str, *, zone: str = CDN_ZONE) -> None:
        self.node_name = node_name
        self.zone = zone
        self._documents: list[Document] = []
        self._lock = threading.Lock()
        self._started: dict[str, str] = {}  # workload -> text written right before its last spawn
        self._loaded: dict[str, tuple[int, str]] = {}  # workload -> (pid, text that pid has loaded)
        self._endpoints: dict[str, AdminEndpoint] = {}
        self._rule_problems: dict[str, list[SecretProblem]] = {}  # workload -> Secrets its rules lack
        self._reported_conditions: list[dict[str, str]] = []
        self.internal_domains: list[dict[str, Any]] = []
        """Domains of the agent's own added to every config (the artifact Domain, once the agent listens)."""
        self.geo_table: Path | None = None
        """The GSLB's geo table on this node, rendered as ``geoTable`` (None: the packaged table)."""

    def update_view(self, documents: Iterable[Document]) -> None:
        self._documents = list(documents)

    # the supervisor's Builtin protocol

    def prepare(self, name: str, template: WorkloadTemplate, workdir: Path) -> None:
        text = self.sync(name, template, workdir)
        with self._lock:
            self._started[name] = text

    def argv(self, template: WorkloadTemplate) -> list[str]:
        return cache_argv(template)

    def probe_host(self) -> str:
        node = next((d for d in self._documents if d.get("kind") == "Node" and _name(d) == self.node_name), None)
        return node_host(node)

    # reloads and the admin endpoint

    def sync(self, name: str, template: WorkloadTemplate, workdir: Path) -> str:
        """Render and write ``cache.yaml`` (blocking); the text the file now holds.

        Without the node's own Node in the view (a rebuilt local store, the
        cloud not reached yet) an existing file is kept as it is: the cache
        serves on with the last config it had.
        """
        token = ensure_token(workdir)
        try:
            config = render_cache_config(
                self.node_name,
                self._documents,
                template,
                workdir,
                zone=self.zone,
                internal_domains=self.internal_domains,
                geo_table=self.geo_table,
            )
        except CacheConfigError:
            path = workdir / CONFIG_FILE
            if not path.exists():
                raise
            config = load_config(path)
            log.warning("workload %s: no view of this node yet; keeping its current %s", name, CONFIG_FILE)
        text = dump_config(config)
        certfiles.write_certificates(config.certificates, certificate_pems(self._documents))
        if write_config(workdir, text):
            log.info("workload %s: wrote %s (%d domains)", name, CONFIG_FILE, len(config.domains))
        certfiles.remove_stale(workdir / certfiles.CERTS_DIR, config.certificates)
        self._endpoints[name] = AdminEndpoint(admin_url(config), token)
        problems = secret_problems(config)
        with self._lock:  # prepare() runs in a thread of its own
            self._rule_problems[name] = problems
        return text

    def conditions(self) -> list[dict[str, str]]:
        """``Node.status.conditions`` of the caches: ``RulesReady`` (:mod:`edgefleet.edge.rulestatus`)."""
        with self._lock:
            return conditions_of(dict(self._rule_problems))

    def conditions_changed(self, running: Iterable[str]) -> bool:
        """Whether :meth:`conditions` changed since the last call (workloads not ``running`` are forgotten)."""
        kept = set(running)
        with self._lock:
            for name in [name for name in self._rule_problems if name not in kept]:
                del self._rule_problems[name]
        conditions = self.conditions()
        changed, self._reported_conditions = conditions != self._reported_conditions, conditions
        return changed

    def reload_due(self, name: str, pid: int, text: str) -> bool:
        """Whether process ``pid`` of workload ``name`` has not loaded ``text`` yet."""
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None or loaded[0] != pid:
                # A process we have not seen: it read the file written right before its spawn, or,
                # adopted from an earlier agent, something we cannot know (then one reload is cheap).
                loaded = self._loaded[name] = (pid, self._started.pop(name, ""))
        return loaded[1] != text

    def reloaded(self, name: str, pid: int, text: str) -> None:
        with self._lock:
            self._loaded[name] = (pid, text)

    def endpoint(self, name: str) -> AdminEndpoint | None:
        """The admin endpoint of workload ``name`` as last written (None before the first write)."""
        return self._endpoints.get(name)


__all__ = [
    "ADMIN_PORT_NAME",
    "CONFIG_FILE",
    "HTTP_PORT_NAME",
    "RELOAD_AFTER_SECONDS",
    "TOKEN_FILE",
    "AdminEndpoint",
    "BuiltinCache",
    "CacheConfigError",
    "admin_url",
    "cache_argv",
    "ensure_token",
    "render_cache_config",
    "write_config",
    "zone_hostnames",
]
