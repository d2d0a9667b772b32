"""``edgefleet apply``, ``get``, ``describe`` and ``delete``: the kubectl-style verbs on any kind.

How: thin typer commands. The kind comes from the registry of the API
models (:func:`edgefleet.api.meta.lookup`, so singular, plural and short
names work); :func:`edgefleet.cli.common.api` resolves the connection and
turns refusals into one ``error:`` line; :mod:`edgefleet.cli.output` prints
tables (kind-specific columns), YAML or JSON. Manifests are all validated
before anything is sent (:mod:`edgefleet.cli.manifests`).

This module imports the HTTP client and rich, so ``edgefleet.cli.main``
loads it only when one of these commands runs (see its lazy command table).
It imports no model: the help text takes the plurals from
:mod:`edgefleet.api.kindtable`; ``get`` prints YAML, JSON, names and the
tables of kinds with document columns (:mod:`edgefleet.api.doccolumns`,
Nodes) from the documents the server sends, without pydantic; other
commands and tables go through :func:`~edgefleet.api.meta.lookup`, which
imports the one kind a command names. ``apply`` and ``delete -f`` load the
kinds their manifests hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from edgefleet.api.doccolumns import COLUMNS
from edgefleet.api.kindtable import KindName, find, plurals
from edgefleet.cli.client import ClientError
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, console, fail
from edgefleet.cli.output import OUTPUT_FORMATS, describe, display_order, dump, print_docs, to_model

if TYPE_CHECKING:  # the API models (pydantic) load only when a command needs them: ``get nodes`` does not
    from edgefleet.api.meta import KindInfo
    from edgefleet.cli.client import ApiClient

COMMANDS = ("apply", "get", "describe", "delete")

out = console()

KIND_HELP = "Resource type: " + ", ".join(plurals()) + " (singular and short names work too)"

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    """Add :data:`COMMANDS` to the ``edgefleet`` app."""
    app.command()(apply)
    app.command()(get)
    app.command("describe")(describe_command)
    app.command()(delete)


def resolve_kind(name: str) -> KindInfo:
    from edgefleet.api.errors import UnknownKind
    from edgefleet.api.meta import lookup

    try:
        return lookup(name)
    except UnknownKind as exc:
        fail(str(exc))


def kind_for_get(name: str, output: str) -> KindInfo | KindName:
    """The kind table's entry when printing needs no model (document columns, YAML, JSON, names);
    else the kind's info, its model loaded (module docstring)."""
    entry = find(name)
    if entry is not None and (output not in ("table", "wide") or entry.kind in COLUMNS):
        return entry
    return resolve_kind(name)


def guarded(action: Callable[[], T]) -> T:
    from edgefleet.cli.manifests import ManifestError

    try:
        return action()
    except ManifestError as exc:
        fail(str(exc))


def apply(
    filename: Annotated[list[str], typer.Option("--filename", "-f", help="File, directory or - for stdin")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create or update resources from YAML (multi-document files and directories).

    Every document is validated before anything is sent; one invalid
    document means nothing is applied. Sites are applied first, then Nodes
    (a Node's site must exist), then Certificates (Domains name them), then the rest in file order. Prints created,
    configured or unchanged for each object, and the server's warnings.
    """
    from edgefleet.cli.manifests import in_apply_order, load_manifests

    manifests = in_apply_order(guarded(lambda: load_manifests(filename)))
    with api(server, token, context) as client:
        for manifest in manifests:
            verb = _apply_one(client, manifest.info, manifest.document, manifest.resource)
            out.print(f"{manifest.info.singular}/{manifest.resource.name} {verb}")


def _apply_one(client: ApiClient, info: KindInfo, document: dict[str, Any], resource: Any) -> str:
    from edgefleet.api import lifecycle

    for _ in range(3):
        try:
            existing = client.get(info, resource.name)
        except ClientError as exc:
            if exc.code != 404:
                raise
            try:
                client.create(info, document)
                return "created"
            except ClientError as create_error:
                if create_error.code != 409:
                    raise
                continue
        if lifecycle.is_unchanged(to_model(info, existing), resource):
            return "unchanged"
        desired = dict(document)
        desired["metadata"] = {**document["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}
        try:
            client.replace(info, desired)
            return "configured"
        except ClientError as exc:
            if exc.code != 409:
                raise
    raise ClientError(f"{info.singular}/{resource.name} kept changing while applying", code=409)


def get(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    name: Annotated[str | None, typer.Argument(help="Object name; all objects when omitted")] = None,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Label selector, e.g. tier=edge,region in (eu,us)")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table, wide, yaml, json or name")] = "table",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="After listing, print changes as they happen")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Show resources as a table, YAML or JSON; with -w keep printing changes.

    Lists come in name order, except events: by when they last happened,
    the latest last (as kubectl lists them).
    """
    if output not in OUTPUT_FORMATS:
        fail(f"unknown output format {output!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    info = kind_for_get(kind, output)
    with api(server, token, context) as client:
        if name:
            docs = [client.get(info, name)]
            revision = docs[0]["metadata"]["resourceVersion"]
        else:
            listing = client.list(info, selector=selector)
            docs, revision = display_order(info, listing["items"]), listing["metadata"]["resourceVersion"]
        print_docs(out, info, docs, output, single=bool(name))
        if watch:
            _follow(client, info, selector, revision, output, name)


def _follow(
    client: ApiClient, info: KindInfo | KindName, selector: str | None, revision: str, output: str, name: str | None
) -> None:
    try:
        for event in client.watch(info, selector=selector, resource_version=revision):
            if event["type"] == "BOOKMARK":
                continue
            if event["type"] == "ERROR":
                fail(event["object"].get("message", "watch failed"))
            doc = event["object"]
            if name and doc["metadata"]["name"] != name:
                continue
            if output in ("table", "wide", "name"):
                out.print(
                    f"{event['type']:<9} {info.singular}/{doc['metadata']['name']}  "
                    f"resourceVersion={doc['metadata'].get('resourceVersion')}"
                )
            else:
                print(dump({"type": event["type"], "object": doc}, output))
                print("---" if output == "yaml" else "", flush=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def describe_command(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    name: Annotated[str, typer.Argument(help="Object name")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Show one object in detail: metadata, spec and status."""
    info = resolve_kind(kind)
    with api(server, token, context) as client:
        out.print(describe(info, client.get(info, name)), highlight=False, markup=False)


def delete(
    kind: Annotated[str | None, typer.Argument(help=KIND_HELP)] = None,
    names: Annotated[list[str] | None, typer.Argument(help="Object names")] = None,
    filename: Annotated[
        list[str] | None, typer.Option("--filename", "-f", help="Delete what these manifests define")
    ] = None,
    ignore_not_found: Annotated[bool, typer.Option(help="Do not fail on objects that do not exist")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete even though other objects still name it (a Site that has Nodes)")
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Delete objects by kind and name, or those defined in manifests (-f).

    A Site that still has Nodes is refused unless --force; with -f, Nodes
    are deleted before their Sites.
    """
    from edgefleet.cli.manifests import in_delete_order, load_manifests

    targets: list[tuple[KindInfo, str]] = []
    if filename:
        targets = [(m.info, m.resource.name) for m in in_delete_order(guarded(lambda: load_manifests(filename)))]
    elif kind and names:
        info = resolve_kind(kind)
        targets = [(info, n) for n in names]
    else:
        fail("name what to delete: `edgefleet delete KIND NAME...` or `edgefleet delete -f FILE`")
    with api(server, token, context) as client:
        for info, name in targets:
            try:
                client.delete(info, name, force=force)
                out.print(f"{info.singular}/{name} deleted")
            except ClientError as exc:
                if exc.code == 404 and ignore_not_found:
                    continue
                raise
