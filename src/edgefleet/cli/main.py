"""The ``edgefleet`` command line.

How: typer commands that are thin wrappers: resolve the connection
(:mod:`edgefleet.cli.config`), call :class:`~edgefleet.cli.client.ApiClient`,
print with :mod:`edgefleet.cli.output`. Every failure exits non-zero with
one ``error:`` line that says what went wrong and what to do next; field
problems are listed one per line with their path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

import edgefleet
from edgefleet.api import kinds as _kinds  # noqa: F401  (fills the kind registry)
from edgefleet.api import lifecycle
from edgefleet.api.errors import UnknownKind
from edgefleet.api.meta import KindInfo, all_kinds, lookup
from edgefleet.cli import agent as agent_commands
from edgefleet.cli import config as cli_config
from edgefleet.cli import dataplane, fleet, purge, rollout, route, up
from edgefleet.cli import gslb as gslb_cli
from edgefleet.cli import trust as trust_cli
from edgefleet.cli.client import ApiClient, ClientError
from edgefleet.cli.manifests import ManifestError, in_apply_order, in_delete_order, load_manifests
from edgefleet.cli.output import OUTPUT_FORMATS, describe, dump, print_docs, to_model

app = typer.Typer(
    name="edgefleet",
    help="edgefleet: a self-hosted CDN edge platform. Run the cloud, manage sites, nodes, "
    "domains and workloads declaratively.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Manage CLI contexts (server + token), like kubectl config.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens for the API.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(token_app, name="token")
fleet.register(app, token_app)  # token create/list/delete, edge join/rotate-credential, node revoke
agent_commands.register(app)  # edge run/stop-workloads, logs
dataplane.register(app)  # cache, origin
gslb_cli.register(app)  # dns
purge.register(app)  # purge DOMAIN URL... [--prefix] [--tag] [--soft] [--wait]
route.register(app)  # route DOMAIN --client IP [--path P] [-o json|yaml]
rollout.register(app)  # rollout status|history|pause|resume|abort|undo|pin|unpin WORKLOAD
up.register(app)  # up [--sites N] [--nodes N] [--detach] [--fresh], down
trust_cli.register(app)  # tls init|ca-hash

# Piped output (scripts, grep) gets wide lines instead of 80-column wrapping.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False)

ServerOpt = Annotated[str | None, typer.Option("--server", "-s", help="API server URL [env: EDGEFLEET_SERVER]")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token [env: EDGEFLEET_TOKEN]")]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Context from the config file to use")]
KIND_HELP = (
    "Resource type: " + ", ".join(sorted(i.plural for i in all_kinds())) + " (singular and short names work too)"
)

T = TypeVar("T")


def fail(message: str, *details: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    for line in details:
        err.print(f"  {line}")
    raise typer.Exit(code)


def _hint(error: ClientError) -> str:
    if _explains_itself(error):
        return ""
    return {
        401: "check the token: --token, EDGEFLEET_TOKEN or `edgefleet config set-context`",
        403: "this needs an admin token",
        409: "someone changed it meanwhile; get it again and retry",
        410: "the revision is too old; list again",
    }.get(error.code, "")


def _explains_itself(error: ClientError) -> bool:
    """Admission refusals (a webhook's denial, a Site that still has Nodes) say what to do next themselves."""
    message = str(error)
    return (error.code == 403 and message.startswith("admission webhook")) or (
        error.code == 409 and "--force" in message)


@contextmanager
def api(server: str | None, token: str | None, context: str | None) -> Iterator[ApiClient]:
    try:
        connection = cli_config.resolve(server, token, context)
    except cli_config.ConfigError as exc:
        fail(str(exc))
    try:
        client = ApiClient(connection.server, connection.token, trust=connection.trust)
    except ClientError as exc:
        fail(str(exc))
    try:
        yield client
    except ClientError as exc:
        details = [f"{c.get('field', '')}: {c.get('message', '')}" for c in exc.causes]
        hint = _hint(exc)
        fail(str(exc), *details, *([hint] if hint else []))
    finally:
        client.close()


def resolve_kind(name: str) -> KindInfo:
    try:
        return lookup(name)
    except UnknownKind as exc:
        fail(str(exc))


def guarded(action: Callable[[], T]) -> T:
    try:
        return action()
    except ManifestError as exc:
        fail(str(exc))


@app.command()
def cloud(
    listen: Annotated[str, typer.Option(help="Address to serve the API on, HOST:PORT")] = "127.0.0.1:7440",
    store: Annotated[str, typer.Option(help="sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT...]")] = (
        "sqlite:///./edgefleet-data/store.db"
    ),
    tokens_file: Annotated[Path | None, typer.Option(help="YAML file of static tokens (name, role, token)")] = None,
    admin_token_file: Annotated[Path | None, typer.Option(
        help="Also write the admin token generated on first start to this file (mode 0600)")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest accepted request body")] = 1024 * 1024,
    max_watches_per_principal: Annotated[int, typer.Option(
        min=0, help="Watches one token may hold open at once (one more is 429); 0: no limit")] = 128,
    compact_interval: Annotated[float, typer.Option(
        help="Seconds of store history kept for watches; older history is compacted")] = 300.0,
    log_format: Annotated[str, typer.Option(help="text or json")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    node_not_ready_after: Annotated[float, typer.Option(
        help="Seconds a node may be connected to no hub replica before it is marked NotReady "
        "(it keeps its workloads)")] = 40.0,
    node_unknown_after: Annotated[float, typer.Option(
        help="Seconds a node may be connected to no hub replica before it is marked Unknown "
        "(it keeps its workloads)")] = 300.0,
    node_monitor_period: Annotated[float, typer.Option(
        help="Seconds between two checks of the nodes' liveness")] = 5.0,
    node_status_refresh: Annotated[float, typer.Option(
        min=1.0, help="Seconds between two writes of an unchanged Node.status (lastHeartbeat); changes are "
        "written at once (at most one write per node per second), traffic counters every 5 s or more "
        "(all nodes together at most 50 such writes a second)")] = 300.0,
    heartbeat: Annotated[float, typer.Option(
        help="Seconds between the agents' status reports (told to each agent when it connects)")] = 10.0,
    hub_id: Annotated[str, typer.Option(help="Name of this hub replica (default HOSTNAME:PORT)")] = "",
    advertise_url: Annotated[str | None, typer.Option(
        help="Base URL agents and the other replicas reach this replica at, published in its Hub object "
        "(default http://LISTEN unless it listens on a wildcard address)")] = None,
    max_connections: Annotated[int, typer.Option(
        min=1, help="Agent sessions this replica holds at most; more are refused with 503 and Retry-After")] = 20_000,
    max_handshakes: Annotated[int, typer.Option(
        min=1, help="Agent handshakes in progress at once; more are refused with 503 (reconnect storms)")] = 256,
    rebalance_tolerance: Annotated[float, typer.Option(
        min=0.0, help="Release sessions when holding more than the fair share (sessions / live replicas) "
        "by more than this fraction")] = 0.05,
    rebalance_observe: Annotated[float, typer.Option(
        min=5.0, help="Seconds to wait after releasing sessions before measuring the balance again (at least 5: "
        "the other replicas' Hub objects must show the sessions that moved)")] = 30.0,
    dns_listen: gslb_cli.DnsListenOpt = gslb_cli.DEFAULT_DNS_LISTEN,
    geo: gslb_cli.GeoOpt = None,
    zone: gslb_cli.ZoneOpt = gslb_cli.DEFAULT_ZONE,
    redirect_listen: gslb_cli.RedirectOpt = None,
    node_port: gslb_cli.NodePortOpt = None,
    trusted_proxy: gslb_cli.TrustedOpt = None,
    demand_window: gslb_cli.DemandWindowOpt = gslb_cli.DEFAULT_DEMAND_WINDOW,
    rrl_rate: gslb_cli.RrlRateOpt = gslb_cli.DEFAULT_RRL_RATE,
    rrl_slip: gslb_cli.RrlSlipOpt = gslb_cli.DEFAULT_RRL_SLIP,
    demand_per_sender: gslb_cli.DemandPerSenderOpt = gslb_cli.DEFAULT_DEMAND_PER_SENDER,
    site_activation_period: Annotated[float, typer.Option(
        min=0.05, help="Seconds between two decisions of the site activation controller")] = 5.0,
    tls_cert: Annotated[Path | None, typer.Option(
        help="Serve the API, dashboard and hub over TLS with this certificate (PEM, chain allowed; every hub "
        "replica serves the same one, with all their names as SANs). `edgefleet tls init` makes one")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The private key of --tls-cert (PEM)")] = None,
    tls_ca: Annotated[Path | None, typer.Option(
        help="The CA that signed --tls-cert, published at /edge/v1/ca for `edge join --ca-hash` (default: the "
        "last certificate of --tls-cert's chain)")] = None,
) -> None:
    """Run the control plane: REST API with watch, on SQLite (default) or etcd, and the GSLB.

    On first start against an empty store an admin token is created and
    printed once. The GSLB's authoritative DNS runs on --dns-listen (off:
    disabled) and its HTTP 302 redirector on --redirect-listen if given.
    Stop with Ctrl-C or SIGTERM; SIGHUP reloads the geo table.

    Several replicas on one etcd store share the fleet: each publishes a Hub
    object (edgefleet get hubs) with its sessions, and an over-loaded replica
    hands sessions to the others until they hold even shares.

    With --tls-cert and --tls-key it serves HTTPS (and WSS for the agents);
    without them cleartext HTTP, which clients accept only with --insecure.
    """
    from edgefleet import logs
    from edgefleet.cloud import process
    from edgefleet.cloud.auth import AuthError
    from edgefleet.cloud.balance import BalanceSettings
    from edgefleet.cloud.controllers.nodelifecycle import Thresholds
    from edgefleet.cloud.hub import HubLimits
    from edgefleet.cloud.statuswrites import Intervals
    from edgefleet.store.interface import StoreError
    from edgefleet.tls import TlsError, server_tls

    logs.setup(log_level, log_format)
    try:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together: give both (or neither, for cleartext HTTP)")
        if tls_ca is not None and tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key")
        tls = server_tls(tls_cert, tls_key, tls_ca) if tls_cert is not None and tls_key is not None else None
        host, port = process.parse_listen(listen)
        thresholds = Thresholds(node_not_ready_after, node_unknown_after, node_monitor_period)
        options = process.CloudOptions(
            host=host, port=port, store_url=store, tokens_file=tokens_file,
            admin_token_file=admin_token_file, max_body_bytes=max_body_bytes,
            max_watches_per_principal=max_watches_per_principal,
            compact_interval=compact_interval, node_thresholds=thresholds,
            heartbeat_seconds=heartbeat, hub_id=hub_id,
            gslb=gslb_cli.gslb_options(dns_listen, geo, zone, redirect_listen, node_port, trusted_proxy,
                                       demand_window, rrl_rate=rrl_rate, rrl_slip=rrl_slip,
                                       demand_per_sender=demand_per_sender),
            site_activation_period=site_activation_period, advertise_url=advertise_url,
            hub_limits=HubLimits(max_connections=max_connections, max_handshakes=max_handshakes),
            status_intervals=Intervals(refresh_interval=node_status_refresh),
            balance=BalanceSettings(tolerance=rebalance_tolerance, observe_seconds=rebalance_observe),
            tls=tls,
        )
        process.main(options)
    except (ValueError, StoreError, TlsError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen: {exc}", "choose other addresses with --listen / --dns-listen, or --dns-listen off")
    except AuthError as exc:
        fail(str(exc))


@app.command()
def apply(
    filename: Annotated[list[str], typer.Option("--filename", "-f", help="File, directory or - for stdin")],
    server: ServerOpt = None, token: TokenOpt = None, context: ContextOpt = None,
) -> None:
    """Create or update resources from YAML (multi-document files and directories).

    Every document is validated before anything is sent; one invalid
    document means nothing is applied. Sites are applied first, then Nodes
    (a Node's site must exist), then the rest in file order. Prints created,
    configured or unchanged for each object, and the server's warnings.
    """
    manifests = in_apply_order(guarded(lambda: load_manifests(filename)))
    with api(server, token, context) as client:
        for manifest in manifests:
            verb = _apply_one(client, manifest.info, manifest.document, manifest.resource)
            out.print(f"{manifest.info.singular}/{manifest.resource.name} {verb}")


def _apply_one(client: ApiClient, info: KindInfo, document: dict[str, Any], resource: Any) -> str:
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


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    name: Annotated[str | None, typer.Argument(help="Object name; all objects when omitted")] = None,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Label selector, e.g. tier=edge,region in (eu,us)")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table, wide, yaml, json or name")] = "table",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="After listing, print changes as they happen")] = False,
    server: ServerOpt = None, token: TokenOpt = None, context: ContextOpt = None,
) -> None:
    """Show resources as a table, YAML or JSON; with -w keep printing changes."""
    if output not in OUTPUT_FORMATS:
        fail(f"unknown output format {output!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    info = resolve_kind(kind)
    with api(server, token, context) as client:
        if name:
            docs = [client.get(info, name)]
            revision = docs[0]["metadata"]["resourceVersion"]
        else:
            listing = client.list(info, selector=selector)
            docs, revision = listing["items"], listing["metadata"]["resourceVersion"]
        print_docs(out, info, docs, output, single=bool(name))
        if watch:
            _follow(client, info, selector, revision, output, name)


def _follow(
    client: ApiClient, info: KindInfo, selector: str | None, revision: str, output: str, name: str | None
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
                out.print(f"{event['type']:<9} {info.singular}/{doc['metadata']['name']}  "
                          f"resourceVersion={doc['metadata'].get('resourceVersion')}")
            else:
                print(dump({"type": event["type"], "object": doc}, output))
                print("---" if output == "yaml" else "", flush=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command("describe")
def describe_command(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    name: Annotated[str, typer.Argument(help="Object name")],
    server: ServerOpt = None, token: TokenOpt = None, context: ContextOpt = None,
) -> None:
    """Show one object in detail: metadata, spec and status."""
    info = resolve_kind(kind)
    with api(server, token, context) as client:
        out.print(describe(info, client.get(info, name)), highlight=False, markup=False)


@app.command()
def delete(
    kind: Annotated[str | None, typer.Argument(help=KIND_HELP)] = None,
    names: Annotated[list[str] | None, typer.Argument(help="Object names")] = None,
    filename: Annotated[
        list[str] | None, typer.Option("--filename", "-f", help="Delete what these manifests define")
    ] = None,
    ignore_not_found: Annotated[bool, typer.Option(help="Do not fail on objects that do not exist")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Delete even though other objects still name it (a Site that has Nodes)")] = False,
    server: ServerOpt = None, token: TokenOpt = None, context: ContextOpt = None,
) -> None:
    """Delete objects by kind and name, or those defined in manifests (-f).

    A Site that still has Nodes is refused unless --force; with -f, Nodes
    are deleted before their Sites.
    """
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


@app.command()
def version(
    server: ServerOpt = None, token: TokenOpt = None, context: ContextOpt = None,
    client_only: Annotated[bool, typer.Option("--client", help="Only the client version")] = False,
) -> None:
    """Print the client version and, if reachable, the server's."""
    out.print(f"client: {edgefleet.__version__}")
    if client_only:
        return
    with api(server, token, context) as client:
        out.print(f"server: {client.version()['version']} ({client.server})")


@config_app.command("set-context")
def set_context(
    name: Annotated[str, typer.Argument(help="Context name")],
    server: Annotated[str, typer.Option(help="API server URL")] = cli_config.DEFAULT_SERVER,
    token: Annotated[str | None, typer.Option(help="Bearer token")] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context")] = False,
    ca_file: Annotated[Path | None, typer.Option(
        help="CA certificate the server's certificate must chain to (alone; default: the system's CAs)")] = None,
    insecure: Annotated[bool | None, typer.Option(
        "--insecure/--no-insecure", help="Allow a cleartext http:// server (the token crosses the network in "
        "the clear)")] = None,
) -> None:
    """Create or update a context (file mode 0600: it holds the token)."""
    data = _config()
    if ca_file is not None and not ca_file.is_file():
        fail(f"--ca-file {ca_file}: no such file")
    cli_config.set_context(data, name, server, token, ca_file=ca_file, insecure=insecure)
    if use or not data.get("current-context"):
        data["current-context"] = name
    out.print(f"context {name!r} saved in {cli_config.save_config(data)}")


@config_app.command("use-context")
def use_context(name: Annotated[str, typer.Argument(help="Context name")]) -> None:
    """Make a context the current one."""
    data = _config()
    if cli_config.find_context(data, name) is None:
        fail(f"no context {name!r}; create it with `edgefleet config set-context {name} --server URL --token T`")
    data["current-context"] = name
    cli_config.save_config(data)
    out.print(f"switched to context {name!r}")


@config_app.command("get-contexts")
def get_contexts() -> None:
    """List contexts; the current one is marked with *."""
    data = _config()
    current = data.get("current-context")
    for context in data["contexts"]:
        mark = "*" if context.get("name") == current else " "
        out.print(f"{mark} {context.get('name')}\t{context.get('server')}")


@config_app.command("view")
def view_config() -> None:
    """Print the config file with tokens hidden."""
    data = _config()
    for context in data["contexts"]:
        if context.get("token"):
            context["token"] = "REDACTED"
    print(dump(data, "yaml"))


def _config() -> dict[str, Any]:
    try:
        return cli_config.load_config()
    except cli_config.ConfigError as exc:
        fail(str(exc))


@token_app.command("generate")
def token_generate() -> None:
    """Print a new random token, for a --tokens-file (does not contact the server)."""
    from edgefleet.cloud.auth import generate_token

    print(generate_token())


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="edgefleet")


if __name__ == "__main__":  # pragma: no cover
    main()
