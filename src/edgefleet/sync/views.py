"""Per-node views: which objects each node needs, projected, and how they change.

How: a :class:`FleetIndex` holds every ``/registry/...`` object the hub
watches (fed by :meth:`FleetIndex.load` at start and :meth:`FleetIndex.apply`
per store event) and, per kind it knows, a small parsed entry: a Node's site
and labels, a Site's parents and labels, a Workload's or Domain's parsed
selector, and the *projected* :class:`~edgefleet.sync.messages.ViewObject`\\ s
a node is sent. :meth:`FleetIndex.view` computes a node's whole view;
``apply`` returns, for every *registered* node (one with a live session)
whose view actually changed, the keys that changed: a ViewObject to put, or
None when the key leaves the view.

The view of node N at site S (rules of the package docstring):

- N's own Node, projected without status;
- S and S's parents, transitively (cycle-safe), projected with ``status.phase``
  only (:func:`project_site`: elastic sites scale their caches with it);
- the peer Nodes of S and the Nodes of S's parents: labels, spec and
  ``status.phase`` only, so a heartbeat changes nobody's view;
- the Nodes of S's *child* sites (the Sites whose ``spec.parents`` names S),
  unless they are peers already (a cycle of parents): name, site and
  addresses only (:func:`project_trust_node`), so that S's caches trust the
  tier fields of the requests those nodes send them (``X-Edgefleet-Rules``:
  the child ran the edge rules, the parent must not run them again; see
  :mod:`edgefleet.cache.upstream.tiers`). Only direct children: a request
  only ever goes up one parent link at a time, and each parent trusts the
  node that asked it;
- the Workloads whose ``spec.nodeSelector`` matches N's labels plus the
  implicit ``edgefleet.io/node=N`` and ``edgefleet.io/site=S``, each
  projected at the revision the workload controller assigned N
  (``status.nodeRevisions[N]``, else ``status.currentRevision``; the
  template comes from that revision's WorkloadRevision object; before the
  controller's first status, ``spec.template``): metadata, selector and
  template only (:func:`project_workload`), so a template edit, a strategy
  change or a status write moves no node until the controller assigns it;
  a revision whose WorkloadRevision is unknown leaves the node with what it
  has;
- the Domains whose ``spec.sites`` selector (empty: every site) matches S's
  labels plus the implicit ``edgefleet.io/site=S``;
- the *open* Purges and Prefetches (no ``status.completedAt`` yet) whose
  ``spec.domain`` is one of those Domains. Once the purge controller marks
  one completed it leaves every view, so views do not grow with history;
- every ClusterInfo (cluster-wide settings, e.g. the hub replicas' URLs the
  agent dials: see :mod:`edgefleet.api.clusterinfo`), projected without
  status; every Artifact (immutable metadata, so an agent can prefetch
  before a rollout reaches it) and the Secret ``edgefleet-artifacts`` (the
  fleet artifact key, see :mod:`edgefleet.edge.artifacts`);
- every ProbeTargets (latency probe targets, see :mod:`edgefleet.api.probetargets`),
  projected without status, handled like ClusterInfo;
- the Secrets that the Workloads of N's view reference (env
  ``valueFrom.secretRef``, in the template projected for N) or that the
  edge rules of the Domains of N's view reference (any ``{secret, key}``
  under ``spec.rules``: token-auth keys), and no other: a Secret reaches only the
  nodes that run a Workload or serve a Domain using it, and leaves a view
  when the last such Workload or Domain does (or stops referencing it);
- the Certificates that the Domains of N's view name
  (``spec.tls.certificate``), and no other, projected without status (so
  the certificate controller's status writes move no view): a private key
  reaches only the nodes of the sites serving a Domain that uses it, and
  leaves a view when the last such Domain does (or names another one).

:meth:`FleetIndex.nodes_serving` answers the reverse question (which nodes
have a Domain in their view) for the purge controller, from the same rule.

Kinds without rules here (future kinds) are stored but in no view; a
selector that does not parse selects nothing. Documents are read as plain
dicts (the API validated them on the way in; re-validating on this hot path
would cost more than the whole diff) and must not be mutated after they are
handed over: projections share their sub-objects.

Cost: a Workload status write that changes assignments costs work per node
whose assignment changed (other status writes cost nothing); a Workload or
Domain edit costs one selector check per registered node,
or per node of the named sites (or the named nodes) when its selector pins
``edgefleet.io/site`` (or ``edgefleet.io/node``) to a few values (a Domain
entering or leaving a view brings its open Purges and Prefetches along,
found through a per-domain index), a Purge or Prefetch edit one selector
check per registered node. A Node edit costs one (cached) chain
lookup per site and work per registered node of the sites that see it (its
own site, the sites below it, and its site's parents, which hold it for
trust), not per connected node; a heartbeat (a status change other than phase) two
projections and nothing per node. A ClusterInfo edit touches every
registered node (it is in every view; such edits are rare) and costs the
other kinds nothing: it has its own table, consulted only by
:meth:`FleetIndex.view`. A Secret edit costs nothing when no Workload references it, else one
selector check per registered node and per referencing Workload; a
Workload edit that changes the Secrets its template references costs one
pass over the other Workloads per node it moved. A Certificate edit costs nothing when no Domain
names it, else one pass over the Domains and one selector check per registered node and per
Domain naming it; a Domain edit that changes the Certificate it names costs one pass over the
other Domains per node whose view holds it. A change of a Node's labels or site, or of a
Site's labels or parents, may move many keys in and out of many views: the
affected views (the nodes of the site and of the sites below it, and of its
old and new parents) are recomputed before and after and diffed. Correctness first; those edits are rare.

Content versions: a projection that did not change keeps its ViewObject (and
its ``since``, the revision its content last changed at); a new projection
gets ``since`` = the event's revision, or the object's mod_revision on load.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.errors import SelectorError
from edgefleet.api.selectors import Operator, Selector, parse_selector
from edgefleet.sync.messages import KEY_PREFIX, ViewObject

NODE_LABEL = "edgefleet.io/node"
"""Implicit label of every node: its name (Workload selectors can pin a node)."""

SITE_LABEL = "edgefleet.io/site"
"""Implicit label of every node and site: the site name."""

ViewChanges = dict[str, ViewObject | None]
"""key -> the object to put, or None when the key leaves the view."""

__all__ = [
    "NODE_LABEL",
    "SITE_LABEL",
    "FleetIndex",
    "ViewChanges",
    "ViewObject",
    "digest",
    "project_object",
    "project_peer_node",
    "project_site",
    "project_trust_node",
    "project_workload",
]


def digest(items: Iterable[tuple[str, int]]) -> str:
    """``sha256("".join(f"{key}\\x00{rev}\\n" for key, rev in sorted(items)))``, 32 hex digits."""
    text = "".join(f"{key}\x00{rev}\n" for key, rev in sorted(items))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def project_object(document: Mapping[str, Any]) -> JSONObject:
    """apiVersion, kind, metadata without resourceVersion, spec: no status."""
    projected: JSONObject = {key: document[key] for key in ("apiVersion", "kind") if key in document}
    projected["metadata"] = {k: v for k, v in _dict(document.get("metadata")).items() if k != "resourceVersion"}
    if "spec" in document:
        projected["spec"] = document["spec"]
    return projected


def project_workload(document: Mapping[str, Any], template: Any) -> JSONObject:
    """A Workload as a node runs it: metadata without resourceVersion and generation, the selector and
    ``template`` (its assigned revision's), nothing else: rollout strategy, pins and status are the cloud's."""
    projected: JSONObject = {key: document[key] for key in ("apiVersion", "kind") if key in document}
    projected["metadata"] = {
        k: v for k, v in _dict(document.get("metadata")).items() if k not in ("resourceVersion", "generation")
    }
    spec = _dict(document.get("spec"))
    projected["spec"] = {"nodeSelector": spec.get("nodeSelector", ""), "template": template}
    return projected


def project_site(document: Mapping[str, Any]) -> JSONObject:
    """A Site as nodes see it: no status but ``status.phase`` (the agent scales its caches with it, see
    :mod:`edgefleet.edge.elastic`), so load and health writes move no view."""
    projected = project_object(document)
    phase = _dict(document.get("status")).get("phase")
    if isinstance(phase, str):
        projected["status"] = {"phase": phase}
    return projected


def project_peer_node(document: Mapping[str, Any]) -> JSONObject:
    """A peer's Node as other nodes see it: name, labels, spec and status.phase."""
    metadata = _dict(document.get("metadata"))
    projected: JSONObject = {key: document[key] for key in ("apiVersion", "kind") if key in document}
    projected["metadata"] = {"name": metadata.get("name"), "labels": _labels(document)}
    if "spec" in document:
        projected["spec"] = document["spec"]
    phase = _dict(document.get("status")).get("phase")
    if phase is not None:
        projected["status"] = {"phase": phase}
    return projected


def project_trust_node(document: Mapping[str, Any]) -> JSONObject:
    """A child site's Node as its parent sites' nodes see it: name, site and addresses, for tier trust only."""
    spec = _dict(document.get("spec"))
    projected: JSONObject = {key: document[key] for key in ("apiVersion", "kind") if key in document}
    projected["metadata"] = {"name": _dict(document.get("metadata")).get("name")}
    projected["spec"] = {"site": spec.get("site"), "addresses": spec.get("addresses") or []}
    return projected


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _labels(document: Mapping[str, Any]) -> dict[str, str]:
    labels = _dict(_dict(document.get("metadata")).get("labels"))
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


@functools.lru_cache(maxsize=4096)
def _parse_selector(text: str) -> Selector | None:
    # Many objects share few selectors: parse each text once.
    try:
        return parse_selector(text)
    except SelectorError:
        return None


def _selector(document: Mapping[str, Any], field: str) -> Selector | None:
    text = _dict(document.get("spec")).get(field, "")
    return _parse_selector(text) if isinstance(text, str) else None


def _matches(selector: Selector | None, labels: Mapping[str, str]) -> bool:
    return selector is not None and selector.matches(labels)


def _reuse(old: ViewObject | None, key: str, projected: JSONObject, since: int) -> ViewObject:
    """The old ViewObject when the projection's content is unchanged (keeping its since)."""
    fresh = ViewObject.of(key, projected, since)
    return old if old is not None and old.rev == fresh.rev else fresh


def _store_projection(
    held: dict[str, ViewObject], index: str, key: str, revision: int, document: StoredDocument | None
) -> tuple[ViewObject | None, ViewObject | None]:
    """Put ``document``'s projection in ``held[index]`` (or drop it on a delete); (old, new), ``new is old``
    when the content did not change (see :func:`_reuse`)."""
    old = held.get(index)
    new = None if document is None else _reuse(old, key, project_object(document), revision)
    if new is None:
        held.pop(index, None)
    else:
        held[index] = new
    return old, new


@dataclass(frozen=True, slots=True)
class _Node:
    site: str
    labels: dict[str, str]  # metadata labels plus the implicit node and site labels
    own: ViewObject
    peer: ViewObject
    trust: ViewObject  # as the nodes of its site's parents see it (project_trust_node)


@dataclass(frozen=True, slots=True)
class _Site:
    parents: tuple[str, ...]
    labels: dict[str, str]  # metadata labels plus the implicit site label
    obj: ViewObject


@dataclass(frozen=True, slots=True)
class _Selected:
    """A Domain: its parsed selector, its projection and the Certificate it names (spec.tls.certificate)."""

    selector: Selector | None
    obj: ViewObject
    certificate: str | None = None
    secrets: frozenset[str] = frozenset()
    """The Secrets its edge rules reference (token-auth keys, :func:`domain_secret_refs`)."""


@dataclass(frozen=True, slots=True)
class _Workload:
    """A Workload: its parsed selector, the projection most nodes get, and the nodes assigned another."""

    selector: Selector | None
    obj: ViewObject
    """The projection at status.currentRevision (or spec.template before the controller has seen it)."""
    assigned: Mapping[str, ViewObject]
    """Nodes whose status.nodeRevisions entry differs from the current revision, projected at theirs."""

    def for_node(self, node_name: str) -> ViewObject:
        return self.assigned.get(node_name, self.obj)


@dataclass(frozen=True, slots=True)
class _Task:
    """A Purge or Prefetch: the Domain it is for, whether it is still open, and its projection."""

    domain: str
    open: bool
    obj: ViewObject


TASK_KINDS = ("purges", "prefetches")
"""Kinds (URL plurals) that follow their Domain into views while open."""

EVERYWHERE_KINDS = ("clusterinfos", "probetargets", "artifacts")
"""Kinds (URL plurals) whose every object is in every node's view."""

EVERYWHERE_SECRETS = frozenset({"edgefleet-artifacts"})
"""Secrets in every node's view: the fleet artifact key (edgefleet.cloud.blobs), which every agent needs."""

SECRETS_KIND = "secrets"
"""Secrets follow the Workloads that reference them (see the module docstring)."""

CERTIFICATES_KIND = "certificates"
"""Certificates follow the Domains that name them (see the module docstring)."""


def _record(
    changes: dict[str, ViewChanges], node: str, key: str, was: ViewObject | None, now: ViewObject | None
) -> None:
    """Note what ``key`` does in ``node``'s view, given its object before and after."""
    if now is not None and (was is None or was.rev != now.rev):
        changes.setdefault(node, {})[key] = now
    elif was is not None and now is None:
        changes.setdefault(node, {})[key] = None


def _diff(before: Mapping[str, ViewObject], after: Mapping[str, ViewObject]) -> ViewChanges:
    changes: ViewChanges = {}
    for key, obj in after.items():
        old = before.get(key)
        if old is None or old.rev != obj.rev:
            changes[key] = obj
    for key in before:
        if key not in after:
            changes[key] = None
    return changes


class FleetIndex:
    """Every registry object, and the views of the registered nodes (see the module docstring)."""

    def __init__(self) -> None:
        self.revision = 0
        """The store revision the index is complete up to."""
        self._objects: dict[str, tuple[int, StoredDocument]] = {}
        self._nodes: dict[str, _Node] = {}
        self._sites: dict[str, _Site] = {}
        self._workloads: dict[str, _Workload] = {}
        self._templates: dict[str, dict[str, JSONObject]] = {}  # workload -> revision hash -> {uid, template}
        self._revision_keys: dict[str, tuple[str, str]] = {}  # WorkloadRevision key -> (workload, revision hash)
        self._domains: dict[str, _Selected] = {}
        self._tasks: dict[str, _Task] = {}  # key -> open or completed Purge/Prefetch
        self._open_tasks: dict[str, set[str]] = {}  # domain name -> keys of its open tasks
        self._everywhere: dict[str, ViewObject] = {}  # key -> projection, of EVERYWHERE_KINDS objects
        self._secrets: dict[str, ViewObject] = {}  # Secret name -> projection
        self._certificates: dict[str, ViewObject] = {}  # Certificate name -> projection
        self._members: dict[str, set[str]] = {}  # site name -> names of its nodes
        self._registered: dict[str, int] = {}  # node name -> live sessions
        self._chains: dict[str, frozenset[str]] = {}  # site -> itself and its ancestors
        self._children: dict[str, frozenset[str]] | None = None  # site -> sites naming it a parent (lazy)
        self._handlers: dict[str, Callable[[str, str, int, StoredDocument | None], dict[str, ViewChanges]]] = {
            "nodes": self._apply_node,
            "sites": self._apply_site,
            "workloads": self._apply_workload,
            "workloadrevisions": self._apply_revision,
            "domains": self._apply_domain,
            **{kind: self._apply_task for kind in TASK_KINDS},
            **{kind: self._apply_everywhere for kind in EVERYWHERE_KINDS},
            SECRETS_KIND: self._apply_secret,
            CERTIFICATES_KIND: self._apply_certificate,
        }

    # --- registration and queries ---------------------------------------

    def register(self, node_name: str) -> None:
        """A session for ``node_name`` starts: report its view changes from now on."""
        self._registered[node_name] = self._registered.get(node_name, 0) + 1

    def unregister(self, node_name: str) -> None:
        """A session for ``node_name`` ended (sessions are counted: reconnects overlap)."""
        count = self._registered.get(node_name, 0) - 1
        if count > 0:
            self._registered[node_name] = count
        else:
            self._registered.pop(node_name, None)

    @property
    def registered(self) -> frozenset[str]:
        return frozenset(self._registered)

    def get(self, key: str) -> tuple[int, StoredDocument] | None:
        """(mod_revision, document) of ``key``, or None."""
        return self._objects.get(key)

    def __len__(self) -> int:
        return len(self._objects)

    def documents(self, plural: str) -> list[tuple[int, StoredDocument]]:
        """(mod_revision, document) of every ``/registry/<plural>/`` object, as stored (no resourceVersion)."""
        prefix = f"{KEY_PREFIX}{plural}/"
        return [entry for key, entry in self._objects.items() if key.startswith(prefix)]

    def view(self, node_name: str) -> dict[str, ViewObject]:
        """The whole current view of ``node_name`` (empty while its Node does not exist)."""
        node = self._nodes.get(node_name)
        if node is None:
            return {}
        view = {node.own.key: node.own}
        for site_name in self._chain(node.site):
            site = self._sites.get(site_name)
            if site is not None:
                view[site.obj.key] = site.obj
            for member in self._members.get(site_name, ()):
                if member != node_name:
                    peer = self._nodes[member].peer
                    view[peer.key] = peer
        self._add_children(view, node.site)
        secret_names: set[str] = set()
        for workload in self._workloads.values():
            if _matches(workload.selector, node.labels):
                obj = workload.for_node(node_name)
                view[obj.key] = obj
                secret_names |= _secret_refs(obj)
        site_labels = self._site_labels(node.site)
        for domain_name, domain in self._domains.items():
            if _matches(domain.selector, site_labels):
                view[domain.obj.key] = domain.obj
                for task_key in self._open_tasks.get(domain_name, ()):
                    view[task_key] = self._tasks[task_key].obj
                certificate = self._certificates.get(domain.certificate or "")
                if certificate is not None:
                    view[certificate.key] = certificate
                secret_names |= domain.secrets
        for secret_name in secret_names:
            secret = self._secrets.get(secret_name)
            if secret is not None:
                view[secret.key] = secret
        view.update(self._everywhere)
        return view

    def peers_of(self, node_name: str) -> frozenset[str]:
        """The other nodes of ``node_name``'s site (empty for an unknown node)."""
        node = self._nodes.get(node_name)
        if node is None:
            return frozenset()
        return frozenset(member for member in self._members.get(node.site, ()) if member != node_name)

    def nodes_serving(self, domain_name: str) -> set[str]:
        """Every node (registered or not) whose view holds Domain ``domain_name``: the same rule as :meth:`view`."""
        domain = self._domains.get(domain_name)
        if domain is None:
            return set()
        return {
            member
            for site_name, members in self._members.items()
            if _matches(domain.selector, self._site_labels(site_name))
            for member in members
        }

    # --- feeding --------------------------------------------------------

    def load(self, items: Iterable[tuple[str, int, StoredDocument]], revision: int) -> dict[str, ViewChanges]:
        """Replace the whole index by ``items`` (key, mod_revision, document) read at ``revision``.

        Returns the view changes of registered nodes (none at start-up, when
        nobody is registered yet; after a re-list, what the gap changed).
        """
        before = {name: self.view(name) for name in self._registered}
        for table in (
            self._objects,
            self._nodes,
            self._sites,
            self._workloads,
            self._domains,
            self._members,
            self._tasks,
            self._open_tasks,
            self._everywhere,
            self._templates,
            self._revision_keys,
            self._secrets,
            self._certificates,
        ):
            table.clear()
        self._chains.clear()
        self._children = None
        workloads: list[tuple[str, int, StoredDocument]] = []
        for key, mod_revision, document in items:
            self._check(key, document)
            self._objects[key] = (mod_revision, document)
            if key.startswith(f"{KEY_PREFIX}workloads/"):
                workloads.append((key, mod_revision, document))  # after their revisions, whatever the order
            else:
                self._store(key, mod_revision, document)
        for key, mod_revision, document in workloads:
            self._store(key, mod_revision, document)
        self.revision = revision
        changes = {name: _diff(before[name], self.view(name)) for name in before}
        return {name: diff for name, diff in changes.items() if diff}

    def apply(self, key: str, revision: int, document: StoredDocument | None) -> dict[str, ViewChanges]:
        """One store event: ``key`` changed at ``revision`` (``document`` None: deleted).

        Returns node name -> view changes, for registered nodes whose view changed.
        """
        self._check(key, document)
        self.revision = max(self.revision, revision)
        if document is None:
            self._objects.pop(key, None)
        else:
            self._objects[key] = (revision, document)
        kind, name = _split_key(key)
        handler = self._handlers.get(kind)
        return {} if handler is None else handler(key, name, revision, document)

    @staticmethod
    def _check(key: str, document: StoredDocument | None) -> None:
        if not key.startswith(KEY_PREFIX):
            raise ValueError(f"{key!r} is not a registry key (they start with {KEY_PREFIX})")
        if document is not None and not isinstance(document, dict):
            raise ValueError(f"{key}: the document must be a dict, not {type(document).__name__}")

    def _store(self, key: str, revision: int, document: StoredDocument) -> None:
        """Put one object in the parsed tables, without computing view changes (load)."""
        kind, name = _split_key(key)
        if kind == "nodes":
            self._set_node(name, self._build_node(key, name, revision, document, None))
        elif kind == "sites":
            self._set_site(name, self._build_site(key, name, revision, document, None))
        elif kind == "workloads":
            self._workloads[name] = self._build_workload(key, name, revision, document, None)
        elif kind == "workloadrevisions":
            self._set_template(key, document)
        elif kind == "domains":
            self._domains[name] = self._build_domain(key, revision, document, None)
        elif kind in TASK_KINDS:
            self._set_task(key, self._build_task(key, revision, document, None))
        elif kind in EVERYWHERE_KINDS or (kind == SECRETS_KIND and name in EVERYWHERE_SECRETS):
            self._everywhere[key] = ViewObject.of(key, project_object(document), revision)
        elif kind == SECRETS_KIND:
            self._secrets[name] = ViewObject.of(key, project_object(document), revision)
        elif kind == CERTIFICATES_KIND:
            self._certificates[name] = ViewObject.of(key, project_object(document), revision)

    # --- ClusterInfo: in every node's view --------------------------------

    def _apply_everywhere(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old, new = _store_projection(self._everywhere, key, key, revision, document)
        if old is new:
            return {}  # unchanged content (or a delete of nothing)
        # Registered nodes whose Node is unknown have an empty view (see view()).
        return {node_name: {key: new} for node_name in self._registered if node_name in self._nodes}

    # --- Domains: one selector check per registered node -------------------

    def _apply_domain(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old = self._domains.get(name)
        new = None if document is None else self._build_domain(key, revision, document, old)
        if new is None:
            self._domains.pop(name, None)
        else:
            self._domains[name] = new
        if old is not None and new is not None and old.obj is new.obj and old.selector == new.selector:
            return {}  # a status change: nobody's view moves
        tasks = self._open_tasks.get(name, set())
        changes: dict[str, ViewChanges] = {}
        old_obj, old_selector = (old.obj, old.selector) if old is not None else (None, None)
        new_obj, new_selector = (new.obj, new.selector) if new is not None else (None, None)
        same_selector = old is not None and new is not None and old_selector == new_selector
        for node_name in self._reachable(old, new, node_pins=False):
            labels = self._domain_labels(node_name)
            if labels is None:
                continue
            now_in = _matches(new_selector, labels)
            was_in = now_in if same_selector else _matches(old_selector, labels)  # a body edit: one check
            was, now = old_obj if was_in else None, new_obj if now_in else None
            _record(changes, node_name, key, was, now)
            self._record_certificates(changes, node_name, name, old if was_in else None, new if now_in else None)
            self._record_domain_secrets(changes, node_name, name, old if was_in else None, new if now_in else None)
            if was_in != now_in:
                for task_key in tasks:  # a Domain brings its open tasks into a view, and takes them away
                    task = self._tasks[task_key].obj
                    _record(changes, node_name, task_key, task if was_in else None, task if now_in else None)
        return changes

    def _reachable(
        self, old: _Selected | _Workload | None, new: _Selected | _Workload | None, *, node_pins: bool
    ) -> Iterable[str]:
        """The registered nodes the old or new selector may match: all of them, unless both pin names.

        A selector that requires ``edgefleet.io/site`` (or, for Workloads,
        ``edgefleet.io/node``) to be one of a few values can only match the
        nodes of those sites (or those nodes), so an edit of a Workload
        pinned to one node costs one check, not one per connected node.
        """
        reachable: set[str] = set()
        for entry in (old, new):
            if entry is None or entry.selector is None:
                continue  # absent, or a selector that does not parse: it selects nobody
            pinned = self._pinned(entry.selector, node_pins=node_pins)
            if pinned is None:
                return self._registered
            reachable.update(name for name in pinned if name in self._registered)
        return reachable

    def _pinned(self, selector: Selector, *, node_pins: bool) -> Iterable[str] | None:
        for requirement in selector.requirements:
            if requirement.operator not in (Operator.EQUALS, Operator.IN):
                continue
            if requirement.key == NODE_LABEL and node_pins:
                return requirement.values
            if requirement.key == SITE_LABEL:
                return [member for site in requirement.values for member in self._members.get(site, ())]
        return None

    def _build_domain(self, key: str, revision: int, document: StoredDocument, old: _Selected | None) -> _Selected:
        obj = _reuse(old.obj if old else None, key, project_object(document), revision)
        certificate = _dict(_dict(document.get("spec")).get("tls")).get("certificate")
        secrets = domain_secret_refs(_dict(document.get("spec")))
        return _Selected(
            _selector(document, "sites"), obj, certificate if isinstance(certificate, str) else None, secrets
        )

    # --- Certificates: in the views that hold a Domain naming them ----------

    def _record_certificates(
        self,
        changes: dict[str, ViewChanges],
        node_name: str,
        domain_name: str,
        was: _Selected | None,
        now: _Selected | None,
    ) -> None:
        """Domain ``domain_name`` left, entered or changed in ``node_name``'s view (``was``/``now``: as it
        was and is there, None when out): the Certificate it named leaves unless another Domain of the view
        names it too, the one it names now enters."""
        before = was.certificate if was is not None else None
        after = now.certificate if now is not None else None
        if before == after:
            return
        others = self._certificates_used(node_name, skip=domain_name)
        for certificate_name, entering in ((before, False), (after, True)):
            certificate = self._certificates.get(certificate_name or "")
            if certificate is not None and certificate_name not in others:
                _record(
                    changes,
                    node_name,
                    certificate.key,
                    None if entering else certificate,
                    certificate if entering else None,
                )

    def _certificates_used(self, node_name: str, skip: str = "") -> set[str]:
        """The Certificate names the Domains of the node's view name (but Domain ``skip``)."""
        labels = self._domain_labels(node_name)
        if labels is None:
            return set()
        return {
            domain.certificate
            for domain_name, domain in self._domains.items()
            if domain_name != skip and domain.certificate is not None and _matches(domain.selector, labels)
        }

    def _apply_certificate(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old, new = _store_projection(self._certificates, name, key, revision, document)
        users = [domain for domain in self._domains.values() if domain.certificate == name]
        if old is new or not users:
            return {}  # a status write (the projection has no status), or nobody uses it
        changes: dict[str, ViewChanges] = {}
        for node_name in self._registered:
            labels = self._domain_labels(node_name)
            if labels is not None and any(_matches(domain.selector, labels) for domain in users):
                _record(changes, node_name, key, old, new)
        return changes

    def _node_labels(self, node_name: str) -> Mapping[str, str] | None:
        node = self._nodes.get(node_name)
        return None if node is None else node.labels

    def _domain_labels(self, node_name: str) -> Mapping[str, str] | None:
        node = self._nodes.get(node_name)
        return None if node is None else self._site_labels(node.site)

    def _site_labels(self, site_name: str) -> Mapping[str, str]:
        site = self._sites.get(site_name)
        return site.labels if site is not None else {SITE_LABEL: site_name}

    # --- Workloads: a selector check per registered node, a revision per node

    def _apply_workload(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old = self._workloads.get(name)
        new = None if document is None else self._build_workload(key, name, revision, document, old)
        if new is None:
            self._workloads.pop(name, None)
        else:
            self._workloads[name] = new
        return self._workload_changes(key, old, new)

    def _workload_changes(self, key: str, old: _Workload | None, new: _Workload | None) -> dict[str, ViewChanges]:
        """The view changes between two states of one Workload, looking only where they can differ."""
        if old is not None and new is not None and old.selector == new.selector and old.obj is new.obj:
            if old.assigned == new.assigned:
                return {}  # a status change that moves nobody
            candidates: Iterable[str] = (set(old.assigned) | set(new.assigned)) & self._registered.keys()
        else:
            candidates = self._reachable(old, new, node_pins=True)
        changes: dict[str, ViewChanges] = {}
        for node_name in candidates:
            labels = self._node_labels(node_name)
            if labels is None:
                continue
            was = old.for_node(node_name) if old is not None and _matches(old.selector, labels) else None
            now = new.for_node(node_name) if new is not None and _matches(new.selector, labels) else None
            _record(changes, node_name, key, was, now)
            self._record_secrets(changes, node_name, labels, key, was, now)
        return changes

    # --- Secrets: in the views whose Workloads reference them -----------------

    def _record_secrets(
        self,
        changes: dict[str, ViewChanges],
        node_name: str,
        labels: Mapping[str, str],
        key: str,
        was: ViewObject | None,
        now: ViewObject | None,
    ) -> None:
        """The Secrets that enter or leave ``node_name``'s view as one Workload (``key``) goes from was to now."""
        before, after = _secret_refs(was), _secret_refs(now)
        if before == after:
            return
        _, name = _split_key(key)
        others = self._secrets_used(node_name, labels, skip=name) | self._domain_secrets_used(node_name)
        for secret_name in (before ^ after) - others:
            secret = self._secrets.get(secret_name)
            if secret is not None:
                _record(
                    changes,
                    node_name,
                    secret.key,
                    secret if secret_name in before else None,
                    secret if secret_name in after else None,
                )

    def _record_domain_secrets(
        self,
        changes: dict[str, ViewChanges],
        node_name: str,
        domain_name: str,
        was: _Selected | None,
        now: _Selected | None,
    ) -> None:
        """Domain ``domain_name`` left, entered or changed in ``node_name``'s view: the Secrets its rules
        referenced leave unless a Workload or another Domain of the view references them, the new ones enter."""
        before = was.secrets if was is not None else frozenset()
        after = now.secrets if now is not None else frozenset()
        if before == after:
            return
        labels = self._node_labels(node_name)
        others = self._domain_secrets_used(node_name, skip=domain_name)
        if labels is not None:
            others |= self._secrets_used(node_name, labels)
        for secret_name in (before ^ after) - others:
            secret = self._secrets.get(secret_name)
            if secret is not None:
                entering = secret_name in after
                _record(changes, node_name, secret.key, None if entering else secret, secret if entering else None)

    def _domain_secrets_used(self, node_name: str, skip: str = "") -> set[str]:
        """The Secret names the edge rules of the Domains of the node's view reference (but Domain ``skip``)."""
        labels = self._domain_labels(node_name)
        if labels is None:
            return set()
        used: set[str] = set()
        for domain_name, domain in self._domains.items():
            if domain_name != skip and domain.secrets and _matches(domain.selector, labels):
                used |= domain.secrets
        return used

    def _secrets_used(self, node_name: str, labels: Mapping[str, str], skip: str = "") -> set[str]:
        """The Secret names the Workloads of the node's view reference (but Workload ``skip``)."""
        used: set[str] = set()
        for workload_name, workload in self._workloads.items():
            if workload_name != skip and _matches(workload.selector, labels):
                used |= _secret_refs(workload.for_node(node_name))
        return used

    def _apply_secret(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        if name in EVERYWHERE_SECRETS:
            return self._apply_everywhere(key, name, revision, document)
        old, new = _store_projection(self._secrets, name, key, revision, document)
        users = [
            w
            for w in self._workloads.values()
            if name in _secret_refs(w.obj) or any(name in _secret_refs(o) for o in w.assigned.values())
        ]
        domains = [domain for domain in self._domains.values() if name in domain.secrets]
        if old is new or not (users or domains):
            return {}
        changes: dict[str, ViewChanges] = {}
        for node_name in self._registered:
            labels = self._node_labels(node_name)
            if labels is not None and any(
                _matches(w.selector, labels) and name in _secret_refs(w.for_node(node_name)) for w in users
            ):
                _record(changes, node_name, key, old, new)
                continue
            site_labels = self._domain_labels(node_name)
            if site_labels is not None and any(_matches(domain.selector, site_labels) for domain in domains):
                _record(changes, node_name, key, old, new)
        return changes

    def _build_workload(
        self, key: str, name: str, revision: int, document: StoredDocument, old: _Workload | None
    ) -> _Workload:
        """Project the Workload at each revision its status assigns (see the module docstring)."""
        status = _dict(document.get("status"))
        templates = self._templates.get(name, {})
        uid = _dict(document.get("metadata")).get("uid")
        projections: dict[str, ViewObject] = {}

        def at(rev: object, previous: ViewObject | None) -> ViewObject | None:
            if not isinstance(rev, str):
                return None
            if rev not in projections:
                entry = templates.get(rev)
                if entry is None or (entry["uid"] and uid and entry["uid"] != uid):
                    return None  # not (yet) known here: keep what the node has
                projections[rev] = _reuse(previous, key, project_workload(document, entry["template"]), revision)
            return projections[rev]

        current = status.get("currentRevision")
        default = None if current is None else at(current, old.obj if old else None)
        if default is None:
            # Before the workload controller's first round (a new Workload), or a current revision whose
            # WorkloadRevision is missing: spec.template, unless this node set already has a projection.
            spec_template = _dict(document.get("spec")).get("template")
            fresh = _reuse(old.obj if old else None, key, project_workload(document, spec_template), revision)
            default = fresh if current is None or old is None else old.obj
        assigned: dict[str, ViewObject] = {}
        for node_name, rev in _dict(status.get("nodeRevisions")).items():
            obj = at(rev, old.assigned.get(node_name) if old else None)
            if obj is None and old is not None and node_name in old.assigned:
                obj = old.assigned[node_name]
            if obj is not None and obj.rev != default.rev:
                assigned[node_name] = obj
        return _Workload(_selector(document, "nodeSelector"), default, assigned)

    def _apply_revision(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        """A WorkloadRevision came or went: its Workload's projections may change.

        A deleted one leaves the projections made from it in place (a node
        keeps what it has) and only stops serving new ones.
        """
        workload = self._set_template(key, document)
        stored = None if workload is None else self._objects.get(f"{KEY_PREFIX}workloads/{workload}")
        if document is None or workload is None or stored is None:
            return {}
        return self._apply_workload(f"{KEY_PREFIX}workloads/{workload}", workload, stored[0], stored[1])

    def _set_template(self, key: str, document: StoredDocument | None) -> str | None:
        """Index one WorkloadRevision's template under its workload and hash; returns the workload's name."""
        old = self._revision_keys.pop(key, None)
        if old is not None:
            templates = self._templates.get(old[0], {})
            templates.pop(old[1], None)
            if not templates:
                self._templates.pop(old[0], None)
        spec = _dict(document.get("spec")) if document is not None else {}
        workload, rev, template = spec.get("workload"), spec.get("revision"), spec.get("template")
        if not (isinstance(workload, str) and isinstance(rev, str) and isinstance(template, dict)):
            return old[0] if old is not None else None
        self._templates.setdefault(workload, {})[rev] = {"uid": spec.get("workloadUid") or "", "template": template}
        self._revision_keys[key] = (workload, rev)
        return workload

    # --- Purges and Prefetches: in the views that hold their Domain, while open

    def _apply_task(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old = self._tasks.get(key)
        new = None if document is None else self._build_task(key, revision, document, old)
        self._set_task(key, new)
        if old is not None and new is not None and old == new:
            return {}  # a status change that leaves it open: nobody's view moves
        changes: dict[str, ViewChanges] = {}
        for node_name in self._registered:
            was = old.obj if old is not None and old.open and self._serves(node_name, old.domain) else None
            now = new.obj if new is not None and new.open and self._serves(node_name, new.domain) else None
            _record(changes, node_name, key, was, now)
        return changes

    def _build_task(self, key: str, revision: int, document: StoredDocument, old: _Task | None) -> _Task:
        domain = _dict(document.get("spec")).get("domain")
        is_open = not _dict(document.get("status")).get("completedAt")
        obj = _reuse(old.obj if old else None, key, project_object(document), revision)
        return _Task(domain if isinstance(domain, str) else "", is_open, obj)

    def _set_task(self, key: str, task: _Task | None) -> None:
        old = self._tasks.pop(key, None)
        if old is not None and old.open:
            keys = self._open_tasks[old.domain]
            keys.discard(key)
            if not keys:
                del self._open_tasks[old.domain]
        if task is not None:
            self._tasks[key] = task
            if task.open:
                self._open_tasks.setdefault(task.domain, set()).add(key)

    def _serves(self, node_name: str, domain_name: str) -> bool:
        """Whether Domain ``domain_name`` is in ``node_name``'s view."""
        node = self._nodes.get(node_name)
        domain = self._domains.get(domain_name)
        return node is not None and domain is not None and _matches(domain.selector, self._site_labels(node.site))

    # --- Nodes ------------------------------------------------------------

    def _apply_node(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old = self._nodes.get(name)
        new = None if document is None else self._build_node(key, name, revision, document, old)
        if old is not None and new is not None and old.own is new.own and old.peer is new.peer:
            return {}  # a heartbeat: no projection changed (trust is a part of own)
        moved = old is None or new is None or old.site != new.site or old.labels != new.labels
        before = self.view(name) if moved and name in self._registered else None
        self._set_node(name, new)
        changes: dict[str, ViewChanges] = {}
        if before is not None:
            own_changes = _diff(before, self.view(name))
            if own_changes:
                changes[name] = own_changes
        elif name in self._registered and old is not None and new is not None:
            _record(changes, name, key, old.own, new.own)
        self._record_peer(changes, name, key, old, new)
        return changes

    def _record_peer(
        self, changes: dict[str, ViewChanges], name: str, key: str, old: _Node | None, new: _Node | None
    ) -> None:
        """Node ``name`` is in the views of nodes whose site chain holds its site, and of its site's parents.

        Only the registered members of those sites are looked at (a site's
        chain is cached), so a change of one node costs work per site and per
        affected peer, not per connected node.
        """
        sites = {site.site for site in (old, new) if site is not None}
        parents = [
            member for site in sites for parent in self._parents(site) for member in self._members.get(parent, ())
        ]
        for other in {*self._members_below(sites), *parents}:
            node = self._nodes.get(other)
            if other == name or node is None or other not in self._registered:
                continue
            _record(changes, other, key, self._seen_from(node.site, old), self._seen_from(node.site, new))

    def _seen_from(self, viewer_site: str, node: _Node | None) -> ViewObject | None:
        """How ``node`` is projected in the views of ``viewer_site``'s nodes: a peer (its site is in the viewer's
        chain), for trust (the viewer's site is a parent of its site), or not at all."""
        if node is None:
            return None
        if node.site in self._chain(viewer_site):
            return node.peer
        return node.trust if viewer_site in self._parents(node.site) else None

    def _parents(self, site_name: str) -> tuple[str, ...]:
        site = self._sites.get(site_name)
        return site.parents if site is not None else ()

    def _add_children(self, view: dict[str, ViewObject], site_name: str) -> None:
        """The Nodes of ``site_name``'s child sites, for trust, into ``view`` (peers already there stay peers)."""
        if self._children is None:
            children: dict[str, set[str]] = {}
            for child, site in self._sites.items():
                for parent in site.parents:
                    children.setdefault(parent, set()).add(child)
            self._children = {parent: frozenset(found) for parent, found in children.items()}
        chain = self._chain(site_name)
        for child in self._children.get(site_name, ()):
            if child not in chain:
                for member in self._members.get(child, ()):
                    trust = self._nodes[member].trust
                    view[trust.key] = trust

    def _members_below(self, sites: set[str]) -> list[str]:
        """Nodes of every site whose chain (itself and its ancestors) holds one of ``sites``."""
        return [
            member
            for site_name, members in self._members.items()
            if not sites.isdisjoint(self._chain(site_name))
            for member in members
        ]

    def _build_node(self, key: str, name: str, revision: int, document: StoredDocument, old: _Node | None) -> _Node:
        site = _dict(document.get("spec")).get("site")
        site = site if isinstance(site, str) else ""
        labels = {**_labels(document), NODE_LABEL: name, SITE_LABEL: site}
        own = _reuse(old.own if old else None, key, project_object(document), revision)
        peer = _reuse(old.peer if old else None, key, project_peer_node(document), revision)
        trust = _reuse(old.trust if old else None, key, project_trust_node(document), revision)
        return _Node(site, labels, own, peer, trust)

    def _set_node(self, name: str, node: _Node | None) -> None:
        old = self._nodes.pop(name, None)
        if old is not None:
            members = self._members[old.site]
            members.discard(name)
            if not members:
                del self._members[old.site]
        if node is not None:
            self._nodes[name] = node
            self._members.setdefault(node.site, set()).add(name)

    # --- Sites --------------------------------------------------------------

    def _apply_site(
        self, key: str, name: str, revision: int, document: StoredDocument | None
    ) -> dict[str, ViewChanges]:
        old = self._sites.get(name)
        new = None if document is None else self._build_site(key, name, revision, document, old)
        if old is not None and new is not None and old.obj is new.obj:
            return {}  # a status change
        # Whether a site is in a node's chain depends on the parents of the
        # sites *below* it, never on its own: the affected set is the same
        # before and after this change.
        affected = [n for n in self._registered if n in self._nodes and name in self._chain(self._nodes[n].site)]
        moved = old is None or new is None or old.parents != new.parents or old.labels != new.labels
        if not moved:
            assert new is not None
            self._set_site(name, new)
            return {node_name: {key: new.obj} for node_name in affected}
        # The nodes of its old and new parents gain or lose its nodes (for trust: see project_trust_node).
        parents = {*(old.parents if old is not None else ()), *(new.parents if new is not None else ())}
        below = {member for parent in parents for member in self._members.get(parent, ()) if member in self._registered}
        affected = list({*affected, *below})
        before = {node_name: self.view(node_name) for node_name in affected}
        self._set_site(name, new)
        changes = {node_name: _diff(before[node_name], self.view(node_name)) for node_name in affected}
        return {node_name: diff for node_name, diff in changes.items() if diff}

    def _build_site(self, key: str, name: str, revision: int, document: StoredDocument, old: _Site | None) -> _Site:
        parents = _dict(document.get("spec")).get("parents")
        parent_names = tuple(p for p in parents if isinstance(p, str)) if isinstance(parents, list) else ()
        labels = {**_labels(document), SITE_LABEL: name}
        obj = _reuse(old.obj if old else None, key, project_site(document), revision)
        return _Site(parent_names, labels, obj)

    def _set_site(self, name: str, site: _Site | None) -> None:
        if site is None:
            self._sites.pop(name, None)
        else:
            self._sites[name] = site
        self._chains.clear()
        self._children = None

    def _chain(self, site_name: str) -> frozenset[str]:
        """``site_name`` and every site reachable through parents (cycle-safe), cached."""
        chain = self._chains.get(site_name)
        if chain is None:
            seen = {site_name}
            stack = [site_name]
            while stack:
                site = self._sites.get(stack.pop())
                for parent in site.parents if site is not None else ():
                    if parent not in seen:
                        seen.add(parent)
                        stack.append(parent)
            chain = self._chains[site_name] = frozenset(seen)
        return chain


@functools.lru_cache(maxsize=8192)
def _secret_names(obj: ViewObject) -> frozenset[str]:
    # Keyed by (key, rev), a hash of the content: one parse per Workload projection.
    template = _dict(_dict(obj.object.get("spec")).get("template"))
    env = template.get("env")
    names = (
        _dict(_dict(_dict(var).get("valueFrom")).get("secretRef")).get("name")
        for var in (env if isinstance(env, list) else ())
    )
    return frozenset(name for name in names if isinstance(name, str))


def _secret_refs(obj: ViewObject | None) -> frozenset[str]:
    """The Secret names a projected Workload's env references (``valueFrom.secretRef.name``)."""
    return frozenset() if obj is None else _secret_names(obj)


def domain_secret_refs(spec: Mapping[str, Any]) -> frozenset[str]:
    """The Secret names a Domain spec's edge rules reference: every ``{secret, key}`` object under ``rules``.

    Read from the plain document by the shape the rule schema gives every Secret reference
    (:class:`edgefleet.api.rules.SecretKeyRef`, e.g. ``tokenAuth.keys``), so a new action that takes a
    Secret is projected without a change here.
    """
    names: set[str] = set()
    stack: list[Any] = [spec.get("rules")]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("secret"), str) and isinstance(value.get("key"), str):
                names.add(value["secret"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return frozenset(names)


def _split_key(key: str) -> tuple[str, str]:
    """``/registry/<plural>/<name>`` -> (plural, name); ("", "") when not of that form."""
    plural, _, name = key[len(KEY_PREFIX) :].partition("/")
    return (plural, name) if name else ("", "")
