"""``edgefleet rules test --file``: the caches' engine explains a manifest's rules, without a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from edgefleet.cache.policy.rules import sign_path
from edgefleet.cli.main import app

ENV = {"EDGEFLEET_CONFIG": "/nonexistent/config.yaml", "COLUMNS": "200", "EDGEFLEET_SERVER": "", "EDGEFLEET_TOKEN": ""}
ROOT = Path(__file__).resolve().parents[2]
RULES: list[dict[str, Any]] = [
    {
        "name": "old-blog",
        "match": {"path": {"regex": "^/blog/(.*)$"}},
        "actions": [{"redirect": {"status": 301, "location": "https://${host}/posts/${1}"}}],
    },
    {
        "name": "api-v1",
        "match": {"path": {"prefix": "/v1/"}},
        "actions": [
            {"rewrite": {"path": "/api${path}"}},
            {"requestHeaders": {"set": {"X-From": "edge"}}},
            {"cache": {"ttl": 60, "key": {"headers": ["X-Device"]}}},
        ],
    },
    {
        "name": "dutch",
        "match": {"country": {"oneOf": ["NL"]}},
        "actions": [{"responseHeaders": {"set": {"X-Country": "${country}"}}}],
    },
    {
        "name": "signed",
        "match": {"path": {"prefix": "/video/"}},
        "actions": [{"tokenAuth": {"keys": [{"secret": "video-keys", "key": "current"}]}}],
    },
]


def manifest(tmp_path: Path, rules: list[dict[str, Any]] = RULES) -> Path:
    path = tmp_path / "shop.yaml"
    document = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {"hostnames": ["www.example.com"], "origins": [{"url": "http://o.example"}], "rules": rules},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def run(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["rules", "test", "shop", "-f", str(manifest(tmp_path)), *args], env=ENV)


def test_a_rewrite_with_headers_and_key_additions_is_explained(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "--url",
        "http://www.example.com/v1/users?x=1",
        "-H",
        "X-Device=mobile",
        "--client",
        "127.0.2.9",
        "--geo",
        str(ROOT / "examples" / "geo.csv"),
    )
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[0]: line.split()[2]
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] in {"old-blog", "api-v1", "dutch", "signed"}
    }
    assert rows == {"old-blog": "no", "api-v1": "yes", "dutch": "yes", "signed": "no"}
    assert "outcome: served from the cache or the origin as /api/v1/users?x=1 (rewritten)" in result.stdout
    assert "cache key adds: rules:h.x-device=mobile" in result.stdout
    assert "to upstream: set X-From: edge" in result.stdout
    assert "to client: set X-Country: NL" in result.stdout


def test_json_output_of_a_redirect(tmp_path: Path) -> None:
    result = run(tmp_path, "--url", "https://www.example.com/blog/hello", "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["outcome"] == {
        "action": "respond",
        "status": 301,
        "reason": "redirect",
        "headers": ["Location: https://www.example.com/posts/hello", "Content-Type: text/plain; charset=utf-8"],
    }
    assert [(r["name"], r["matched"], r["evaluated"]) for r in document["rules"]] == [
        ("old-blog", True, True),
        ("api-v1", False, False),
        ("dutch", False, False),
        ("signed", False, False),
    ]


def test_token_checks_without_a_server_are_reported_unknown(tmp_path: Path) -> None:
    result = run(tmp_path, "--url", "http://www.example.com/video/a.mp4", "-o", "yaml")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert document["outcome"]["action"] == "serve"
    assert any("token checks are skipped" in note for note in document["notes"])


def test_at_sets_the_clock_for_signed_urls(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"actions": [{"deny": {"status": 451}}], "match": {"path": {"exact": "/x"}}}])
    result = CliRunner().invoke(
        app,
        [
            "rules",
            "test",
            "shop",
            "-f",
            str(path),
            "--url",
            "http://www.example.com/x",
            "--at",
            "2030-01-01T00:00:00Z",
            "-o",
            "json",
        ],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["at"] == "2030-01-01T00:00:00Z"
    assert sign_path("k", "/x", 1) != sign_path("k", "/x", 2)


def test_bad_input_says_what_to_fix(tmp_path: Path) -> None:
    cases = [
        (["--url", "ftp://www.example.com/"], "only http and https URLs"),
        (["--url", "/no-host"], "give an absolute URL"),
        (["--url", "http://www.example.com/", "--client", "nope"], "--client 'nope' is not an IP address"),
        (["--url", "http://www.example.com/", "-H", "novalue"], "write NAME=VALUE"),
        (["--url", "http://www.example.com/", "--at", "yesterday"], "not an RFC 3339 timestamp"),
        (["--url", "http://www.example.com/", "-o", "xml"], "unknown output format"),
    ]
    for args, message in cases:
        result = run(tmp_path, *args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.stderr)
    other = CliRunner().invoke(
        app, ["rules", "test", "other", "-f", str(manifest(tmp_path)), "--url", "http://a.example/"], env=ENV
    )
    assert other.exit_code == 1 and "no Domain named 'other'" in other.stderr and "shop" in other.stderr
    bad = manifest(tmp_path, [{"match": {"path": {"regex": "(a+)+"}}, "actions": [{"deny": {}}]}])
    refused = CliRunner().invoke(app, ["rules", "test", "shop", "-f", str(bad), "--url", "http://a.example/"], env=ENV)
    assert refused.exit_code == 1 and "spec.rules[0].match.path.regex" in refused.stderr
