"""Certificate: a PEM chain and its private key, served by the edge caches for the Domains that name it.

How: ``spec.certificate`` is the PEM chain, leaf first, and ``spec.key`` the
leaf's PEM private key (unencrypted: the cache loads it unattended). A
Domain uses one with ``spec.tls.certificate: NAME`` (see
:mod:`edgefleet.api.domains`).

Validation happens in two steps, because the CLI parses every object it
prints (``edgefleet get``) and must not load ``cryptography`` to do it
(``tests/cli/test_startup.py``):

- the model (:class:`CertificateSpec`) checks only the shape: sizes
  (:data:`MAX_CHAIN_BYTES`, :data:`MAX_KEY_BYTES`), at most
  :data:`MAX_CERTIFICATES` ``CERTIFICATE`` blocks, one ``PRIVATE KEY`` block,
  no NUL characters, unknown fields refused;
- :func:`inspect` parses the PEM with ``cryptography`` (imported when
  called): every certificate parses, the key parses without a password, is
  RSA (at least 2048 bits), EC or Ed25519, and matches the leaf's public
  key, and the leaf names at least one DNS name. The cloud's admission calls
  it on every create and update (:mod:`edgefleet.cloud.admission`), so a
  bad Certificate is refused with the field path (``spec.key: ...``); the
  certificate controller calls it to write ``status``.

Who sees the key: admins read and write it; viewers read Certificates with
``spec.key`` replaced by :data:`REDACTED` (:func:`redact`, the kind's
``redactForViewers`` hook, as for Secrets); a node receives a Certificate
only while a Domain of its view names it (:mod:`edgefleet.sync.views`).

``status`` is written by the certificate controller
(:mod:`edgefleet.cloud.controllers.certificates`), never by clients: the
leaf's DNS names, validity, serial, issuer and SHA-256 fingerprint, the
Domains using it, and which expiry Events were already recorded for this
content. :func:`covers` is the hostname rule (RFC 6125: a wildcard covers
exactly one leftmost label).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from edgefleet.api.common import Timestamp, format_timestamp, parse_timestamp
from edgefleet.api.documents import StoredDocument
from edgefleet.api.errors import FieldError, ValidationFailed
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

if TYPE_CHECKING:  # imported where used: `edgefleet get` parses Certificates without loading cryptography
    from cryptography import x509

MAX_CHAIN_BYTES = 64 * 1024
"""Security limit: bytes of ``spec.certificate``."""
MAX_KEY_BYTES = 16 * 1024
"""Security limit: bytes of ``spec.key``."""
MAX_CERTIFICATES = 10
"""Security limit: certificates in one chain."""
MIN_RSA_BITS = 2048
EXPIRY_WARNING_DAYS = 14
"""A Certificate in use gets a Warning Event this many days before ``notAfter``."""
REDACTED = "<redacted>"
"""What viewers see in place of ``spec.key``."""

_CERT_BEGIN = "-----BEGIN CERTIFICATE-----"
_KEY_BLOCK = re.compile(r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----")
ExpiryEvent = Literal["ExpiringSoon", "Expired"]


def _check_text(text: str, limit: int) -> str:
    if "\0" in text:
        raise ValueError("must not contain NUL characters")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ValueError(f"is {size} bytes; the limit is {limit}")
    return text


class CertificateSpec(Model):
    """A PEM certificate chain and its private key."""

    certificate: str = Field(
        min_length=1,
        description=f"PEM chain, leaf first, then intermediates (at most {MAX_CERTIFICATES} certificates, "
        f"{MAX_CHAIN_BYTES // 1024} KiB). The leaf's subjectAltName DNS names are the hostnames it covers.",
    )
    key: str = Field(
        min_length=1,
        description=f"PEM private key of the leaf, unencrypted (RSA of at least {MIN_RSA_BITS} bits, EC or "
        f"Ed25519; at most {MAX_KEY_BYTES // 1024} KiB). Shown to viewers as {REDACTED!r}.",
    )

    @field_validator("certificate")
    @classmethod
    def _check_chain(cls, text: str) -> str:
        _check_text(text, MAX_CHAIN_BYTES)
        count = text.count(_CERT_BEGIN)
        if count == 0:
            raise ValueError(f"must be PEM certificates ({_CERT_BEGIN} blocks), leaf first")
        if count > MAX_CERTIFICATES:
            raise ValueError(f"holds {count} certificates; the limit is {MAX_CERTIFICATES}")
        if _KEY_BLOCK.search(text):
            raise ValueError("holds a private key: put it in spec.key")
        return text

    @field_validator("key")
    @classmethod
    def _check_key(cls, text: str) -> str:
        _check_text(text, MAX_KEY_BYTES)
        blocks = _KEY_BLOCK.findall(text)
        if len(blocks) != 1:
            raise ValueError("must be exactly one PEM private key (-----BEGIN PRIVATE KEY----- block)")
        if blocks[0] == "ENCRYPTED PRIVATE KEY":
            raise ValueError("is encrypted: the caches load it unattended, give it without a password")
        return text


class CertificateStatus(Model):
    """What the certificate controller read from the PEM, and who uses it."""

    dns_names: list[str] | None = Field(default=None, description="The leaf's subjectAltName DNS names.")
    not_before: Timestamp | None = Field(default=None, description="Start of the leaf's validity (RFC 3339).")
    not_after: Timestamp | None = Field(default=None, description="End of the leaf's validity (RFC 3339).")
    serial: str | None = Field(default=None, max_length=64, description="The leaf's serial number, hex.")
    issuer: str | None = Field(default=None, max_length=1024, description="The leaf's issuer (RFC 4514).")
    fingerprint: str | None = Field(default=None, max_length=80, description="sha256:<hex> of the leaf's DER encoding.")
    domains: list[str] | None = Field(default=None, description="Domains whose spec.tls.certificate names it.")
    expiry_events: list[ExpiryEvent] | None = Field(
        default=None,
        description="Expiry Warning Events already recorded for this content (each is recorded once; "
        "a new certificate starts again).",
    )
    message: str | None = Field(default=None, max_length=2048, description="What is wrong, if anything.")


class Certificate(Resource):
    """A TLS certificate chain and key for Domains' spec.tls; the key is redacted for viewers."""

    KIND: ClassVar[str] = "Certificate"
    kind: Literal["Certificate"] = "Certificate"
    spec: CertificateSpec
    status: CertificateStatus = Field(default_factory=CertificateStatus)


# -- what the PEM says (cryptography, loaded when called) ----------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What :func:`inspect` read from a valid chain and key."""

    dns_names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: str
    issuer: str
    fingerprint: str

    def status_fields(self) -> dict[str, object]:
        """The status fields these facts fill (wire names)."""
        return {
            "dnsNames": list(self.dns_names),
            "notBefore": format_timestamp(self.not_before),
            "notAfter": format_timestamp(self.not_after),
            "serial": self.serial,
            "issuer": self.issuer,
            "fingerprint": self.fingerprint,
        }


def inspect(certificate: str, key: str) -> CertificateFacts:
    """Parse and check a chain and its key (see the module docstring); ValidationFailed with field paths."""
    chain = _load_chain(certificate)
    _check_key_matches(chain[0], key)
    return _facts(chain[0])


def _load_chain(text: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        chain = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise _invalid("spec.certificate", f"not a valid PEM certificate chain: {exc}") from None
    if len(chain) > MAX_CERTIFICATES:
        raise _invalid("spec.certificate", f"holds {len(chain)} certificates; the limit is {MAX_CERTIFICATES}")
    return chain


def _check_key_matches(leaf: x509.Certificate, text: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise _invalid("spec.key", f"not a usable unencrypted PEM private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise _invalid("spec.key", f"an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
    elif not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise _invalid("spec.key", f"a {type(key).__name__}: use an RSA, EC or Ed25519 key")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise _invalid("spec.key", "does not match the leaf certificate (the first one of spec.certificate)")


def _facts(leaf: x509.Certificate) -> CertificateFacts:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(name.lower() for name in sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    if not names:
        raise _invalid("spec.certificate", "the leaf certificate has no subjectAltName DNS names")
    der = leaf.public_bytes(serialization.Encoding.DER)
    return CertificateFacts(
        dns_names=names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=f"{leaf.serial_number:x}",
        issuer=leaf.issuer.rfc4514_string()[:1024],
        fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
    )


def _invalid(path: str, message: str) -> ValidationFailed:
    return ValidationFailed([FieldError(path, message)])


# -- hostnames ------------------------------------------------------------------------------------


def covers(dns_names: Iterable[str], hostname: str) -> bool:
    """Whether a certificate for ``dns_names`` is valid for ``hostname`` (RFC 6125 6.4.3).

    A wildcard ``*.example.com`` covers ``a.example.com`` but neither
    ``example.com`` nor ``a.b.example.com``; a Domain's own wildcard hostname
    ``*.example.com`` is covered by the same wildcard only.
    """
    host = hostname.lower().rstrip(".")
    for name in dns_names:
        name = name.lower().rstrip(".")
        wildcard = name.startswith("*.") and not host.startswith("*.") and "." in host
        if name == host or (wildcard and host.split(".", 1)[1] == name[2:]):
            return True
    return False


def uncovered(dns_names: Iterable[str], hostnames: Iterable[str]) -> list[str]:
    """The ``hostnames`` a certificate for ``dns_names`` does not cover, in order."""
    names = list(dns_names)
    return [host for host in hostnames if not covers(names, host)]


# -- viewers --------------------------------------------------------------------------------------


def redact(document: StoredDocument) -> StoredDocument:
    """``document`` (a stored Certificate) with ``spec.key`` replaced by :data:`REDACTED`."""
    shown = document.copy()
    spec = document.get("spec")
    if isinstance(spec, dict) and "key" in spec:
        shown["spec"] = {**spec, "key": REDACTED}
    return shown


# -- table columns --------------------------------------------------------------------------------


def _certificate(obj: Resource) -> Certificate:
    assert isinstance(obj, Certificate)
    return obj


def _names(obj: Resource) -> str:
    names = _certificate(obj).status.dns_names or []
    shown = ",".join(names[:3])
    return shown + (f",+{len(names) - 3}" if len(names) > 3 else "") if names else "<pending>"


def _not_after(obj: Resource) -> str:
    return _certificate(obj).status.not_after or "<pending>"


def days_left(not_after: str, now: datetime) -> str:
    """Whole days from ``now`` to ``not_after`` (``expired`` once past it)."""
    seconds = (parse_timestamp(not_after) - now).total_seconds()
    return "expired" if seconds <= 0 else str(int(seconds // 86400))


def _expires_in(obj: Resource) -> str:
    not_after = _certificate(obj).status.not_after
    return "<pending>" if not_after is None else days_left(not_after, datetime.now(UTC))


def _domains(obj: Resource) -> str:
    domains = _certificate(obj).status.domains
    return ",".join(domains) if domains else "<none>"


INFO = register(
    KindInfo(
        kind="Certificate",
        plural="certificates",
        model=Certificate,
        short_names=("cert",),
        description="A TLS certificate chain and key that Domains name in spec.tls; the key is redacted for "
        "viewers and sent only to nodes serving a Domain that uses it.",
        columns=(
            Column("DNS-NAMES", _names),
            Column("NOT-AFTER", _not_after),
            Column("DAYS", _expires_in),
            Column("DOMAINS", _domains),
            Column("ISSUER", lambda o: _certificate(o).status.issuer or "", wide=True),
        ),
        extra={"redactForViewers": redact},
    )
)
