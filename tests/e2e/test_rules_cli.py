"""``edgefleet rules test`` against a real cloud process: the Domain and its Secret read over the API, as an
admin (the token check runs) and as a viewer (Secrets redacted: the check is skipped and said so)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner, Result

from edgefleet.cache.policy.rules import sign_path
from edgefleet.cli.main import app
from tests.cloudproc import CloudProcess, running_cloud

KEY = "s3cret-key"


def manifests() -> str:
    secret = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Secret",
        "metadata": {"name": "video-keys"},
        "spec": {"data": {"current": KEY}},
    }
    domain = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {
            "hostnames": ["www.example.com"],
            "origins": [{"url": "http://127.0.0.1:9"}],
            "rules": [
                {
                    "name": "signed",
                    "match": {"path": {"prefix": "/video/"}},
                    "actions": [{"tokenAuth": {"keys": [{"secret": "video-keys", "key": "current"}]}}],
                },
            ],
        },
    }
    return yaml.safe_dump_all([secret, domain])


def run(cloud: CloudProcess, tmp_path: Path, *args: str, token: str | None = None) -> Result:
    """The CLI in this process (its start-up would dominate the test) against the real cloud process."""
    env = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": token or cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        "COLUMNS": "200",
        **cloud.cli_env,
    }
    return CliRunner().invoke(app, list(args), env=env)


def outcome(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_signed_urls_checked_with_the_secret_for_admins_and_skipped_for_viewers(tmp_path: Path) -> None:
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path) as cloud:
        (tmp_path / "shop.yaml").write_text(manifests())
        applied = run(cloud, tmp_path, "apply", "-f", str(tmp_path / "shop.yaml"))
        assert applied.exit_code == 0, applied.stderr
        expires = int(time.time()) + 300
        good = f"http://www.example.com/video/a.mp4?expires={expires}&token={sign_path(KEY, '/video/a.mp4', expires)}"
        bad = f"http://www.example.com/video/a.mp4?expires={expires}&token={'0' * 64}"
        served = outcome(run(cloud, tmp_path, "rules", "test", "shop", "--url", good, "-o", "json"))
        assert served["outcome"]["action"] == "serve" and served["outcome"]["url"] == "/video/a.mp4"
        refused = outcome(run(cloud, tmp_path, "rules", "test", "shop", "--url", bad, "-o", "json"))
        assert (refused["outcome"]["status"], refused["outcome"]["reason"]) == (403, "token")
        assert refused["rules"][0]["actions"] == ["tokenAuth: 403: bad signature"]
        viewer = run(cloud, tmp_path, "token", "create", "--role", "viewer")
        assert viewer.exit_code == 0, viewer.stderr
        unknown = outcome(
            run(cloud, tmp_path, "rules", "test", "shop", "--url", bad, "-o", "json", token=viewer.stdout.strip())
        )
        assert unknown["outcome"]["action"] == "serve"
        assert any("redacted for this token (viewer)" in note for note in unknown["notes"])
        text = run(cloud, tmp_path, "rules", "test", "shop", "--url", bad)
        assert "outcome: the cache answers 403 itself (token)" in text.stdout
        missing = run(cloud, tmp_path, "rules", "test", "nope", "--url", bad)
        assert missing.exit_code == 1 and "not found" in missing.stderr
