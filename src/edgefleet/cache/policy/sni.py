"""Which certificate a TLS handshake gets: the SNI server name -> (certificate name, lowest TLS version).

How: :class:`SniTable` is built once per config (and per certificate reload) from the Domain table and
the names of the certificates that loaded, in config order. :meth:`SniTable.choose` takes the server name
of a ClientHello (None without SNI) and picks, in order:

1. the Domain that serves the name, found exactly as a Host header is
   (:class:`~edgefleet.cache.policy.domains.DomainTable`: hostnames and aliases, exact names before
   ``*.suffix`` wildcards), when it has ``tls`` and its certificate loaded: that certificate, with the
   Domain's ``minVersion``;
2. else a certificate whose DNS SANs cover the name (an exact SAN first, then a wildcard SAN ``*.x``
   that covers one label, as RFC 6125 says), with TLS 1.2 allowed;
3. else the default: the first certificate that loaded (what clients without SNI get), TLS 1.2.

None means no certificate loaded at all (the listener is then not open). Names are compared in lower
case without a trailing dot; a name longer than a DNS name can be (253) gets the default without any
lookup. Choices are memoised per name up to :data:`MEMO_LIMIT` entries, so a handshake pays one dict
lookup and a flood of random names cannot grow the memory.

Pure: no I/O, no clock, no ``ssl`` (the shell, :mod:`edgefleet.cache.front.tls`, owns the contexts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edgefleet.cache.policy.domains import DomainTable

MinVersion = Literal["1.2", "1.3"]
MEMO_LIMIT = 4096
MAX_NAME = 253


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """A loaded certificate as SNI sees it: its config name and its DNS SANs (lower case, ``*.x`` kept)."""

    name: str
    sans: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SniChoice:
    """The certificate (by config name) a handshake gets, and the lowest TLS version it accepts."""

    certificate: str
    min_version: MinVersion


class SniTable:
    """Server name -> :class:`SniChoice` (see the module docstring); immutable, swapped whole on reload."""

    def __init__(self, domains: DomainTable, certificates: Sequence[CertificateNames]) -> None:
        self._domains = domains
        self._loaded = frozenset(cert.name for cert in certificates)
        self._exact: dict[str, str] = {}
        self._wildcard: dict[str, str] = {}
        for cert in certificates:
            for san in cert.sans:
                if san.startswith("*."):
                    self._wildcard.setdefault(san[1:], cert.name)
                else:
                    self._exact.setdefault(san, cert.name)
        self.default = SniChoice(certificates[0].name, "1.2") if certificates else None
        self._memo: dict[str, SniChoice | None] = {}

    def choose(self, server_name: str | None) -> SniChoice | None:
        """The choice for a ClientHello's server name (None: no SNI); None when no certificate loaded."""
        if not server_name or len(server_name) > MAX_NAME:
            return self.default
        try:
            return self._memo[server_name]
        except KeyError:
            pass
        found = self._find(server_name.lower().rstrip("."))
        if len(self._memo) < MEMO_LIMIT:
            self._memo[server_name] = found
        return found

    def _find(self, name: str) -> SniChoice | None:
        domain = self._domains.lookup(name)
        tls = domain.config.tls if domain is not None else None
        if tls is not None and tls.certificate in self._loaded:
            return SniChoice(tls.certificate, tls.min_version)
        by_san = self._exact.get(name)
        if by_san is None:
            _, dot, rest = name.partition(".")
            by_san = self._wildcard.get("." + rest) if dot and rest else None
        if by_san is not None:
            return SniChoice(by_san, "1.2")
        return self.default
