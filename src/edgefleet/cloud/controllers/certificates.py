"""Certificate controller: Certificate.status from the PEM, and Warning Events about expiry and mismatches.

The rule (:func:`decide`, pure: documents, the parsed facts and ``now`` in,
a status patch and Events out), for each Certificate:

- ``status``: the leaf's DNS names, validity, serial, issuer and
  fingerprint (:func:`edgefleet.api.certificates.inspect`), the Domains
  whose ``spec.tls.certificate`` names it, and a ``message`` naming the
  hostnames of those Domains it does not cover. Written only when it
  changes, through the status path with the resourceVersion as a
  precondition (a conflict is judged again next round);
- expiry: a Certificate *in use* (some Domain names it) gets one Warning
  Event ``CertificateExpiringSoon`` once ``now`` is within
  :data:`~edgefleet.api.certificates.EXPIRY_WARNING_DAYS` days of
  ``notAfter``, and one ``CertificateExpired`` once past it. Each is
  recorded once per certificate *content*: ``status.expiryEvents`` says
  which were recorded, and a new PEM (another fingerprint) starts again.
  So neither a new round nor a cloud restart nor a new leader repeats them;
- mismatches: a Domain whose certificate does not cover one of its
  hostnames gets a Warning ``CertificateMismatch`` about the Certificate,
  and a Domain naming a Certificate that does not exist a Warning
  ``CertificateNotFound`` about the Domain (apply order is free, so
  admission only warns). Those Events have names derived from what they say
  (``<object>.<reason>-<hash>``), so a restart or another leader creating
  the same one finds it exists; this controller also remembers what it
  recorded, so it does not recreate one after the event collector deleted
  it (an hour later), unless the leader changes.

The gauge ``edgefleet_certificate_not_after_seconds{certificate}`` (Unix
time of ``notAfter``) is exported on the cloud's /metrics by the leader, for
alerts that do not depend on Events.

How: every ``period`` seconds the shell reads Certificates and Domains
from the hub's in-memory index (no store reads; the registry without a
hub), parses each distinct PEM once (the facts are kept by content hash,
for the Certificates that still exist), and writes what :func:`decide`
returns. It runs on one cloud replica at a time, under the leader election
``/system/leader/certificates``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from edgefleet.api import certificates
from edgefleet.api.certificates import EXPIRY_WARNING_DAYS, CertificateFacts
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.domains import INFO as DOMAINS_INFO
from edgefleet.api.errors import ValidationFailed
from edgefleet.api.events import INFO as EVENTS
from edgefleet.cloud import events
from edgefleet.cloud.controllers.loop import run_periodically
from edgefleet.cloud.registry import ObjectExists, ObjectNotFound, Registry, VersionConflict

log = logging.getLogger("edgefleet.cloud.controllers.certificates")

SOURCE = "certificate-controller"
CERTIFICATES, DOMAINS = "certificates", "domains"
Documents = Callable[[str], Sequence[StoredDocument]]
Facts = CertificateFacts | ValidationFailed
MAX_MESSAGE_CHARS = 2048
"""Bound of Certificate.status.message."""
"""What a PEM says, or why it is unusable."""


@dataclass(frozen=True, slots=True)
class Note:
    """An Event to record once: about ``kind``/``name``, under a name derived from its content."""

    kind: str
    name: str
    reason: str
    message: str

    @property
    def event_name(self) -> str:
        digest = hashlib.sha256(f"{self.kind}\0{self.name}\0{self.message}".encode()).hexdigest()[:12]
        return events.event_name(self.name, f"{self.reason.lower()}-{digest}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about one Certificate: a status merge patch (None: it says so already) and Events."""

    patch: JSONObject | None
    notes: tuple[Note, ...] = ()


# -- the rule (pure) ------------------------------------------------------------------------------


def _spec(document: Mapping[str, Any] | None) -> Mapping[str, Any]:
    spec = document.get("spec") if isinstance(document, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}


def _name(document: Mapping[str, Any]) -> str:
    return str((document.get("metadata") or {}).get("name", ""))


def certificate_of(domain: Mapping[str, Any]) -> str | None:
    """The Certificate a Domain names in ``spec.tls.certificate``, or None."""
    tls = _spec(domain).get("tls")
    name = tls.get("certificate") if isinstance(tls, Mapping) else None
    return name if isinstance(name, str) else None


def users_by_certificate(domains: Iterable[StoredDocument]) -> dict[str, list[StoredDocument]]:
    """Certificate name -> the Domains naming it, sorted by name."""
    users: dict[str, list[StoredDocument]] = {}
    for domain in sorted(domains, key=_name):
        name = certificate_of(domain)
        if name is not None:
            users.setdefault(name, []).append(domain)
    return users


def content_key(certificate: Mapping[str, Any]) -> str:
    """A hash of a Certificate's PEM (chain and key): equal PEM, equal facts."""
    spec = _spec(certificate)
    text = f"{spec.get('certificate', '')}\0{spec.get('key', '')}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def inspect_document(certificate: Mapping[str, Any]) -> Facts:
    """The facts of a stored Certificate's PEM, or the ValidationFailed saying why it is unusable."""
    spec = _spec(certificate)
    try:
        return certificates.inspect(str(spec.get("certificate", "")), str(spec.get("key", "")))
    except ValidationFailed as exc:
        return exc


def _mismatches(name: str, facts: CertificateFacts, users: Sequence[StoredDocument]) -> list[tuple[str, list[str]]]:
    found = []
    for domain in users:
        hostnames = _spec(domain).get("hostnames")
        missing = certificates.uncovered(facts.dns_names, [str(h) for h in hostnames or []])
        if missing:
            found.append((_name(domain), missing))
    return found


def _expiry(facts: CertificateFacts, recorded: list[str], name: str, now: datetime) -> Note | None:
    if now >= facts.not_after and "Expired" not in recorded:
        return Note("Certificate", name, "CertificateExpired", f"certificate {name} expired at {_when(facts)}")
    soon = facts.not_after - timedelta(days=EXPIRY_WARNING_DAYS)
    if soon <= now < facts.not_after and not {"ExpiringSoon", "Expired"} & set(recorded):
        days = int((facts.not_after - now).total_seconds() // 86400)
        return Note(
            "Certificate",
            name,
            "CertificateExpiringSoon",
            f"certificate {name} expires in {days} day(s), at {_when(facts)}: apply a renewed one under the "
            "same name (the caches reload it without dropping connections)",
        )
    return None


def _shorten(message: str) -> str:
    """At most :data:`MAX_MESSAGE_CHARS` (the status field's bound), with ``...`` where it was cut."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


def _when(facts: CertificateFacts) -> str:
    return str(facts.status_fields()["notAfter"])


def decide(certificate: StoredDocument, facts: Facts, users: Sequence[StoredDocument], now: datetime) -> Decision:
    """The status patch and the Events for one Certificate (see the module docstring)."""
    name = _name(certificate)
    current = certificate.get("status") or {}
    domains = [_name(domain) for domain in users]
    if isinstance(facts, ValidationFailed):
        wanted: JSONObject = {"domains": domains, "message": _shorten(f"unusable: {facts}")}
        return Decision(_patch(certificate, current, wanted))
    fields = facts.status_fields()
    same_content = current.get("fingerprint") == fields["fingerprint"]
    recorded = [str(e) for e in current.get("expiryEvents") or []] if same_content else []
    notes: list[Note] = []
    mismatches = _mismatches(name, facts, users)
    for domain, missing in mismatches:
        text = f"certificate {name} does not cover {', '.join(missing[:5])} of domain {domain}"
        notes.append(Note("Certificate", name, "CertificateMismatch", text))
    expiry = _expiry(facts, recorded, name, now) if users else None
    if expiry is not None:
        notes.append(expiry)
        recorded.append("Expired" if expiry.reason == "CertificateExpired" else "ExpiringSoon")
    message = _shorten("; ".join(note.message for note in notes if note.reason == "CertificateMismatch")) or None
    if message is None and now >= facts.not_after:
        message = "expired"
    wanted = {**fields, "domains": domains, "expiryEvents": recorded, "message": message}
    return Decision(_patch(certificate, current, wanted), tuple(notes))


def _patch(certificate: StoredDocument, current: Mapping[str, Any], wanted: JSONObject) -> JSONObject | None:
    stale = [key for key in current if key not in wanted]  # fields of an earlier content (now unusable)
    wanted = {**wanted, **dict.fromkeys(stale)}
    if all(current.get(key) == value for key, value in wanted.items()):
        return None
    return {"metadata": {"resourceVersion": certificate["metadata"].get("resourceVersion")}, "status": wanted}


def missing_certificates(domains: Iterable[StoredDocument], existing: Iterable[str]) -> list[Note]:
    """A ``CertificateNotFound`` note per Domain naming a Certificate that does not exist."""
    known = set(existing)
    notes = []
    for domain in sorted(domains, key=_name):
        wanted = certificate_of(domain)
        if wanted is not None and wanted not in known:
            message = f"certificate {wanted} does not exist: the caches serve domain {_name(domain)} without TLS"
            notes.append(Note("Domain", _name(domain), "CertificateNotFound", message))
    return notes


# -- the shell ------------------------------------------------------------------------------------


@dataclass
class CertificateMetrics:
    """The expiry gauge, on the cloud's /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.not_after = Gauge(
            "edgefleet_certificate_not_after_seconds",
            "Unix time at which each Certificate's leaf expires (notAfter)",
            ["certificate"],
            registry=self.registry,
        )
        self._shown: set[str] = set()

    def show(self, expiries: Mapping[str, datetime]) -> None:
        """Set the gauge to ``expiries`` (certificate -> notAfter), removing certificates no longer there."""
        for name in self._shown - set(expiries):
            self.not_after.remove(name)
        for name, moment in expiries.items():
            self.not_after.labels(certificate=name).set(moment.timestamp())
        self._shown = set(expiries)


class CertificateController:
    """Every ``period`` seconds: Certificate.status where it changed, and the Events :func:`decide` asks for."""

    def __init__(
        self,
        registry: Registry,
        *,
        documents: Documents | None = None,
        period: float = 5.0,
        metrics: CertificateMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._documents = documents
        self._period = period
        self._clock = clock
        self.metrics = metrics or CertificateMetrics()
        self._facts: dict[str, Facts] = {}  # content hash -> what the PEM says
        self._recorded: set[str] = set()  # names of the Events this controller recorded

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        await run_periodically("certificate", self.sync_once, self._period, log)

    async def _list(self, plural: str) -> Sequence[StoredDocument]:
        if self._documents is not None:
            return self._documents(plural)
        info = certificates.INFO if plural == CERTIFICATES else DOMAINS_INFO
        return (await self._registry.list(info)).items

    async def sync_once(self) -> int:
        """One round; returns how many statuses were written."""
        certs = await self._list(CERTIFICATES)
        domains = await self._list(DOMAINS)
        users = users_by_certificate(domains)
        now = self._clock()
        written = 0
        facts_now: dict[str, Facts] = {}
        expiries: dict[str, datetime] = {}
        for certificate in certs:
            key = content_key(certificate)
            facts = facts_now[key] = self._facts.get(key) or inspect_document(certificate)
            if isinstance(facts, CertificateFacts):
                expiries[_name(certificate)] = facts.not_after
            decision = decide(certificate, facts, users.get(_name(certificate), []), now)
            for note in decision.notes:
                await self._note(note, now)
            if decision.patch is not None and await self._write(_name(certificate), decision.patch):
                written += 1
        for note in missing_certificates(domains, (_name(c) for c in certs)):
            await self._note(note, now)
        self._facts = facts_now
        self.metrics.show(expiries)
        return written

    async def _note(self, note: Note, now: datetime) -> None:
        name = note.event_name
        if name in self._recorded:
            return
        document = events.event_document(
            note.kind, note.name, note.reason, note.message, type="Warning", source=SOURCE, now=now
        )
        document["metadata"]["name"] = name
        try:
            await self._registry.create(EVENTS, document)
            log.warning("%s %s: %s", note.kind, note.name, note.message)
        except ObjectExists:
            pass  # recorded by an earlier leader (or before a restart)
        self._recorded.add(name)

    async def _write(self, name: str, patch: JSONObject) -> bool:
        try:
            await self._registry.patch(certificates.INFO, name, patch, status=True)
        except (VersionConflict, ObjectNotFound):
            return False  # changed or deleted meanwhile: judged again next round
        except ValidationFailed as exc:  # a bug here, but one Certificate must not stop the others
            log.error("certificate %s: status refused by the model: %s", name, exc)
            return False
        return True
