"""TLS termination in the cache: certificates by SNI, minVersion, redirectHttp, reload, resumption, hostile input.

Against real ``edgefleet cache`` processes and the demo origin (tests/cacheproc.py), with certificates made
here by a throwaway CA (:mod:`edgefleet.tls`). One cache serves the read-only tests of the module; the
reload tests start their own. The SNI rules and the redirect answer are also tested as the pure functions
they are, without processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from edgefleet.cache.config import CacheConfig, DomainConfig, parse_config
from edgefleet.cache.errors import CacheError, ConfigError
from edgefleet.cache.front.redirects import https_location, redirect_bytes
from edgefleet.cache.front.tls import check_certificates, read_certificate
from edgefleet.cache.policy.domains import DomainTable
from edgefleet.cache.policy.sni import CertificateNames, SniChoice, SniTable
from edgefleet.cache.wire.http1 import Request
from edgefleet.tls import KeyPair, create_ca, issue_server_cert, load_cert
from tests.cache.figures import fresh_metric
from tests.cacheproc import CacheProcess, OriginProcess, RawConnection, RawResponse, cache_config, started
from tests.cloudproc import EDGEFLEET, free_port
from tests.waiting import wait_until

NAMES = {"alpha": ["alpha.test", "*.alpha.test"], "beta": ["beta.test"], "gamma": ["gamma.test"]}
"""Certificates and their SANs: alpha (default, the first) and beta belong to Domains; gamma to none."""


# --- helpers -------------------------------------------------------------------------------------------


@dataclass
class Pki:
    """A CA and certificate files in ``root`` (``<name>.crt``, ``<name>.key``)."""

    root: Path
    ca: KeyPair

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    def issue(self, name: str) -> int:
        """(Re)issue certificate ``name`` for its SANs; its serial."""
        pair = issue_server_cert(self.ca, NAMES[name])
        (self.root / f"{name}.key").write_bytes(pair.key_pem)
        (self.root / f"{name}.crt").write_bytes(pair.cert_pem)
        return load_cert(pair.cert_pem).serial_number

    def client(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if maximum is not None:
            context.maximum_version = maximum
        return context


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root, create_ca())
    pki.ca_file.write_bytes(pki.ca.cert_pem)
    for name in NAMES:
        pki.issue(name)
    return pki


def tls_config(origin: OriginProcess, pki: Pki, data_dir: Path, node: str) -> dict[str, Any]:
    """Domains demo (no TLS), alpha (redirectHttp) and beta (TLS 1.3 only); certificates alpha, beta, gamma."""
    config = cache_config(origin.url, data_dir, node=node, tlsListen=f"127.0.0.1:{free_port()}")
    config["storage"]["memoryObjectBytes"] = 65536  # larger hits come from the disk tier (sendfile in cleartext)
    config["limits"] = {"headerTimeout": 1.0}  # also the time a TLS handshake may take
    config["certificates"] = [
        {"name": name, "certFile": str(pki.root / f"{name}.crt"), "keyFile": str(pki.root / f"{name}.key")}
        for name in NAMES
    ]
    config["domains"] += [
        {
            "name": "alpha",
            "hostnames": ["alpha.test"],
            "origins": [{"url": origin.url}],
            "tls": {"certificate": "alpha", "redirectHttp": True},
        },
        {
            "name": "beta",
            "hostnames": ["beta.test"],
            "origins": [{"url": origin.url}],
            "tls": {"certificate": "beta", "minVersion": "1.3"},
        },
    ]
    return config


def tls_address(cache: CacheProcess) -> tuple[str, int]:
    host, _, port = cache.config["tlsListen"].rpartition(":")
    return host, int(port)


class TlsConnection(RawConnection):
    """A RawConnection over TLS, with the server name (None: no SNI) and session given."""

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        server_name: str | None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        plain = socket.create_connection(address, timeout=10)
        self.sock = context.wrap_socket(plain, server_hostname=server_name, session=session)
        self._buffer = b""
        self.eof = False

    def __enter__(self) -> TlsConnection:
        return self

    @property
    def tls(self) -> ssl.SSLSocket:
        assert isinstance(self.sock, ssl.SSLSocket)
        return self.sock

    def serial(self) -> int:
        der = self.tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def get(self, path: str, host: str) -> RawResponse:
        self.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return self.read_response()


def no_sni_context(pki: Pki) -> ssl.SSLContext:
    context = pki.client()
    context.check_hostname = False  # no name to check without SNI; the chain is still verified
    return context


def serial_of(pki: Pki, name: str) -> int:
    return load_cert((pki.root / f"{name}.crt").read_bytes()).serial_number


# --- one cache for the read-only tests ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_cache(origin: OriginProcess, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheProcess]:
    data = tmp_path_factory.mktemp("tls-cache")
    with started(CacheProcess(tls_config(origin, pki, data, "tls"), data)) as proc:
        yield proc


def test_https_hits_get_the_certificate_of_their_domain(tls_cache: CacheProcess, pki: Pki) -> None:
    context = pki.client()
    context.set_alpn_protocols(["h2", "http/1.1"])
    for host in ("alpha.test", "beta.test"):
        with TlsConnection(tls_address(tls_cache), context, host) as conn:
            miss, hit = conn.get(f"/bytes/1024/https-{host}", host), conn.get(f"/bytes/1024/https-{host}", host)
            assert conn.serial() == serial_of(pki, host.split(".")[0])
            assert conn.tls.version() == "TLSv1.3" and conn.tls.selected_alpn_protocol() == "http/1.1"
        assert miss.status == hit.status == 200 and len(hit.body) == 1024
        assert (miss.header("x-cache") or "").startswith("MISS") and hit.header("x-cache") == "HIT from tls"


def test_large_hits_from_disk_are_encrypted_too(tls_cache: CacheProcess, pki: Pki) -> None:
    """A disk hit is sent with sendfile(2) in cleartext; over TLS it must go through the TLS transport."""
    size = 1024 * 1024
    with TlsConnection(tls_address(tls_cache), pki.client(), "alpha.test") as conn:

        def disk_hit() -> bool:  # the first answers may come from the fill while it is being stored
            response = conn.get(f"/bytes/{size}/large-tls", "alpha.test")
            assert response.status == 200 and len(response.body) == size
            return (response.header("x-cache") or "").startswith("HIT")

        wait_until(disk_hit, what="a 1 MiB hit from the disk tier over TLS")
        assert conn.get("/bytes/10/after-large", "alpha.test").status == 200, "the TLS stream is intact"


def test_names_without_a_domain_get_a_covering_certificate_else_the_default(tls_cache: CacheProcess, pki: Pki) -> None:
    address = tls_address(tls_cache)
    with TlsConnection(address, pki.client(), "gamma.test") as conn:
        assert conn.serial() == serial_of(pki, "gamma"), "gamma's SAN covers it"
    with TlsConnection(address, pki.client(), "www.alpha.test") as conn:
        assert conn.serial() == serial_of(pki, "alpha"), "the wildcard SAN *.alpha.test covers it"
    with TlsConnection(address, no_sni_context(pki), None) as conn:
        assert conn.serial() == serial_of(pki, "alpha"), "no SNI: the first certificate"
        assert conn.get("/bytes/100/no-sni", "demo.test").status == 200
    with TlsConnection(address, no_sni_context(pki), "unknown.test") as conn:
        assert conn.serial() == serial_of(pki, "alpha")


def test_min_version_1_3_refuses_tls_1_2_for_that_name_only(tls_cache: CacheProcess, pki: Pki) -> None:
    address = tls_address(tls_cache)
    failures = fresh_metric(tls_cache, "edgefleet_cache_tls_handshake_failures_total")
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        TlsConnection(address, pki.client(ssl.TLSVersion.TLSv1_2), "beta.test") as refused,
    ):
        refused.get("/bytes/10/v12", "beta.test")
    with TlsConnection(address, pki.client(ssl.TLSVersion.TLSv1_2), "alpha.test") as conn:
        assert conn.tls.version() == "TLSv1.2" and conn.get("/bytes/10/v12", "alpha.test").status == 200
        assert (conn.tls.cipher() or ("",))[0].startswith("ECDHE-ECDSA-")  # nginx's suites: ECDHE, AEAD
    wait_until(
        lambda: fresh_metric(tls_cache, "edgefleet_cache_tls_handshake_failures_total") >= failures + 1,
        what="the refused handshake counted",
    )


def test_redirect_http_sends_cleartext_requests_to_https(tls_cache: CacheProcess, pki: Pki) -> None:
    port = tls_address(tls_cache)[1]
    with tls_cache.connect() as conn:
        conn.send(b"GET /a/b?c=1 HTTP/1.1\r\nHost: Alpha.test\r\n\r\n")
        moved = conn.read_response()
        conn.send(b"POST /form HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 2\r\n\r\nhi")
        posted = conn.read_response()
        conn.send(b"GET /bytes/10/plain HTTP/1.1\r\nHost: demo.test\r\n\r\n")
        plain = conn.read_response()
    assert moved.status == 301 and moved.header("location") == f"https://alpha.test:{port}/a/b?c=1"
    assert posted.status == 308 and posted.header("location") == f"https://alpha.test:{port}/form"
    assert plain.status == 200, "a Domain without tls is served in cleartext"
    with TlsConnection(tls_address(tls_cache), pki.client(), "alpha.test") as tls:
        assert tls.get("/a/b?c=1", "alpha.test").status == 404  # served (the origin has no such page), not moved
        assert tls.get("/bytes/10/redirected", "alpha.test").status == 200


def test_sessions_resume_on_the_same_worker(tls_cache: CacheProcess, pki: Pki) -> None:
    address = tls_address(tls_cache)
    for maximum in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        context = pki.client(maximum)
        with TlsConnection(address, context, "alpha.test") as first:
            first.get("/bytes/10/resume", "alpha.test")  # TLS 1.3 tickets come after the handshake
            session = first.tls.session
            assert not first.tls.session_reused
        with TlsConnection(address, context, "alpha.test", session) as second:
            assert second.tls.session_reused, f"{maximum.name}: the session was not resumed"
            assert second.get("/bytes/10/resume", "alpha.test").status == 200
    assert fresh_metric(tls_cache, "edgefleet_cache_tls_resumed_total") >= 2


def test_certificates_in_metrics_and_status(tls_cache: CacheProcess, pki: Pki) -> None:
    text = httpx.get(f"{tls_cache.admin_url}/metrics", timeout=5).text
    expiries = {
        line.partition('certificate="')[2].partition('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("edgefleet_cache_certificate_not_after_seconds{")
    }
    assert expiries == {
        name: load_cert((pki.root / f"{name}.crt").read_bytes()).not_valid_after_utc.timestamp() for name in NAMES
    }
    listed = tls_cache.status()["certificates"]
    assert [entry["name"] for entry in listed] == sorted(NAMES)
    assert all(entry["notAfter"].endswith("Z") for entry in listed)


def client_hello(server_name: str, tls10: bool = False) -> bytes:
    """The bytes of a real ClientHello for ``server_name`` (to be tampered with), TLS 1.0 only if asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls10:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # TLSv1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HOSTILE = {
    "garbage": os.urandom(2048),
    "http on the tls port": b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n",
    "non-ascii sni": client_hello("aaaa.test").replace(b"aaaa.test", b"\xff\xfe\xfd\xfc.test"),
    "truncated hello": client_hello("alpha.test")[:60],
    "tls 1.0 hello": client_hello("alpha.test", tls10=True),
    "nothing": b"",
}


def test_hostile_client_hellos_never_take_the_worker_down(tls_cache: CacheProcess, pki: Pki) -> None:
    workers = tls_cache.worker_pids()
    address = tls_address(tls_cache)
    failures = fresh_metric(tls_cache, "edgefleet_cache_tls_handshake_failures_total")
    for what, data in HOSTILE.items():
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        assert tls_cache.worker_pids() == workers, what
    long_name = ".".join(["a" * 60] * 4) + ".test"  # 249 + 5 characters: past a DNS name's 253
    with TlsConnection(address, no_sni_context(pki), long_name) as conn:
        assert conn.serial() == serial_of(pki, "alpha"), "too long a name: the default certificate"
    with TlsConnection(address, pki.client(), "alpha.test") as conn:
        assert conn.get("/bytes/10/after-hostile", "alpha.test").status == 200
    wait_until(
        lambda: fresh_metric(tls_cache, "edgefleet_cache_tls_handshake_failures_total") >= failures + len(HOSTILE),
        what="every hostile connection counted as a failed handshake",
    )
    assert "Traceback" not in tls_cache.log()


def test_a_stalled_handshake_is_cut_off(tls_cache: CacheProcess) -> None:
    failures = fresh_metric(tls_cache, "edgefleet_cache_tls_handshake_failures_total")
    with socket.create_connection(tls_address(tls_cache), timeout=10) as sock:
        sock.sendall(client_hello("alpha.test")[:20])  # and nothing more
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b"", "closed by the server (limits.headerTimeout: 1 s)"
    wait_until(
        lambda: fresh_metric(tls_cache, "edgefleet_cache_tls_handshake_failures_total") >= failures + 1,
        what="the stalled handshake counted",
    )


# --- reloads: each test its own cache ---------------------------------------------------------------------


def reload_with_fingerprint(cache: CacheProcess, mark: str) -> None:
    """SIGHUP with the config text changed, as the agent does when a certificate's files change."""
    config = dict(cache.config)
    config["certificates"] = [dict(entry, fingerprint=mark) for entry in config["certificates"]]
    cache.reload(config)


def test_rotation_reaches_new_connections_while_open_ones_go_on(origin: OriginProcess, tmp_path: Path) -> None:
    own = make_pki(tmp_path / "pki")
    with started(CacheProcess(tls_config(origin, own, tmp_path, "rot"), tmp_path)) as cache:
        address = tls_address(cache)
        context = own.client()  # a session resumes only with the context that made it
        with TlsConnection(address, context, "alpha.test") as kept:
            assert kept.get("/bytes/100/rotate", "alpha.test").status == 200
            old, session = kept.serial(), kept.tls.session
            new = own.issue("alpha")
            reload_with_fingerprint(cache, "rotated")

            def new_serial() -> bool:
                with TlsConnection(address, own.client(), "alpha.test") as conn:
                    return conn.serial() == new

            wait_until(new_serial, what="new connections get the rotated certificate")
            assert kept.get("/bytes/100/rotate", "alpha.test").status == 200, "the open connection goes on"
            assert kept.serial() == old
        with TlsConnection(address, context, "alpha.test", session) as resumed:
            assert resumed.tls.session_reused, "tickets outlive a certificate reload"


def test_a_broken_certificate_on_reload_keeps_the_previous_one(origin: OriginProcess, tmp_path: Path) -> None:
    own = make_pki(tmp_path / "pki")
    with started(CacheProcess(tls_config(origin, own, tmp_path, "broken"), tmp_path)) as cache:
        before = serial_of(own, "beta")
        (own.root / "beta.crt").write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        reload_with_fingerprint(cache, "broken")
        cache.wait_log("still serving the previous certificate 'beta'")
        assert fresh_metric(cache, "edgefleet_cache_certificate_load_failures_total") >= 1
        with TlsConnection(tls_address(cache), own.client(), "beta.test") as conn:
            assert conn.serial() == before
            assert conn.get("/bytes/10/kept", "beta.test").status == 200


def test_a_reload_opens_the_listener_once_certificates_arrive(origin: OriginProcess, tmp_path: Path) -> None:
    """The agent's flow: tlsListen rendered before any Domain of the node has a certificate."""
    own = make_pki(tmp_path / "pki")
    config = tls_config(origin, own, tmp_path, "later")
    certificates = config.pop("certificates")
    with started(CacheProcess(config, tmp_path)) as cache:
        cache.wait_log("no certificate is loaded: not serving TLS")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(tls_address(cache), timeout=5).close()
        cache.reload({**config, "certificates": certificates})

        def serves() -> bool:
            with TlsConnection(tls_address(cache), own.client(), "beta.test") as conn:
                return conn.get("/bytes/10/later", "beta.test").status == 200

        wait_until(serves, what="the TLS listener opened by the reload")


def test_start_fails_clearly_when_no_certificate_loads(origin: OriginProcess, tmp_path: Path) -> None:
    config = cache_config(origin.url, tmp_path, tlsListen=f"127.0.0.1:{free_port()}")
    config["certificates"] = [{"name": "gone", "certFile": "missing.crt", "keyFile": "missing.key"}]
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([EDGEFLEET, "cache", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no certificate could be loaded" in result.stderr and "missing.crt" in result.stderr


# --- the pure parts -------------------------------------------------------------------------------------


def domain(
    name: str, hosts: list[str], tls: dict[str, Any] | None = None, aliases: tuple[str, ...] = ()
) -> DomainConfig:
    return DomainConfig.model_validate(
        {
            "name": name,
            "hostnames": hosts,
            "aliases": list(aliases),
            "origins": [{"url": "http://127.0.0.1:1"}],
            "tls": tls,
        }
    )


def test_sni_rules() -> None:
    domains = DomainTable(
        [
            domain("shop", ["shop.test", "*.shop.test"], {"certificate": "shop", "minVersion": "1.3"}),
            domain("blog", ["blog.test"], {"certificate": "missing"}),
            domain("zone", ["zone.test"], {"certificate": "wild"}, aliases=("zone.cdn.test", "*.zone.cdn.test")),
        ]
    )
    table = SniTable(
        domains,
        [
            CertificateNames("first", ("first.test",)),
            CertificateNames("shop", ("shop.test",)),
            CertificateNames("wild", ("*.blog.test", "blog.test")),
        ],
    )
    assert table.choose("shop.test") == SniChoice("shop", "1.3")
    assert table.choose("EU.Shop.Test.") == SniChoice("shop", "1.3"), "wildcard hostname, any case, root dot"
    assert table.choose("a.zone.cdn.test") == SniChoice("wild", "1.2"), "aliases count as the Domain's names"
    assert table.choose("blog.test") == SniChoice("wild", "1.2"), "the Domain's certificate is not loaded: SANs"
    assert table.choose("www.blog.test") == SniChoice("wild", "1.2")
    assert table.choose("a.www.blog.test") == SniChoice("first", "1.2"), "a wildcard SAN covers one label"
    assert table.choose(None) == table.choose("") == table.choose("x" * 300) == SniChoice("first", "1.2")
    assert SniTable(domains, []).choose("shop.test") is None


def test_redirect_answer() -> None:
    assert https_location("a.test", "/x?y", 443) == "https://a.test/x?y"
    assert https_location("[::1]", "/", 8443) == "https://[::1]:8443/"
    head = Request("HEAD", "/p", [("Host", "a.test")], "a.test", False, "1.1")
    status, data, length = redirect_bytes(head, 8443, "n1")
    assert status == 301 and length > 0 and data.endswith(b"\r\n\r\n"), "no body to HEAD"
    assert b"Location: https://a.test:8443/p\r\n" in data and b"Connection: close\r\n" in data
    put = Request("PUT", "/p", [("Host", "a.test")], "a.test", True, "1.1")
    assert redirect_bytes(put, 443, "n1")[0] == 308


def test_certificate_loading_says_what_is_wrong(tmp_path: Path) -> None:
    own = make_pki(tmp_path)
    good = {"name": "alpha", "certFile": "alpha.crt", "keyFile": "alpha.key"}  # relative: to the config's directory
    mismatched = {"name": "mixed", "certFile": "alpha.crt", "keyFile": "beta.key"}
    missing = {"name": "gone", "certFile": "gone.crt", "keyFile": "gone.key"}
    config = CacheConfig.model_validate({"certificates": [good, mismatched, missing]})
    errors = check_certificates(config, own.root)
    assert len(errors) == 2
    assert "'mixed'" in errors[0] and "'gone'" in errors[1] and "cannot read certFile" in errors[1]
    loaded = read_certificate(config.certificates[0], own.root)
    assert loaded.sans == ("alpha.test", "*.alpha.test") and loaded.serial == serial_of(own, "alpha")
    assert read_certificate(config.certificates[0], own.root, loaded) is loaded, "unchanged files: reused"
    with pytest.raises(CacheError, match="no certificate could be loaded"):
        check_certificates(CacheConfig.model_validate({"certificates": [mismatched, missing]}), own.root)


def test_tls_listen_must_not_share_the_plain_port() -> None:
    with pytest.raises(ConfigError, match=r"tlsListen 0\.0\.0\.0:8081 overlaps listen"):
        parse_config({"listen": "127.0.0.1:8081", "tlsListen": "0.0.0.0:8081"})
    with pytest.raises(ConfigError, match="duplicate certificate 'a'"):
        parse_config({"certificates": [{"name": "a", "certFile": "a", "keyFile": "k"}] * 2})
    assert parse_config({"listen": "127.0.0.1:8081", "tlsListen": "127.0.0.1:8443"}).tls_listen == "127.0.0.1:8443"
