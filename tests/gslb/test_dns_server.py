"""The DNS server on a loopback port, in-process, asked real questions by dnspython over UDP and TCP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from edgefleet.gslb import dnswire
from edgefleet.gslb.dns import DnsServer
from edgefleet.gslb.zone import Resolver
from tests.gslb import ipv6_loopback
from tests.gslb.test_zone import (
    NAME,
    ORIGIN,
    addresses,
    domain_document,
    fleet_documents,
    make_resolver,
    node_document,
    scope_of,
    site_document,
)

TIMEOUT = 2.0


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer(make_resolver(), "127.0.0.1", 0) as running:
        yield running


def query(
    name: str = NAME, rdtype: str = "A", ecs: tuple[str, int] | None = None, **kwargs: Any
) -> dns.message.Message:
    options: list[dns.edns.Option] = [dns.edns.ECSOption(*ecs)] if ecs else []
    kwargs.setdefault("use_edns", 0)
    return dns.message.make_query(name, rdtype, options=options, **kwargs)


async def udp(server: DnsServer, message: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.udp(message, "127.0.0.1", port=server.port, timeout=TIMEOUT)


async def tcp(server: DnsServer, message: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.tcp(message, "127.0.0.1", port=server.port, timeout=TIMEOUT)


async def raw_udp(server: DnsServer, data: bytes, wait: float = TIMEOUT) -> bytes | None:
    """Send one datagram; the reply, or None if nothing came within ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, data, ("127.0.0.1", server.port))
        try:
            reply, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), wait)
        except TimeoutError:
            return None
        return reply


def framed(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


async def read_framed(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TIMEOUT), "big")
    return await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


# --- answers over both transports ---------------------------------------------------------------------


async def test_udp_and_tcp_give_the_same_answer(server: DnsServer) -> None:
    over_udp = await udp(server, query(ecs=("203.0.113.0", 24)))
    over_tcp = await tcp(server, query(ecs=("203.0.113.0", 24)))
    assert addresses(over_udp) == addresses(over_tcp) == ["127.0.7.1", "127.0.7.2"]
    assert scope_of(over_udp) == scope_of(over_tcp) == 24
    assert over_udp.flags & dns.flags.AA
    assert server.metrics.queries == 2 and server.metrics.tcp_queries == 1
    assert server.metrics.by_rcode[dnswire.NOERROR] == 2


async def test_negative_answers_carry_the_soa_and_refusals_do_not(server: DnsServer) -> None:
    nxdomain = await udp(server, query(f"missing.{ORIGIN}"))
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN and nxdomain.authority[0].rdtype == 6
    nodata = await udp(server, query(NAME, "MX"))
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == [] and nodata.authority[0].rdtype == 6
    refused = await tcp(server, query("www.example.org"))
    assert refused.rcode() == dns.rcode.REFUSED and refused.authority == []
    assert not refused.flags & dns.flags.AA
    assert server.metrics.by_rcode[dnswire.NXDOMAIN] == 1 and server.metrics.by_rcode[dnswire.REFUSED] == 1


def big_site_documents(nodes: int = 8, per_node: int = 16) -> list[dict[str, Any]]:
    """One site of ``nodes`` nodes with ``per_node`` IPv4 addresses each, all in answers."""
    documents: list[dict[str, Any]] = [site_document("big", "FR", 48.8566, 2.3522)]
    for n in range(nodes):
        documents.append(node_document(f"big-{n}", "big", [f"10.0.{n}.{i}" for i in range(1, per_node + 1)]))
    documents.append(domain_document(answers=nodes))
    return documents


async def test_truncated_udp_answer_and_tcp_fallback() -> None:
    async with DnsServer(make_resolver(big_site_documents()), "127.0.0.1", 0) as server:
        raw = await udp(server, query())
        assert raw.flags & dns.flags.TC and raw.answer == []
        answer, used_tcp = await dns.asyncquery.udp_with_fallback(
            query(), "127.0.0.1", port=server.port, timeout=TIMEOUT
        )
        assert used_tcp and not answer.flags & dns.flags.TC
        assert len(addresses(answer)) == 128
        assert server.metrics.truncated == 2 and server.metrics.tcp_queries == 1


async def test_the_udp_limit_is_512_without_edns_and_the_advertised_size_with() -> None:
    async with DnsServer(make_resolver(big_site_documents(4, 8)), "127.0.0.1", 0) as server:  # 32 A records
        plain = await udp(server, query(use_edns=False))
        small = await udp(server, query(payload=530))  # the answer is about 560 bytes
        large = await udp(server, query(payload=1232))
        assert plain.flags & dns.flags.TC and small.flags & dns.flags.TC
        assert not large.flags & dns.flags.TC and len(addresses(large)) == 32
        assert 512 < len(large.to_wire()) <= 1232


# --- bad input ----------------------------------------------------------------------------------------------


async def test_malformed_query_with_a_readable_id_gets_formerr(server: DnsServer) -> None:
    data = struct.pack(">HHHHHH", 0xBEEF, 0x0100, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2
    reply = await raw_udp(server, data)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == 0xBEEF and message.rcode() == dns.rcode.FORMERR
    assert server.metrics.formerr == 1


async def test_bad_client_subnet_gets_formerr(server: DnsServer) -> None:
    wire = bytearray(query(ecs=("192.0.0.0", 22)).to_wire())
    wire[-1] |= 0x01  # 192.0.1.0/22: a bit set past the source prefix
    reply = await raw_udp(server, bytes(wire))
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


async def test_unreadable_packets_and_responses_are_dropped(server: DnsServer) -> None:
    assert await raw_udp(server, b"\x01\x02\x03", wait=0.3) is None
    response = dns.message.make_response(query()).to_wire()
    assert await raw_udp(server, response, wait=0.3) is None
    assert server.metrics.dropped == 2
    assert addresses(await udp(server, query(ecs=("203.0.113.0", 24)))) == ["127.0.7.1", "127.0.7.2"]


class BrokenResolver:
    generation = 0

    def __init__(self, real: Resolver) -> None:
        self.real = real

    def resolve(self, query: dnswire.Query, client_address: str) -> Any:
        if query.qname.startswith("boom."):
            raise RuntimeError("a bug")
        return self.real.resolve(query, client_address)

    def region_of(self, query: dnswire.Query, client_address: str) -> str:
        return self.real.region_of(query, client_address)

    def tcp_only(self, query: dnswire.Query) -> bool:
        return self.real.tcp_only(query)


async def test_a_resolver_bug_costs_one_servfail_not_the_server(caplog: pytest.LogCaptureFixture) -> None:
    async with DnsServer(BrokenResolver(make_resolver()), "127.0.0.1", 0) as server:
        assert (await udp(server, query(f"boom.{ORIGIN}"))).rcode() == dns.rcode.SERVFAIL
        assert (await tcp(server, query(f"boom.{ORIGIN}"))).rcode() == dns.rcode.SERVFAIL
        assert (await udp(server, query())).rcode() == dns.rcode.NOERROR
        assert server.metrics.errors == 2
    assert "resolver failed" in caplog.text


async def test_queries_are_counted_by_client_region_cached_or_not(server: DnsServer) -> None:
    server.take_demand()
    for _ in range(3):  # the first is resolved, the others come from the packet cache
        assert (await udp(server, query())).rcode() == dns.rcode.NOERROR
    demand = server.take_demand()
    assert sum(demand.values()) == 3 and len(demand) == 1
    assert server.take_demand() == {}


# --- TCP -------------------------------------------------------------------------------------------------------


async def test_several_queries_on_one_tcp_connection_are_answered_in_order(server: DnsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    names = [NAME, f"missing.{ORIGIN}", f"whoami.{ORIGIN}"]
    messages = [query(name, "TXT" if name.startswith("whoami") else "A") for name in names]
    writer.write(b"".join(framed(message.to_wire()) for message in messages))  # all at once, pipelined
    replies = [dns.message.from_wire(await read_framed(reader)) for _ in messages]
    assert [reply.id for reply in replies] == [message.id for message in messages]
    assert [reply.rcode() for reply in replies] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.NOERROR]
    writer.write(framed(query().to_wire())[:5])  # a message in pieces
    await asyncio.sleep(0.05)
    writer.write(framed(query().to_wire())[5:])
    assert dns.message.from_wire(await read_framed(reader)).rcode() == dns.rcode.NOERROR
    writer.close()
    await writer.wait_closed()
    assert server.metrics.tcp_connections == 1 and server.metrics.tcp_queries == 4


async def test_tcp_formerr_keeps_the_connection_and_garbage_closes_it(server: DnsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(framed(struct.pack(">HHHHHH", 7, 0, 0, 0, 0, 0)))
    assert dns.message.from_wire(await read_framed(reader)).rcode() == dns.rcode.FORMERR
    writer.write(framed(query().to_wire()))
    assert dns.message.from_wire(await read_framed(reader)).rcode() == dns.rcode.NOERROR
    writer.write(framed(b"\x00"))  # too short to hold an id: nothing to answer, the stream is not trusted
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()


async def test_idle_tcp_connections_are_closed() -> None:
    async with DnsServer(make_resolver(), "127.0.0.1", 0, idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(framed(query().to_wire())[:3])  # a partial message does not keep it open
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()


async def test_tcp_connections_are_limited() -> None:
    async with DnsServer(make_resolver(), "127.0.0.1", 0, max_tcp_connections=1) as server:
        first_reader, first = await asyncio.open_connection("127.0.0.1", server.port)
        second_reader, second = await asyncio.open_connection("127.0.0.1", server.port)
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(second_reader.read(), TIMEOUT) == b""
        first.write(framed(query().to_wire()))
        assert dns.message.from_wire(await read_framed(first_reader)).rcode() == dns.rcode.NOERROR
        for writer in (first, second):
            writer.close()


async def test_close_ends_open_tcp_connections() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(framed(query().to_wire()))
    await read_framed(reader)
    await asyncio.wait_for(server.close(), TIMEOUT)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()


# --- the packet cache ------------------------------------------------------------------------------------------


async def test_repeated_queries_hit_the_cache_until_the_fleet_changes(server: DnsServer) -> None:
    tokyo = ("203.0.113.0", 24)
    for _ in range(3):
        assert addresses(await udp(server, query(ecs=tokyo))) == ["127.0.7.1", "127.0.7.2"]
    assert server.metrics.cache_hits == 2
    resolver = server.resolver
    assert isinstance(resolver, Resolver)
    resolver.fleet.apply("Node", "tyo-edge-1", node_document("tyo-edge-1", "tyo-edge", ["127.0.7.1"], draining=True))
    assert addresses(await udp(server, query(ecs=tokyo))) == ["127.0.7.2"]  # at once, not after a TTL
    assert server.metrics.cache_hits == 2


async def test_cache_keys_on_the_client_when_there_is_no_ecs() -> None:
    async with DnsServer(make_resolver(fleet_documents()), "127.0.0.1", 0) as server:
        same = query()
        first = server.answer(same.to_wire(), "127.0.7.9", udp=True)
        second = server.answer(same.to_wire(), "127.0.5.9", udp=True)
        assert first is not None and second is not None
        assert addresses(dns.message.from_wire(first)) == ["127.0.7.1", "127.0.7.2"]
        assert addresses(dns.message.from_wire(second)) == ["127.0.5.1", "127.0.5.2"]
        assert server.metrics.cache_hits == 0


async def test_cached_answers_carry_the_new_query_id(server: DnsServer) -> None:
    first, second = query(), query()
    second.id = (first.id + 1) % 65536
    assert (await udp(server, first)).id == first.id
    assert (await udp(server, second)).id == second.id
    assert server.metrics.cache_hits == 1


# --- addresses ------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
async def test_listens_on_ipv6() -> None:
    async with DnsServer(make_resolver(), "::1", 0) as server:
        message = await dns.asyncquery.tcp(query(f"whoami.{ORIGIN}", "TXT"), "::1", port=server.port, timeout=TIMEOUT)
        assert message.answer[0][0].strings[0] == b"client ::1 (resolver address)"


async def test_a_busy_port_is_an_error(server: DnsServer) -> None:
    with pytest.raises(OSError):
        await DnsServer(make_resolver(), "127.0.0.1", server.port).start()
