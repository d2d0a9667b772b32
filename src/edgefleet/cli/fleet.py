"""Commands that bring edge nodes into the fleet: bootstrap tokens, join, rotation, revocation.

How: thin typer commands over the ``/edge/v1`` routes of the API (see
:mod:`edgefleet.cloud.identity` for the rules). Admin commands resolve their
server and token like every other command (flags, environment, config
context); the node commands (``edge join``, ``edge rotate-credential``) run
*on the node* and use only what they are given or what join wrote.

Files ``edgefleet edge join`` writes in the node's data directory
(``--data-dir``, default ``./edgefleet-node``, created with mode 0700):

- ``credential``: the node credential (a bearer token) and a newline, mode
  0600. Written atomically (temporary file, fsync, rename), so a crash never
  leaves half a token; the agent reads it on every connection.
- ``node.yaml``: ``servers`` (the cloud's URLs, every ``--server`` given,
  in order), ``server`` (the first of them, for older agents and tools),
  ``node`` (its name), ``site`` and ``insecure: true`` when ``--insecure``
  allowed cleartext servers. No secret in it. The agent dials the
  ``servers`` (in random order, failing over between them) until the cloud
  sends a ClusterInfo listing others (see :mod:`edgefleet.api.clusterinfo`).
- ``ca.crt``: the cloud's CA, pinned by ``--ca-hash`` or given by
  ``--ca-file`` (see :mod:`edgefleet.cli.trust`); the agent and
  ``rotate-credential`` trust it alone.

``edge join`` accepts ``--server`` several times and comma-separated lists:
the join request goes to the first server that answers (one that cannot be
reached, or answers 502/503/504, is skipped), and all of them are recorded.

:func:`register` adds the ``token`` and ``node`` groups to the main app;
:mod:`edgefleet.cli.agent` adds its commands (``edgefleet edge run`` ...)
to :data:`edge_app` and registers the ``edge`` group.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape

from edgefleet.api.clusterinfo import normalise_servers
from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.meta import check_dns1123_subdomain
from edgefleet.api.nodes import INFO as NODES
from edgefleet.cli import config as cli_config
from edgefleet.cli.client import ApiClient, ClientError
from edgefleet.cli.common import AdminTokenOpt, ContextOpt, ServerOpt, console, fail, fail_with
from edgefleet.cli.trust import join_trust
from edgefleet.tls import CA_PATH, NODE_CA_FILE, ClientTrust, TlsError, ca_hash, node_trust, write_file

DEFAULT_DATA_DIR = Path("edgefleet-node")
EDGE = "/edge/v1"

edge_app = typer.Typer(
    help="Commands run on an edge node: join the fleet, rotate the node credential, run the agent.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Tokens for the API.", no_args_is_help=True)
node_app = typer.Typer(
    help="Manage edge nodes' identities (their Node objects are under `get nodes`).", no_args_is_help=True
)

out = console()
err = console(stderr=True)

DataDirOpt = Annotated[
    Path, typer.Option("--data-dir", help="The node's directory: join writes credential (0600) and node.yaml there")
]


def register(app: typer.Typer) -> None:
    """Add the ``token`` and ``node`` groups to the ``edgefleet`` app (``edge``: :mod:`edgefleet.cli.agent`)."""
    app.add_typer(token_app, name="token")
    app.add_typer(node_app, name="node")


# -- helpers ------------------------------------------------------------------------


class FleetClient(ApiClient):
    """The ``/edge/v1`` calls."""

    def call(self, method: str, path: str, body: Document | None = None) -> Document:
        result: Document = self._request(method, EDGE + path, json=body).json()
        return result


_HINTS = {
    401: "the token was refused: check it, or create a new bootstrap token with `edgefleet token create`",
    403: "this needs an admin token (node credentials may only rotate themselves)",
}


@contextmanager
def calls(client: FleetClient) -> Iterator[FleetClient]:
    """Run API calls; a refusal becomes one ``error:`` line with its causes and a hint."""
    try:
        yield client
    except ClientError as exc:
        fail_with(exc, _HINTS)
    finally:
        client.close()


def admin_client(server: str | None, token: str | None, context: str | None) -> FleetClient:
    try:
        connection = cli_config.resolve(server, token, context)
    except cli_config.ConfigError as exc:
        fail(str(exc))
    try:
        return FleetClient(connection.server, connection.token, trust=connection.trust)
    except ClientError as exc:
        fail(str(exc))


_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d``, ``1h30m`` -> seconds; ValueError otherwise."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 30m, 24h, 7d or 1h30m")
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def default_node_name(hostname: str | None = None) -> str:
    """The host name as a DNS-1123 name (lowercase, other characters to ``-``); ValueError if impossible."""
    raw = (hostname if hostname is not None else socket.gethostname()).lower()
    name = re.sub(r"[^a-z0-9.-]+", "-", raw)
    name = ".".join(part.strip("-") for part in name.split(".") if part.strip("-"))
    try:
        return check_dns1123_subdomain(name)
    except ValueError:
        raise ValueError(f"cannot make a node name from the host name {raw!r}; pass --name") from None


def parse_servers(items: Sequence[str]) -> list[str]:
    """``--server`` values (each possibly a comma-separated list) -> normalised URLs, in order, without repeats."""
    parts = [part.strip() for item in items for part in item.split(",") if part.strip()]
    try:
        return normalise_servers(parts)
    except ValueError as exc:
        raise ValueError(f"--server: {exc}; use e.g. --server https://cloud.example:7440") from None


FAILOVER_CODES = (0, 502, 503, 504)
"""ClientError codes after which the node commands try the next server: unreachable, or a proxy in front failed."""


def first_answering(
    servers: Sequence[str],
    token: str,
    path: str,
    body: Document | None = None,
    *,
    trust: ClientTrust | None = None,
) -> tuple[str, Document]:
    """POST ``path`` to each server in turn until one answers: (that server, its answer).

    A refusal (401, 403, 422 ...) is an answer and raises; so does the last
    server's failure. (A join or rotation whose answer was lost and that is
    sent again to another replica is harmless: a second join adopts the Node
    it created and replaces the lost credential; a second rotation leaves the
    lost credential to expire with the grace period.)
    """
    for index, server in enumerate(servers):
        client = FleetClient(server, token, trust=trust)
        try:
            return server, client.call("POST", path, body)
        except ClientError as exc:
            if exc.code not in FAILOVER_CODES or index == len(servers) - 1:
                raise
            err.print(f"[yellow]warning:[/yellow] {escape(str(exc))}; trying {escape(servers[index + 1])}")
        finally:
            client.close()
    raise AssertionError("unreachable: servers is not empty")


def parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--label {item!r}: expected KEY=VALUE, e.g. --label tier=edge")
        labels[key] = value
    return labels


# -- node-local files -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """The files ``edge join`` leaves in a node's data directory (see the module docstring)."""

    root: Path

    @property
    def credential(self) -> Path:
        return self.root / "credential"

    @property
    def config(self) -> Path:
        return self.root / "node.yaml"

    @property
    def ca(self) -> Path:
        return self.root / NODE_CA_FILE

    def trust(self, config: Document) -> ClientTrust:
        """The CA join pinned and whether it allowed cleartext (``insecure`` in node.yaml)."""
        return node_trust(self.root, config.get("insecure") is True)

    def joined(self) -> bool:
        return self.credential.exists()

    def write(
        self,
        *,
        servers: Sequence[str],
        node: str,
        site: str,
        credential: str,
        ca_pem: bytes | None = None,
        insecure: bool = False,
    ) -> None:
        """Write the credential, the CA and ``node.yaml`` (``server``: the first of ``servers``, for older readers)."""
        if not servers:
            raise ValueError("at least one server URL is needed")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.write_credential(credential)
        if ca_pem is not None:
            write_file(self.ca, ca_pem, 0o644)
        document: Document = {"server": servers[0], "servers": list(servers), "node": node, "site": site}
        if insecure:
            document["insecure"] = True
        text = yaml.safe_dump(document, sort_keys=False)
        write_atomically(self.config, text, mode=0o644)

    @staticmethod
    def servers_of(config: Document) -> list[str]:
        """The ``servers`` of a read ``node.yaml``, falling back to ``[server]`` (nodes joined by older versions)."""
        listed = config.get("servers")
        if isinstance(listed, list) and listed:
            return [str(server) for server in listed]
        return [str(config["server"])]

    def write_credential(self, credential: str) -> None:
        write_atomically(self.credential, credential + "\n", mode=0o600)

    def read(self) -> tuple[Document, str]:
        """(node.yaml as a mapping, the credential); ValueError saying what to do when missing."""
        try:
            config = yaml.safe_load(self.config.read_text())
            credential = self.credential.read_text().strip()
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(
                f"{self.root} is not a joined node's directory ({exc}); "
                "join first with `edgefleet edge join`, or pass --data-dir"
            ) from None
        if not isinstance(config, dict) or not {"server", "node"} <= set(config) or not credential:
            raise ValueError(f"{self.config} or {self.credential} is damaged; join again with --force")
        return config, credential


def write_atomically(path: Path, text: str, *, mode: int) -> None:
    """Write ``text`` to ``path`` with ``mode`` so that readers see the old or the new file, whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # the umask may have narrowed it
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- token create / list / delete -----------------------------------------------------------


TOKEN_ROLES = ("bootstrap", "viewer", "admin", "metrics-reader")


@token_app.command("create")
def token_create(
    ttl: Annotated[
        str | None,
        typer.Option(
            help="How long the token works, e.g. 30m, 24h, 7d (default: 24h for bootstrap tokens; "
            "viewer and admin tokens never expire)"
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for (shown by `token list`)")] = "",
    role: Annotated[
        str,
        typer.Option(
            help="bootstrap: lets nodes join, nothing else; viewer: reads the API and the dashboard; "
            "admin: reads and writes; metrics-reader: scrapes fleet metrics through the cloud (Prometheus), "
            "nothing else"
        ),
    ] = "bootstrap",
    output: Annotated[str, typer.Option("--output", "-o", help="text (the token alone) or json")] = "text",
    site: Annotated[str | None, typer.Option(help="Bootstrap token: joins must name this site")] = None,
    name: Annotated[str | None, typer.Option(help="Bootstrap token: joins must name this node")] = None,
    uses: Annotated[
        int | None,
        typer.Option(
            min=1, help="Bootstrap token: how many joins it is good for (default: any number until it expires)"
        ),
    ] = None,
    approval: Annotated[
        bool, typer.Option("--approval", help="Bootstrap token: joined nodes wait for `edgefleet node approve NAME`")
    ] = False,
    takeover: Annotated[
        bool,
        typer.Option(
            "--takeover",
            help="Bootstrap token with --name: the join may replace the credentials that node holds "
            "(a reinstalled machine)",
        ),
    ] = False,
    server: ServerOpt = None,
    token: AdminTokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create a token (admin): by default a bootstrap token for `edgefleet edge join`.

    The token is printed once (only its hash is stored). A bootstrap token
    lets nodes join until it expires and grants nothing else; narrow it with
    --site, --name and --uses (e.g. `--site par --name par-edge-3 --uses 1`
    for one machine), and make its nodes wait for an admin with --approval.
    --role viewer or --role admin makes an API token for people and tools
    (`export EDGEFLEET_TOKEN=...`, the dashboard at /ui); --role metrics-reader
    one for Prometheus (docs/metrics.md), good for fleet metrics only.
    """
    if output not in ("text", "json"):
        fail(f"unknown output format {output!r}; use text or json")
    if role not in TOKEN_ROLES:
        fail(f"--role {role!r}: use one of {', '.join(TOKEN_ROLES)}")
    narrowing = {"site": site, "name": name, "uses": uses, "approval": approval or None, "takeover": takeover or None}
    body: Document = {
        "description": description,
        "role": role,
        **{key: value for key, value in narrowing.items() if value is not None},
    }
    try:
        if ttl is not None:
            body["ttlSeconds"] = parse_duration(ttl)
    except ValueError as exc:
        fail(f"--ttl: {exc}")
    with calls(admin_client(server, token, context)) as client:
        created = client.call("POST", "/bootstrap-tokens", body)
        pin = served_ca_hash(client) if created.get("role", "bootstrap") == "bootstrap" else None
    if output == "json":
        print(json.dumps(created, indent=2))
        return
    print(created["token"])
    err.print(created_message(created, client.server, pin), markup=False)


def served_ca_hash(client: ApiClient) -> str | None:
    """The pin of the CA the cloud publishes (fetched over the verified connection); None when it has none."""
    try:
        return ca_hash(client.text(CA_PATH).encode())
    except (ClientError, TlsError):
        return None


def created_message(created: Document, server: str, pin: str | None = None) -> str:
    expires = f"expires at {created['expiresAt']}" if created.get("expiresAt") else "never expires"
    if created.get("role", "bootstrap") == "bootstrap":
        trust = f" --ca-hash {pin}" if pin else " --insecure" if server.lower().startswith("http://") else ""
        where = f"--site {created.get('site') or 'SITE'}"
        where += f" --name {created['name']}" if created.get("name") else ""
        limits = [f"; good for {created['uses']} join(s)"] if created.get("uses") else []
        limits += ["; joined nodes wait for `edgefleet node approve NAME`"] if created.get("approval") else []
        return (
            f"bootstrap token {created['id']} {expires}{''.join(limits)}. "
            f"On {'the' if created.get('name') else 'each'} node run:\n"
            f"  edgefleet edge join --server {server} --token {created['token']}{trust} {where}"
        )
    return (
        f"{created['role']} token {created['id']} {expires}. Use it with:\n"
        f"  export EDGEFLEET_SERVER={server} EDGEFLEET_TOKEN={created['token']}"
    )


@token_app.command("list")
def token_list(server: ServerOpt = None, token: AdminTokenOpt = None, context: ContextOpt = None) -> None:
    """List bootstrap, viewer and admin tokens that have not expired (ids only; secrets are never shown again)."""
    with calls(admin_client(server, token, context)) as client:
        items = client.call("GET", "/bootstrap-tokens")["items"]
    if not items:
        out.print("No tokens.")
        return
    out.print(f"{'ID':<8} {'ROLE':<14} {'EXPIRES':<21} {'USES':<7} {'FOR':<24} {'CREATED-BY':<12} DESCRIPTION")
    for item in items:
        expires = item.get("expiresAt") or "never"
        uses = f"{item.get('used', 0)}/{item['uses']}" if item.get("uses") else "-"
        bound = "/".join(part for part in (item.get("site"), item.get("name")) if part) or "-"
        bound += " (approval)" if item.get("approval") else ""
        out.print(
            f"{item['id']:<8} {item.get('role', 'bootstrap'):<14} {expires:<21} {uses:<7} {bound:<24} "
            f"{item['createdBy']:<12} {item['description']}",
            markup=False,
        )


@token_app.command("delete")
def token_delete(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id (the 6 characters before the dot)")],
    server: ServerOpt = None,
    token: AdminTokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Delete a bootstrap, viewer or admin token; nodes that joined with a bootstrap token keep their credentials."""
    with calls(admin_client(server, token, context)) as client:
        deleted = client.call("DELETE", f"/bootstrap-tokens/{token_id.split('.')[0]}")
    out.print(f"{deleted.get('role', 'bootstrap')} token {token_id.split('.')[0]} deleted")


@token_app.command("generate")
def token_generate() -> None:
    """Print a new random token, for a --tokens-file (does not contact the server)."""
    from edgefleet.cloud.auth import generate_token

    print(generate_token())


# -- edge join / rotate-credential -----------------------------------------------------------


@edge_app.command("join")
def edge_join(
    server: Annotated[
        list[str],
        typer.Option(
            "--server",
            "-s",
            help="URL of the cloud, e.g. https://cloud:7440; repeatable or comma-separated (hub replicas): the join "
            "goes to the first that answers, the agent dials them all in random order and fails over",
        ),
    ],
    token: Annotated[
        str, typer.Option(help="Bootstrap token from `edgefleet token create`", envvar="EDGEFLEET_BOOTSTRAP_TOKEN")
    ],
    site: Annotated[str, typer.Option(help="Name of the Site this node belongs to")],
    name: Annotated[
        str | None, typer.Option(help="Node name (default: this machine's host name, lowercased to a DNS-1123 name)")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE label of the new Node; repeatable")] = None,
    address: Annotated[
        list[str] | None,
        typer.Option(help="IPv4/IPv6 address users reach the node at (put in DNS answers); repeatable"),
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    force: Annotated[bool, typer.Option(help="Join again although the data directory holds a credential")] = False,
    ca_hash_pin: Annotated[
        str | None,
        typer.Option(
            "--ca-hash",
            help="sha256:... pin of the cloud's CA (printed by `edgefleet token create`): the CA is "
            "fetched from the cloud and kept only if it matches; every other certificate is refused",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="The cloud's CA certificate, trusted alone (instead of --ca-hash)")
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            help="Allow cleartext http:// servers (the token and the credential cross the network in the clear)"
        ),
    ] = False,
) -> None:
    """Join this machine to the fleet: create (or adopt) its Node and store its credential.

    Presents the bootstrap token once; the credential it receives is written
    to DATA_DIR/credential (mode 0600) and the connection settings to
    DATA_DIR/node.yaml, where the agent finds them. A Node of that name that
    already exists (e.g. applied from a manifest) is adopted if its site
    matches; its spec and labels are kept.

    With several --server URLs (several cloud replicas) the join goes to the
    first that answers and all are recorded; the agent spreads over them and
    fails over between them. A ClusterInfo object in the cloud
    (`edgefleet get clusterinfos`) replaces the list for every agent.
    """
    files = NodeFiles(data_dir)
    if files.joined() and not force:
        fail(
            f"{files.credential} exists: this machine has joined already",
            "to join again (e.g. under another name or to another cloud) pass --force",
        )
    try:
        servers = parse_servers(server)
        node_name = name or default_node_name()
        body = {"name": node_name, "site": site, "labels": parse_labels(label or []), "addresses": address or []}
        trust, ca_pem = join_trust(servers, ca_hash_pin, ca_file, insecure)
    except (ValueError, TlsError) as exc:
        fail(str(exc))
    try:
        _, joined = first_answering(servers, token, "/join", body, trust=trust)
    except ClientError as exc:
        fail_with(exc, _HINTS)
    files.write(
        servers=servers,
        node=joined["node"],
        site=site,
        credential=joined["credential"],
        ca_pem=ca_pem,
        insecure=insecure,
    )
    how = "adopted the existing Node (its spec and labels are kept)" if joined["adopted"] else "created its Node"
    out.print(f"joined as node/{joined['node']} in site {site}: {how}")
    out.print(f"credential written to {files.credential} (mode 0600), settings to {files.config}")
    if joined.get("pending"):
        out.print(
            f"the node waits for approval: an admin runs `edgefleet node approve {joined['node']}`; "
            "until then its agent is refused"
        )


@edge_app.command("rotate-credential")
def edge_rotate_credential(data_dir: DataDirOpt = DEFAULT_DATA_DIR) -> None:
    """Replace this node's credential with a new one (run on the node).

    The new credential replaces DATA_DIR/credential atomically; the old one
    keeps working for a grace period (10 minutes) so that a running agent
    and a lost answer do no harm, then expires.
    """
    files = NodeFiles(data_dir)
    try:
        config, credential = files.read()
    except ValueError as exc:
        fail(str(exc))
    servers = NodeFiles.servers_of(config)
    trust = files.trust(config)
    try:
        server, rotated = first_answering(servers, credential, "/credentials/rotate", trust=trust)
    except ClientError as exc:
        fail_with(exc, _HINTS)
    files.write_credential(rotated["credential"])
    with calls(FleetClient(server, rotated["credential"], trust=trust)) as check:
        check.get(NODES, rotated["node"])  # the new credential works before we say so
    out.print(
        f"credential of node/{rotated['node']} rotated and written to {files.credential}; "
        f"the previous one stops working at {rotated['previousExpiresAt']}"
    )


# -- node revoke ---------------------------------------------------------------------


@node_app.command("revoke")
def node_revoke(
    name: Annotated[str, typer.Argument(help="Node name")],
    server: ServerOpt = None,
    token: AdminTokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Revoke every credential of a node (admin): its agent is refused (401) and disconnected.

    The Node object and its workloads stay; the machine can join again with
    a bootstrap token. Use it for a lost or compromised machine, or before
    re-installing one under the same name.
    """
    with calls(admin_client(server, token, context)) as client:
        revoked = client.call("DELETE", f"/nodes/{name}/credentials")["revoked"]
    if revoked:
        out.print(f"node/{name}: {revoked} credential(s) revoked; it must join again to reconnect")
    else:
        out.print(f"node/{name} had no credential; nothing to revoke")


@node_app.command("approve")
def node_approve(
    name: Annotated[str, typer.Argument(help="Node name")],
    server: ServerOpt = None,
    token: AdminTokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Approve a node that joined with an approval token (admin): its agent may connect and get its view."""
    with calls(admin_client(server, token, context)) as client:
        approved = client.call("POST", f"/nodes/{name}/approve")["approved"]
    if approved:
        out.print(f"node/{name} approved: its agent may connect now")
    else:
        fail(
            f"node/{name} has no credential waiting for approval",
            "it was approved already, never joined with an approval token, or was revoked",
        )
