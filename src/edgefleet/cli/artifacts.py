"""``edgefleet artifact push | add | prefetch``: ship files to the edge as Artifacts.

How:

- ``push FILE --name N --version V`` hashes the file (SHA-256, read once,
  with a progress bar on a terminal), uploads it to the cloud's blob store
  (``PUT /edge/v1/blobs/sha256/<digest>``, streamed, never read into memory
  whole, with a progress bar), then creates the Artifact ``N-V`` (source
  ``upload``). Pushing the same bytes again is a no-op; other bytes under an
  existing name and version are refused (Artifacts are immutable: push a new
  version).
- ``add N --version V --url URL --sha256 D --size S`` creates an Artifact
  whose bytes stay on an external HTTP(S) origin; nodes verify them by ``D``.
- ``prefetch N --version V --sites SELECTOR`` asks the nodes of the sites a
  selector picks to fetch the artifact now (through their site caches),
  before a rollout needs it: it sets the annotation
  :data:`PREFETCH_ANNOTATION` on the Artifact (metadata may change; the spec
  may not), which every agent reads from its view.

``edgefleet get artifacts`` lists them (name, version, size, digest, source).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.api.artifacts import DEFAULT_MEDIA_TYPE, INFO, PREFETCH_ANNOTATION, object_name
from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.meta import API_VERSION
from edgefleet.cli.client import BLOB_PATH
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, fail

CHUNK = 1024 * 1024

app = typer.Typer(
    help="Ship files (binaries, bundles) to the edge nodes: push, add external ones, prefetch before a rollout.",
    no_args_is_help=True,
)


def register(main: typer.Typer) -> None:
    """Add ``artifact`` to the ``edgefleet`` app."""
    main.add_typer(app, name="artifact")


@contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not sys.stderr.isatty():
        yield lambda _: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.advance(task, done)


def sha256_file(path: Path, advance: Callable[[int], None] = lambda _: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def chunks(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            advance(len(chunk))
            yield chunk


def artifact_document(name: str, version: str, digest: str, size: int, media_type: str, url: str | None) -> Document:
    spec: Document = {"name": name, "version": version, "sha256": digest, "size": size, "mediaType": media_type}
    spec.update({"source": "url", "url": url} if url else {"source": "upload"})
    return {
        "apiVersion": API_VERSION,
        "kind": "Artifact",
        "metadata": {"name": object_name(name, version)},
        "spec": spec,
    }


NameOpt = Annotated[str, typer.Option("--name", "-n", help="Artifact name (a DNS label, e.g. my-app)")]
VersionOpt = Annotated[str, typer.Option("--version", "-v", help="Version, e.g. 1.4.2 (a new version is a new object)")]
MediaOpt = Annotated[str, typer.Option(help="Media type, e.g. application/gzip")]


@app.command("push")
def push(
    file: Annotated[Path, typer.Argument(help="The file to upload", exists=True, dir_okay=False, readable=True)],
    name: NameOpt,
    version: VersionOpt,
    media_type: MediaOpt = DEFAULT_MEDIA_TYPE,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Upload FILE to the cloud's blob store and create the Artifact NAME-VERSION (admin token needed)."""
    _check(artifact_document(name, version, "0" * 64, 0, media_type, None))  # before reading a large file
    size = file.stat().st_size
    with progress_bar(f"hashing {file.name}", size) as advance:
        digest = sha256_file(file, advance)
    document = _check(artifact_document(name, version, digest, size, media_type, None))
    with api(server, token, context) as client:
        existing = _existing(client, object_name(name, version))
        if existing is not None:
            _same_or_fail(existing, digest)
            typer.echo(f"artifact/{object_name(name, version)} unchanged (sha256:{digest})")
            return
        with progress_bar(f"uploading {file.name}", size) as advance:
            client.put_bytes(BLOB_PATH + digest, chunks(file, advance), size)
        client.create(INFO, document)
    typer.echo(f"artifact/{object_name(name, version)} created (sha256:{digest}, {size} bytes)")


@app.command("add")
def add(
    name: NameOpt,
    version: VersionOpt,
    url: Annotated[str, typer.Option(help="http(s) URL the nodes fetch the bytes from")],
    sha256: Annotated[str, typer.Option(help="SHA-256 of the bytes (64 hex digits); nodes refuse other bytes")],
    size: Annotated[int, typer.Option(min=0, help="Size of the bytes")],
    media_type: MediaOpt = DEFAULT_MEDIA_TYPE,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create an Artifact whose bytes stay on an external HTTP(S) origin (source: url)."""
    document = _check(artifact_document(name, version, sha256.removeprefix("sha256:"), size, media_type, url))
    with api(server, token, context) as client:
        client.create(INFO, document)
    typer.echo(f"artifact/{object_name(name, version)} created (source url)")


@app.command("prefetch")
def prefetch(
    name: Annotated[str, typer.Argument(help="Artifact name")],
    version: VersionOpt,
    sites: Annotated[
        str, typer.Option(help="Site selector, e.g. 'region=eu' or 'edgefleet.io/site in (par,fra)'; '' is every site")
    ] = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Have the nodes of the selected sites fetch an artifact now, before a rollout needs it."""
    from edgefleet.api.errors import SelectorError
    from edgefleet.api.selectors import parse_selector

    try:
        parse_selector(sites)
    except (SelectorError, ValueError) as exc:
        fail(f"--sites: {exc}")
    with api(server, token, context) as client:
        client.patch(
            INFO, object_name(name, version), {"metadata": {"annotations": {PREFETCH_ANNOTATION: sites or "*"}}}
        )
    typer.echo(f"artifact/{object_name(name, version)}: nodes of sites {sites or '(all)'} fetch it now")


def _check(document: Document) -> Document:
    """``document`` if it is a valid Artifact; else fail with each field's problem (nothing is sent)."""
    from pydantic import ValidationError

    from edgefleet.api.artifacts import Artifact

    try:
        Artifact.model_validate(document)
    except ValidationError as exc:
        fail("invalid artifact", *(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    return document


def _existing(client: object, name: str) -> Document | None:
    from edgefleet.cli.client import ApiClient, ClientError

    assert isinstance(client, ApiClient)
    try:
        return client.get(INFO, name)
    except ClientError as exc:
        if exc.code == 404:
            return None
        raise


def _same_or_fail(existing: Document, digest: str) -> None:
    spec = existing.get("spec")
    had = spec.get("sha256") if isinstance(spec, dict) else None
    if had != digest:
        name = existing.get("metadata", {}).get("name") if isinstance(existing.get("metadata"), dict) else "?"
        fail(
            f"artifact/{name} exists with other bytes (sha256:{had}); artifacts are immutable",
            "push it under a new --version and reference that version from the Workload",
        )
