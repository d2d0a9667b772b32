"""``edgefleet tls init|ca-hash`` and how ``edgefleet edge join`` comes to trust the cloud.

How a join trusts the cloud (:func:`join_trust`), like ``kubeadm join``:

- ``--ca-hash sha256:...`` (printed by ``edgefleet token create``): the CA
  is fetched from the cloud's public ``/edge/v1/ca`` *without* trusting the
  connection, then kept only if the SHA-256 of its public key is the pin;
  the join itself and every later connection check the cloud's certificate
  against that CA alone. A man in the middle may relay the real CA, but
  cannot present a certificate it signed: the join fails before the
  bootstrap token is sent.
- ``--ca-file PATH``: that CA (or bundle) is trusted as given (checked
  against ``--ca-hash`` too when both are given).
- ``http://`` servers need ``--insecure``: the bootstrap token and then the
  node credential would cross the network in the clear.

The CA is written to the node's directory (``ca.crt``) and the agent and
``edge rotate-credential`` use it from there (:func:`edgefleet.tls.node_trust`).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import httpx
import typer

from edgefleet.cli.common import fail
from edgefleet.tls import (
    CA_PATH,
    ClientTrust,
    TlsError,
    ca_hash,
    ensure_pki,
    hash_matches,
    load_certs,
    parse_ca_hash,
)

tls_app = typer.Typer(help="The cloud's TLS: make a CA and server certificate, print a CA's pin.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tls_app, name="tls")


@tls_app.command("init")
def tls_init(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write ca.crt, ca.key, server.crt, server.key")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="Name or address clients dial the cloud at (a SAN of the certificate); repeatable. Default: "
            "127.0.0.1, localhost and this machine's host name"
        ),
    ] = None,
) -> None:
    """Make (or complete) a CA and a server certificate for `edgefleet cloud --tls-cert --tls-key`.

    Keys are written with mode 0600. Run again with more --host values to
    re-issue the server certificate for them (same CA: joined nodes keep
    trusting it). Copy server.crt and server.key to every hub replica.
    """
    try:
        files = ensure_pki(directory, host or default_hosts())
    except (TlsError, OSError) as exc:
        fail(str(exc), code=1)
    typer.echo(
        f"CA certificate: {files.ca_cert}\nCA hash (for edge join --ca-hash): "
        f"{ca_hash(files.ca_cert.read_bytes())}\n"
        f"serve with: edgefleet cloud --tls-cert {files.server_cert} --tls-key {files.server_key} "
        f"--tls-ca {files.ca_cert}"
    )


@tls_app.command("ca-hash")
def tls_ca_hash(ca_file: Annotated[Path, typer.Argument(help="A CA certificate (PEM)")]) -> None:
    """Print the pin of a CA certificate, the value `edgefleet edge join --ca-hash` takes."""
    try:
        typer.echo(ca_hash(ca_file.read_bytes()))
    except (TlsError, OSError) as exc:
        fail(str(exc), code=1)


def default_hosts() -> list[str]:
    """The names ``edgefleet up`` and ``tls init`` certify by default: loopback and this host's name."""
    return ["127.0.0.1", "localhost", socket.gethostname()]


def join_trust(
    servers: Sequence[str], ca_hash_pin: str | None, ca_file: Path | None, insecure: bool
) -> tuple[ClientTrust, bytes | None]:
    """(how to check the servers, the CA PEM to keep in the node's directory); TlsError saying what to do."""
    for server in servers:
        ClientTrust(insecure=insecure).check_url(server)
    pin = parse_ca_hash(ca_hash_pin) if ca_hash_pin else None
    secure = [server for server in servers if not server.lower().startswith("http://")]
    if not secure:
        return ClientTrust(insecure=True), None
    if ca_file is not None:
        try:
            pem = ca_file.read_bytes()
        except OSError as exc:
            raise TlsError(f"--ca-file {ca_file}: {exc}") from None
        load_certs(pem)
        if pin is not None and not hash_matches(pem, pin):
            raise TlsError(f"--ca-file {ca_file} has the hash {ca_hash(pem)}, not --ca-hash {pin}")
    elif pin is not None:
        pem = fetch_pinned_ca(secure, pin)
    else:
        raise TlsError(
            "pin the cloud's CA: --ca-hash sha256:... (printed by `edgefleet token create`) or "
            "--ca-file CA.crt; the node refuses every certificate that CA did not sign"
        )
    return ClientTrust(insecure=insecure, ca_data=pem), pem


def fetch_pinned_ca(servers: Sequence[str], pin: str, timeout: float = 10.0) -> bytes:
    """The CA from the first server that serves one (unverified fetch), kept only if its hash is ``pin``."""
    failures: list[str] = []
    for server in servers:
        url = server.rstrip("/") + CA_PATH
        try:
            response = httpx.get(url, verify=False, timeout=timeout)  # not trusted: checked against the pin below
        except httpx.HTTPError as exc:
            failures.append(f"{url}: {exc.__class__.__name__}: {exc}")
            continue
        if response.status_code != 200:
            failures.append(f"{url}: HTTP {response.status_code}")
            continue
        pem = response.content
        try:
            matches = hash_matches(pem, pin)
        except TlsError as exc:
            raise TlsError(f"{url} served no usable CA certificate ({exc})") from None
        if not matches:
            raise TlsError(
                f"the CA served by {server} has the hash {ca_hash(pem)}, not --ca-hash {pin}: refusing "
                "to join (a man in the middle, or not the cloud you meant); check the hash with "
                "the cloud's admin (`edgefleet tls ca-hash CA.crt`)"
            )
        return pem
    raise TlsError("cannot fetch the cloud's CA to check --ca-hash: " + "; ".join(failures))
