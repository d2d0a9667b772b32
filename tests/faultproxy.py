"""A fault-injecting TCP proxy for tests: pass, cut, blackhole and slow links.

How: an asyncio server on 127.0.0.1 in a background thread forwards every
accepted connection to one upstream address. The test switches the mode at
any time:

- ``pass``: forward bytes both ways;
- ``cut``: reset every open connection and refuse new ones (accept, then
  close at once) - a link that is down;
- ``blackhole``: keep connections open but drop every byte both ways, and
  accept new connections that go nowhere - a silent partition, which only
  timeouts and heartbeats can detect;
- ``slow``: forward with ``delay`` seconds of latency per chunk and at most
  ``rate`` bytes/s - a congested link.

Per-path delay, in any mode but ``cut``: ``source_delays`` maps a client's
source address (e.g. one agent's own 127.0.0.x) to seconds added before each
chunk it sends is forwarded, so clients bound to different addresses see
different round-trip times through one proxy (this VM's kernel has no
netem). ``listen_host`` puts the proxy on another loopback address.

It also counts the bytes it forwarded in each direction, so a test can
measure what a protocol exchange costs on the wire. Traffic stays on
loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

MODES = ("pass", "cut", "blackhole", "slow")


@dataclass
class Counters:
    to_upstream: int = 0
    to_client: int = 0
    connections: int = 0


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_host = listen_host
        self.source_delays: dict[str, float] = {}
        """Client source address -> seconds added to each chunk it sends (read per chunk: change it any time)."""
        self.mode = "pass"
        self.delay = 0.2
        self.rate = 64 * 1024
        self.counters = Counters()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # control, from the test's thread -------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def set_mode(self, mode: str, *, delay: float | None = None, rate: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if delay is not None:
            self.delay = delay
        if rate is not None:
            self.rate = rate
        self._call(self._switch(mode))

    def reset_counters(self) -> Counters:
        old, self.counters = self.counters, Counters()
        return old

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # the proxy, on its own loop --------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: str) -> None:
        self.mode = mode
        if mode == "cut":
            for writer in list(self._writers):
                _reset(writer)
            self._writers.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _reset(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(writer)
            return
        self.counters.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        await asyncio.gather(
            self._pump(reader, up_writer, upstream=True, source=source),
            self._pump(up_reader, writer, upstream=False),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool, source: str = ""
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                with contextlib.suppress(Exception):
                    writer.write_eof()
                return
            if self.mode == "blackhole":
                continue
            if self.mode == "cut":
                return
            if self.mode == "slow":
                await asyncio.sleep(self.delay + len(data) / self.rate)
            path_delay = self.source_delays.get(source, 0.0) if upstream else 0.0
            if path_delay:
                await asyncio.sleep(path_delay)
            if upstream:
                self.counters.to_upstream += len(data)
            else:
                self.counters.to_client += len(data)
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a dropped link or a rebooted router does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(Exception):
        if sock is not None:
            import socket
            import struct

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


@contextlib.contextmanager
def fault_proxy(upstream_port: int, upstream_host: str = "127.0.0.1") -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_host, upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
