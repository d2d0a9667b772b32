"""The ``edgefleet`` command line: the app and its table of commands.

How: typer commands that are thin wrappers, one module per family of
commands (:data:`COMMANDS` says which). A command resolves its connection
and turns refusals into one ``error:`` line with :mod:`edgefleet.cli.common`,
calls :class:`~edgefleet.cli.client.ApiClient` and prints with
:mod:`edgefleet.cli.output`. Every failure exits non-zero with one
``error:`` line that says what went wrong and what to do next; field
problems are listed one per line with their path.

Why the table: operators run the CLI in loops and scripts, and a Python
CLI's start-up is mostly imports (the API models, httpx, rich). So this
module imports typer and nothing else of weight, and :class:`LazyGroup`
imports a command's module only when that command runs (click's "lazily
loading subcommands" pattern): ``edgefleet version --client`` loads no
model, no HTTP client and no console library, and ``edgefleet get`` loads
what ``get`` needs and not the cloud, the agent or the rollout views.
``edgefleet --help`` loads every module, to show each command's help.
:mod:`edgefleet.cli.plainparams` keeps typer from importing pydantic to
coerce plain string and flag options. tests/cli/test_startup.py holds all
this: the table matches what the modules register, and ``version
--client`` imports none of the heavy modules.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import edgefleet
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api
from edgefleet.cli.plainparams import plain_params

COMMANDS: dict[str, str] = {
    # the kubectl-style verbs on every kind
    "apply": "resources",
    "get": "resources",
    "describe": "resources",
    "delete": "resources",
    # the cloud's operations
    "rollout": "rollout",
    "purge": "purge",
    "prefetch": "purge",
    "artifact": "artifacts",
    "certificate": "certificates",
    "route": "route",
    "rules": "rules",
    "logs": "agent",
    "token": "fleet",
    "node": "fleet",
    # on an edge node
    "edge": "agent",
    # the processes
    "cloud": "controlplane",
    "dns": "gslb",
    "cache": "dataplane",
    "origin": "dataplane",
    "up": "up",
    "down": "up",
    "backup": "backup",
    "restore": "backup",
    # local set-up
    "config": "contexts",
    "tls": "trust",
}
"""Command -> the module of ``edgefleet.cli`` whose ``register(app)`` adds it, in ``--help`` order."""


def load(name: str) -> typer.Typer:
    """A typer app holding what the module of command ``name`` registers (imports that module)."""
    module: Any = importlib.import_module(f"edgefleet.cli.{COMMANDS[name]}")
    holder = typer.Typer()
    module.register(holder)
    return holder


class LazyGroup(TyperGroup):
    """The top-level group: the commands of :data:`COMMANDS` are imported on first use."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_params(self, ctx)
        rest: list[str] = super().parse_args(ctx, args)
        return rest

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        return plain_params(typer.main.get_group(load(cmd_name)).get_command(ctx, cmd_name), ctx)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Unknown commands: suggest close names among all commands, not only the loaded ones."""
        if args and args[0] not in COMMANDS and super().get_command(ctx, args[0]) is None:
            from difflib import get_close_matches

            matches = get_close_matches(args[0], self.list_commands(ctx))
            if matches:
                ctx.fail(f"No such command {args[0]!r}. Did you mean {', '.join(map(repr, matches))}?")
        return super().resolve_command(ctx, args)


UNUSED_IN_A_CLI_PROCESS = ("httpx._main", "trio")
"""Modules our dependencies import whenever they are installed, which no command uses.

httpx imports its own command line (``httpx._main``: click, rich.progress,
pygments) when click and rich are installed, and they are; httpcore imports
trio when it is installed (selenium, a dev dependency, brings it), though
the CLI is synchronous and the servers it starts run on asyncio. Together
about a quarter of the start-up of ``edgefleet get``. A None in
``sys.modules`` makes such an import fail, which both handle.
"""


class CliTyper(typer.Typer):
    """The app. Calling it (the console script, ``python -m edgefleet``) runs a command in this process."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for name in UNUSED_IN_A_CLI_PROCESS:  # only here: a test or a library importing us keeps them
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
        return super().__call__(*args, **kwargs)


app = CliTyper(
    name="edgefleet",
    cls=LazyGroup,
    help="edgefleet: a self-hosted CDN edge platform. Run the cloud, manage sites, nodes, "
    "domains and workloads declaratively.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def edgefleet_cli() -> None:
    """The top-level group (its help is the app's)."""


@app.command()
def version(
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
    client_only: Annotated[bool, typer.Option("--client", help="Only the client version")] = False,
) -> None:
    """Print the client version and, if reachable, the server's."""
    typer.echo(f"client: {edgefleet.__version__}")
    if client_only:
        return
    with api(server, token, context) as client:
        typer.echo(f"server: {client.version()['version']} ({client.server})")


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="edgefleet")


if __name__ == "__main__":  # pragma: no cover
    main()
