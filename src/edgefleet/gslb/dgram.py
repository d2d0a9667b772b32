"""Batched datagram I/O for the GSLB's UDP shell: recvmmsg/sendmmsg when compiled, recvfrom/sendto otherwise.

How: :func:`datagram_io` returns a :class:`DatagramIO`, a pair of functions
(``receive(sock, count, size)`` -> up to ``count`` waiting datagrams as
``(bytes, address)``, ``send(sock, items)`` -> how many were sent) and the
name of the path that runs. The ``"recvmmsg"`` path is the C extension
:mod:`edgefleet.gslb._dgram` (``src/edgefleet/gslb/_dgram.c``, built by
``pip install -e .`` from ``pyproject.toml``): one system call reads a batch
and one sends the replies. The ``"recvfrom"`` path is the socket module's
calls in a loop, which is what runs when the extension could not be built
(no C compiler): the server works the same, only slower, and logs a warning
once.

Why: measured on the project's 2-core VM, ``recvfrom`` + ``sendto`` cost
about 6.5 µs per datagram, more than Knot's whole 6.1 µs per query, and
``recvmmsg`` through ctypes was slower still; the socket module has no
``recvmmsg``/``sendmmsg`` and no maintained library offers them to Python.

Both paths give the same results for the same traffic (the tests run both):
addresses as the socket module gives them, ``(host, port)`` or
``(host, port, flowinfo, scope_id)``; a datagram longer than ``size`` cut to
``size`` bytes; ``[]`` when nothing waits; nothing ever blocks; a datagram
that cannot be sent (a full buffer, an unreachable network) is skipped and
only missing from the count. ``EDGEFLEET_DNS_IO=recvfrom`` in the
environment chooses the fallback (A/B benchmarks; the tests pass the path).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

log = logging.getLogger("edgefleet.gslb.dgram")

Address = Any
"""A sender as the socket module gives it: ``(host, port)`` or ``(host, port, flowinfo, scope_id)``."""
IoPath = Literal["recvmmsg", "recvfrom"]

BATCHED: Final = "recvmmsg"
FALLBACK: Final = "recvfrom"
MAX_BATCH = 1024
"""The most datagrams one call reads or sends (the kernel's UIO_MAXIOV)."""
ENVIRONMENT = "EDGEFLEET_DNS_IO"

try:
    from edgefleet.gslb import _dgram
except ImportError:  # built without a C compiler: the fallback runs (see datagram_io)
    _compiled = None
else:
    _compiled = _dgram


@dataclass(frozen=True)
class DatagramIO:
    """The two batched calls of one path, and its name (for the log, ``/metrics`` and benchmarks)."""

    path: IoPath
    receive: Callable[[socket.socket, int, int], list[tuple[bytes, Address]]]
    send: Callable[[socket.socket, Sequence[tuple[bytes, Address]]], int]


def receive_each(sock: socket.socket, count: int, size: int) -> list[tuple[bytes, Address]]:
    """Up to ``count`` waiting datagrams, each cut to ``size`` bytes, with ``recvfrom`` (the fallback)."""
    if not 1 <= count <= MAX_BATCH or not 1 <= size <= 65536:
        raise ValueError(f"count must be 1 to {MAX_BATCH} and size 1 to 65536, not {count} and {size}")
    received: list[tuple[bytes, Address]] = []
    recvfrom = sock.recvfrom
    for _ in range(count):
        try:
            received.append(recvfrom(size, socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            if received:
                break  # as recvmmsg: return what was read; the datagrams after the error wait
            raise
    return received


def send_each(sock: socket.socket, items: Sequence[tuple[bytes, Address]]) -> int:
    """Send each ``(bytes, address)`` with ``sendto`` (the fallback); how many were sent."""
    if len(items) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} datagrams per batch, not {len(items)}")
    sent = 0
    sendto = sock.sendto
    for data, address in items:
        try:
            sendto(data, socket.MSG_DONTWAIT, address)
        except OSError:
            continue
        sent += 1
    return sent


FALLBACK_IO = DatagramIO(FALLBACK, receive_each, send_each)
BATCHED_IO = DatagramIO(BATCHED, _compiled.recv_batch, _compiled.send_batch) if _compiled is not None else None

_warned = False


def datagram_io(path: IoPath | None = None) -> DatagramIO:
    """The I/O path to use: ``path`` if given, else ``$EDGEFLEET_DNS_IO``, else the batched one when compiled.

    Asking for ``"recvmmsg"`` when the extension is missing gives the fallback and the warning.
    """
    wanted = path or os.environ.get(ENVIRONMENT) or BATCHED
    if wanted not in (BATCHED, FALLBACK):
        raise ValueError(f"{ENVIRONMENT} must be {BATCHED} or {FALLBACK}, not {wanted!r}")
    if wanted == FALLBACK:
        return FALLBACK_IO
    if BATCHED_IO is None:
        _warn_missing()
        return FALLBACK_IO
    return BATCHED_IO


def _warn_missing() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "edgefleet.gslb._dgram is not built: DNS reads and sends datagrams one by one (2-3 CPU µs more per "
            "query); install gcc and the Python headers and run `pip install -e .` again "
            "(scripts/install.sh does both)"
        )


__all__ = ["BATCHED", "FALLBACK", "MAX_BATCH", "Address", "DatagramIO", "IoPath", "datagram_io"]
