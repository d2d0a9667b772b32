"""The TLS listener of a cache worker: certificates, the SNI callback, reloads and handshake counting.

How: each worker opens a second ``SO_REUSEPORT`` listener on ``tlsListen`` with
``loop.create_server(..., ssl=listening)`` (uvloop terminates TLS) and serves it with the same
:class:`~edgefleet.cache.front.server.Connection` as the plain port; the connection's ``tls_version``
(``"TLSv1.3"``, None in cleartext) tells the proxy and the access log which one a request came on.

- **Contexts.** Every certificate of the config is read at load time (:func:`read_certificate`): its
  PEM files, parsed once with ``cryptography`` for the expiry, serial and SANs, and two
  ``ssl.SSLContext`` s, one accepting TLS 1.2 and 1.3, one TLS 1.3 only. TLS 1.2 suites are nginx's
  ``ECDHE+AESGCM:ECDHE+CHACHA20`` (TLS 1.3 suites: OpenSSL's defaults), ALPN ``http/1.1``, no
  compression, no renegotiation.
- **SNI.** The listening context has no certificate of its own: its ``sni_callback`` (called for every
  ClientHello, with None when there is no SNI) asks the pure :class:`~edgefleet.cache.policy.sni.SniTable`
  and switches the handshake to the chosen context. OpenSSL keeps the version it already chose from the
  listening context when the context is switched, so the TLS-1.3-only context lists only PSK suites for
  TLS 1.2 (this server never has a pre-shared key): a TLS 1.2 ClientHello for a 1.3-only name finds no
  cipher and the handshake fails; :class:`Handshake` checks the version again once the handshake is done
  and closes such a connection, in case an OpenSSL release behaves otherwise.
- **Reload** (:meth:`TlsFront.apply`, on SIGHUP through the master): every certificate is read again;
  one whose files did not change keeps its contexts; one that fails to load keeps the previous one of
  that name (logged, ``certificate_load_failures``); then a new SNI table is swapped in. Handshakes
  started later get the new certificates, open connections keep theirs. At start, a config that lists
  certificates none of which load is refused with the reasons. ``tlsListen`` may appear, move or go
  away on a reload; the listener opens only while at least one certificate is loaded.
- **Resumption.** Session tickets (TLS 1.3 and 1.2) and the TLS 1.2 session-ID cache belong to the
  listening context, which lives as long as the worker, so a client resumes across certificate reloads.
  Python's ``ssl`` module cannot set or share ticket keys, so each worker has its own random keys: with
  ``workers > 1`` a reconnecting client resumes only when the kernel's ``SO_REUSEPORT`` hash sends it to
  the same worker (about 1 in ``workers``); the others make a full handshake. A worker restart forgets
  its keys.
- **Counting.** The protocol factory returns a small :class:`Handshake` that uvloop holds while the
  handshake runs; when it completes it counts it (and whether the session was resumed), sets up the
  real connection and hands it the transport (``set_protocol``). A handshake that never completes
  (garbage, no shared version or cipher, a timeout, the client leaving) drops the last reference to its
  ``Handshake``, whose ``__del__`` counts the failure: exact, and nothing to sweep. Handshakes are bounded
  by ``limits.headerTimeout``.
- **Hostile ClientHellos** fail their handshake inside OpenSSL and are counted; nothing reaches the
  proxy. One case needs help: CPython decodes the SNI name as ASCII before calling ``sni_callback`` and
  reports a failure with ``sys.unraisablehook``, which would print a traceback per such handshake, a
  log flood anyone could send. :func:`quiet_bad_server_names` drops exactly those reports (the
  handshake still fails and is counted).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefleet.cache.config import CacheConfig, CertificateFiles
from edgefleet.cache.errors import CacheError, ConfigError
from edgefleet.cache.front.server import Connection
from edgefleet.cache.policy.domains import DomainTable
from edgefleet.cache.policy.sni import CertificateNames, MinVersion, SniTable
from edgefleet.cache.stats import Stats

if TYPE_CHECKING:
    from edgefleet.cache.front.server import ConnectionSet

log = logging.getLogger("edgefleet.cache")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""nginx's default TLS 1.2 suites: forward secret, AEAD (TLS 1.3 suites are OpenSSL's defaults)."""
NO_TLS12_CIPHERS = "PSK"
"""The TLS 1.2 suites of a TLS-1.3-only context: pre-shared-key suites, which never complete here."""
VERSIONS: dict[MinVersion, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
MAX_PEM_BYTES = 1024 * 1024


class CertificateLoadError(ConfigError):
    """A certificate's files cannot be read or used; the message names the certificate and the reason."""


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """A certificate ready for handshakes (see the module docstring)."""

    name: str
    digest: str
    """sha256 over both files' bytes: a reload that finds the same digest keeps the contexts."""
    not_after: float
    serial: int
    sans: tuple[str, ...]
    contexts: Mapping[MinVersion, ssl.SSLContext]

    def describe(self) -> dict[str, Any]:
        """What ``/status`` and the metrics say about it."""
        return {"notAfter": self.not_after, "serial": format(self.serial, "x")}


def _path(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def _read(path: Path, what: str, name: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise CertificateLoadError(f"certificate {name!r}: cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise CertificateLoadError(f"certificate {name!r}: {what} {path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def server_context(cert_file: Path, key_file: Path, min_version: MinVersion) -> ssl.SSLContext:
    """A server context presenting ``cert_file`` and accepting ``min_version`` and up (ssl.SSLError if unusable)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    context.load_cert_chain(cert_file, key_file)
    if min_version == "1.3":
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_ciphers(NO_TLS12_CIPHERS)
    return context


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])


def listening_context(on_sni: Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]) -> ssl.SSLContext:
    """The context the listener starts every handshake with: no certificate, the SNI callback picks one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    context.sni_callback = on_sni
    return context


def read_certificate(
    files: CertificateFiles, base: Path, previous: LoadedCertificate | None = None
) -> LoadedCertificate:
    """Load one certificate (``previous``'s contexts when its files did not change); CertificateLoadError."""
    cert_path, key_path = _path(base, files.cert_file), _path(base, files.key_file)
    cert_pem, key_pem = _read(cert_path, "certFile", files.name), _read(key_path, "keyFile", files.name)
    digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
    if previous is not None and previous.digest == digest:
        return previous
    not_after, serial, sans = _describe(cert_pem, files.name)
    try:
        contexts = {version: server_context(cert_path, key_path, version) for version in VERSIONS}
    except (OSError, ssl.SSLError) as exc:
        raise CertificateLoadError(f"certificate {files.name!r}: {cert_path} / {key_path}: {exc}") from None
    again = _read(cert_path, "certFile", files.name) + b"\0" + _read(key_path, "keyFile", files.name)
    if hashlib.sha256(again).hexdigest() != digest:
        raise CertificateLoadError(f"certificate {files.name!r}: the files changed while they were loaded")
    return LoadedCertificate(files.name, digest, not_after, serial, sans, contexts)


def _describe(cert_pem: bytes, name: str) -> tuple[float, int, tuple[str, ...]]:
    """(notAfter as POSIX seconds, serial, DNS SANs) of the leaf, the first certificate of the chain."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError as exc:
        raise CertificateLoadError(f"certificate {name!r}: certFile is not a PEM certificate chain: {exc}") from None
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(dict.fromkeys(n.lower().rstrip(".") for n in sans.get_values_for_type(x509.DNSName)))
    except x509.ExtensionNotFound:
        names = ()
    return leaf.not_valid_after_utc.timestamp(), leaf.serial_number, names


def check_certificates(config: CacheConfig, base: Path) -> list[str]:
    """Load every certificate once (the master, before starting workers): the errors; CacheError if none loads."""
    errors = []
    for files in config.certificates:
        try:
            read_certificate(files, base)
        except CertificateLoadError as exc:
            errors.append(str(exc))
    if config.certificates and len(errors) == len(config.certificates):
        raise CacheError("no certificate could be loaded, so TLS cannot be served:\n  " + "\n  ".join(errors))
    return errors


def quiet_bad_server_names() -> None:
    """Drop the unraisable-exception reports of SNI names that are not ASCII (module docstring); idempotent."""
    previous = sys.unraisablehook
    if getattr(previous, "edgefleet_sni", False):
        return

    def hook(report: sys.UnraisableHookArgs) -> None:
        if isinstance(report.exc_value, UnicodeDecodeError) and isinstance(report.object, bytes):
            return  # a ClientHello's server name that is not ASCII: its handshake fails, and is counted
        previous(report)

    hook.edgefleet_sni = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


JOIN_BYTES = 64 * 1024
"""Answers up to this size are written as one TLS record (joined); larger ones piece by piece."""


class TlsConnection(Connection):
    """A connection of the TLS listener: an answer of a few pieces goes out as one TLS record.

    uvloop's TLS transport encrypts each item of ``writelines`` as a record of its own (a header, a tag,
    one ``SSL_write`` call each): a fast hit's head, Age line and 1 KB body would be three. Joining them
    first costs a copy of at most :data:`JOIN_BYTES`.
    """

    def writelines(self, data: list[bytes]) -> None:
        if self.transport is not None and not self.closing:
            if sum(map(len, data)) <= JOIN_BYTES:
                self.transport.write(b"".join(data))
            else:
                self.transport.writelines(data)


class Handshake(asyncio.Protocol):
    """The protocol of a TLS connection until its handshake completes (see "Counting" above)."""

    __slots__ = ("front", "made")

    def __init__(self, front: TlsFront) -> None:
        self.front = front
        self.made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        front = self.front
        stats = front.stats
        sslobj: ssl.SSLObject = transport.get_extra_info("ssl_object")
        version = sslobj.version()
        if sslobj.context.minimum_version == ssl.TLSVersion.TLSv1_3 and version != "TLSv1.3":
            stats.tls_handshake_failures += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        stats.tls_handshakes += 1
        if sslobj.session_reused:
            stats.tls_resumed += 1
        connection = TlsConnection(front.connections)
        connection.tls_version = version
        transport.set_protocol(connection)
        connection.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Not called by uvloop before a handshake completes; nothing to release."""

    def __del__(self) -> None:
        if not self.made:
            self.front.stats.tls_handshake_failures += 1


class TlsFront:
    """One worker's TLS listener and certificates (see the module docstring)."""

    def __init__(
        self,
        stats: Stats,
        connections: ConnectionSet,
        config_dir: Path,
        bind: Callable[[str], socket.socket],
        handshake_timeout: float,
    ) -> None:
        self.stats = stats
        self.connections = connections
        self.config_dir = config_dir
        self.bind = bind
        self.handshake_timeout = handshake_timeout
        self.certificates: dict[str, LoadedCertificate] = {}
        self.table = SniTable(DomainTable([]), [])
        self.listening = listening_context(self._on_sni)
        quiet_bad_server_names()
        self.server: asyncio.AbstractServer | None = None
        self.address: str | None = None

    async def apply(self, config: CacheConfig, domains: DomainTable, *, starting: bool = False) -> None:
        """Load the certificates, swap the SNI table, open, move or close the listener (module docstring)."""
        previous = self.certificates
        read = await asyncio.to_thread(self.read_all, config, previous)  # file reads and key parsing: off the loop
        self.swap(config, domains, read, previous)
        if starting and config.certificates and not self.certificates:
            raise CacheError("no certificate could be loaded, so TLS cannot be served (see the log above)")
        try:
            await self._listen(config.tls_listen if self.certificates else None)
        except OSError as exc:
            message = f"cannot listen on tlsListen {config.tls_listen}: {exc.strerror}"
            if starting:
                raise CacheError(message) from None
            log.error("%s; TLS is not served", message)
        if config.tls_listen is not None and not self.certificates:
            log.warning("tlsListen %s is set but no certificate is loaded: not serving TLS", config.tls_listen)

    def read_all(
        self, config: CacheConfig, previous: Mapping[str, LoadedCertificate]
    ) -> dict[str, LoadedCertificate | CertificateLoadError]:
        """Every certificate of ``config``, read again (unchanged files: the previous one), or why it failed."""
        read: dict[str, LoadedCertificate | CertificateLoadError] = {}
        for files in config.certificates:
            try:
                read[files.name] = read_certificate(files, self.config_dir, previous.get(files.name))
            except CertificateLoadError as exc:
                read[files.name] = exc
        return read

    def swap(
        self,
        config: CacheConfig,
        domains: DomainTable,
        read: Mapping[str, LoadedCertificate | CertificateLoadError],
        previous: Mapping[str, LoadedCertificate],
    ) -> None:
        """Serve what loaded, keeping the previous certificate of a name that failed; a new SNI table."""
        loaded: dict[str, LoadedCertificate] = {}
        now = time.time()
        for name, result in read.items():
            if isinstance(result, LoadedCertificate):
                loaded[name] = result
                if result.not_after < now and result is not previous.get(name):
                    log.warning("certificate %r expired (notAfter %.0f); served anyway", name, result.not_after)
                continue
            self.stats.certificate_load_failures += 1
            if name in previous:
                loaded[name] = previous[name]
                log.error("%s; still serving the previous certificate %r", result, name)
            else:
                log.error("%s; not served", result)
        for domain in config.domains:
            if domain.tls is not None and domain.tls.certificate not in loaded:
                log.warning("domain %r: certificate %r is not loaded", domain.name, domain.tls.certificate)
        self.certificates = loaded
        self.table = SniTable(domains, [CertificateNames(c.name, c.sans) for c in loaded.values()])
        self.stats.certificates = {name: cert.describe() for name, cert in loaded.items()}

    async def _listen(self, address: str | None) -> None:
        if address == self.address:
            return
        self.close()
        if address is None:
            return
        self.server = await asyncio.get_running_loop().create_server(
            lambda: Handshake(self),
            sock=self.bind(address),
            ssl=self.listening,
            ssl_handshake_timeout=self.handshake_timeout,
        )
        self.address = address
        log.info("serving TLS on %s with %d certificates", address, len(self.certificates))

    def close(self) -> None:
        """Stop accepting TLS connections (the open ones go on)."""
        if self.server is not None:
            self.server.close()
        self.server, self.address = None, None

    def _on_sni(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        choice = self.table.choose(server_name)
        certificate = self.certificates.get(choice.certificate) if choice is not None else None
        if choice is None or certificate is None:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        sslobj.context = certificate.contexts[choice.min_version]
        return None
