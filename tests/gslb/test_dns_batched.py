"""The DNS server's UDP shell on both I/O paths: bursts read and answered as batches, garbage among them.

A burst of datagrams from several client sockets, sent before the server
runs, is what makes it read full batches (``recvmmsg`` of up to
:data:`~edgefleet.gslb.dns.UDP_BATCH`) and send replies as batches: every
valid query gets its own answer (its id, its client), malformed datagrams
among them (mutated valid queries, random bytes, a datagram longer than a
read, responses) get FORMERR or nothing, and no internal error is counted.
Run with the compiled path and the fallback, with the same expectations.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import dns.message
import dns.rcode
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgefleet.cloud.gslbmetrics import GslbCollector
from edgefleet.gslb.dgram import IoPath
from edgefleet.gslb.dns import MAX_UDP_QUERY, UDP_BATCH, DnsServer
from edgefleet.gslb.rrl import RrlSettings
from tests.gslb.test_dns_fuzz import SEEDS
from tests.gslb.test_dns_server import query
from tests.gslb.test_zone import NAME, make_resolver, scope_of
from tests.waiting import eventually

CLIENTS = 4
PER_CLIENT = 3 * UDP_BATCH


@pytest.fixture(params=["recvmmsg", "recvfrom"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[DnsServer]:
    path: IoPath = request.param
    async with DnsServer(make_resolver(), "127.0.0.1", 0, udp_io=path) as running:  # loopback: no RRL
        assert running.udp_io.path == path
        yield running


def mutated(rng: random.Random) -> bytes:
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data)) if data else 0
        action = rng.choice(["flip", "insert", "delete", "cut"])
        if action == "flip" and data:
            data[at] = rng.randrange(256)
        elif action == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif action == "delete":
            del data[at : at + rng.randint(1, 8)]
        else:
            del data[at:]
    return bytes(data)


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return mutated(rng)
    if kind == 1:
        return rng.randbytes(rng.randint(0, 64))
    if kind == 2:
        return rng.choice(SEEDS)[:2] + b"\x80" + rng.choice(SEEDS)[3:]  # QR set: a response, dropped
    return rng.choice(SEEDS) + rng.randbytes(MAX_UDP_QUERY)  # longer than a read: cut, then FORMERR


def valid(index: int) -> dns.message.Message:
    message = query(NAME, "A", ecs=(f"203.0.{index % 256}.0", 24))
    message.id = index
    return message


async def drain(sock: socket.socket, expected: set[int]) -> dict[int, dns.message.Message]:
    """The replies to the ids in ``expected`` (other replies, to garbage, are only checked to be DNS)."""
    loop, answers = asyncio.get_running_loop(), dict[int, dns.message.Message]()

    async def read() -> None:
        while not expected <= answers.keys():
            data = await loop.sock_recv(sock, 65535)
            reply = dns.message.from_wire(data, ignore_trailing=True)
            if reply.id in expected and reply.rcode() == dns.rcode.NOERROR:
                answers[reply.id] = reply

    await asyncio.wait_for(read(), 10)
    return answers


async def test_bursts_with_garbage_get_every_valid_query_answered(server: DnsServer) -> None:
    rng = random.Random(15)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
    try:
        for client in clients:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            client.bind(("127.0.0.1", 0))
            client.setblocking(False)
        ids: list[set[int]] = [set() for _ in clients]
        sent = 0
        for index in range(CLIENTS * PER_CLIENT):  # written before the server reads: full batches
            owner = index % CLIENTS
            if rng.random() < 0.3:
                data = garbage(rng)
            else:
                ids[owner].add(index)
                data = valid(index).to_wire()
            clients[owner].sendto(data, ("127.0.0.1", server.port))
            sent += 1
        for client, expected in zip(clients, ids, strict=True):
            answers = await drain(client, expected)
            for index, reply in answers.items():
                assert reply.answer, f"query {index}: no records"
                assert scope_of(reply) == 24
        await eventually(lambda: server.metrics.queries == sent, within=5)
        assert server.metrics.errors == 0
        assert server.metrics.send_errors == 0
        assert server.metrics.formerr > 0
        assert server.metrics.dropped > 0
        if server.udp_io.path == "recvmmsg":  # the burst was read in batches, not one datagram per call
            assert server.metrics.udp_batches * 4 <= sent
    finally:
        for client in clients:
            client.close()
    assert (await asyncio.wait_for(udp_again(server), 5)).answer  # still serving


async def udp_again(server: DnsServer) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, valid(7).to_wire(), ("127.0.0.1", server.port))
        return dns.message.from_wire(await loop.sock_recv(sock, 65535))


@pytest.mark.parametrize("path", ["recvmmsg", "recvfrom"])
async def test_rate_limited_bursts_are_dropped_or_slipped_per_batch(path: IoPath) -> None:
    """RRL decides per datagram inside a batch: over the rate, replies are dropped or truncated (TC=1)."""
    limit = RrlSettings(rate=5, slip=2, exempt=())
    async with DnsServer(make_resolver(), "127.0.0.1", 0, udp_io=path, rrl=limit) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.setblocking(False)
            for index in range(2 * UDP_BATCH):
                client.sendto(valid(index).to_wire(), ("127.0.0.1", server.port))
            await eventually(lambda: server.metrics.queries == 2 * UDP_BATCH, within=5)
        metrics = server.metrics
        assert metrics.rrl_dropped > 0 and metrics.rrl_slipped > 0
        assert metrics.errors == 0


@pytest.mark.parametrize(("path", "value"), [("recvmmsg", 1.0), ("recvfrom", 0.0)])
def test_metrics_say_which_path_runs(path: IoPath, value: float) -> None:
    registry = CollectorRegistry()
    registry.register(GslbCollector(DnsServer(make_resolver(), "127.0.0.1", 0, udp_io=path)))
    text = generate_latest(registry).decode()
    assert f"edgefleet_gslb_batched_udp_io {value}" in text
    assert "edgefleet_gslb_udp_reads_total 0.0" in text
