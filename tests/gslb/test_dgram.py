"""Batched datagram I/O (:mod:`edgefleet.gslb.dgram`): the compiled path and the fallback give the same results.

Each behaviour runs on both paths (``recvmmsg``/``sendmmsg`` from the C
extension, ``recvfrom``/``sendto`` per datagram) over real loopback sockets:
batches and their limit, senders' addresses as the socket module gives them
(IPv4 and IPv6), a datagram longer than the buffer cut safely, nothing
waiting, a datagram that cannot be sent skipped. Bad arguments to the
extension raise TypeError or ValueError, never crash the interpreter.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from edgefleet.gslb import dgram
from edgefleet.gslb.dgram import BATCHED_IO, FALLBACK_IO, DatagramIO, datagram_io
from tests.gslb import ipv6_loopback
from tests.waiting import wait_until

PATHS = [pytest.param(BATCHED_IO, id="recvmmsg"), pytest.param(FALLBACK_IO, id="recvfrom")]


def bound(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver, sender = bound(), bound()
    yield receiver, sender
    receiver.close()
    sender.close()


def io_of(param: DatagramIO | None) -> DatagramIO:
    assert param is not None, "edgefleet.gslb._dgram is not built: run `pip install -e .` with gcc installed"
    return param


def receive_all(io: DatagramIO, sock: socket.socket, expected: int, size: int = 4096) -> list[tuple[bytes, Any]]:
    """Datagrams sent on loopback are queued by the time sendto returns; read until ``expected`` came."""
    got: list[tuple[bytes, Any]] = []

    def enough() -> bool:
        got.extend(io.receive(sock, 64, size))
        return len(got) >= expected

    wait_until(enough, timeout=5)
    return got


def test_the_extension_is_built_and_chosen_by_default() -> None:
    """scripts/install.sh installs gcc, so the suite runs the compiled path; the fallback only by choice."""
    assert BATCHED_IO is not None
    assert datagram_io().path == "recvmmsg" or os.environ.get(dgram.ENVIRONMENT) == "recvfrom"
    assert datagram_io("recvfrom") is FALLBACK_IO
    with pytest.raises(ValueError, match="EDGEFLEET_DNS_IO"):
        datagram_io("recvmsg")  # type: ignore[arg-type]


@pytest.mark.parametrize("param", PATHS)
def test_a_batch_is_read_in_order_up_to_its_count(param: DatagramIO | None, pair: tuple[socket.socket, ...]) -> None:
    io = io_of(param)
    receiver, sender = pair
    for index in range(10):
        sender.sendto(bytes([index]) * (index + 1), receiver.getsockname())
    first = io.receive(receiver, 4, 4096)
    rest = receive_all(io, receiver, 6)
    assert [data for data, _ in first + rest] == [bytes([index]) * (index + 1) for index in range(10)]
    assert len(first) == 4
    assert {address for _, address in first + rest} == {sender.getsockname()}
    assert io.receive(receiver, 64, 4096) == []  # nothing waits: no block, no error


@pytest.mark.parametrize("param", PATHS)
def test_senders_and_replies_round_trip(param: DatagramIO | None, pair: tuple[socket.socket, ...]) -> None:
    io = io_of(param)
    receiver, sender = pair
    other = bound()
    try:
        for index, client in enumerate([sender, other, other, sender]):
            client.sendto(b"q%d" % index, receiver.getsockname())
        received = receive_all(io, receiver, 4)
        assert [address for _, address in received] == [
            sender.getsockname(),
            other.getsockname(),
            other.getsockname(),
            sender.getsockname(),
        ]
        assert io.send(receiver, [(b"a" + data, address) for data, address in received]) == 4
        assert sorted(data for data, _ in receive_all(io, sender, 2)) == [b"aq0", b"aq3"]
        assert sorted(data for data, _ in receive_all(io, other, 2)) == [b"aq1", b"aq2"]
    finally:
        other.close()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("param", PATHS)
def test_ipv6_addresses_are_the_socket_modules(param: DatagramIO | None) -> None:
    io = io_of(param)
    receiver, sender = bound("::1"), bound("::1")
    try:
        sender.sendto(b"six", receiver.getsockname())
        [(data, address)] = receive_all(io, receiver, 1)
        assert (data, address) == (b"six", sender.getsockname())
        assert len(address) == 4
        assert io.send(receiver, [(b"back", address)]) == 1
        assert receive_all(io, sender, 1) == [(b"back", receiver.getsockname())]
    finally:
        receiver.close()
        sender.close()


@pytest.mark.parametrize("param", PATHS)
def test_a_datagram_longer_than_the_buffer_is_cut_and_the_next_is_whole(
    param: DatagramIO | None, pair: tuple[socket.socket, ...]
) -> None:
    io = io_of(param)
    receiver, sender = pair
    sender.sendto(b"x" * 5000, receiver.getsockname())
    sender.sendto(b"after", receiver.getsockname())
    received = receive_all(io, receiver, 2, size=4096)
    assert [data for data, _ in received] == [b"x" * 4096, b"after"]


@pytest.mark.parametrize("param", PATHS)
def test_a_datagram_that_cannot_be_sent_is_skipped(param: DatagramIO | None, pair: tuple[socket.socket, ...]) -> None:
    io = io_of(param)
    receiver, sender = pair
    target = sender.getsockname()
    unsendable = (b"y" * 70000, target)  # longer than a UDP datagram can be: EMSGSIZE
    assert io.send(receiver, [(b"one", target), unsendable, (b"two", target)]) == 2
    assert [data for data, _ in receive_all(io, sender, 2)] == [b"one", b"two"]
    assert io.send(receiver, []) == 0


@pytest.mark.parametrize("param", PATHS)
def test_counts_and_sizes_out_of_range_are_value_errors(
    param: DatagramIO | None, pair: tuple[socket.socket, ...]
) -> None:
    io = io_of(param)
    receiver, _ = pair
    for count, size in [(0, 4096), (dgram.MAX_BATCH + 1, 4096), (1, 0), (1, 65537), (-1, -1)]:
        with pytest.raises(ValueError):
            io.receive(receiver, count, size)
    with pytest.raises(ValueError):
        io.send(receiver, [(b"z", receiver.getsockname())] * (dgram.MAX_BATCH + 1))


def test_bad_arguments_to_the_extension_raise_and_send_nothing(pair: tuple[socket.socket, ...]) -> None:
    io = io_of(BATCHED_IO)
    receiver, sender = pair
    target = sender.getsockname()
    bad_items: list[tuple[Any, type[Exception]]] = [
        ([("text", target)], TypeError),
        ([b"not a tuple"], TypeError),
        ([(b"a", target, "extra")], TypeError),
        ([(b"a", "127.0.0.1")], TypeError),
        ([(b"a", ("127.0.0.1",))], TypeError),
        ([(b"a", (b"127.0.0.1", 53))], TypeError),
        ([(b"a", ("no.such.name", 53))], ValueError),
        ([(b"a", ("127.0.0.1\0", 53))], ValueError),
        ([(b"a", ("127.0.0.1", 70000))], ValueError),
        ([(b"a", ("127.0.0.1", -1))], ValueError),
        ([(b"a", target), (b"b", ("999.1.1.1", 53))], ValueError),
        (42, TypeError),
    ]
    for items, error in bad_items:
        with pytest.raises(error):
            io.send(receiver, items)
    assert io.receive(sender, 64, 4096) == []  # a batch with one bad item sends none of it
    with pytest.raises(TypeError):
        io.receive("socket", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        io.receive(-1, 1, 1)  # type: ignore[arg-type]
    closed = bound()
    closed.close()
    with pytest.raises(ValueError):  # a closed socket's fileno() is -1
        io.receive(closed, 1, 1)


def test_a_batch_may_be_a_list_changed_later(pair: tuple[socket.socket, ...]) -> None:
    """The extension keeps its own references: the caller's list may change once the call returned."""
    io = io_of(BATCHED_IO)
    receiver, sender = pair
    items = [(bytes([index]) * 100, sender.getsockname()) for index in range(64)]
    assert io.send(receiver, items) == 64
    items.clear()
    assert len(receive_all(io, sender, 64)) == 64


@pytest.mark.parametrize("param", PATHS)
def test_a_datagram_from_a_socket_without_an_ip_address_is_kept_with_no_sender(param: DatagramIO | None) -> None:
    io = io_of(param)
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.setblocking(False)
        sender.send(b"unix")
        assert receive_all(io, receiver, 1) == [(b"unix", None)]
    finally:
        receiver.close()
        sender.close()


def test_without_the_extension_the_fallback_runs_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dgram, "BATCHED_IO", None)
    monkeypatch.setattr(dgram, "_warned", False)
    monkeypatch.delenv(dgram.ENVIRONMENT, raising=False)
    with caplog.at_level("WARNING", logger="edgefleet.gslb.dgram"):
        assert datagram_io() is FALLBACK_IO
        assert datagram_io("recvmmsg") is FALLBACK_IO
    assert [record.getMessage() for record in caplog.records if "not built" in record.getMessage()] == [
        caplog.records[0].getMessage()
    ]
    assert "pip install -e ." in caplog.records[0].getMessage()


def test_the_environment_chooses_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dgram.ENVIRONMENT, "recvfrom")
    assert datagram_io() is FALLBACK_IO
    assert datagram_io("recvmmsg") is BATCHED_IO  # an explicit choice wins
    monkeypatch.setenv(dgram.ENVIRONMENT, "fast")
    with pytest.raises(ValueError, match="recvmmsg or recvfrom"):
        datagram_io()
