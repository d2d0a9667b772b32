"""The agent renders TLS for the cache: Domains' tls, the certificate files it writes, tlsListen."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cache.config import load_config
from edgefleet.edge import cacheconfig
from edgefleet.edge.cacheconfig import CONFIG_FILE, BuiltinCache, render_cache_config

from .test_cacheconfig import CACHE, WORKDIR, domain, fleet_view, template

Doc = dict[str, Any]


def certificate(name: str, chain: str = "CHAIN-1", key: str = "KEY-1") -> Doc:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {"certificate": chain, "key": key},
    }


def tls_view(*certificates: Doc, cert_name: str = "shop-cert") -> list[Doc]:
    view = [d for d in fleet_view() if d["kind"] != "Domain"]
    tls = {"certificate": cert_name, "redirectHttp": True, "minVersion": "1.3"}
    return [*view, domain("shop", "www.shop.example", tls=tls), domain("blog", "blog.example"), *certificates]


def test_a_domain_with_tls_gets_its_certificate_files_and_the_https_listener() -> None:
    config = render_cache_config("par-1", tls_view(certificate("shop-cert")), CACHE, WORKDIR)
    assert config.tls_listen == "127.0.0.1:8443"
    shop = next(d for d in config.domains if d.name == "shop")
    assert shop.tls is not None and (shop.tls.certificate, shop.tls.redirect_http, shop.tls.min_version) == (
        "shop-cert",
        True,
        "1.3",
    )
    assert next(d for d in config.domains if d.name == "blog").tls is None
    [files] = config.certificates
    assert files.name == "shop-cert" and files.fingerprint is not None and files.fingerprint.startswith("sha256:")
    assert files.cert_file.is_absolute() and files.cert_file.parent == WORKDIR / "certs"
    assert files.key_file.parent == WORKDIR / "certs" and files.key_file.suffix == ".key"


def test_the_https_port_comes_from_the_template() -> None:
    ports = [{"name": "http", "port": 8081}, {"name": "admin", "port": 9081}, {"name": "https", "port": 9443}]
    config = render_cache_config("par-1", tls_view(certificate("shop-cert")), template(ports=ports), WORKDIR)
    assert config.tls_listen == "127.0.0.1:9443"


def test_a_rotation_changes_the_fingerprint_and_the_file_names() -> None:
    old = render_cache_config("par-1", tls_view(certificate("shop-cert")), CACHE, WORKDIR)
    new = render_cache_config("par-1", tls_view(certificate("shop-cert", "CHAIN-2", "KEY-2")), CACHE, WORKDIR)
    assert old.certificates[0].fingerprint != new.certificates[0].fingerprint
    assert old.certificates[0].cert_file != new.certificates[0].cert_file


def test_a_domain_whose_certificate_is_not_in_the_view_is_served_without_tls(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cacheconfig, "_warned", {})
    with caplog.at_level(logging.WARNING, "edgefleet.edge.cache"):
        config = render_cache_config("par-1", tls_view(certificate("unrelated")), CACHE, WORKDIR)
        render_cache_config("par-1", tls_view(certificate("unrelated")), CACHE, WORKDIR)
    assert [d.tls for d in config.domains] == [None, None]
    assert config.tls_listen is None and config.certificates == []
    assert caplog.text.count("certificate shop-cert is not in this node's view") == 1, "not on every render"


def test_sync_writes_private_key_files_before_the_config_and_removes_rotated_ones(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    cache.update_view(tls_view(certificate("shop-cert")))
    first = cache.sync("cache", CACHE, tmp_path)
    [files] = load_config(tmp_path / CONFIG_FILE).certificates
    assert files.cert_file.read_text() == "CHAIN-1" and files.key_file.read_text() == "KEY-1"
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.cert_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(files.key_file.parent.stat().st_mode) == 0o700
    # Rotation: new files, a new config text (so a reload), the old pair gone.
    cache.update_view(tls_view(certificate("shop-cert", "CHAIN-2", "KEY-2")))
    second = cache.sync("cache", CACHE, tmp_path)
    assert second != first
    [rotated] = load_config(tmp_path / CONFIG_FILE).certificates
    assert rotated.key_file.read_text() == "KEY-2"
    kept = sorted([rotated.cert_file.name, rotated.key_file.name, files.cert_file.name, files.key_file.name])
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == kept, "the pair before too, in case"
    cache.update_view(tls_view(certificate("shop-cert", "CHAIN-3", "KEY-3")))
    cache.sync("cache", CACHE, tmp_path)
    [third] = load_config(tmp_path / CONFIG_FILE).certificates
    assert not files.key_file.exists() and rotated.key_file.exists() and third.key_file.exists()
    # The domain stops using TLS: the files go too.
    cache.update_view([d for d in tls_view() if d["kind"] != "Certificate"])
    cache.sync("cache", CACHE, tmp_path)
    assert list((tmp_path / "certs").iterdir()) == []


def test_without_a_view_the_kept_config_keeps_its_files(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    cache.update_view(tls_view(certificate("shop-cert")))
    first = cache.sync("cache", CACHE, tmp_path)
    cache.update_view([])
    assert cache.sync("cache", CACHE, tmp_path) == first
    [files] = load_config(tmp_path / CONFIG_FILE).certificates
    assert files.key_file.read_text() == "KEY-1"
