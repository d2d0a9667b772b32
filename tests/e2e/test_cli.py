"""The CLI as an operator uses it, against a real cloud process.

One cloud for the module (starting one costs more CPU than most tests here
use), and every test starts from a store without the objects the tests
make: :func:`cloud` deletes them after each test.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cloudproc import EDGEFLEET, CloudProcess, delete_objects, running_cloud

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MADE_HERE = ("workloads", "domains", "nodes", "probetargets", "clusterinfos", "sites")
"""The kinds these tests create (examples/ and the Sites below), dependents first."""


@pytest.fixture(scope="module")
def shared_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    data = tmp_path_factory.mktemp("cli-cloud")
    with running_cloud(f"sqlite:///{data}/store.db", data) as proc:
        yield proc


@pytest.fixture
def cloud(shared_cloud: CloudProcess) -> Iterator[CloudProcess]:
    """The module's cloud; what a test made is deleted after it, so the next one starts without it."""
    yield shared_cloud
    delete_objects(shared_cloud, MADE_HERE)


SITE = """\
apiVersion: edgefleet.io/v1
kind: Site
metadata:
  name: {name}
  labels: {{env: {env}}}
spec:
  region: eu-west
  location: {{lat: 48.8, lon: 2.3, country: FR}}
  tier: edge
  capacityGbps: {capacity}
"""


def run(
    cloud: CloudProcess, tmp_path: Path, *args: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": token or cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        "COLUMNS": "200",
        **cloud.cli_env,
    }
    return subprocess.run(
        [EDGEFLEET, *args], capture_output=True, text=True, env=env, input=stdin, timeout=60, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_apply_examples_then_get_describe_delete(cloud: CloudProcess, tmp_path: Path) -> None:
    first = ok(run(cloud, tmp_path, "apply", "-f", str(EXAMPLES)))
    assert "created" in first and "configured" not in first
    again = ok(run(cloud, tmp_path, "apply", "-f", str(EXAMPLES)))
    assert again.count("unchanged") == first.count("created")
    for kind in ("sites", "nodes", "domains", "workloads"):
        table = ok(run(cloud, tmp_path, "get", kind))
        assert table.splitlines()[0].split()[0] == "NAME"
        assert "AGE" in table.splitlines()[0]
        listing = json.loads(ok(run(cloud, tmp_path, "get", kind, "-o", "json")))
        assert listing["items"], kind
        name = listing["items"][0]["metadata"]["name"]
        assert name in ok(run(cloud, tmp_path, "get", kind, "-o", "wide"))
        one = yaml.safe_load(ok(run(cloud, tmp_path, "get", kind, name, "-o", "yaml")))
        assert one["metadata"]["name"] == name
        described = ok(run(cloud, tmp_path, "describe", kind, name))
        assert f"Name:              {name}" in described and "Spec:" in described
    deleted = ok(run(cloud, tmp_path, "delete", "-f", str(EXAMPLES)))
    assert deleted.count("deleted") == first.count("created")
    assert "No sites found" in ok(run(cloud, tmp_path, "get", "sites"))


def test_apply_reports_created_configured_unchanged(cloud: CloudProcess, tmp_path: Path) -> None:
    manifest = tmp_path / "site.yaml"
    manifest.write_text(
        SITE.format(name="paris", env="prod", capacity=10) + "---\n" + SITE.format(name="lyon", env="dev", capacity=5)
    )
    assert ok(run(cloud, tmp_path, "apply", "-f", str(manifest))).split("\n")[:2] == [
        "site/paris created",
        "site/lyon created",
    ]
    manifest.write_text(
        SITE.format(name="paris", env="prod", capacity=20) + "---\n" + SITE.format(name="lyon", env="dev", capacity=5)
    )
    out = ok(run(cloud, tmp_path, "apply", "-f", str(manifest)))
    assert "site/paris configured" in out and "site/lyon unchanged" in out
    from_stdin = ok(run(cloud, tmp_path, "apply", "-f", "-", stdin=SITE.format(name="nice", env="x", capacity=1)))
    assert "site/nice created" in from_stdin
    selected = ok(run(cloud, tmp_path, "get", "site", "-l", "env=prod", "-o", "name"))
    assert selected.split() == ["site/paris"]


def sites_json(cloud: CloudProcess, tmp_path: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(ok(run(cloud, tmp_path, "get", "sites", "-o", "json")))["items"]
    return items


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Site\n  bad: [indent", "invalid YAML at line"),
        ("apiVersion: edgefleet.io/v1\nkind: Gadget\nmetadata: {name: x}\nspec: {}\n", "unknown kind 'Gadget'"),
        (
            SITE.format(name="x", env="a", capacity=1).replace("tier: edge", "tier: edge\n  colour: red"),
            "spec.colour: unknown field",
        ),
        (SITE.format(name="x", env="a", capacity="'lots'"), "spec.capacityGbps"),
        (SITE.format(name="x" * 254, env="a", capacity=1), "metadata.name"),
    ],
)
def test_bad_manifest_is_an_error_and_applies_nothing(
    cloud: CloudProcess, tmp_path: Path, text: str, expected: str
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(SITE.format(name="good", env="a", capacity=1) + "---\n" + text)
    result = run(cloud, tmp_path, "apply", "-f", str(manifest))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert "nothing was applied" in result.stderr
    assert sites_json(cloud, tmp_path) == []


def test_wrong_token_and_viewer_errors(cloud: CloudProcess, tmp_path: Path) -> None:
    result = run(cloud, tmp_path, "get", "sites", token="abcdef.00000000000000000000000000000000")
    assert result.returncode == 1
    assert "unknown or revoked token" in result.stderr and "EDGEFLEET_TOKEN" in result.stderr
    result = run(cloud, tmp_path, "get", "gadgets")
    assert result.returncode == 1 and "unknown resource type 'gadgets'" in result.stderr
    result = run(cloud, tmp_path, "get", "sites", "nowhere")
    assert result.returncode == 1 and "not found" in result.stderr


def test_unreachable_server_says_what_to_do(cloud: CloudProcess, tmp_path: Path) -> None:
    env = {**os.environ, "EDGEFLEET_CONFIG": str(tmp_path / "c.yaml"), **cloud.cli_env}
    result = subprocess.run(
        [EDGEFLEET, "get", "sites", "--server", "http://127.0.0.1:1", "--token", cloud.token],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach the edgefleet server at http://127.0.0.1:1" in result.stderr
    assert "--server" in result.stderr


def test_contexts(cloud: CloudProcess, tmp_path: Path) -> None:
    env = {**os.environ, "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml")}
    env.pop("EDGEFLEET_SERVER", None)
    env.pop("EDGEFLEET_TOKEN", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, env=env, timeout=30, check=False)

    assert (
        cli(
            "config", "set-context", "lab", "--server", cloud.url, "--token", cloud.token, "--use", "--insecure"
        ).returncode
        == 0
    )
    assert oct((tmp_path / "config.yaml").stat().st_mode & 0o777) == "0o600"
    assert "No sites found" in cli("get", "sites").stdout
    assert "REDACTED" in cli("config", "view").stdout and cloud.token not in cli("config", "view").stdout
    assert "* lab" in cli("config", "get-contexts").stdout
    missing = cli("get", "sites", "--context", "nope")
    assert missing.returncode == 1 and "no context 'nope'" in missing.stderr
    version = cli("version")
    assert version.returncode == 0 and "server: " in version.stdout


def test_help_explains(tmp_path: Path) -> None:
    result = subprocess.run([EDGEFLEET, "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    for command in ("cloud", "apply", "get", "describe", "delete", "version", "config"):
        assert command in result.stdout
