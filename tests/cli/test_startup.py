"""The CLI starts without what a command does not need, and its command table matches its modules.

How: ``python -m edgefleet`` (what the console script runs) runs in a
subprocess that lists the modules it imported when it exits; the tests
check that set (never the time: tests do not fail on speed). ``version --client`` must import no HTTP client, no model
library, no console library and none of the API models or the cloud;
``get nodes`` must not import the cloud, the agent, the cache or the GSLB,
nor the models of the other kinds (the registry imports only the kind
looked up; see ``edgefleet.api.kindtable``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import edgefleet
from edgefleet.api.kindtable import KIND_NAMES
from edgefleet.cli import main
from edgefleet.cli.main import COMMANDS, app
from edgefleet.cli.plainparams import coerce_plain, plain_params

NOT_FOR_VERSION = (
    "httpx",
    "pydantic",
    "pydantic_core",
    "rich",
    "yaml",
    "edgefleet.api",
    "edgefleet.cloud",
    "edgefleet.cli.client",
    "edgefleet.tls",
    "cryptography",
    "asyncio",
)
OTHER_KINDS = tuple(sorted({name.module for name in KIND_NAMES if name.kind != "Node"}))
NOT_FOR_GET = (
    "edgefleet.cloud",
    "edgefleet.edge",
    "edgefleet.cache",
    "edgefleet.gslb",
    "edgefleet.store",
    "edgefleet.sync",
    "edgefleet.cli.rollout",
    "edgefleet.cli.up",
    "fastapi",
    "uvicorn",
    "websockets",
    "aiohttp",
    "cryptography",
    "trio",
    "click",
    "pygments",
    "rich.progress",  # the last: httpx's CLI
    "edgefleet.api.kinds",
    "edgefleet.api.rollouts",
    "edgefleet.api.selectors",
    *OTHER_KINDS,
)


Run = subprocess.CompletedProcess[str]


LIST_MODULES_AT_EXIT = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('MODULES', *sorted(k for k, v in sys.modules.items() if v), file=sys.stderr))\n"
    "runpy.run_module('edgefleet', run_name='__main__')\n"
)


def imported_modules(*args: str, env: dict[str, str] | None = None) -> tuple[Run, set[str]]:
    """Run ``python -m edgefleet ARGS`` (what the console script runs); its result and the modules it imported."""
    result = subprocess.run(
        [sys.executable, "-c", LIST_MODULES_AT_EXIT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    listing = [line.split()[1:] for line in result.stderr.splitlines() if line.startswith("MODULES ")]
    assert len(listing) == 1 and "edgefleet.cli.main" in listing[0], result.stderr[-2000:]
    return result, set(listing[0])


def heavy(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(name + ".") for name in forbidden))


def test_version_client_imports_no_heavy_module() -> None:
    result, modules = imported_modules("version", "--client")
    assert result.returncode == 0 and result.stdout == f"client: {edgefleet.__version__}\n"
    assert heavy(modules, NOT_FOR_VERSION) == []


def test_version_asks_the_server_without_the_models() -> None:
    result, modules = imported_modules("version", "-s", "http://127.0.0.1:9", env={"EDGEFLEET_INSECURE": "1"})
    assert result.returncode == 1 and "error: cannot reach the edgefleet server at http://127.0.0.1:9" in result.stderr
    assert "httpx" in modules  # it got as far as the request
    assert heavy(modules, ("pydantic", "edgefleet.api", "trio", "click")) == []


def test_get_nodes_imports_the_client_but_no_model_and_not_the_servers(tmp_path: Path) -> None:
    env = {"EDGEFLEET_INSECURE": "1", "EDGEFLEET_CONFIG": str(tmp_path / "none.yaml")}
    result, modules = imported_modules("get", "nodes", "-s", "http://127.0.0.1:9", env=env)
    assert result.returncode == 1 and "error: cannot reach the edgefleet server at http://127.0.0.1:9" in result.stderr
    assert {"edgefleet.api.doccolumns", "edgefleet.cli.client", "httpx"} <= modules  # it got as far as the request
    assert heavy(modules, NOT_FOR_GET) == []
    # The table is read from the documents (edgefleet.api.doccolumns): no model, not even the API base.
    assert heavy(modules, ("pydantic", "pydantic_core", "edgefleet.api.meta", "edgefleet.api.nodes")) == []
    assert heavy(modules, ("yaml",)) == []  # no config file to read and a table to print: no YAML parser


def registered(module_name: str) -> set[str]:
    holder = main.load(next(name for name, module in COMMANDS.items() if module == module_name))
    commands = {info.name or info.callback.__name__ for info in holder.registered_commands if info.callback}
    return commands | {info.name for info in holder.registered_groups if info.name}


@pytest.mark.parametrize("module_name", sorted(set(COMMANDS.values())))
def test_command_table_names_what_each_module_registers(module_name: str) -> None:
    assert registered(module_name) == {name for name, module in COMMANDS.items() if module == module_name}


def test_every_command_of_the_table_resolves() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    ctx = typer.Context(group)
    assert [name for name in COMMANDS if group.get_command(ctx, name) is None] == []
    assert group.list_commands(ctx) == [*COMMANDS, "version"]


def test_help_lists_every_command_and_shows_the_environment_variables() -> None:
    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    assert all(f" {name} " in text for name in [*COMMANDS, "version"]), text
    for command in (["get"], ["version"], ["rollout", "status"], ["token", "create"], ["purge"], ["logs"]):
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "env var: EDGEFLEET_SERVER" in result.stdout and "env var: EDGEFLEET_TOKEN" in result.stdout, command


def test_server_and_token_come_from_the_environment() -> None:
    result = CliRunner().invoke(
        app, ["get", "nodes"], env={"EDGEFLEET_SERVER": "ftp://nowhere", "EDGEFLEET_CONFIG": "/nonexistent/config.yaml"}
    )
    assert result.exit_code == 1 and "ftp://nowhere" in result.stderr, result.output


def test_a_mistyped_command_gets_a_suggestion_among_the_lazy_ones() -> None:
    result = CliRunner().invoke(app, ["rolout"])
    assert result.exit_code == 2 and "Did you mean 'rollout'" in result.output, result.output


def test_plain_coercion_of_strings_and_flags() -> None:
    assert coerce_plain(str, "a b") == "a b"
    assert coerce_plain(bool, True) is True
    assert [coerce_plain(bool, word) for word in ("1", "yes", " On ", "0", "no", "off", "")] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    with pytest.raises(typer.BadParameter):
        coerce_plain(bool, "maybe")
    with pytest.raises(typer.BadParameter):
        coerce_plain(str, 3)


def test_a_flag_from_an_environment_variable_is_parsed_as_a_word(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No flag of ours has an environment variable yet: check the plain coercion on a typer app."""
    demo = typer.Typer()

    @demo.command()
    def show(flag: bool = typer.Option(False, envvar="DEMO_FLAG"), name: str = "x") -> None:
        typer.echo(f"{flag} {name}")

    command = typer.main.get_command(demo)
    plain_params(command, typer.Context(command))
    monkeypatch.setenv("DEMO_FLAG", "yes")
    command.main([], standalone_mode=False)
    assert capsys.readouterr().out == "True x\n"
    monkeypatch.setenv("DEMO_FLAG", "maybe")
    with pytest.raises(typer.BadParameter, match="'maybe' is not a valid bool"):
        command.main([], standalone_mode=False)
