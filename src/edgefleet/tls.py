"""TLS on the control channel: the fleet's CA, the cloud's certificate, CA pins and client trust.

Why: the API, the dashboard and the agents' hub WebSocket carry bearer
tokens (admin, viewer, node credentials, bootstrap tokens) and the whole
desired state of the fleet. In cleartext anyone on the path reads the tokens
and can impersonate the cloud to every agent.

How:

- **Certificates** (:func:`create_ca`, :func:`issue_server_cert`): an EC
  P-256 CA, self-signed, ``pathlen=0``, ten years; server certificates it
  signs carry the names and addresses clients dial as SANs (``serverAuth``
  only). :func:`ensure_pki` keeps them in a directory: ``ca.crt``,
  ``server.crt`` (0644) and ``ca.key``, ``server.key`` (0600), reusing what
  is there and re-issuing the server certificate when it lacks a SAN or
  expires within :data:`RENEW_BEFORE`. Every hub replica serves the same
  ``server.crt``/``server.key`` (copy them), issued for all their names.
- **The CA pin** (:func:`ca_hash`): ``sha256:<hex>`` of the CA certificate's
  DER SubjectPublicKeyInfo, the form of ``kubeadm join
  --discovery-token-ca-cert-hash``. ``edgefleet edge join --ca-hash`` fetches
  the CA from the cloud's public ``/edge/v1/ca`` (without trusting it),
  compares the pin and then uses that CA alone: a man in the middle can
  hand out the real CA, but cannot present a certificate it signed.
- **Client trust** (:class:`ClientTrust`): a CA file (the pinned CA alone:
  the system's CAs are *not* loaded with it) or, without one, the system's
  CAs; and whether cleartext ``http://`` is allowed at all (``--insecure``).
  :meth:`ClientTrust.check_url` refuses ``http://`` without it, with an error
  that says what to do; every client of the control channel (CLI, join,
  agent) calls it before sending a token.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported where used: the CLI and the agent start without loading cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=397)
RENEW_BEFORE = datetime.timedelta(days=30)
CA_PATH = "/edge/v1/ca"
"""The cloud's public route serving its CA certificate (PEM), for joins that pin it by hash."""
_HASH = re.compile(r"sha256:([0-9a-f]{64})")
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites the cloud accepts (forward secret, AEAD); TLS 1.3 suites are OpenSSL's defaults."""


class TlsError(Exception):
    """A certificate, key or pin is unusable, or a URL would go out in cleartext; the message says what to do."""


class CleartextRefused(TlsError):
    """An ``http://`` URL without ``--insecure``."""


# -- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(common_name: str = "edgefleet CA", *, now: datetime.datetime | None = None) -> KeyPair:
    """A new self-signed CA (EC P-256, may sign server certificates only: ``pathlen=0``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Host names and IP addresses as SubjectAlternativeName entries (an IP becomes an IPAddress entry)."""
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip().strip("[]").lower() for h in hosts if h.strip()):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def issue_server_cert(ca: KeyPair, hosts: Sequence[str], *, now: datetime.datetime | None = None) -> KeyPair:
    """A server certificate signed by ``ca`` for ``hosts`` (names and addresses); TlsError without hosts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    sans = san_entries(hosts)
    if not sans:
        raise TlsError("a server certificate needs at least one host name or address")
    ca_cert = load_cert(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsError("the CA key is not an EC key made by edgefleet")
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    key = _new_key()
    first = next(str(s.value) for s in sans)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def load_cert(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM text; TlsError when there is none."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise TlsError(f"not a PEM certificate: {exc}") from None


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM text (a chain or a bundle); TlsError when there is none."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TlsError(f"not a PEM certificate: {exc}") from None


def ca_hash(ca_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA certificate's SubjectPublicKeyInfo (what ``edge join --ca-hash`` takes)."""
    from cryptography.hazmat.primitives import serialization

    spki = (
        load_cert(ca_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def parse_ca_hash(text: str) -> str:
    """A ``--ca-hash`` value, normalised (``sha256:`` and 64 lowercase hex digits); TlsError otherwise."""
    value = text.strip().lower()
    if not _HASH.fullmatch(value):
        raise TlsError(
            f"--ca-hash {text!r}: expected sha256: and 64 hex digits, as printed by "
            "`edgefleet token create` or `edgefleet tls ca-hash`"
        )
    return value


def hash_matches(ca_pem: bytes, pin: str) -> bool:
    return hmac.compare_digest(ca_hash(ca_pem), parse_ca_hash(pin))


def covers(cert: x509.Certificate, hosts: Iterable[str]) -> bool:
    """Whether every host is among the certificate's SANs."""
    from cryptography import x509

    try:
        present = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    return set(san_entries(hosts)) <= present


# -- files --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Where a cloud's CA and server certificate live (``edgefleet up``: DATA/tls)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"


def write_file(path: Path, content: bytes, mode: int) -> None:
    """Write ``content`` with ``mode`` (created so: a key is never readable by others, even for a moment)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def ensure_pki(root: Path, hosts: Sequence[str], *, now: datetime.datetime | None = None) -> PkiFiles:
    """The CA and a server certificate for ``hosts`` in ``root``: reused, completed or renewed as needed."""
    files = PkiFiles(root)
    moment = now or datetime.datetime.now(datetime.UTC)
    if files.ca_cert.exists() and files.ca_key.exists():
        ca = KeyPair(files.ca_cert.read_bytes(), files.ca_key.read_bytes())
    else:
        ca = create_ca(now=moment)
        write_file(files.ca_key, ca.key_pem, 0o600)
        write_file(files.ca_cert, ca.cert_pem, 0o644)
        files.server_cert.unlink(missing_ok=True)
    if not _server_cert_current(files, ca, hosts, moment):
        server = issue_server_cert(ca, hosts, now=moment)
        write_file(files.server_key, server.key_pem, 0o600)
        write_file(files.server_cert, server.cert_pem, 0o644)
    return files


def _server_cert_current(files: PkiFiles, ca: KeyPair, hosts: Sequence[str], now: datetime.datetime) -> bool:
    if not files.server_cert.exists() or not files.server_key.exists():
        return False
    try:
        cert = load_cert(files.server_cert.read_bytes())
    except TlsError:
        return False
    return (
        cert.issuer == load_cert(ca.cert_pem).subject
        and covers(cert, hosts)
        and cert.not_valid_after_utc - now > RENEW_BEFORE
    )


# -- the cloud's side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What ``edgefleet cloud --tls-cert --tls-key [--tls-ca]`` serves with."""

    cert_file: Path
    key_file: Path
    ca_pem: bytes | None
    """The CA published at /edge/v1/ca for joins that pin it; None: not published."""
    ca_file: Path | None = None
    """``--tls-ca``, when given (the file clients can be pointed at)."""

    @property
    def ca_hash(self) -> str | None:
        return None if self.ca_pem is None else ca_hash(self.ca_pem)


def server_tls(cert_file: Path, key_file: Path, ca_file: Path | None = None) -> ServerTls:
    """Check the files now (a clear error instead of a failing handshake later) and find the CA to publish.

    The CA is ``ca_file``, else the last certificate of ``cert_file`` when
    that is a chain ending in a CA (or a self-signed certificate), else none.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        chain = load_certs(cert_file.read_bytes())
    except (OSError, TlsError) as exc:
        raise TlsError(f"--tls-cert {cert_file}: {exc}") from None
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        ca_pem = ca_file.read_bytes() if ca_file is not None else None
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"--tls-cert {cert_file} / --tls-key {key_file}: {exc}") from None
    if ca_pem is not None:
        try:
            load_cert(ca_pem)
        except TlsError as exc:
            raise TlsError(f"--tls-ca {ca_file}: {exc}") from None
    elif len(chain) > 1 or chain[0].issuer == chain[0].subject:
        ca_pem = chain[-1].public_bytes(serialization.Encoding.PEM)
    return ServerTls(cert_file, key_file, ca_pem, ca_file)


# -- clients ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientTrust:
    """How a client of the control channel checks the cloud (see the module docstring)."""

    ca_file: Path | None = None
    """The CA certificates trusted, alone; None (and no ``ca_data``): the system's CAs."""
    insecure: bool = False
    """Allow cleartext http:// URLs (tokens and state readable on the path)."""
    ca_data: bytes | None = None
    """The CA certificates trusted, as PEM (a join, before the node's directory is written); wins over ca_file."""

    def check_url(self, url: str, *, how: str = "--insecure") -> None:
        """CleartextRefused for an ``http://`` URL unless insecure; ``how`` names the way to allow it."""
        if self.insecure or urlsplit(url).scheme.lower() != "http":
            return
        raise CleartextRefused(
            f"refusing to send credentials in cleartext to {url}: use https:// (serve the cloud with "
            f"--tls-cert/--tls-key), or allow cleartext explicitly with {how}"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The verifying context: the CA file alone, or the system's CAs; TlsError when it is unreadable."""
        try:
            if self.ca_data is not None:
                return ssl.create_default_context(cadata=self.ca_data.decode())
            return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsError(f"cannot use CA file {self.ca_file}: {exc}") from None


NODE_CA_FILE = "ca.crt"
"""The pinned CA in a node's data directory, written by ``edgefleet edge join``."""


def node_trust(data_dir: Path, insecure: bool) -> ClientTrust:
    """A joined node's trust: the CA join pinned (DATA/ca.crt) and whether join allowed cleartext."""
    ca = data_dir / NODE_CA_FILE
    return ClientTrust(ca if ca.exists() else None, insecure)


def describe_verify_failure(server: str, exc: BaseException) -> str:
    """The message for a certificate the pinned CA did not sign (a man in the middle, or a new CA)."""
    detail = getattr(exc, "verify_message", "") or str(exc)
    return (
        f"the server at {server} presented a certificate that the trusted CA did not sign ({detail}): "
        "refusing to connect. Either something intercepts the connection, or the cloud's CA changed "
        "(then join again with the new --ca-hash)"
    )
