"""``edgefleet purge DOMAIN URL... [--prefix P] [--tag T] [--soft] [--wait]``: a Purge in one command;
``edgefleet prefetch DOMAIN URL... [--wait]``: a Prefetch, the same way.

How: builds a Purge named ``purge-<UTC time>-<random>`` (a new name, so a
new uid, every time: nodes do each Purge once), creates it through the API
like ``edgefleet create`` would, and with ``--wait`` polls its status until
the purge controller marks it completed (every node serving the Domain has
reported) or ``--timeout`` passes. The exit status is 0 when every node
purged, 1 otherwise (failed nodes, timeout, API errors).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.meta import API_VERSION
from edgefleet.api.purges import PREFETCHES, PURGES
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, fail

POLL_SECONDS = 0.5


def register(app: typer.Typer) -> None:
    """Add ``purge`` and ``prefetch`` to the ``edgefleet`` app."""
    app.command("purge")(purge)
    app.command("prefetch")(prefetch)


def purge_name(now: datetime, suffix: str, prefix: str = "purge") -> str:
    """``purge-20260501-120000-ab12cd``: sortable by time, unique by the random suffix."""
    return f"{prefix}-{now.astimezone(UTC):%Y%m%d-%H%M%S}-{suffix}"


def purge_document(
    name: str, domain: str, urls: list[str], prefixes: list[str], tags: list[str], soft: bool
) -> Document:
    spec: Document = {"domain": domain, "mode": "soft" if soft else "hard"}
    for field, values in (("urls", urls), ("prefixes", prefixes), ("tags", tags)):
        if values:
            spec[field] = values
    return {"apiVersion": API_VERSION, "kind": "Purge", "metadata": {"name": name}, "spec": spec}


def progress(status: Document) -> str:
    target = status.get("targetNodes")
    done = status.get("completedNodes", 0)
    failed = status.get("failedNodes", 0)
    text = "no status yet" if target is None else f"{done}/{target} nodes done, {failed} failed"
    message = status.get("message")
    return f"{text} ({message})" if message else text


def purge(
    domain: Annotated[str, typer.Argument(help="Name of the Domain")],
    urls: Annotated[
        list[str] | None,
        typer.Argument(help="URLs to purge: paths with an optional query (/a/b.js?v=1) or absolute URLs on the domain"),
    ] = None,
    prefix: Annotated[
        list[str] | None, typer.Option("--prefix", help="Purge every path starting so; repeatable")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Purge objects tagged so (Cache-Tag / Surrogate-Key); repeatable")
    ] = None,
    soft: Annotated[bool, typer.Option(help="Mark stale (revalidate on next use) instead of removing")] = False,
    wait: Annotated[bool, typer.Option(help="Wait until every node serving the domain has done it")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most")] = 300.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Purge cached URLs, prefixes or tags of a domain on every node serving it (creates a Purge)."""
    if not (urls or prefix or tag):
        fail("nothing to purge: give URLs, --prefix or --tag")
    name = purge_name(datetime.now(UTC), secrets.token_hex(3))
    document = purge_document(name, domain, urls or [], prefix or [], tag or [], soft)
    with api(server, token, context) as client:
        client.create(PURGES, document)
        typer.echo(f"purge/{name} created")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        status: Document = {}
        while time.monotonic() < deadline:
            status = client.get(PURGES, name).get("status") or {}
            if status.get("completedAt"):
                break
            time.sleep(POLL_SECONDS)
    if not status.get("completedAt"):
        fail(f"purge/{name} not completed after {timeout:g}s: {progress(status)}")
    if status.get("failedNodes"):
        fail(f"purge/{name} completed with failures: {progress(status)}")
    typer.echo(f"purge/{name} completed: {progress(status)}")


def prefetch(
    domain: Annotated[str, typer.Argument(help="Name of the Domain")],
    urls: Annotated[
        list[str],
        typer.Argument(help="URLs to fetch into the caches: paths with an optional query, or absolute URLs"),
    ],
    wait: Annotated[bool, typer.Option(help="Wait until every node serving the domain has fetched them")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most")] = 300.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Fetch URLs of a domain into the cache of every node serving it, before users ask (creates a Prefetch).

    Each node's agent asks its cache once; `edgefleet get prefetches` shows how many nodes are done.
    """
    name = purge_name(datetime.now(UTC), secrets.token_hex(3), "prefetch")
    document: Document = {
        "apiVersion": API_VERSION,
        "kind": "Prefetch",
        "metadata": {"name": name},
        "spec": {"domain": domain, "urls": urls},
    }
    with api(server, token, context) as client:
        client.create(PREFETCHES, document)
        typer.echo(f"prefetch/{name} created")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        status: Document = {}
        while time.monotonic() < deadline:
            status = client.get(PREFETCHES, name).get("status") or {}
            if status.get("completedAt"):
                break
            time.sleep(POLL_SECONDS)
    if not status.get("completedAt"):
        fail(f"prefetch/{name} not completed after {timeout:g}s: {progress(status)}")
    if status.get("failedNodes"):
        fail(f"prefetch/{name} completed with failures: {progress(status)}")
    typer.echo(f"prefetch/{name} completed: {progress(status)}")
