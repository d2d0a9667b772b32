"""A malicious DNS client: crafted compression pointers, reflection floods, diagnostic names, fake demand.

- Pointer chains (issue 12, item 1): a query whose additional section
  follows a chain of backward pointers once per record used to cost O(size²)
  to parse (30-45 ms for 4 KB over UDP, 4-8 s for 64 KB over TCP) on the
  event loop the API and hub share. Now it is a FORMERR in microseconds
  (hop and record limits, :mod:`edgefleet.gslb.dnswire`), and the DNS server
  runs on a thread of its own: against a real ``edgefleet cloud``, 50 such
  queries a second (each one byte apart, so no cache helps) leave ``/healthz``
  and legitimate DNS queries answering within milliseconds.
- Response rate limiting: a spoofed victim network gets ``rate`` answers a
  second per kind of answer, then every ``slip``-th is a TC=1 stub and the
  rest are dropped; TCP is never limited.
- Diagnostic names (``whoami``, ``_route.*``) are answered over TCP only.
- Demand: one sender network adds at most ``demand_per_sender`` queries a
  second to the demand that switches elastic sites on, whatever the ECS it
  claims.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from edgefleet.gslb import dnswire
from edgefleet.gslb.demand import DEMAND_PER_SENDER
from edgefleet.gslb.dns import MAX_UDP_QUERY, DnsServer
from edgefleet.gslb.errors import DnsFormatError
from edgefleet.gslb.rrl import RrlSettings
from tests.cloudproc import running_cloud
from tests.gslb.test_zone import NAME, ORIGIN, addresses, make_resolver
from tests.security.dns_packets import attack_while_probing, pointer_chain_query

PARSE_CPU_BOUND = 0.005
"""Seconds of CPU a crafted message may cost (bounded parsing: microseconds; before: 30 ms to 8 s)."""


# --- the parser -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [MAX_UDP_QUERY, dnswire.MAX_MESSAGE], ids=["udp-4k", "tcp-64k"])
def test_a_pointer_chain_query_is_refused_in_bounded_time(size: int) -> None:
    message = pointer_chain_query(size)
    assert len(message) > size - 16
    began = time.thread_time()
    with pytest.raises(DnsFormatError) as caught:
        dnswire.parse_query(message)
    assert time.thread_time() - began < PARSE_CPU_BOUND
    assert caught.value.query_id == 0x1234


@pytest.mark.parametrize("udp", [True, False], ids=["udp", "tcp"])
def test_the_server_answers_a_pointer_chain_with_formerr(udp: bool) -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0)  # answer() only: nothing is bound
    reply = server.answer(pointer_chain_query(MAX_UDP_QUERY if udp else dnswire.MAX_MESSAGE), "192.0.2.1", udp=udp)
    assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0xF == dnswire.FORMERR
    assert server.metrics.formerr == 1 and server.metrics.errors == 0


# --- a real edgefleet cloud -------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_crafted_queries_do_not_starve_the_clouds_api_or_its_dns(tmp_path: Path) -> None:
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path) as cloud:
        figures = attack_while_probing(cloud.url, cloud.dns_port, rate=50, seconds=2.5, size=MAX_UDP_QUERY)
        assert figures.sent >= 100, figures.summary()
        assert len(figures.healthz) >= 10 and figures.p99(figures.healthz) < 1.0, figures.summary()
        assert len(figures.dns) >= 10 and figures.p99(figures.dns) < 1.0, figures.summary()
        assert figures.dns_lost == 0, figures.summary()
        tcp = attack_while_probing(
            cloud.url, cloud.dns_port, rate=4, seconds=0.5, size=dnswire.MAX_MESSAGE, tcp=True, settle=0.5
        )
        assert max(tcp.healthz) < 1.0 and max(tcp.dns) < 1.0 and tcp.dns_lost == 0, tcp.summary()


# --- response rate limiting over real sockets ---------------------------------------------------------------------


@pytest.fixture
async def limited_server() -> AsyncIterator[DnsServer]:
    """A server whose RRL also applies to loopback (exempt by default), 5 answers/s, slip 2."""
    settings = RrlSettings(rate=5, slip=2, exempt=())
    async with DnsServer(make_resolver(), "127.0.0.1", 0, rrl=settings) as running:
        yield running


def udp_burst(port: int, count: int) -> list[bytes]:
    """Send ``count`` identical queries (distinct ids) at once; the replies that come within 1 s."""
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for query_id in range(count):
            message = dns.message.make_query(NAME, "A", use_edns=0)
            message.id = query_id
            sock.sendto(message.to_wire(), ("127.0.0.1", port))
        sock.settimeout(1.0)
        try:
            while len(replies) < count:
                replies.append(sock.recv(4096))
        except TimeoutError:
            pass
    return replies


async def test_a_udp_flood_gets_rate_answers_then_slipped_truncations_and_drops(limited_server: DnsServer) -> None:
    sent = await asyncio.get_running_loop().run_in_executor(None, udp_burst, limited_server.port, 40)
    replies = [dns.message.from_wire(reply) for reply in sent]
    full = [reply for reply in replies if not reply.flags & dns.flags.TC]
    truncated = [reply for reply in replies if reply.flags & dns.flags.TC]
    assert 5 <= len(full) <= 7  # the burst, plus what refilled meanwhile on a slow machine
    assert all(addresses(reply) for reply in full) and not any(reply.answer for reply in truncated)
    assert abs(len(truncated) - (40 - len(full)) / 2) <= 1
    metrics = limited_server.metrics
    assert metrics.rrl_slipped == len(truncated) and metrics.rrl_dropped == 40 - len(replies)
    over_tcp = [
        await dns.asyncquery.tcp(dns.message.make_query(NAME, "A"), "127.0.0.1", port=limited_server.port, timeout=2.0)
        for _ in range(10)
    ]
    assert all(addresses(reply) for reply in over_tcp)  # TCP cannot be spoofed: never limited


def test_loopback_is_exempt_by_default_and_other_networks_are_limited_per_slash_24() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0)
    wire = dns.message.make_query(NAME, "A").to_wire()
    assert all(server.answer(wire, "127.0.0.1", udp=True) for _ in range(200))
    victim = [server.answer(wire, f"192.0.2.{n % 250}", udp=True) for n in range(200)]
    assert sum(1 for reply in victim if reply is not None and not reply[2] & 0x02) <= 60
    assert server.answer(wire, "198.51.100.1", udp=True) is not None


# --- diagnostic names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"whoami.{ORIGIN}", f"_route.demo.{ORIGIN}"])
async def test_diagnostic_names_are_truncated_over_udp_and_answered_over_tcp(name: str) -> None:
    async with DnsServer(make_resolver(), "127.0.0.1", 0) as server:
        query = dns.message.make_query(name, "TXT", use_edns=0, options=[dns.edns.ECSOption("203.0.113.0", 24)])
        over_udp = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2.0)
        assert over_udp.flags & dns.flags.TC and not over_udp.answer and over_udp.rcode() == dns.rcode.NOERROR
        over_tcp = await dns.asyncquery.tcp(query, "127.0.0.1", port=server.port, timeout=2.0)
        assert not over_tcp.flags & dns.flags.TC and over_tcp.answer[0][0].strings[0].startswith(b"client ")


# --- demand ----------------------------------------------------------------------------------------------------


def test_one_sender_network_cannot_claim_a_regions_demand_whatever_ecs_it_sends() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0, cache_size=0)
    for n in range(300):  # Tokyo subnets, all from one host, well within a second
        query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(f"203.0.113.{n % 250}", 32)])
        assert server.answer(query.to_wire(), "127.0.0.1", udp=False) is not None
    demand = server.take_demand()
    assert sum(demand.values()) <= 2 * DEMAND_PER_SENDER  # its allowance, and what refilled on a slow machine
    assert server.metrics.demand_capped >= 300 - 2 * DEMAND_PER_SENDER
    other = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption("203.0.113.0", 24)])
    server.answer(other.to_wire(), "192.0.2.1", udp=False)
    assert sum(server.take_demand().values()) == 1  # another sender network has its own allowance
