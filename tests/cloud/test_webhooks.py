"""Outbound webhook calls: https verified against the webhook's own CA bundle, or refused."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from edgefleet.api.admissionwebhooks import AdmissionWebhookSpec
from edgefleet.api.rollouts import WebhookCheck
from edgefleet.cloud import webhooks


def self_signed(tmp: Path, name: str) -> tuple[str, ssl.SSLContext]:
    """A certificate for 127.0.0.1 that is its own CA: (its PEM, a server context serving it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp / f"{name}.crt").write_text(pem)
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / f"{name}.crt", tmp / f"{name}.key")
    return pem, context


@pytest.fixture
async def https_webhook(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """An https webhook answering 200 ``{"allowed": true}``: (its URL, the PEM of its self-signed CA)."""
    pem, context = self_signed(tmp_path, "webhook")

    async def allow(_: web.Request) -> web.Response:
        return web.json_response({"allowed": True})

    app = web.Application()
    app.router.add_post("/check", allow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}/check", pem
    await runner.cleanup()


async def call(url: str, ca_bundle: str | None) -> webhooks.Reply:
    return await webhooks.post(url, b"{}", deadline=5, max_bytes=1024, headers={}, ca_bundle=ca_bundle)


async def test_a_webhook_behind_a_private_ca_is_trusted_through_its_ca_bundle(https_webhook: tuple[str, str]) -> None:
    url, pem = https_webhook
    reply = await call(url, pem)
    assert reply.status == 200 and b"allowed" in reply.body


async def test_without_the_bundle_or_with_another_ca_the_certificate_is_refused(
    https_webhook: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = https_webhook
    with pytest.raises(webhooks.WebhookCallFailed, match=r"cannot be reached.*(SSL|CERTIFICATE|certificate)"):
        await call(url, None)
    other, _ = self_signed(tmp_path, "other")
    with pytest.raises(webhooks.WebhookCallFailed, match="cannot be reached"):
        await call(url, other)


def test_a_ca_bundle_must_be_pem_certificates_and_needs_https() -> None:
    spec = {"url": "https://hooks.example/check", "rules": [{"kinds": ["Site"], "operations": ["CREATE"]}]}
    pem = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"
    assert AdmissionWebhookSpec.model_validate({**spec, "caBundle": pem}).ca_bundle == pem
    broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"
    for bad in ("not a certificate", pem + "trailing junk", broken):
        with pytest.raises(ValidationError, match="caBundle"):
            AdmissionWebhookSpec.model_validate({**spec, "caBundle": bad})
    with pytest.raises(ValidationError, match="https"):
        AdmissionWebhookSpec.model_validate({**spec, "url": "http://hooks.example/check", "caBundle": pem})
    with pytest.raises(ValidationError, match="https"):
        WebhookCheck.model_validate({"url": "http://hooks.example/check", "caBundle": pem})
    assert WebhookCheck.model_validate({"url": "https://hooks.example/check", "caBundle": pem}).ca_bundle == pem
