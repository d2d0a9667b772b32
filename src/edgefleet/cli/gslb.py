"""``edgefleet dns`` and the GSLB options of ``edgefleet cloud``.

How: both build a :class:`~edgefleet.cloud.gslbservice.GslbOptions` from
the same options: ``--dns-listen`` (``off`` disables the DNS server in the
cloud), ``--geo`` (the prefix -> location CSV, reloaded on SIGHUP),
``--zone`` (the CDN zone the server is authoritative for),
``--redirect-listen`` (the HTTP 302 redirector; off unless given),
``--node-port`` (the port redirected users reach the caches on),
``--rrl-rate`` and ``--rrl-slip`` (response rate limiting of UDP answers
per client network, :mod:`edgefleet.gslb.rrl`), ``--demand-per-sender``
(the queries a second one sender network may add to the demand) and, for
the cloud, ``--demand-window`` (the seconds over which DNS demand is
averaged for the site activation controller), ``--probe-networks`` and
``--probe-min-queries`` (the latency probe targets discovered from DNS
traffic: :mod:`edgefleet.gslb.networks`; the cloud's latency controller
publishes them).

``edgefleet dns`` then runs the GSLB alone against a store, and that store
must be etcd. Why: the GSLB follows changes through the store's watch, and
a SQLite store's revisions and watch fan-out live in the one process that
holds its file lock (:mod:`edgefleet.store.sqlite`). A second process on the
same file either cannot open it (the cloud holds the lock) or, worse, takes
the lock first, keeps the cloud from starting and answers from a snapshot
that never changes. So ``edgefleet dns`` refuses SQLite up front and says
where the GSLB runs instead: inside ``edgefleet cloud``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.cli.common import fail
from edgefleet.gslb import rrl
from edgefleet.gslb.demand import DEMAND_PER_SENDER
from edgefleet.gslb.fleet import DEFAULT_ZONE as DEFAULT_ZONE
from edgefleet.gslb.networks import MIN_COUNT, TOP_N

if TYPE_CHECKING:
    from edgefleet.cloud.gslbservice import GslbOptions

DnsListenOpt = Annotated[str, typer.Option(help="HOST:PORT for the authoritative DNS (UDP and TCP); 'off' disables it")]
GeoOpt = Annotated[
    Path | None,
    typer.Option(
        help="Geo table: CSV lines cidr,country,region,lat,lon (or a MaxMind .mmdb); SIGHUP reloads it. The cloud "
        "publishes it to the nodes (also with --dns-listen off); edgefleet dns warns when the nodes use another"
    ),
]
ZoneOpt = Annotated[str, typer.Option(help="The CDN zone: Domains answer as <domain>.<zone>")]
RedirectOpt = Annotated[str | None, typer.Option(help="HOST:PORT for the HTTP 302 redirector (off unless given)")]
NodePortOpt = Annotated[
    int | None, typer.Option(help="Port of the caches in redirect Locations (none: the scheme's default)")
]
TrustedOpt = Annotated[
    list[str] | None,
    typer.Option("--trusted-proxy", help="CIDR of a proxy whose X-Forwarded-For the redirector believes (repeatable)"),
]

DemandWindowOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Seconds over which DNS queries per region are averaged into the demand that switches "
        "alwaysOn: false sites on and off",
    ),
]

RrlRateOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="UDP answers a second one client network (/24, /56) gets per kind of answer before response "
        "rate limiting drops or truncates them (0: off; loopback is never limited)",
    ),
]
RrlSlipOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Every Nth rate-limited UDP answer is sent truncated (TC=1) so real clients retry over TCP; the "
        "others are dropped (0: drop all, 1: truncate all)",
    ),
]
DemandPerSenderOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Queries a second one sender network (/24, /56) may add to the DNS demand that switches "
        "alwaysOn: false sites on, whatever Client Subnet it sends (0: no limit)",
    ),
]

ProbeNetworksOpt = Annotated[
    int,
    typer.Option(
        min=0,
        max=128,
        help="Latency probe targets the cloud discovers from DNS traffic: the N busiest resolver networks and "
        "the N busiest EDNS Client Subnets (/24, /56) are published in ProbeTargets gslb-resolvers, and every "
        "agent measures its RTT to them for the latency policy (0: discover none; operators' ProbeTargets "
        "still count)",
    ),
]
ProbeMinQueriesOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Queries a network needs (counted as demand, decayed with a 10 min half-life) before it becomes a "
        "discovered probe target: keeps one-off and sprayed networks out",
    ),
]

DEFAULT_PROBE_NETWORKS = TOP_N
DEFAULT_PROBE_MIN_QUERIES = MIN_COUNT
DEFAULT_RRL_RATE = rrl.DEFAULT_RATE
DEFAULT_RRL_SLIP = rrl.DEFAULT_SLIP
DEFAULT_DEMAND_PER_SENDER = DEMAND_PER_SENDER
DEFAULT_DNS_LISTEN = "127.0.0.1:8053"
DEFAULT_DEMAND_WINDOW = 60
SHARED_STORE_SCHEME = "etcd://"
SQLITE_REFUSAL = "edgefleet dns needs an etcd store; with SQLite the GSLB runs inside edgefleet cloud (--dns-listen)"


def gslb_options(
    dns_listen: str,
    geo: Path | None,
    zone: str,
    redirect_listen: str | None,
    node_port: int | None,
    trusted: list[str] | None,
    demand_window: int = DEFAULT_DEMAND_WINDOW,
    *,
    rrl_rate: int = DEFAULT_RRL_RATE,
    rrl_slip: int = DEFAULT_RRL_SLIP,
    demand_per_sender: int = DEFAULT_DEMAND_PER_SENDER,
    probe_networks: int = DEFAULT_PROBE_NETWORKS,
    probe_min_queries: float = DEFAULT_PROBE_MIN_QUERIES,
) -> GslbOptions | None:
    """GslbOptions, or None when ``dns_listen`` is 'off'; ValueError with a hint on bad input."""
    from edgefleet.cloud.gslbservice import GslbOptions
    from edgefleet.cloud.process import parse_listen
    from edgefleet.gslb.rrl import RrlSettings

    if dns_listen == "off":
        return None
    if geo is not None and not geo.exists():
        raise ValueError(f"--geo {geo}: no such file")
    dns_host, dns_port = parse_listen(dns_listen)
    redirect_host, redirect_port = parse_listen(redirect_listen) if redirect_listen else (None, 0)
    return GslbOptions(
        dns_host=dns_host,
        dns_port=dns_port,
        zone=zone.lower().rstrip("."),
        geo_path=geo,
        redirect_host=redirect_host,
        redirect_port=redirect_port,
        node_port=node_port,
        trusted_proxies=tuple(trusted or ()),
        demand_window=demand_window,
        rrl=RrlSettings(rate=rrl_rate, slip=rrl_slip),
        demand_per_sender=demand_per_sender,
        probe_networks=probe_networks,
        probe_min_queries=probe_min_queries,
    )


def geo_to_publish(dns_listen: str, geo: Path | None) -> Path | None:
    """The cloud's ``--geo`` when its DNS is off: still published to the nodes (edgefleet.cloud.geotable).

    Read now as the GSLB would, so a bad file stops the start before anything listens (GeoTableError, a
    ValueError naming file:line); None when the embedded GSLB has the table (it publishes it) or there is none.
    """
    from edgefleet.cloud.geotable import check_table

    if dns_listen != "off" or geo is None:
        return None
    if not geo.exists():
        raise ValueError(f"--geo {geo}: no such file")
    check_table(geo)
    return geo


def check_shared_store(store_url: str) -> None:
    """ValueError unless ``store_url`` is a store another process can watch (etcd); see the module docstring."""
    if store_url.startswith(SHARED_STORE_SCHEME):
        return
    if store_url.startswith("sqlite:"):
        raise ValueError(SQLITE_REFUSAL)
    raise ValueError(f"--store {store_url!r}: edgefleet dns needs an etcd store (etcd://HOST:PORT[,HOST:PORT...])")


def register(app: typer.Typer) -> None:
    app.command("dns")(dns)


def dns(
    store: Annotated[
        str,
        typer.Option(
            help="etcd://HOST:PORT[,HOST:PORT...]: the etcd store edgefleet cloud runs on (SQLite cannot be shared)"
        ),
    ],
    listen: DnsListenOpt = DEFAULT_DNS_LISTEN,
    geo: GeoOpt = None,
    zone: ZoneOpt = DEFAULT_ZONE,
    redirect_listen: RedirectOpt = None,
    node_port: NodePortOpt = None,
    trusted_proxy: TrustedOpt = None,
    rrl_rate: RrlRateOpt = DEFAULT_RRL_RATE,
    rrl_slip: RrlSlipOpt = DEFAULT_RRL_SLIP,
    demand_per_sender: DemandPerSenderOpt = DEFAULT_DEMAND_PER_SENDER,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the GSLB alone: authoritative DNS (and optionally the 302 redirector) from a store.

    It answers <domain>.<zone> and each Domain's hostnames with healthy,
    non-draining nodes of the site the Domain's routing policy picks for the
    client (EDNS Client Subnet, else the resolver's address), and
    whoami.<zone> / _route.<domain>.<zone> TXT records (over TCP) that explain the choice.
    Changes in the store show in answers as soon as its watch delivers them.
    The store must be etcd: with SQLite the GSLB runs inside edgefleet cloud.
    """
    import asyncio

    from edgefleet import logs
    from edgefleet.cloud.gslbservice import run_gslb
    from edgefleet.gslb.errors import GslbError
    from edgefleet.store.interface import StoreError

    logs.setup(log_level, "text")
    try:
        check_shared_store(store)
        options = gslb_options(
            listen,
            geo,
            zone,
            redirect_listen,
            node_port,
            trusted_proxy,
            rrl_rate=rrl_rate,
            rrl_slip=rrl_slip,
            demand_per_sender=demand_per_sender,
        )
        if options is None:
            raise ValueError("--listen off: nothing to run")
        import uvloop

        uvloop.run(run_gslb(store, options))
    except (ValueError, OSError, StoreError, GslbError) as exc:
        fail(str(exc), code=2)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
