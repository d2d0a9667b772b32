"""What every command shares: the connection options, the API session, and ``fail``.

How: :func:`fail` is the one way a command ends in error: ``error: <message>``
on stderr, further lines indented, then a non-zero exit. It prints through
typer's echo, not rich, so a message that quotes remote input is shown as
is (no console markup is interpreted) and is never wrapped: scripts can grep
it. :func:`api` resolves the connection (flags, environment, config file:
:mod:`edgefleet.cli.config`) and turns every :class:`ClientError` into a
:func:`fail` with the server's field causes and a hint on what to do next.

Why this module imports almost nothing at load time: ``edgefleet.cli.main``
imports it, and every command pays for what main imports; the HTTP client,
the config file reader and the API models are imported by :func:`api` when a
command really talks to the server (docs/architecture.md, "Layering").
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from edgefleet.cli.client import ApiClient, ClientError

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", "-s", envvar="EDGEFLEET_SERVER", show_envvar=True, show_default=False, help="API server URL"
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="EDGEFLEET_TOKEN", show_envvar=True, show_default=False, help="Bearer token"),
]
AdminTokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="EDGEFLEET_TOKEN", show_envvar=True, show_default=False, help="Admin token"),
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="Context of the config file to use (`edgefleet config get-contexts`)")
]

HINTS = {
    401: "check the token: --token, EDGEFLEET_TOKEN or `edgefleet config set-context`",
    403: "this needs an admin token",
    409: "someone changed it meanwhile; get it again and retry",
    410: "the revision is too old; list again",
}
"""What to do next after a refusal, by HTTP status (see :func:`hint`)."""


def console(*, stderr: bool = False) -> Console:
    """A rich console for tables; piped output (scripts, grep) gets wide lines instead of 80-column wrapping."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 250)


def fail(message: str, *details: str, code: int = 1) -> NoReturn:
    """Print ``error: <first line>`` and the other lines and ``details`` indented, then exit ``code``."""
    first, *rest = message.splitlines() or [""]
    typer.secho("error:", fg="red", err=True, nl=False)
    typer.echo(f" {first}", err=True)
    for line in (*rest, *details):
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(code)


def hint(error: ClientError, hints: dict[int, str] | None = None) -> str:
    """The next step for a refusal; none for those that say it themselves."""
    if explains_itself(error):
        return ""
    return (HINTS if hints is None else hints).get(error.code, "")


def explains_itself(error: ClientError) -> bool:
    """Admission refusals (a webhook's denial, a Site that still has Nodes) say what to do next themselves."""
    message = str(error)
    return (error.code == 403 and message.startswith("admission webhook")) or (
        error.code == 409 and "--force" in message
    )


def fail_with(error: ClientError, hints: dict[int, str] | None = None) -> NoReturn:
    """:func:`fail` with the server's message, its field causes (one per line) and :func:`hint`."""
    details = [f"{cause.get('field', '')}: {cause.get('message', '')}" for cause in error.causes]
    next_step = hint(error, hints)
    fail(str(error), *details, *([next_step] if next_step else []))


@contextmanager
def api(server: str | None, token: str | None, context: str | None) -> Iterator[ApiClient]:
    """A client of the server the flags, environment or config file name; refusals become :func:`fail`."""
    from edgefleet.cli import client as http
    from edgefleet.cli import config

    try:
        connection = config.resolve(server, token, context)
    except config.ConfigError as exc:
        fail(str(exc))
    try:
        session = http.ApiClient(connection.server, connection.token, trust=connection.trust)
    except http.ClientError as exc:
        fail(str(exc))
    try:
        yield session
    except http.ClientError as exc:
        fail_with(exc)
    finally:
        session.close()
