"""``edgefleet cloud``: run the control plane (API, hub, controllers, GSLB).

How: a thin typer command that turns its options into a
:class:`~edgefleet.cloud.process.CloudOptions` (the GSLB options are shared
with ``edgefleet dns``: :mod:`edgefleet.cli.gslb`) and runs
:func:`edgefleet.cloud.process.main`. The cloud's own modules are imported
when the command runs, not when the module loads; ``edgefleet.cli.main``
loads this module only for ``edgefleet cloud`` (docs/architecture.md,
"Processes").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.cli import gslb as gslb_cli
from edgefleet.cli.common import fail

if TYPE_CHECKING:
    from edgefleet.cloud.backups import BackupSchedule


def register(app: typer.Typer) -> None:
    """Add ``cloud`` to the ``edgefleet`` app."""
    app.command()(cloud)


def cloud(
    listen: Annotated[str, typer.Option(help="Address to serve the API on, HOST:PORT")] = "127.0.0.1:7440",
    store: Annotated[str, typer.Option(help="sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT...]")] = (
        "sqlite:///./edgefleet-data/store.db"
    ),
    tokens_file: Annotated[Path | None, typer.Option(help="YAML file of static tokens (name, role, token)")] = None,
    admin_token_file: Annotated[
        Path | None, typer.Option(help="Also write the admin token generated on first start to this file (mode 0600)")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest accepted request body")] = 1024 * 1024,
    blob_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of artifact blobs (default: blobs/ beside a SQLite store); shared by replicas"),
    ] = None,
    max_blob_bytes: Annotated[int, typer.Option(min=1, help="Largest artifact blob accepted by upload")] = 8 * 1024**3,
    max_watches_per_principal: Annotated[
        int, typer.Option(min=0, help="Watches one token may hold open at once (one more is 429); 0: no limit")
    ] = 128,
    compact_interval: Annotated[
        float, typer.Option(help="Seconds of store history kept for watches; older history is compacted")
    ] = 300.0,
    log_format: Annotated[str, typer.Option(help="text or json")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    node_not_ready_after: Annotated[
        float,
        typer.Option(
            help="Seconds a node may be connected to no hub replica before it is marked NotReady "
            "(it keeps its workloads)"
        ),
    ] = 40.0,
    node_unknown_after: Annotated[
        float,
        typer.Option(
            help="Seconds a node may be connected to no hub replica before it is marked Unknown "
            "(it keeps its workloads)"
        ),
    ] = 300.0,
    node_monitor_period: Annotated[float, typer.Option(help="Seconds between two checks of the nodes' liveness")] = 5.0,
    node_status_refresh: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Seconds between two writes of an unchanged Node.status (lastHeartbeat); changes are "
            "written at once (at most one write per node per second), traffic counters every 5 s or more "
            "(all nodes together at most 50 such writes a second)",
        ),
    ] = 300.0,
    heartbeat: Annotated[
        float, typer.Option(help="Seconds between the agents' status reports (told to each agent when it connects)")
    ] = 10.0,
    hub_id: Annotated[str, typer.Option(help="Name of this hub replica (default HOSTNAME:PORT)")] = "",
    advertise_url: Annotated[
        str | None,
        typer.Option(
            help="Base URL agents and the other replicas reach this replica at, published in its Hub object "
            "(default http://LISTEN unless it listens on a wildcard address)"
        ),
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            min=1, help="Agent sessions this replica holds at most; more are refused with 503 and Retry-After"
        ),
    ] = 20_000,
    max_handshakes: Annotated[
        int,
        typer.Option(min=1, help="Agent handshakes in progress at once; more are refused with 503 (reconnect storms)"),
    ] = 256,
    rebalance_tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Release sessions when holding more than the fair share (sessions / live replicas) "
            "by more than this fraction",
        ),
    ] = 0.05,
    rebalance_observe: Annotated[
        float,
        typer.Option(
            min=5.0,
            help="Seconds to wait after releasing sessions before measuring the balance again (at least 5: "
            "the other replicas' Hub objects must show the sessions that moved)",
        ),
    ] = 30.0,
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
    probe_networks: gslb_cli.ProbeNetworksOpt = gslb_cli.DEFAULT_PROBE_NETWORKS,
    probe_min_queries: gslb_cli.ProbeMinQueriesOpt = gslb_cli.DEFAULT_PROBE_MIN_QUERIES,
    site_activation_period: Annotated[
        float, typer.Option(min=0.05, help="Seconds between two decisions of the site activation controller")
    ] = 5.0,
    site_status_interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds between two writes of a Site's measured load (status.loadGbps, load; the GSLB sheds "
            "on it); changes of its healthy or total nodes are written at once",
        ),
    ] = 10.0,
    latency_interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds between two writes of a Site's measured RTTs (status.latency, from its nodes' probes; the "
            "GSLB's latency policy routes on them); a target appearing or going is written at once",
        ),
    ] = 10.0,
    domain_status_interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds between two writes of a Domain's traffic figures (status.requests, offload; "
            "`edgefleet get domains` shows them); changes of its serving sites are written at once",
        ),
    ] = 20.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Serve the API, dashboard and hub over TLS with this certificate (PEM, chain allowed; every hub "
            "replica serves the same one, with all their names as SANs). `edgefleet tls init` makes one"
        ),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The private key of --tls-cert (PEM)")] = None,
    metrics_min_interval: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Fleet metrics relay: seconds a node's relayed answer is served again instead of asking the node "
            "(docs/metrics.md)",
        ),
    ] = 5.0,
    metrics_timeout: Annotated[
        float, typer.Option(min=0.1, help="Fleet metrics relay: seconds to wait for a node's answer (then 504)")
    ] = 6.0,
    backup_dir: Annotated[
        Path | None,
        typer.Option(
            help="Write a backup of the store (as `edgefleet backup`) into this directory every --backup-every, "
            "on one replica at a time; files are 0600 and hold secrets"
        ),
    ] = None,
    backup_every: Annotated[
        str, typer.Option(help="Time between two scheduled backups: 90s, 30m, 1h, 1d (with --backup-dir)")
    ] = "1h",
    backup_keep: Annotated[
        int, typer.Option(min=1, help="Scheduled backups kept in --backup-dir (the oldest are deleted)")
    ] = 24,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="The CA that signed --tls-cert, published at /edge/v1/ca for `edge join --ca-hash` (default: the "
            "last certificate of --tls-cert's chain)"
        ),
    ] = None,
) -> None:
    """Run the control plane: REST API with watch, on SQLite (default) or etcd, and the GSLB.

    On first start against an empty store an admin token is created and
    printed once. The GSLB's authoritative DNS runs on --dns-listen (off:
    disabled) and its HTTP 302 redirector on --redirect-listen if given.
    Stop with Ctrl-C or SIGTERM; SIGHUP reloads the geo table. The --geo
    table is published to every node (edge rules place clients with it),
    also with --dns-listen off: give edgefleet dns the same file.

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
    from edgefleet.cloud.metricsrelay import RelaySettings
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
            host=host,
            port=port,
            store_url=store,
            tokens_file=tokens_file,
            admin_token_file=admin_token_file,
            max_body_bytes=max_body_bytes,
            blob_dir=blob_dir,
            max_blob_bytes=max_blob_bytes,
            max_watches_per_principal=max_watches_per_principal,
            compact_interval=compact_interval,
            node_thresholds=thresholds,
            heartbeat_seconds=heartbeat,
            hub_id=hub_id,
            gslb=gslb_cli.gslb_options(
                dns_listen,
                geo,
                zone,
                redirect_listen,
                node_port,
                trusted_proxy,
                demand_window,
                rrl_rate=rrl_rate,
                rrl_slip=rrl_slip,
                demand_per_sender=demand_per_sender,
                probe_networks=probe_networks,
                probe_min_queries=probe_min_queries,
            ),
            geo_file=gslb_cli.geo_to_publish(dns_listen, geo),  # DNS off: published to the nodes all the same
            site_activation_period=site_activation_period,
            site_status_interval=site_status_interval,
            domain_status_interval=domain_status_interval,
            latency_interval=latency_interval,
            advertise_url=advertise_url,
            hub_limits=HubLimits(max_connections=max_connections, max_handshakes=max_handshakes),
            status_intervals=Intervals(refresh_interval=node_status_refresh),
            balance=BalanceSettings(tolerance=rebalance_tolerance, observe_seconds=rebalance_observe),
            metrics_relay=RelaySettings(min_interval=metrics_min_interval, timeout=metrics_timeout),
            tls=tls,
            backup=_backup_schedule(backup_dir, backup_every, backup_keep),
        )
        process.main(options)
    except (ValueError, StoreError, TlsError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen: {exc}", "choose other addresses with --listen / --dns-listen, or --dns-listen off")
    except AuthError as exc:
        fail(str(exc))


def _backup_schedule(directory: Path | None, every: str, keep: int) -> BackupSchedule | None:
    """The scheduled backups of --backup-dir/--backup-every/--backup-keep; ValueError with the fix."""
    from edgefleet.cli.fleet import parse_duration
    from edgefleet.cloud.backups import BackupSchedule

    if directory is None:
        return None
    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise ValueError(f"--backup-every: {exc}") from None
    return BackupSchedule(directory, float(seconds), keep)
