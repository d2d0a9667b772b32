"""``edgefleet certificate create NAME --cert FILE --key FILE``: a Certificate from PEM files.

How: reads the two files (at most the kind's limits, so a wrong file is
refused here and not uploaded), builds the Certificate manifest and
creates it through the API; ``--replace`` updates an existing one instead
(a rotation: the caches serving its Domains reload the new chain without
dropping connections), and ``--dry-run`` prints the manifest as YAML
without sending it, for a repository of manifests (YAML block scalars hold
the PEM). The cloud checks the PEM (chain, key, key matches the leaf) and
answers with field errors; this command does not load ``cryptography``.

Who may: admins (viewers see ``spec.key`` redacted and cannot write).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.meta import API_VERSION
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, fail

MAX_FILE_BYTES = 64 * 1024
"""Bigger than either limit of the kind (64 KiB chain, 16 KiB key): the server says which."""

app = typer.Typer(help="Certificates for HTTPS at the edge (Domain spec.tls.certificate).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add ``certificate`` to the ``edgefleet`` app."""
    root.add_typer(app, name="certificate")


def read_pem(path: Path, what: str) -> str:
    """The text of a PEM file; :func:`fail` when it is missing, too big or not text."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            fail(f"{what} {path}: {size} bytes; a PEM {what} is at most {MAX_FILE_BYTES // 1024} KiB")
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the {what} {path}: {exc}")


def certificate_document(name: str, chain: str, key: str) -> Document:
    return {
        "apiVersion": API_VERSION,
        "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {"certificate": chain, "key": key},
    }


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the Certificate (Domains name it in spec.tls.certificate)")],
    cert: Annotated[Path, typer.Option("--cert", help="PEM file: the certificate chain, leaf first")],
    key: Annotated[Path, typer.Option("--key", help="PEM file: the leaf's private key, unencrypted")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Update the Certificate if it exists (a rotation)")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the manifest (YAML) instead of sending it")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create a Certificate from a PEM chain and key (or with --replace, rotate an existing one)."""
    document = certificate_document(name, read_pem(cert, "certificate"), read_pem(key, "key"))
    if dry_run:
        import yaml

        typer.echo(yaml.safe_dump(document, sort_keys=False).rstrip())
        return
    from edgefleet.api.certificates import INFO
    from edgefleet.cli.client import ClientError

    with api(server, token, context) as client:
        try:
            client.create(INFO, document)
            typer.echo(f"certificate/{name} created")
            return
        except ClientError as exc:
            if exc.code != 409 or not replace:
                if exc.code == 409:
                    fail(f"certificate/{name} exists", "add --replace to rotate it")
                raise
        current = client.get(INFO, name)
        document["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        client.replace(INFO, document)
        typer.echo(f"certificate/{name} replaced")
