"""The TLS helpers without sockets: certificates, pins, files, and how the CLI picks its trust."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgefleet.cli import config as cli_config
from edgefleet.tls import (
    ClientTrust,
    TlsError,
    ca_hash,
    create_ca,
    ensure_pki,
    hash_matches,
    issue_server_cert,
    load_cert,
    parse_ca_hash,
    server_tls,
)


def test_a_server_certificate_chains_to_its_ca_and_names_its_hosts(tmp_path: Path) -> None:
    ca = create_ca()
    server = issue_server_cert(ca, ["127.0.0.1", "cloud.example", "::1"])
    cert = load_cert(server.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n) for n in names.get_values_for_type(x509.DNSName)} == {"cloud.example"}
    assert {str(n) for n in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "edgefleet CA"),),)
    with pytest.raises(TlsError, match="at least one"):
        issue_server_cert(ca, [])


def test_the_pin_is_the_sha256_of_the_public_key() -> None:
    ca, other = create_ca(), create_ca()
    pin = ca_hash(ca.cert_pem)
    assert pin.startswith("sha256:") and len(pin) == 7 + 64
    assert hash_matches(ca.cert_pem, pin.upper().replace("SHA256", "sha256"))
    assert not hash_matches(other.cert_pem, pin)
    for bad in ("", "sha256:abc", "md5:" + "0" * 64, pin + "0"):
        with pytest.raises(TlsError, match="--ca-hash"):
            parse_ca_hash(bad)


def test_ensure_pki_writes_keys_0600_reuses_the_ca_and_reissues_for_new_hosts(tmp_path: Path) -> None:
    files = ensure_pki(tmp_path / "tls", ["127.0.0.1"])
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600
    ca, server = files.ca_cert.read_bytes(), files.server_cert.read_bytes()
    assert ensure_pki(tmp_path / "tls", ["127.0.0.1"]).server_cert.read_bytes() == server, "nothing to do"
    ensure_pki(tmp_path / "tls", ["127.0.0.1", "cloud.example"])
    assert files.ca_cert.read_bytes() == ca and files.server_cert.read_bytes() != server, "same CA, new SANs"
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=380)
    renewed = files.server_cert.read_bytes()
    ensure_pki(tmp_path / "tls", ["127.0.0.1"], now=later)
    assert files.server_cert.read_bytes() != renewed, "renewed before it expires"


def test_server_tls_checks_the_files_and_finds_the_ca(tmp_path: Path) -> None:
    files = ensure_pki(tmp_path, ["127.0.0.1"])
    assert server_tls(files.server_cert, files.server_key).ca_pem is None, "a lone leaf names no CA"
    assert server_tls(files.server_cert, files.server_key, files.ca_cert).ca_hash == ca_hash(files.ca_cert.read_bytes())
    chain = tmp_path / "chain.crt"
    chain.write_bytes(files.server_cert.read_bytes() + files.ca_cert.read_bytes())
    assert server_tls(chain, files.server_key).ca_pem == load_cert(files.ca_cert.read_bytes()).public_bytes(
        serialization.Encoding.PEM
    )
    with pytest.raises(TlsError, match="--tls-cert"):
        server_tls(files.ca_key, files.server_key)
    with pytest.raises(TlsError, match="--tls-key"):
        server_tls(files.server_cert, files.ca_key)


def test_cleartext_needs_insecure() -> None:
    with pytest.raises(TlsError, match=r"cleartext to http://cloud:7440.*--insecure"):
        ClientTrust().check_url("http://cloud:7440")
    ClientTrust().check_url("https://cloud:7440")
    ClientTrust(insecure=True).check_url("http://cloud:7440")


def test_the_cli_takes_the_ca_from_the_environment_else_the_context_of_that_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(tmp_path / "config.yaml"))
    for name in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN", "EDGEFLEET_CA_FILE", "EDGEFLEET_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    data = cli_config.load_config()
    cli_config.set_context(data, "lab", "https://lab:7440", "t", ca_file=tmp_path / "lab-ca.crt")
    cli_config.set_context(data, "old", "http://old:7440", "t", insecure=True)
    data["current-context"] = "lab"
    cli_config.save_config(data)
    assert cli_config.resolve(None, None, None).trust.ca_file == tmp_path / "lab-ca.crt"
    assert cli_config.resolve("https://other:7440", None, None).trust.ca_file is None, "not that server's CA"
    assert cli_config.resolve(None, None, "old").trust.insecure
    with pytest.raises(cli_config.ConfigError, match="EDGEFLEET_INSECURE=1"):
        cli_config.resolve("http://other:7440", None, None)
    monkeypatch.setenv("EDGEFLEET_CA_FILE", "/env/ca.crt")
    assert cli_config.resolve(None, None, None).trust.ca_file == Path("/env/ca.crt")
    monkeypatch.setenv("EDGEFLEET_INSECURE", "1")
    assert cli_config.resolve("http://other:7440", None, None).trust.insecure
