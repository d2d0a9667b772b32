"""docs/rules.md runs as printed: manifests pass the schema, commands print what the page shows.

How: the page's fenced blocks are read in order; every ``yaml`` block is parsed with the API's own
parser (each document must be valid), and every ``console`` block runs its ``edgefleet rules test``
command in this process on the ``yaml`` block above it (written to ``shop.yaml``) and must print exactly
the lines shown. The Python signing snippet must agree with the engine's ``sign_path``, and so must the
openssl one.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.api.meta import parse
from edgefleet.cache.policy.rules import sign_path
from edgefleet.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "rules.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PROMPT = "$ edgefleet rules test "
ENV = {"EDGEFLEET_CONFIG": "/nonexistent/config.yaml", "EDGEFLEET_SERVER": "", "EDGEFLEET_TOKEN": ""}


def blocks() -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in BLOCK.finditer(PAGE.read_text())]


def console_cases() -> list[tuple[str, str, list[str]]]:
    """(manifest, command, expected output lines) for every console block."""
    cases: list[tuple[str, str, list[str]]] = []
    manifest = ""
    for kind, text in blocks():
        if kind == "yaml":
            manifest = text
        elif kind == "console":
            command, *output = text.rstrip("\n").split("\n")
            assert command.startswith(PROMPT) and manifest, command
            cases.append((manifest, command[len(PROMPT) :], output))
    return cases


def test_the_page_has_the_worked_examples() -> None:
    titles = re.findall(r"^## Example: (.*)$", PAGE.read_text(), re.MULTILINE)
    assert titles == [
        "redirect old URLs",
        "signed URLs",
        "an A/B split",
        "a rate limit",
        "CORS preflight",
        "header control",
    ]
    assert len(console_cases()) >= 8


def test_every_manifest_is_valid() -> None:
    manifests = [text for kind, text in blocks() if kind == "yaml"]
    assert manifests
    for text in manifests:
        for document in yaml.safe_load_all(text):
            parse(document)


@pytest.mark.parametrize(
    ("manifest", "command", "expected"),
    [pytest.param(*case, id=f"command{number}") for number, case in enumerate(console_cases(), start=1)],
)
def test_every_command_prints_what_the_page_shows(
    manifest: str, command: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the default geo table, examples/geo.csv, as when run from a checkout
    (tmp_path / "shop.yaml").write_text(manifest)
    args = [arg if arg != "shop.yaml" else str(tmp_path / "shop.yaml") for arg in shlex.split(command)]
    result = CliRunner().invoke(app, ["rules", "test", *args], env=ENV)
    assert result.exit_code == 0, result.output
    assert [line.rstrip() for line in result.stdout.splitlines()] == expected


def signing_snippet(language: str) -> str:
    return next(text for kind, text in blocks() if kind == language and "expires" in text)


def test_the_python_signing_snippet_matches_the_engine() -> None:
    namespace: dict[str, object] = {}
    exec(signing_snippet("python"), namespace)
    url = namespace["signed"]("/video/intro.mp4", "k")  # type: ignore[operator]
    path, _, query = url.partition("?")
    expires, token = (pair.split("=")[1] for pair in query.split("&"))
    assert token == sign_path("k", path, int(expires))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_openssl_signing_snippet_matches_the_engine() -> None:
    url = subprocess.run(
        ["bash", "-c", signing_snippet("sh")],
        capture_output=True,
        text=True,
        env={"KEY": "k", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=30,
    ).stdout.strip()
    path, _, query = url.removeprefix("https://www.example.com").partition("?")
    expires, token = (pair.split("=")[1] for pair in query.split("&"))
    assert token == sign_path("k", path, int(expires))
