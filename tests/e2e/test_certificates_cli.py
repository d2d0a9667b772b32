"""``edgefleet certificate create`` and ``edgefleet get certificates`` against a real cloud process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.cli.test_startup import LIST_MODULES_AT_EXIT
from tests.cloudproc import EDGEFLEET, CloudProcess
from tests.pemfiles import Issued, issue
from tests.waiting import wait_until


def run(cloud: CloudProcess, tmp_path: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": token or cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        "COLUMNS": "200",
        **cloud.cli_env,
    }
    return subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def pem_files(tmp_path: Path, issued: Issued, tag: str) -> tuple[str, str]:
    cert, key = tmp_path / f"{tag}.crt", tmp_path / f"{tag}.key"
    cert.write_text(issued.chain)
    key.write_text(issued.key)
    return str(cert), str(key)


def test_create_rotate_and_list_certificates(cloud: CloudProcess, tmp_path: Path) -> None:
    first = issue(["www.shop.example", "*.shop.example"])
    cert, key = pem_files(tmp_path, first, "first")
    manifest = yaml.safe_load(
        ok(run(cloud, tmp_path, "certificate", "create", "shop", "--cert", cert, "--key", key, "--dry-run"))
    )
    assert manifest["spec"] == {"certificate": first.chain, "key": first.key}
    assert "created" in ok(run(cloud, tmp_path, "certificate", "create", "shop", "--cert", cert, "--key", key))
    again = run(cloud, tmp_path, "certificate", "create", "shop", "--cert", cert, "--key", key)
    assert again.returncode == 1 and "certificate/shop exists" in again.stderr and "--replace" in again.stderr
    # A key of another certificate: the cloud refuses it, naming the field.
    _, wrong_key = pem_files(tmp_path, issue(["www.shop.example"]), "other")
    wrong = run(cloud, tmp_path, "certificate", "create", "bad", "--cert", cert, "--key", wrong_key)
    assert wrong.returncode == 1 and "spec.key: does not match the leaf certificate" in wrong.stderr

    # The controller fills the status that `get` shows (no PEM parsing in the CLI).
    table = wait_until(
        lambda: (text := ok(run(cloud, tmp_path, "get", "certificates"))) and "www.shop.example" in text and text,
        timeout=30,
    )
    header, row = (line.split() for line in table.splitlines() if line.split() and line.split()[0] in ("NAME", "shop"))
    assert header[:6] == ["NAME", "DNS-NAMES", "NOT-AFTER", "DAYS", "DOMAINS", "AGE"]
    assert row[0] == "shop" and row[1] == "www.shop.example,*.shop.example" and 390 <= int(row[3]) <= 397

    # `get` parses each Certificate with the model but never loads cryptography (start-up time).
    env = {**os.environ, "EDGEFLEET_SERVER": cloud.url, "EDGEFLEET_TOKEN": cloud.token, **cloud.cli_env}
    env["EDGEFLEET_CONFIG"] = str(tmp_path / "config.yaml")
    listed = subprocess.run(
        [sys.executable, "-c", LIST_MODULES_AT_EXIT, "get", "certificates"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0 and "www.shop.example" in listed.stdout, listed.stderr
    modules = next(line.split()[1:] for line in listed.stderr.splitlines() if line.startswith("MODULES "))
    assert "edgefleet.api.certificates" in modules and not any(m.startswith("cryptography") for m in modules)

    # Rotation keeps the name; the status follows the new PEM.
    second = issue(["www.shop.example"])
    cert2, key2 = pem_files(tmp_path, second, "second")
    assert "replaced" in ok(
        run(cloud, tmp_path, "certificate", "create", "shop", "--cert", cert2, "--key", key2, "--replace")
    )
    wait_until(
        lambda: (
            json.loads(ok(run(cloud, tmp_path, "get", "certificate", "shop", "-o", "json")))["status"].get("dnsNames")
            == ["www.shop.example"]
        ),
        timeout=30,
    )

    # A viewer reads everything but the key.
    viewer = ok(run(cloud, tmp_path, "token", "create", "--role", "viewer")).strip()
    shown = yaml.safe_load(ok(run(cloud, tmp_path, "get", "cert", "shop", "-o", "yaml", token=viewer)))
    assert shown["spec"]["key"] == "<redacted>" and shown["spec"]["certificate"] == second.chain
    assert second.key.splitlines()[1] not in ok(run(cloud, tmp_path, "get", "certificates", "-o", "json", token=viewer))
