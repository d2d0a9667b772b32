"""Zero-copy sending of a file slice to a client connection (``sendfile(2)``) under uvloop.

How: uvloop's transports do not implement ``loop.sendfile`` (it raises
NotImplementedError), and asyncio's fallback reads the file into memory and
writes it. So, for a large body from the disk tier, :func:`send_file`
first waits until the transport's write buffer is empty (by lowering its
high-water mark to 0, so ``pause_writing``/``resume_writing`` tell exactly
that), then calls ``os.sendfile`` on a duplicate of the socket's descriptor,
waiting for writability with ``loop.add_writer`` on that duplicate when the
socket buffer is full. Nothing else writes to the connection meanwhile: the
server answers one request at a time per connection. The transport's
limits are restored afterwards.

If the socket is not available (a test transport) or the connection is TLS
(whose transport still gives the TCP socket: sendfile would put cleartext
on it), it falls back to ``pread`` + ``write`` in bounded chunks, which is
what the memory bound needs anyway.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

CHUNK = 256 * 1024
SENDFILE_CHUNK = 4 * 1024 * 1024


class Writable(Protocol):
    transport: Any

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


async def send_file(client: Writable, fd: int, offset: int, length: int) -> int:
    """Send ``length`` bytes of ``fd`` from ``offset``; the bytes sent."""
    transport = client.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or length < CHUNK or transport.get_extra_info("ssl_object") is not None:
        return await _copy(client, fd, offset, length)
    high, low = _limits(transport)
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        await client.drain()
        if transport.get_write_buffer_size():
            return await _copy(client, fd, offset, length)
        return await _sendfile(sock.fileno(), fd, offset, length)
    finally:
        transport.set_write_buffer_limits(high=high, low=low)


async def _sendfile(sock_fd: int, fd: int, offset: int, length: int) -> int:
    loop = asyncio.get_running_loop()
    out = os.dup(sock_fd)
    sent = 0
    try:
        while sent < length:
            try:
                count = os.sendfile(out, fd, offset + sent, min(SENDFILE_CHUNK, length - sent))
            except BlockingIOError:
                await _writable(loop, out)
                continue
            if count == 0:
                raise OSError("cached file ended early")
            sent += count
    finally:
        os.close(out)
    return sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _copy(client: Writable, fd: int, offset: int, length: int) -> int:
    sent = 0
    while sent < length:
        data = os.pread(fd, min(CHUNK, length - sent), offset + sent)
        if not data:
            raise OSError("cached file ended early")
        client.write(data)
        sent += len(data)
        await client.drain()
    return sent


def _limits(transport: Any) -> tuple[int, int]:
    try:
        low, high = transport.get_write_buffer_limits()
    except (AttributeError, NotImplementedError):
        return 64 * 1024, 16 * 1024
    return int(high), int(low)
