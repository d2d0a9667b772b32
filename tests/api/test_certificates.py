"""The Certificate kind: the model's shape checks, the PEM inspection admission runs, hostnames, redaction."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edgefleet.api import meta
from edgefleet.api.certificates import (
    MAX_CERTIFICATES,
    REDACTED,
    Certificate,
    covers,
    days_left,
    inspect,
    redact,
    uncovered,
)
from edgefleet.api.common import parse_timestamp
from edgefleet.api.errors import ValidationFailed
from tests.pemfiles import certificate_manifest, issue


def parse(document: Any) -> Certificate:
    parsed = meta.parse(document)
    assert isinstance(parsed, Certificate)
    return parsed


def errors(document: Any) -> list[str]:
    with pytest.raises(ValidationFailed) as failure:
        meta.parse(document)
    return [str(error) for error in failure.value.errors]


def inspect_errors(chain: str, key: str) -> list[str]:
    with pytest.raises(ValidationFailed) as failure:
        inspect(chain, key)
    return [str(error) for error in failure.value.errors]


def test_a_valid_certificate_parses_and_inspects() -> None:
    issued = issue(["www.shop.example", "*.shop.example"])
    parse(certificate_manifest("shop", issued))
    facts = inspect(issued.chain, issued.key)
    assert facts.dns_names == ("www.shop.example", "*.shop.example")
    assert facts.not_before < facts.not_after
    assert facts.fingerprint.startswith("sha256:") and len(facts.fingerprint) == 7 + 64
    assert "edgefleet test CA" in facts.issuer and int(facts.serial, 16) > 0
    fields = facts.status_fields()
    assert parse_timestamp(str(fields["notAfter"])) == facts.not_after.replace(microsecond=0)


def test_shape_errors_name_the_field() -> None:
    issued = issue(["a.example"])
    manifest: Any = certificate_manifest("c", issued)
    manifest["spec"]["extra"] = 1
    assert errors(manifest) == ["spec.extra: unknown field"]
    manifest = certificate_manifest("c", issued)
    manifest["spec"]["certificate"] = "hello"
    assert errors(manifest)[0].startswith("spec.certificate: must be PEM certificates")
    manifest = certificate_manifest("c", issued)
    manifest["spec"]["certificate"] = issued.chain * (MAX_CERTIFICATES + 1)
    assert errors(manifest) == [f"spec.certificate: holds {MAX_CERTIFICATES + 1} certificates; the limit is 10"]
    manifest = certificate_manifest("c", issued)
    manifest["spec"]["certificate"] = issued.chain + issued.key
    assert errors(manifest) == ["spec.certificate: holds a private key: put it in spec.key"]
    manifest = certificate_manifest("c", issued)
    manifest["spec"]["key"] = "x" * (16 * 1024 + 1)
    assert errors(manifest) == ["spec.key: is 16385 bytes; the limit is 16384"]
    manifest = certificate_manifest("c", issued)
    manifest["spec"]["key"] = issued.key.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
    assert "is encrypted" in errors(manifest)[0]
    manifest = certificate_manifest("c", issued)
    del manifest["spec"]["key"]
    assert errors(manifest) == ["spec.key: Field required"]


def test_a_key_of_another_certificate_is_refused() -> None:
    one, other = issue(["a.example"]), issue(["a.example"])
    assert inspect_errors(one.chain, other.key) == [
        "spec.key: does not match the leaf certificate (the first one of spec.certificate)"
    ]


def test_garbage_pem_and_weak_keys_are_refused() -> None:
    issued = issue(["a.example"])
    broken = issued.chain.replace("M", "!", 3)
    assert inspect_errors(broken, issued.key)[0].startswith("spec.certificate: not a valid PEM certificate chain")
    assert inspect_errors(issued.chain, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")[0].startswith(
        "spec.key: not a usable unencrypted PEM private key"
    )
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = weak.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert inspect_errors(issued.chain, pem) == ["spec.key: an RSA key of 1024 bits; at least 2048 are needed"]


def test_a_leaf_without_dns_names_is_refused() -> None:
    issued = issue(["192.0.2.1"])  # an IP address SAN only
    assert inspect_errors(issued.chain, issued.key) == [
        "spec.certificate: the leaf certificate has no subjectAltName DNS names"
    ]


@pytest.mark.parametrize(
    ("names", "host", "covered"),
    [
        (["www.example.com"], "www.example.com", True),
        (["WWW.example.com"], "www.EXAMPLE.com.", True),
        (["*.example.com"], "a.example.com", True),
        (["*.example.com"], "example.com", False),
        (["*.example.com"], "a.b.example.com", False),
        (["*.example.com"], "*.example.com", True),
        (["a.example.com"], "*.example.com", False),
        (["*.b.example.com"], "*.example.com", False),
    ],
)
def test_hostname_coverage_follows_rfc_6125(names: list[str], host: str, covered: bool) -> None:
    assert covers(names, host) is covered


def test_uncovered_lists_the_missing_hostnames_in_order() -> None:
    assert uncovered(["*.shop.example"], ["shop.example", "www.shop.example", "x.y.shop.example"]) == [
        "shop.example",
        "x.y.shop.example",
    ]


def test_viewers_see_the_key_redacted_and_the_rest_as_is() -> None:
    document: Any = {**certificate_manifest("c", issue(["a.example"])), "status": {"serial": "ab"}}
    shown = redact(document)
    assert shown["spec"]["key"] == REDACTED and shown["spec"]["certificate"] == document["spec"]["certificate"]
    assert shown["status"] == {"serial": "ab"} and document["spec"]["key"] != REDACTED, "the original is untouched"


def test_days_left() -> None:
    now = parse_timestamp("2026-01-01T00:00:00Z")
    assert days_left("2026-01-15T12:00:00Z", now) == "14"
    assert days_left("2025-12-31T00:00:00Z", now) == "expired"
