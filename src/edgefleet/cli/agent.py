"""``edgefleet edge run``, ``edgefleet edge stop-workloads`` and ``edgefleet logs``.

How: thin typer wrappers over :mod:`edgefleet.edge.agent` (the node side)
and the hub's logs route (the operator side). The agent commands read the
node directory written by ``edgefleet edge join``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from edgefleet.api.domains import CDN_ZONE, check_hostname
from edgefleet.cli.common import AdminTokenOpt, ContextOpt, ServerOpt, api, fail
from edgefleet.cli.fleet import DEFAULT_DATA_DIR, DataDirOpt, edge_app


def register(app: typer.Typer) -> None:
    """Add the ``edge`` group (``join`` and ``rotate-credential`` from :mod:`edgefleet.cli.fleet`) and ``logs``."""
    app.add_typer(edge_app, name="edge")
    app.command("logs")(logs)


@edge_app.command("run")
def edge_run(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    listen: Annotated[
        str,
        typer.Option(
            help="Local address for /healthz, /readyz, /metrics and /status (port 0: any free port, "
            "written to DATA_DIR/agent.addr)"
        ),
    ] = "127.0.0.1:7441",
    heartbeat: Annotated[
        float, typer.Option(help="Seconds between status reports (the hub may ask for another)")
    ] = 10.0,
    ping_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between WebSocket pings to the hub; a link silent for twice this long is redialled "
            "(the hub does not ping: it closes a session silent for three heartbeats)"
        ),
    ] = 10.0,
    peer_probe_period: Annotated[
        float,
        typer.Option(
            help="Seconds between health probes of the other nodes' caches in the site (reported as peerVotes; "
            "a peer is voted unhealthy after 2 failed probes in a row)"
        ),
    ] = 2.0,
    latency_probe_period: Annotated[
        float,
        typer.Option(
            help="Seconds between rounds of latency probes to the ProbeTargets of the view (client networks, other "
            "sites; ±20% jitter, 1 s timeout each, reported as Node.status.latency for the GSLB's latency policy)"
        ),
    ] = 10.0,
    probe_source: Annotated[
        str | None,
        typer.Option(
            help="Local address to send latency probes from (default: the system picks one); on a node with "
            "several addresses, the one its users reach"
        ),
    ] = None,
    cdn_zone: Annotated[
        str,
        typer.Option(
            help="The GSLB's CDN zone: the cache also serves <domain>.<zone> and <node>.<domain>.<zone>, "
            "the names DNS answers and 302 redirects use"
        ),
    ] = CDN_ZONE,
    workload_user: Annotated[
        str,
        typer.Option(
            help="When the agent runs as root: the user workloads without spec.template.runAsUser run as (created "
            "as a system user if missing); built-in workloads run as the agent's user. Not root: workloads run as "
            "the agent's user (no isolation from it; see docs/security.md)"
        ),
    ] = "edgefleet-workload",
    log_format: Annotated[str, typer.Option(help="text or json")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the node agent: workloads from local state first, then the link to the cloud.

    Workloads keep running when the cloud is unreachable and when the agent
    itself stops or restarts (a restarted agent adopts them). Stop with
    Ctrl-C or SIGTERM; use `edgefleet edge stop-workloads` to stop them too.

    The agent dials the cloud servers given to `edge join` (DATA_DIR/node.yaml),
    or the list of the cloud's ClusterInfo `default` once it received one, in
    random order, failing over between them; /status shows the list and the
    server of the current connection.
    """
    from edgefleet import logs as logsetup
    from edgefleet.api.workloads import check_workload_user
    from edgefleet.cloud.process import parse_listen
    from edgefleet.edge import agent

    logsetup.setup(log_level, log_format)
    try:
        host, port = parse_listen(listen)
        agent.main(
            agent.AgentOptions(
                data_dir=data_dir,
                listen_host=host,
                listen_port=port,
                heartbeat_seconds=heartbeat,
                ping_interval=ping_interval,
                peer_probe_period=peer_probe_period,
                latency_probe_period=latency_probe_period,
                probe_source=probe_source,
                cdn_zone=check_hostname(cdn_zone.rstrip(".")),
                workload_user=check_workload_user(workload_user),
            )
        )
    except (ValueError, agent.AgentError, OSError) as exc:
        fail(str(exc))


@edge_app.command("stop-workloads")
def edge_stop_workloads(data_dir: DataDirOpt = DEFAULT_DATA_DIR) -> None:
    """Stop every workload of this node gracefully (preStop, SIGTERM, then SIGKILL after the grace period)."""
    from edgefleet.edge import agent

    try:
        asyncio.run(agent.stop_workloads(data_dir))
    except agent.AgentError as exc:
        fail(str(exc))
    typer.echo(f"stopped the workloads of {data_dir}")


def logs(
    node: Annotated[str, typer.Argument(help="Node name")],
    workload: Annotated[str, typer.Argument(help="Workload name")],
    tail: Annotated[int, typer.Option(help="Number of lines from the end")] = 200,
    server: ServerOpt = None,
    token: AdminTokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the last lines of a workload's log, read from the node through the cloud.

    Works while the node is connected to the hub it reaches through --server.
    Needs an admin token (a workload's output may hold anything it printed).
    """
    with api(server, token, context) as client:
        typer.echo(client.text(f"/edge/v1/nodes/{node}/logs/{workload}", tail=tail), nl=False)
