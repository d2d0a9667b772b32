"""The CLI's HTTP client builds a TLS context only for https:// servers.

How: :func:`edgefleet.cli.client._verify` is called with each kind of
server URL and trust; the context it returns for https is checked by its
settings, and the client is built against a plain-HTTP address without
any CA being readable.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from edgefleet.cli.client import ApiClient, ClientError, _verify
from edgefleet.tls import ClientTrust


def test_plain_http_needs_no_context_even_with_an_unreadable_ca(tmp_path: Path) -> None:
    trust = ClientTrust(tmp_path / "missing.crt", insecure=True)
    assert _verify("http://127.0.0.1:7440", trust) is False
    assert _verify("HTTP://cloud:7440", None) is False
    ApiClient("http://127.0.0.1:7440", None, trust=trust).close()


def test_https_verifies_with_the_trusted_ca_or_the_system() -> None:
    context = _verify("https://cloud:7440", ClientTrust())
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert _verify("https://cloud:7440", None) is True


def test_https_with_an_unreadable_ca_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="cannot use CA file"):
        ApiClient("https://cloud:7440", None, trust=ClientTrust(tmp_path / "missing.crt"))


def test_cleartext_is_refused_without_insecure() -> None:
    with pytest.raises(ClientError, match="refusing to send credentials in cleartext"):
        ApiClient("http://cloud:7440", "secret", trust=ClientTrust())
