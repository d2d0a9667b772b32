"""``edgefleet config``: contexts (a server, its token and how to trust it), like ``kubectl config``.

How: thin typer commands over :mod:`edgefleet.cli.config`, which reads and
writes the config file (mode 0600: it holds tokens) and documents the
precedence of flags, environment and contexts. They never contact a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from edgefleet.cli import config as cli_config
from edgefleet.cli.common import fail

config_app = typer.Typer(help="Manage CLI contexts (server + token), like kubectl config.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``config`` group to the ``edgefleet`` app."""
    app.add_typer(config_app, name="config")


@config_app.command("set-context")
def set_context(
    name: Annotated[str, typer.Argument(help="Context name")],
    server: Annotated[str, typer.Option(help="API server URL")] = cli_config.DEFAULT_SERVER,
    token: Annotated[str | None, typer.Option(help="Bearer token")] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context")] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(help="CA certificate the server's certificate must chain to (alone; default: the system's CAs)"),
    ] = None,
    insecure: Annotated[
        bool | None,
        typer.Option(
            "--insecure/--no-insecure",
            help="Allow a cleartext http:// server (the token crosses the network in the clear)",
        ),
    ] = None,
) -> None:
    """Create or update a context (file mode 0600: it holds the token)."""
    data = _config()
    if ca_file is not None and not ca_file.is_file():
        fail(f"--ca-file {ca_file}: no such file")
    cli_config.set_context(data, name, server, token, ca_file=ca_file, insecure=insecure)
    if use or not data.get("current-context"):
        data["current-context"] = name
    typer.echo(f"context {name!r} saved in {cli_config.save_config(data)}")


@config_app.command("use-context")
def use_context(name: Annotated[str, typer.Argument(help="Context name")]) -> None:
    """Make a context the current one."""
    data = _config()
    if cli_config.find_context(data, name) is None:
        fail(f"no context {name!r}; create it with `edgefleet config set-context {name} --server URL --token T`")
    data["current-context"] = name
    cli_config.save_config(data)
    typer.echo(f"switched to context {name!r}")


@config_app.command("get-contexts")
def get_contexts() -> None:
    """List contexts; the current one is marked with *."""
    data = _config()
    current = data.get("current-context")
    for context in data["contexts"]:
        mark = "*" if context.get("name") == current else " "
        typer.echo(f"{mark} {context.get('name')}\t{context.get('server')}")


@config_app.command("view")
def view_config() -> None:
    """Print the config file with tokens hidden."""
    data = _config()
    for context in data["contexts"]:
        if context.get("token"):
            context["token"] = "REDACTED"
    typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def _config() -> dict[str, Any]:
    try:
        return cli_config.load_config()
    except cli_config.ConfigError as exc:
        fail(str(exc))
