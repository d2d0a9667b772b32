"""EDNS Client Subnets as discovered latency probe targets, and the cloud's flags that bound discovery.

- The DNS server counts the Client Subnet of every demand-counted query,
  whichever path answered it (full resolve, query shape, packet cache), as
  bytes on the hot path and as text once a second; a sender over its demand
  allowance adds nothing, so one sender network cannot nominate subnets
  faster than its allowance.
- A subnet counter publishes each busy subnet as its /24 (/56) network,
  probed at its first host on port 443, with the same decay, minimum and
  top-N as resolvers; a spray of random subnets gets none published.
- The GslbService publishes resolvers, then subnets (a network in both is a
  resolver's), and ``resolver_targets`` turns them into ProbeTargets with
  each one's port.
- ``edgefleet cloud --probe-networks/--probe-min-queries`` are explained by
  ``--help``, reach the GSLB options, and a bad value is refused.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import pytest
from typer.testing import CliRunner

from edgefleet.cli.gslb import gslb_options
from edgefleet.cli.main import app
from edgefleet.cloud.controllers.latency import resolver_targets
from edgefleet.cloud.gslbservice import GslbOptions, GslbService
from edgefleet.gslb import dns as dns_server
from edgefleet.gslb.dns import MAX_CLIENT_SUBNETS, DnsServer
from edgefleet.gslb.networks import SUBNET_PORT, NetworkCounter, SeenNetwork
from edgefleet.store import open_store
from tests.gslb.test_gslb_service import key
from tests.gslb.test_zone import NAME, fleet_documents, make_resolver
from tests.waiting import eventually


def ecs_wire(subnet: str, prefix: int = 24, query_id: int = 7) -> bytes:
    message = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, prefix)])
    message.id = query_id
    return message.to_wire()


def test_client_subnets_of_counted_queries_are_counted_on_every_path() -> None:
    for server in (
        DnsServer(make_resolver(), "127.0.0.1", 0),
        DnsServer(make_resolver(), "127.0.0.1", 0, cache_size=0),
    ):
        for index in range(3):  # a new shape (or a full resolve), then a shape hit, then the packet cache
            for subnet in ("203.0.113.0", "198.51.100.0"):
                assert server.answer(ecs_wire(subnet, query_id=index), "192.0.2.53", udp=False, now=0.0)
        server.answer(ecs_wire("2001:db8:3::", 48), "192.0.2.53", udp=False, now=0.0)
        server.answer(dns.message.make_query(NAME, "A").to_wire(), "192.0.2.53", udp=False, now=0.0)  # no ECS
        assert server.take_client_subnets() == {"203.0.113.0": 3, "198.51.100.0": 3, "2001:db8:3::": 1}
        assert server.take_client_subnets() == {}


def test_a_sender_over_its_demand_allowance_nominates_no_more_subnets() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0, demand_per_sender=5)
    for index in range(200):
        server.answer(ecs_wire(f"10.{index}.0.0", query_id=index), "192.0.2.53", udp=False, now=0.0)
    assert sum(server.take_client_subnets().values()) == 5


def test_busy_subnets_are_published_as_their_network_probed_at_the_first_host() -> None:
    counter = NetworkCounter(min_count=10, top_n=2, subnets=True)
    counter.record({"203.0.113.0": 30, "198.51.100.0": 40, "192.0.2.0": 3, "2001:db8:1::": 12}, 0.0)
    assert counter.top(0.0) == [
        SeenNetwork("198.51.100.0/24", "198.51.100.1", 40.0, SUBNET_PORT),
        SeenNetwork("203.0.113.0/24", "203.0.113.1", 30.0, SUBNET_PORT),
    ]
    assert [
        t["port"] for t in resolver_targets([*counter.top(0.0), SeenNetwork("192.0.2.0/24", "192.0.2.53", 99)])
    ] == [
        53,
        443,
        443,
    ]


def test_a_spray_of_subnets_gets_none_published_and_the_table_stays_bounded() -> None:
    counter = NetworkCounter(min_count=50, top_n=4, max_tracked=64, half_life=600, subnets=True)
    rng = random.Random(3)
    for second in range(60):
        spray = {f"10.{rng.randrange(256)}.{rng.randrange(256)}.0": 1 for _ in range(200)}
        spray["203.0.113.0"] = 20  # real users behind a resolver, at the demand allowance
        counter.record(spray, float(second))
        assert len(counter) <= 64
    assert [(seen.network, seen.address) for seen in counter.top(60.0)] == [("203.0.113.0/24", "203.0.113.1")]


async def test_the_service_publishes_resolvers_then_client_subnets(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    for document in fleet_documents():
        await store.create(key(document), json.dumps(document).encode())
    service = GslbService(store, GslbOptions(dns_port=0, probe_networks=4, probe_min_queries=3))
    await service.start()
    try:
        for index in range(4):  # from 127.0.0.1 (a resolver network), for two client subnets
            for subnet in ("203.0.113.0", "127.0.0.0"):
                query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
                query.id = index
                await dns.asyncquery.udp(query, "127.0.0.1", port=service.dns.port, timeout=2.0)

        async def published() -> bool:
            return len(service.busy_networks()) == 2

        await eventually(published, within=5.0)
        assert [(seen.network, seen.address, seen.port) for seen in service.busy_networks()] == [
            ("127.0.0.0/24", "127.0.0.1", 53),  # the resolver; its own /24 as a client subnet is left out
            ("203.0.113.0/24", "203.0.113.1", SUBNET_PORT),
        ]
    finally:
        await service.close()
        await store.close()


def test_the_cloud_flags_are_explained_reach_the_options_and_bad_values_are_refused() -> None:
    options = gslb_options("127.0.0.1:0", None, "cdn.test", None, None, None, probe_networks=0, probe_min_queries=7)
    assert options is not None and (options.probe_networks, options.probe_min_queries) == (0, 7)
    shown = CliRunner().invoke(app, ["cloud", "--help"], env={"COLUMNS": "200"})
    text = " ".join(shown.stdout.split())
    assert "--probe-networks" in text and "EDNS Client Subnets" in text and "--probe-min-queries" in text
    refused = CliRunner().invoke(app, ["cloud", "--probe-networks", "-1"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "--probe-networks" in refused.output


def test_a_flood_of_distinct_subnets_is_counted_up_to_the_bound_each_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns_server, "MAX_CLIENT_SUBNETS", 40)  # the bound, made small: same code path
    server = DnsServer(make_resolver(), "127.0.0.1", 0)
    for index in range(60):  # each from a sender network of its own: all within their allowance
        sender, subnet = f"10.0.{index}.1", f"11.0.{index}.0"
        server.answer(ecs_wire(subnet, query_id=index), sender, udp=False, now=0.0)
    server.answer(ecs_wire("11.0.1.0", query_id=99), "10.0.1.1", udp=False, now=0.0)  # already counted: counts
    taken = server.take_client_subnets()
    assert len(taken) == 40 and taken["11.0.1.0"] == 2 and "11.0.50.0" not in taken
    assert MAX_CLIENT_SUBNETS == 8192
