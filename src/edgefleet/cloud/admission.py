"""Admission: the cross-object checks every API write passes, and validating webhooks.

How: the REST API (:mod:`edgefleet.cloud.server`) gives each create, update
(PUT or PATCH) and delete a :class:`Review`, which the registry calls with
the document it is about to store and the one it holds, right before its
compare-and-swap: the checks see exactly what would be written, after merge
patches and server-owned metadata. A refusal raises; warnings go back to the
client as ``Warning: 299 - "..."`` response headers, as Kubernetes sends
them, and the CLI prints them in yellow. Two stages, in this order:

1. Built-in checks, :func:`check`: a pure function of the request and a
   :class:`Lookup` (nothing else is read, so it is tested with a dict).

   - Node: ``spec.site`` must name an existing Site, on create and when the
     site changes (422, ``spec.site``).
   - Site delete: refused while Nodes still name the site (409, naming a
     few), unless the request says ``force`` (``?force=true``,
     ``edgefleet delete site X --force``).
   - Workload: each ``spec.pins[i].revision`` must name a WorkloadRevision
     of this Workload, of this incarnation of it (422,
     ``spec.pins[i].revision``). Only pins that are new or changed are
     checked, so a write that leaves a pin alone is never refused for it.
   - Workload: a non-empty ``spec.nodeSelector`` and each pin selector that
     matches no Node (labels plus the implicit ``edgefleet.io/node`` and
     ``edgefleet.io/site``) is a warning, not an error: nodes may join later.
   - Certificate: on create and on a spec change, the PEM is parsed and
     checked (:func:`edgefleet.api.certificates.inspect`: chain, key, key
     matches the leaf; 422 with ``spec.certificate`` or ``spec.key``). A
     delete is refused while Domains name it in ``spec.tls.certificate``
     (409, naming a few), unless ``force``.
   - Domain: a ``spec.tls.certificate`` that names no Certificate, or one
     whose DNS names (its status, once the certificate controller wrote it)
     do not cover every hostname, is a warning: apply order is free, and the
     caches serve the Domain without TLS until the Certificate exists.
   - Domain: a Secret (or a key of it) that the edge rules name
     (``{secret, key}``, e.g. ``tokenAuth.keys``) and that does not exist
     is a warning with the rule's field path, for the same reason: the
     caches deny what the rule checks (403) until it does, and each node
     says so in its ``RulesReady`` condition (:mod:`edgefleet.cloud.rulestatus`).

2. Validating webhooks (AdmissionWebhook objects whose rules match the kind
   and operation), asked concurrently over HTTP: see
   :mod:`edgefleet.api.admissionwebhooks` for the contract. A denial is 403
   with the webhook's name and message; a webhook that cannot answer is 503
   under ``failurePolicy: Fail`` and a warning under ``Ignore``.

Reads go through a :class:`Lookup`. With a hub, :class:`IndexLookup` reads
the hub's in-memory index of every object: a Node write costs one dict
lookup and a Workload write one pass over the nodes in memory (none when its
selectors name nodes), never a store list. The index lags the store by a
watch event, so a miss is confirmed with one store read (a Site created a
moment ago), and a Site delete that finds no Nodes in the index confirms it
with the store (site deletes are rare; orphaned nodes are not cheap). A
hit is trusted: a Node written within a watch event of its Site's deletion
may be admitted, as with Kubernetes' informer-backed admission. A selector
warning may be one event stale: it is only a warning. Without a
hub, :class:`RegistryLookup` reads the store. Webhook configurations are
read from the store on every write: a range read of one small (usually
empty) prefix is cheaper than a scan of the index, which holds every object,
and never stale, so a new webhook applies from the very next write.

Cost, measured with 10,000 nodes in the index: the checks of a Node write
take ~5 µs; those of a Workload write whose selector matches nothing ~40 ms
(one pass building each node's label set), much less when a node matches
early, a few lookups when its selectors name nodes; reading the webhook
configurations is one small store read per write.

Not admitted, and why: writes of ``status`` (components report what they
observe; a webhook outage must not stop nodes from reporting), and the
cloud's own writes (controllers, the hub, event recording go through the
registry directly: they are trusted). Never sent to webhooks: Events and
Hubs (the cloud's bookkeeping must keep working while a webhook is down)
and AdmissionWebhooks themselves (a broken webhook with ``failurePolicy:
Fail`` can always be fixed or deleted). A join (``/edge/v1/join``) that
creates a Node is admitted like an API create.

Security: a webhook's answer is remote input. One deadline
(``timeoutSeconds``) covers the whole exchange, so a webhook that answers a
byte at a time cannot stretch it; the body is read raw (no decompression)
up to :data:`MAX_RESPONSE_BYTES`; no redirects are followed and no proxy
from the environment is used; anything but a 2xx JSON object with a boolean
``allowed`` is a failure (then ``failurePolicy`` decides). Messages and
warnings are stripped of control characters and truncated before they reach
a header, a log line or a terminal.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

import edgefleet
from edgefleet.api import certificates, meta
from edgefleet.api.admissionwebhooks import EXEMPT_KINDS, AdmissionWebhook
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.errors import FieldError, SelectorError, ValidationFailed
from edgefleet.api.meta import KindInfo
from edgefleet.api.selectors import Operator, Selector, parse_selector
from edgefleet.cloud import webhooks
from edgefleet.cloud.registry import REGISTRY_PREFIX, ObjectNotFound, Registry, RegistryError
from edgefleet.cloud.webhooks import clean_text
from edgefleet.sync.views import NODE_LABEL, SITE_LABEL, FleetIndex

log = logging.getLogger("edgefleet.cloud.admission")

NODES, SITES, REVISIONS, WEBHOOKS = "nodes", "sites", "workloadrevisions", "admissionwebhooks"
DOMAINS, CERTIFICATES = "domains", "certificates"
WORKLOADS, SECRETS = "workloads", "secrets"
MAX_SECRET_WARNINGS = 5
"""Rule Secret references looked up (and warned about) per Domain write; the caches report the rest."""
MAX_NAMED_IN_REFUSAL = 5
"""Nodes named in the message refusing a Site delete."""
MAX_DIRECT_NODES = 64
"""Nodes named by selectors (edgefleet.io/node) looked up one by one per write; past that, one scan serves all."""
MAX_RESPONSE_BYTES = 64 * 1024
"""Security limit: bytes of a webhook's answer."""
MAX_MESSAGE_CHARS = 1024
"""Security limit: characters of a webhook's message kept."""
MAX_WARNING_CHARS = 512
"""Security limit: characters of one warning."""
MAX_WEBHOOK_WARNINGS = 8
"""Security limit: warnings kept from one webhook's answer."""
MAX_RESPONSE_WARNINGS = 20
"""Warning headers on one response; more are summed up in the last one."""


# -- errors ---------------------------------------------------------------------------


class AdmissionError(RegistryError):
    """Base of the refusals of admission (field errors are the api package's ValidationFailed, 422)."""


class ResourceInUse(AdmissionError):
    """A delete that would leave other objects naming what no longer exists."""

    status = 409
    reason = "Conflict"


class WebhookDenied(AdmissionError):
    """An admission webhook answered ``allowed: false``."""

    status = 403
    reason = "Forbidden"


class WebhookFailed(AdmissionError):
    """An admission webhook could not answer (also raised, with a short reason, by a single call)."""

    status = 503
    reason = "ServiceUnavailable"


# -- the request and the verdict ---------------------------------------------------------


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """One write: ``object`` is what would be stored (None on delete), ``old_object`` what is (None on create)."""

    operation: Operation
    kind: str
    name: str
    object: StoredDocument | None = None
    old_object: StoredDocument | None = None
    force: bool = False

    @classmethod
    def of(
        cls, kind: str, new: StoredDocument | None, old: StoredDocument | None, *, force: bool = False
    ) -> AdmissionRequest:
        operation = Operation.CREATE if old is None else Operation.DELETE if new is None else Operation.UPDATE
        name = str(_mapping(_mapping(new if new is not None else old).get("metadata")).get("name", ""))
        return cls(operation, kind, name, new, old, force)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the built-in checks found: field errors (422), a conflict (409), warnings."""

    errors: tuple[FieldError, ...] = ()
    conflict: str = ""
    warnings: tuple[str, ...] = ()

    def refusal(self) -> Exception | None:
        if self.errors:
            return ValidationFailed(list(self.errors))
        if self.conflict:
            return ResourceInUse(self.conflict)
        return None


# -- looking things up ---------------------------------------------------------------------


class Lookup(Protocol):
    """How the checks read other objects (documents as stored)."""

    may_lag: bool
    """Whether ``documents`` may miss the latest writes (then ``fresh=True`` reads the store)."""

    async def get(self, plural: str, name: str) -> StoredDocument | None:
        """One object, or None; never misses an object that was stored before the call."""
        ...

    async def documents(self, plural: str, *, fresh: bool = False) -> Sequence[StoredDocument]:
        """Every object of a kind; with ``fresh``, as the store holds them now."""
        ...


class RegistryLookup:
    """Reads from the store (a cloud without a hub)."""

    may_lag = False

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def get(self, plural: str, name: str) -> StoredDocument | None:
        try:
            return await self._registry.get(meta.lookup(plural), name)
        except ObjectNotFound:
            return None

    async def documents(self, plural: str, *, fresh: bool = False) -> Sequence[StoredDocument]:
        return (await self._registry.list(meta.lookup(plural))).items


class IndexLookup:
    """Reads from the hub's in-memory index; a miss is confirmed with the store (the index lags a watch event)."""

    may_lag = True

    def __init__(self, index: Callable[[], FleetIndex], registry: Registry) -> None:
        self._index = index  # a callable: the hub replaces its index when it reloads
        self._store = RegistryLookup(registry)

    def _loaded(self) -> FleetIndex | None:
        index = self._index()
        return index if index.revision > 0 else None

    async def get(self, plural: str, name: str) -> StoredDocument | None:
        index = self._loaded()
        entry = None if index is None else index.get(f"{REGISTRY_PREFIX}{plural}/{name}")
        return entry[1] if entry is not None else await self._store.get(plural, name)

    async def documents(self, plural: str, *, fresh: bool = False) -> Sequence[StoredDocument]:
        index = self._loaded()
        if fresh or index is None:
            return await self._store.documents(plural)
        return [document for _, document in index.documents(plural)]


# -- the built-in checks (pure) ----------------------------------------------------------------


async def check(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    """The built-in checks of one write (see the module docstring)."""
    rule = _CHECKS.get(request.kind)
    return Verdict() if rule is None else await rule(request, lookup)


async def _check_node(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    site = _spec(request.object).get("site")
    if request.operation is Operation.DELETE or not isinstance(site, str):
        return Verdict()
    if site == _spec(request.old_object).get("site") or await lookup.get(SITES, site) is not None:
        return Verdict()
    message = (
        f'site "{site}" does not exist: create the Site first (edgefleet apply applies Sites before '
        "Nodes), or fix the name; `edgefleet get sites` lists them"
    )
    return Verdict(errors=(FieldError("spec.site", message),))


async def _check_site(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    if request.operation is not Operation.DELETE or request.force:
        return Verdict()
    nodes = nodes_in_site(await lookup.documents(NODES), request.name)
    if not nodes and lookup.may_lag:
        nodes = nodes_in_site(await lookup.documents(NODES, fresh=True), request.name)
    return Verdict(conflict=site_in_use_message(request.name, nodes)) if nodes else Verdict()


def nodes_in_site(nodes: Iterable[StoredDocument], site: str) -> list[str]:
    """Names of the Nodes whose ``spec.site`` is ``site``, sorted."""
    return sorted(_name(node) for node in nodes if _spec(node).get("site") == site)


def site_in_use_message(site: str, nodes: Sequence[str]) -> str:
    shown = ", ".join(nodes[:MAX_NAMED_IN_REFUSAL])
    more = f" and {len(nodes) - MAX_NAMED_IN_REFUSAL} more" if len(nodes) > MAX_NAMED_IN_REFUSAL else ""
    count, them = (f"{len(nodes)} nodes", "them") if len(nodes) != 1 else ("1 node", "it")
    return (
        f'site "{site}" still has {count} ({shown}{more}): move {them} to another site (spec.site) or delete '
        f"{them} first, or delete the site anyway with `edgefleet delete site {site} --force` (API: ?force=true), "
        f"which leaves {them} naming a site that does not exist"
    )


async def _check_workload(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    if request.operation is Operation.DELETE:
        return Verdict()
    errors = await _pin_errors(request, lookup)
    warnings = await selector_warnings(_spec(request.object), lookup)
    return Verdict(errors=tuple(errors), warnings=tuple(warnings))


async def _pin_errors(request: AdmissionRequest, lookup: Lookup) -> list[FieldError]:
    old_numbers = {pin.get("revision") for pin in _pins(_spec(request.old_object))}
    uid = str(_mapping(_mapping(request.object).get("metadata")).get("uid") or "")
    known: dict[int, bool] = {}
    errors: list[FieldError] = []
    for index, pin in enumerate(_pins(_spec(request.object))):
        number = pin.get("revision")
        if not isinstance(number, int) or number in old_numbers:
            continue  # unchanged pins are not checked again (a ratchet): see the module docstring
        if number not in known:
            revision = await lookup.get(REVISIONS, f"{request.name}-{number}")
            known[number] = revision is not None and is_revision_of(revision, request.name, uid, number)
        if not known[number]:
            errors.append(FieldError(f"spec.pins[{index}].revision", _no_revision(request, number)))
    return errors


def is_revision_of(revision: StoredDocument, workload: str, uid: str, number: int) -> bool:
    """Whether a WorkloadRevision document is revision ``number`` of this incarnation of ``workload``."""
    spec = _spec(revision)
    owner_uid = spec.get("workloadUid") or ""
    same_incarnation = not uid or not owner_uid or owner_uid == uid
    return spec.get("workload") == workload and spec.get("number") == number and same_incarnation


def _no_revision(request: AdmissionRequest, number: int) -> str:
    name = request.name
    message = f'workload "{name}" has no revision {number}; `edgefleet rollout history {name}` lists them'
    if request.operation is Operation.CREATE:
        message += " (a new Workload has none yet: create it without pins, then pin once its revisions exist)"
    return message


async def selector_warnings(spec: Mapping[str, Any], lookup: Lookup) -> list[str]:
    """A warning per non-empty selector of a Workload spec that matches no Node."""
    paths: dict[str, list[str]] = {}
    node_selector = spec.get("nodeSelector")
    if isinstance(node_selector, str) and node_selector.strip():
        paths.setdefault(node_selector, []).append("spec.nodeSelector")
    for index, pin in enumerate(_pins(spec)):
        if isinstance(pin.get("selector"), str):
            paths.setdefault(pin["selector"], []).append(f"spec.pins[{index}].selector")
    selectors = {text: selector for text in paths if (selector := _parse(text)) is not None}
    unmatched = await unmatched_selectors(selectors, lookup)
    return [_no_match(path, text) for text, found in paths.items() if text in unmatched for path in found]


async def unmatched_selectors(selectors: Mapping[str, Selector], lookup: Lookup) -> set[str]:
    """The texts of ``selectors`` that match no Node. Selectors naming a few nodes look only those up."""
    unmatched: set[str] = set()
    general: dict[str, Selector] = {}
    budget = MAX_DIRECT_NODES  # a miss may cost a store read: bound them
    for text, selector in selectors.items():
        names = named_nodes(selector)
        if names is None or len(names) > budget:
            general[text] = selector
            continue
        budget -= len(names)
        if not await _named_node_matches(selector, names, lookup):
            unmatched.add(text)
    if general:
        unmatched |= first_matches(general, await lookup.documents(NODES))
    return unmatched


def named_nodes(selector: Selector) -> tuple[str, ...] | None:
    """The node names a selector requires (``edgefleet.io/node=x`` or ``in (x,y)``), or None."""
    for requirement in selector.requirements:
        if requirement.key == NODE_LABEL and requirement.operator in (Operator.EQUALS, Operator.IN):
            return requirement.values
    return None


async def _named_node_matches(selector: Selector, names: Iterable[str], lookup: Lookup) -> bool:
    for name in names:
        node = await lookup.get(NODES, name)
        if node is not None and selector.matches(node_labels(node)):
            return True
    return False


def first_matches(selectors: Mapping[str, Selector], nodes: Iterable[StoredDocument]) -> set[str]:
    """One pass over ``nodes``: the texts of the selectors no node matches (stops once all matched)."""
    remaining = dict(selectors)
    for node in nodes:
        labels = node_labels(node)
        for text in [text for text, selector in remaining.items() if selector.matches(labels)]:
            del remaining[text]
        if not remaining:
            break
    return set(remaining)


def node_labels(node: Mapping[str, Any]) -> dict[str, str]:
    """A Node's labels plus the implicit ``edgefleet.io/node`` and ``edgefleet.io/site`` (as the views use)."""
    labels = _mapping(_mapping(node.get("metadata")).get("labels"))
    site = _spec(node).get("site")
    return {**labels, NODE_LABEL: _name(node), SITE_LABEL: site if isinstance(site, str) else ""}


def _no_match(path: str, text: str) -> str:
    effect = "the workload runs on no node" if path == "spec.nodeSelector" else "the pin decides no node"
    return (
        f"{path}: no Node matches {text!r} (yet): {effect} until one does; selectors match Node labels plus "
        f"{NODE_LABEL}=<node> and {SITE_LABEL}=<site>"
    )


async def _check_certificate(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    if request.operation is Operation.DELETE:
        if request.force:
            return Verdict()
        users = domains_using(await lookup.documents(DOMAINS), request.name)
        if not users and lookup.may_lag:
            users = domains_using(await lookup.documents(DOMAINS, fresh=True), request.name)
        return Verdict(conflict=certificate_in_use_message(request.name, users)) if users else Verdict()
    spec = _spec(request.object)
    if spec == _spec(request.old_object):
        return Verdict()  # a metadata edit: the PEM was checked when it was written
    try:
        certificates.inspect(str(spec.get("certificate", "")), str(spec.get("key", "")))
    except ValidationFailed as exc:
        return Verdict(errors=tuple(exc.errors))
    return Verdict()


def domains_using(domains: Iterable[StoredDocument], certificate: str) -> list[str]:
    """Names of the Domains whose ``spec.tls.certificate`` is ``certificate``, sorted."""
    return sorted(_name(d) for d in domains if _mapping(_spec(d).get("tls")).get("certificate") == certificate)


def certificate_in_use_message(certificate: str, domains: Sequence[str]) -> str:
    shown = ", ".join(domains[:MAX_NAMED_IN_REFUSAL])
    more = f" and {len(domains) - MAX_NAMED_IN_REFUSAL} more" if len(domains) > MAX_NAMED_IN_REFUSAL else ""
    return (
        f'certificate "{certificate}" is used by {len(domains)} domain(s) ({shown}{more}): point their '
        f"spec.tls.certificate elsewhere or remove spec.tls first, or delete it anyway with "
        f"`edgefleet delete certificate {certificate} --force` (API: ?force=true), after which the caches "
        f"serve those domains without TLS"
    )


async def _check_domain(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    verdict = await _check_domain_tls(request, lookup)
    missing = await rule_secret_warnings(request, lookup)
    return Verdict(verdict.errors, verdict.conflict, (*verdict.warnings, *missing)) if missing else verdict


async def rule_secret_warnings(request: AdmissionRequest, lookup: Lookup) -> list[str]:
    """A warning per Secret (or key) the edge rules name that does not exist: apply order is free, and the
    caches deny what those rules check (403) until it does (their nodes report it: Node condition RulesReady)."""
    if request.operation is Operation.DELETE:
        return []
    warnings: list[str] = []
    refs = _secret_key_refs(_spec(request.object).get("rules"))
    for path, secret, key in refs[:MAX_SECRET_WARNINGS]:
        document = await lookup.get(SECRETS, secret)
        if document is None:
            what = f'Secret "{secret}" does not exist (yet)'
        elif key not in _mapping(_spec(document).get("data")):
            what = f'Secret "{secret}" has no key "{key}"'
        else:
            continue
        warnings.append(
            f"{path}: {what}: the caches deny (403) the requests this rule checks until it does; "
            "create it with `edgefleet apply`"
        )
    return warnings


def _secret_key_refs(rules: object) -> list[tuple[str, str, str]]:
    """(field path, Secret, key) of every ``{secret, key}`` object under a Domain's ``spec.rules``, in order."""
    found: list[tuple[str, str, str]] = []
    stack: list[tuple[str, object]] = [("spec.rules", rules)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("secret"), str) and isinstance(value.get("key"), str):
                found.append((path, value["secret"], value["key"]))
            stack.extend((f"{path}.{name}", item) for name, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value))))
    return found


async def _check_domain_tls(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    name = _mapping(_spec(request.object).get("tls")).get("certificate")
    if request.operation is Operation.DELETE or not isinstance(name, str):
        return Verdict()
    certificate = await lookup.get(CERTIFICATES, name)
    if certificate is None:
        return Verdict(
            warnings=(
                f'spec.tls.certificate: certificate "{name}" does not exist (yet): the caches serve this domain '
                "without TLS until it does; `edgefleet certificate create` makes one",
            )
        )
    names = _mapping(certificate.get("status")).get("dnsNames")
    hostnames = _spec(request.object).get("hostnames")
    if not isinstance(names, list) or not isinstance(hostnames, list):
        return Verdict()  # not inspected by the controller yet: it records an Event if they do not match
    missing = certificates.uncovered([str(n) for n in names], [str(h) for h in hostnames])
    if not missing:
        return Verdict()
    return Verdict(warnings=(f'spec.tls.certificate: certificate "{name}" does not cover {", ".join(missing[:5])}',))


async def _check_artifact(request: AdmissionRequest, lookup: Lookup) -> Verdict:
    """An Artifact's spec never changes (a Workload revision names exactly these bytes); in use: not deleted."""
    if request.operation is Operation.UPDATE and _spec(request.object) != _spec(request.old_object):
        message = "is immutable: push a new version (a new Artifact) and reference it from the Workload instead"
        return Verdict(errors=(FieldError("spec", message),))
    if request.operation is not Operation.DELETE or request.force:
        return Verdict()
    spec = _spec(request.old_object)
    wanted = (spec.get("name"), spec.get("version"))
    users = sorted(
        _name(w)
        for w in await lookup.documents(WORKLOADS)
        for ref in _mapping(_spec(w).get("template")).get("artifacts") or []
        if isinstance(ref, dict) and (ref.get("name"), ref.get("version")) == wanted
    )
    if not users:
        return Verdict()
    return Verdict(conflict=f"artifact {request.name} is used by Workload(s) {', '.join(users)}; ?force deletes it")


_CHECKS = {
    "Artifact": _check_artifact,
    "Node": _check_node,
    "Site": _check_site,
    "Workload": _check_workload,
    "Certificate": _check_certificate,
    "Domain": _check_domain,
}


def _parse(text: str) -> Selector | None:
    try:
        return parse_selector(text)
    except SelectorError:
        return None  # validated on the way in; a selector that does not parse selects nothing


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _spec(document: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return _mapping(_mapping(document).get("spec"))


def _name(document: Mapping[str, Any]) -> str:
    return str(_mapping(document.get("metadata")).get("name", ""))


def _pins(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pins = spec.get("pins")
    return [pin for pin in pins if isinstance(pin, dict)] if isinstance(pins, list) else []


# -- webhooks (pure parts) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    """What a call needs from an AdmissionWebhook; ``problem`` is set when its stored spec does not validate."""

    name: str
    url: str
    timeout: float
    fail_closed: bool
    problem: str = ""
    ca_bundle: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One webhook's part in one write: its answer, or why there is none."""

    webhook: Webhook
    answer: Answer | None = None
    failure: str = ""


def webhooks_for(documents: Iterable[StoredDocument], kind: str, operation: Operation) -> list[Webhook]:
    """The webhooks to ask about a write, by name.

    A stored configuration that no longer validates (a newer schema) is
    kept, as a webhook that fails: with its failure policy when that can be
    read, else Fail. A policy control must not vanish silently.
    """
    if kind in EXEMPT_KINDS:
        return []
    found: list[Webhook] = []
    for document in documents:
        try:
            config = AdmissionWebhook.model_validate(document)
        except ValidationError as exc:
            policy = _spec(document).get("failurePolicy")
            problem = f"its stored configuration does not validate ({exc.error_count()} errors); apply it again"
            found.append(Webhook(_name(document), "", 0.0, policy != "Ignore", problem))
            continue
        if config.spec.matches(kind, operation.value):
            spec = config.spec
            found.append(
                Webhook(
                    config.name,
                    spec.url,
                    float(spec.timeout_seconds),
                    spec.failure_policy == "Fail",
                    ca_bundle=spec.ca_bundle,
                )
            )
    return sorted(found, key=lambda webhook: webhook.name)


def review_body(request: AdmissionRequest, uid: str) -> JSONObject:
    """What a webhook receives (``uid`` identifies this request in both sides' logs)."""
    return {
        "uid": uid,
        "operation": request.operation.value,
        "kind": request.kind,
        "name": request.name,
        "object": request.object,
        "oldObject": request.old_object,
    }


def parse_answer(status: int, content_encoding: str, body: bytes) -> Answer:
    """A webhook's HTTP answer as an Answer; WebhookFailed (with a short reason) when it is not one."""
    if not 200 <= status < 300:
        raise WebhookFailed(f"answered HTTP {status}")
    if content_encoding.strip().lower() not in ("", "identity"):
        raise WebhookFailed(f"answered with Content-Encoding {clean_text(content_encoding, 40)!r}; send plain JSON")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookFailed("answered something that is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("allowed"), bool):
        raise WebhookFailed('answered without a boolean "allowed"')
    message, warnings = data.get("message"), data.get("warnings")
    if message is not None and not isinstance(message, str):
        raise WebhookFailed('answered a "message" that is not a string')
    if warnings is not None and not (isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)):
        raise WebhookFailed('answered "warnings" that are not a list of strings')
    kept = tuple(clean_text(w, MAX_WARNING_CHARS) for w in (warnings or [])[:MAX_WEBHOOK_WARNINGS])
    return Answer(data["allowed"], clean_text(message or "", MAX_MESSAGE_CHARS), tuple(w for w in kept if w))


def decide(outcomes: Sequence[Outcome]) -> list[str]:
    """Warnings for the client, or WebhookDenied (the first denial by name) / WebhookFailed (a Fail webhook)."""
    for outcome in outcomes:
        if outcome.answer is not None and not outcome.answer.allowed:
            raise WebhookDenied(denied_message(outcome.webhook.name, outcome.answer.message))
    for outcome in outcomes:
        if outcome.answer is None and outcome.webhook.fail_closed:
            raise WebhookFailed(failed_message(outcome.webhook.name, outcome.failure))
    warnings: list[str] = []
    for outcome in outcomes:
        prefix = f'admission webhook "{outcome.webhook.name}"'
        if outcome.answer is not None:
            warnings.extend(f"{prefix}: {warning}" for warning in outcome.answer.warnings)
        else:
            warnings.append(
                f"{prefix} failed ({outcome.failure}); the write was admitted without it (failurePolicy Ignore)"
            )
    return warnings


def denied_message(name: str, message: str) -> str:
    reason = message or "(it gave no reason)"
    return (
        f'admission webhook "{name}" denied the request: {reason} (change the object to satisfy it; '
        f"`edgefleet describe admissionwebhook {name}` shows the webhook)"
    )


def failed_message(name: str, failure: str) -> str:
    return (
        f'admission webhook "{name}" failed: {failure}; its failurePolicy Fail refuses the write. Retry '
        f"later, fix the webhook, or set failurePolicy: Ignore (`edgefleet describe admissionwebhook {name}`)"
    )


def warning_headers(warnings: Iterable[str]) -> list[str]:
    """``Warning`` header values (``299 - "text"``, RFC 7234), deduplicated and bounded."""
    texts = list(dict.fromkeys(text for text in (clean_text(w, MAX_WARNING_CHARS) for w in warnings) if text))
    if len(texts) > MAX_RESPONSE_WARNINGS:
        hidden = len(texts) - MAX_RESPONSE_WARNINGS + 1
        texts = [*texts[: MAX_RESPONSE_WARNINGS - 1], f"... and {hidden} more warnings"]
    return ['299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"' for text in texts]


# -- webhooks (I/O) --------------------------------------------------------------------------------


class WebhookClient:
    """POSTs reviews (:func:`edgefleet.cloud.webhooks.post`: one deadline, a bounded raw body, no redirects)."""

    def __init__(self, *, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._max = max_response_bytes
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": f"edgefleet-cloud/{edgefleet.__version__}",
        }

    async def call(self, webhook: Webhook, body: bytes) -> Answer:
        """The webhook's answer; WebhookFailed with a short reason when there is none."""
        try:
            reply = await webhooks.post(
                webhook.url,
                body,
                deadline=webhook.timeout,
                max_bytes=self._max,
                headers=self._headers,
                ca_bundle=webhook.ca_bundle,
            )
        except webhooks.WebhookCallFailed as exc:
            raise WebhookFailed(str(exc)) from None
        return parse_answer(reply.status, reply.content_encoding, reply.body)


# -- the shell: what the API server holds ----------------------------------------------------------


class Admission:
    """Runs the built-in checks, then the webhooks, for the API server's writes."""

    def __init__(self, lookup: Lookup, client: WebhookClient | None = None) -> None:
        self.lookup = lookup
        self.client = client or WebhookClient()

    def review(self, info: KindInfo, *, force: bool = False) -> Review:
        """The hook for one write of ``info``'s kind (``force``: the caller asked to override reference checks)."""
        return Review(self, info.kind, force=force)

    async def admit(self, request: AdmissionRequest) -> list[str]:
        """The warnings for the client; raises when the write is refused."""
        refusal = (verdict := await check(request, self.lookup)).refusal()
        if refusal is not None:
            raise refusal
        return [*verdict.warnings, *await self._consult(request)]

    async def _consult(self, request: AdmissionRequest) -> list[str]:
        if request.kind in EXEMPT_KINDS:
            return []
        webhooks = webhooks_for(await self.lookup.documents(WEBHOOKS, fresh=True), request.kind, request.operation)
        if not webhooks:
            return []
        uid = str(uuid.uuid4())
        body = json.dumps(review_body(request, uid), separators=(",", ":")).encode()
        outcomes = await asyncio.gather(*(self._ask(webhook, body) for webhook in webhooks))
        for outcome in outcomes:
            _log(outcome, request, uid)
        return decide(outcomes)

    async def _ask(self, webhook: Webhook, body: bytes) -> Outcome:
        if webhook.problem:
            return Outcome(webhook, failure=webhook.problem)
        try:
            return Outcome(webhook, await self.client.call(webhook, body))
        except WebhookFailed as exc:
            return Outcome(webhook, failure=str(exc))
        except Exception:  # a hostile answer must never become a 500: it is a failed call, under its policy
            log.exception("calling admission webhook %s failed unexpectedly", webhook.name)
            return Outcome(webhook, failure="an unexpected error; see the cloud log")


def _log(outcome: Outcome, request: AdmissionRequest, uid: str) -> None:
    extra = {
        "webhook": outcome.webhook.name,
        "uid": uid,
        "operation": request.operation.value,
        "kind": request.kind,
        "object_name": request.name,
    }
    if outcome.answer is None:
        log.warning("admission webhook failed: %s", outcome.failure, extra=extra)
    elif not outcome.answer.allowed:
        log.info("admission webhook denied a write: %s", outcome.answer.message, extra=extra)


class Review:
    """One API write's admission: the ``admit`` hook the registry calls, and the warnings it gathered.

    The registry may call it more than once (a merge patch retried after a
    concurrent write): the warnings are those of the last call.
    """

    def __init__(self, admission: Admission, kind: str, *, force: bool = False) -> None:
        self._admission = admission
        self._kind = kind
        self._force = force
        self.warnings: list[str] = []

    async def __call__(self, new: StoredDocument | None, old: StoredDocument | None) -> None:
        request = AdmissionRequest.of(self._kind, new, old, force=self._force)
        self.warnings = await self._admission.admit(request)
