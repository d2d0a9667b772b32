"""Test certificates: a CA and leaf certificates it signs, as PEM text (through edgefleet.tls)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from edgefleet import tls


@dataclass(frozen=True, slots=True)
class Issued:
    """A leaf certificate (PEM chain), its key and the CA that signed it."""

    chain: str
    key: str
    ca: tls.KeyPair


@cache
def test_ca() -> tls.KeyPair:
    """One CA per test process (EC keys are cheap, but there is no reason to make many)."""
    return tls.create_ca("edgefleet test CA")


def issue(names: Sequence[str], *, now: datetime.datetime | None = None, ca: tls.KeyPair | None = None) -> Issued:
    """A server certificate for ``names`` (valid from ``now`` minus five minutes for 397 days)."""
    authority = ca or test_ca()
    pair = tls.issue_server_cert(authority, list(names), now=now)
    return Issued(pair.cert_pem.decode(), pair.key_pem.decode(), authority)


def certificate_manifest(name: str, issued: Issued) -> dict[str, object]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {"certificate": issued.chain, "key": issued.key},
    }
