"""Run the edgefleet GSLB DNS server on a fixed benchmark fleet, in one process, with uvloop.

A stand-in for ``edgefleet dns`` until that command exists: it builds a
:class:`~edgefleet.gslb.fleet.FleetState` from three edge sites of two nodes
each (Paris, New York, Tokyo; all nodes Ready, with IPv4 and IPv6
addresses), one Domain ``demo`` (hostname ``www.customer.example``, policy
``--policy``), a geo table read from ``--geo``, and serves
``demo.cdn.edgefleet.test`` with :class:`~edgefleet.gslb.dns.DnsServer` on
``--listen``. It prints ``dns listening on HOST:PORT`` once both UDP and TCP
are bound, then serves until SIGTERM/SIGINT and prints its counters.

``--no-cache`` turns off both the server's packet cache and the resolver's
answer cache, so every query is parsed, placed, routed and encoded.

    .venv/bin/python bench/dns_gslb_runner.py --geo examples/geo.csv --listen 127.0.0.1:5353
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import uvloop

from edgefleet.gslb.dns import DnsServer
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.geo import GeoDatabase
from edgefleet.gslb.zone import Resolver, Zone

SITES = {
    "par-edge": ("eu-west", "FR", 48.8566, 2.3522, "127.0.1", "2001:db8:1"),
    "nyc-edge": ("us-east", "US", 40.7128, -74.0060, "127.0.5", "2001:db8:2"),
    "tyo-edge": ("ap-northeast", "JP", 35.6762, 139.6503, "127.0.7", "2001:db8:3"),
}


def fleet_documents(policy: str) -> list[dict[str, Any]]:
    """Sites, two Ready nodes per site, and the ``demo`` Domain, as the API returns them."""
    documents: list[dict[str, Any]] = []
    for name, (region, country, lat, lon, v4, v6) in SITES.items():
        documents.append(
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Site",
                "metadata": {"name": name, "labels": {"tier": "edge", "region": region}},
                "spec": {
                    "region": region,
                    "location": {"lat": lat, "lon": lon, "country": country},
                    "capacityGbps": 10,
                },
            }
        )
        for index in (1, 2):
            documents.append(
                {
                    "apiVersion": "edgefleet.io/v1",
                    "kind": "Node",
                    "metadata": {"name": f"{name}-{index}"},
                    "spec": {"site": name, "addresses": [f"{v4}.{index}", f"{v6}::{index}"]},
                    "status": {"phase": "Ready"},
                }
            )
    routing: dict[str, Any] = {"policy": policy, "answers": 2, "ttl": 30}
    if policy == "weighted":
        routing["weights"] = {name: 1 for name in SITES}
    if policy == "failover":
        routing["failoverOrder"] = list(SITES)
    documents.append(
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Domain",
            "metadata": {"name": "demo"},
            "spec": {
                "hostnames": ["www.customer.example"],
                "origins": [{"url": "http://127.0.0.1:8080"}],
                "sites": "tier=edge",
                "routing": routing,
            },
        }
    )
    return documents


async def serve(args: argparse.Namespace) -> None:
    fleet = FleetState()
    errors = fleet.load(fleet_documents(args.policy))
    if errors:
        sys.exit("bad fleet documents:\n" + "\n".join(errors))
    cache_size = 0 if args.no_cache else 100_000
    resolver = Resolver(Zone(), fleet, GeoDatabase(args.geo), cache_size=cache_size)
    host, _, port = args.listen.rpartition(":")
    server = DnsServer(resolver, host.strip("[]"), int(port), cache_size=cache_size, udp_io=args.udp_io)
    await server.start()
    print(f"dns listening on {host}:{server.port}", flush=True)
    print(f"UDP via {server.udp_io.path}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    print(f"dns counters: {server.metrics}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geo", required=True, help="geo table (CSV cidr,country,region,lat,lon)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--policy", choices=("geo", "latency", "weighted", "failover"), default="geo")
    parser.add_argument("--no-cache", action="store_true", help="decide every query (no packet or answer cache)")
    parser.add_argument(
        "--udp-io",
        choices=("recvmmsg", "recvfrom"),
        default=None,
        help="UDP I/O path (default: recvmmsg batches when edgefleet.gslb._dgram is built; edgefleet.gslb.dgram)",
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
