"""``edgefleet certificate create`` without a server (--dry-run, bad files) and the apply order of Certificates."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from edgefleet.cli.main import app
from edgefleet.cli.manifests import in_apply_order, in_delete_order, load_manifests
from tests.pemfiles import certificate_manifest, issue

ENV = {"EDGEFLEET_CONFIG": "/nonexistent/config.yaml", "COLUMNS": "200"}


def test_dry_run_prints_the_manifest_with_the_pem_as_block_text(tmp_path: Path) -> None:
    issued = issue(["www.shop.example"])
    (tmp_path / "c.pem").write_text(issued.chain)
    (tmp_path / "k.pem").write_text(issued.key)
    args = ["certificate", "create", "shop", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")]
    result = CliRunner().invoke(app, [*args, "--dry-run"], env=ENV)
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert manifest == certificate_manifest("shop", issued)


def test_missing_or_huge_files_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    (tmp_path / "big.pem").write_bytes(b"x" * (64 * 1024 + 1))
    (tmp_path / "k.pem").write_text("key")
    missing = CliRunner().invoke(
        app, ["certificate", "create", "a", "--cert", str(tmp_path / "none.pem"), "--key", str(tmp_path / "k.pem")]
    )
    assert missing.exit_code == 1 and "cannot read the certificate" in missing.stderr
    huge = CliRunner().invoke(
        app, ["certificate", "create", "a", "--cert", str(tmp_path / "big.pem"), "--key", str(tmp_path / "k.pem")]
    )
    assert huge.exit_code == 1 and "a PEM certificate is at most 64 KiB" in huge.stderr


def test_apply_creates_certificates_before_the_domains_naming_them_and_deletes_them_after(tmp_path: Path) -> None:
    domain = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {
            "hostnames": ["www.shop.example"],
            "origins": [{"url": "http://127.0.0.1:8080"}],
            "tls": {"certificate": "shop-cert"},
        },
    }
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump_all([domain, certificate_manifest("shop-cert", issue(["www.shop.example"]))]))
    manifests = load_manifests([str(path)])
    assert [m.info.kind for m in in_apply_order(manifests)] == ["Certificate", "Domain"]
    assert [m.info.kind for m in in_delete_order(manifests)] == ["Domain", "Certificate"]
