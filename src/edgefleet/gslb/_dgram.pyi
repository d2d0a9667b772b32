"""Batched datagram I/O (recvmmsg/sendmmsg), compiled from _dgram.c; use it through :mod:`edgefleet.gslb.dgram`."""

from collections.abc import Sequence
from typing import Any

from _typeshed import FileDescriptorLike

MAX_BATCH: int
MAX_SIZE: int

def recv_batch(sock: FileDescriptorLike, count: int, size: int, /) -> list[tuple[bytes, Any]]: ...
def send_batch(sock: FileDescriptorLike, items: Sequence[tuple[bytes, Any]], /) -> int: ...
