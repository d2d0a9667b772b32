"""The HTTP/1.1 server of a cache worker: connections, pipelining, timeouts.

How: :class:`Connection` is an ``asyncio.Protocol`` (uvloop runs it). Bytes
go to the sans-I/O :class:`~edgefleet.cache.wire.http1.RequestParser`; complete
requests join the connection's queue and are answered strictly in order,
which is what pipelining requires. A fresh in-memory hit is answered inside
``data_received`` (:meth:`Proxy.serve_fast`: no task, no await, one
``writelines``, then the close a ``Connection: close`` request asked for);
anything else becomes one task, and the queue waits for it.
A client that pipelines more than ``maxPipeline`` requests is paused
(backpressure) until the queue drains.

Write backpressure, on every path: when the transport's write buffer passes
its high-water mark (``pause_writing``), the connection stops reading and
stops answering queued requests, fast hits included; below the low-water
mark (``resume_writing``) it answers the queue and, once that is empty,
reads again. Slow paths also await :meth:`Connection.drain` between body
pieces. So a client that pipelines GETs and never reads holds at most one
buffer's worth of answers, one read's worth of parsed requests and what the
kernel buffers, and is aborted after ``idleTimeout`` without progress
(measured: 1,000,000 pipelined GETs of a 1 KB hit grew the worker by
135 MiB before, 0 MiB after; the server stops taking requests at about
60,000, the kernel's buffers).

Connection caps: a worker accepts at most ``maxConnections`` connections,
and ``maxConnectionsPerClient`` from one address; one more gets a 503 with
``Connection: close`` before anything is read. A request with a body is
checked (Host, Domain, method) before any of its body is kept or asked for
with ``100 Continue`` (:meth:`Proxy.check_head`), and a request must be complete,
body included, within ``bodyTimeout`` of its first byte (408), so a slow
body cannot hold its buffer.

A streamed body (over ``maxBodyBytes``, see :mod:`edgefleet.cache.wire.bodies`)
is not buffered: its request is handled while the body arrives, and the
connection is the stream's flow control: ``pause_body`` stops reading the
client while the upstream does not take the queued pieces, ``resume_body``
reads again. Its ``bodyTimeout`` counts from the last piece while one is
due (a paused client, or one waiting for our ``100 Continue``, is not late);
past it the body fails with 408, which its request answers. A request
answered before all of its body was taken closes the connection (the rest
cannot be skipped safely); one whose body went through keeps it, so the
next pipelined request is read as usual.

Timeouts cost nothing per request: a sweeper runs once a second over the
open connections and closes those idle longer than ``idleTimeout``, those
that started a request head and did not finish it within ``headerTimeout``
(slowloris; answered 408), and those that have not read our response for
``idleTimeout`` (slow readers). The head timeout counts from the first byte
of the head, not the last one: a client dribbling a byte a second must not
keep its connection forever. That start is noted only when a read leaves a
head unfinished (the one extra store on the hot path is clearing it).

Bad input never reaches the proxy: a parser error is answered with its 4xx
and ``Connection: close``, and the connection is closed. Requests that came
before the bad bytes are answered first, in order (a pipelining client pairs
responses with requests by position): the connection stops reading, keeps
the error as its last answer, and sends it once its queue has drained.

Response times (``Stats.response_times``, the p99 the agent reports) are
taken here, where both paths end, from clock reads the connection makes
anyway but one: a request's time starts at ``last_active`` when it is taken
from the queue (the read that brought it, or the end of the answer before
it) and ends when its answer is written (a fast hit, one ``monotonic()``
more) or its task ends (the read that ``last_active`` takes then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgefleet.cache.errors import BadRequest
from edgefleet.cache.wire.http1 import Limits, Request, RequestParser, error_body, response_head

if TYPE_CHECKING:
    from edgefleet.cache.front.proxy import Proxy

log = logging.getLogger("edgefleet.cache")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection timeouts and per-worker connection caps (``limits`` in the config)."""

    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_pipeline: int = 32
    max_connections: int = 16384
    max_per_client: int = 1024


REFUSED = response_head(503, [("Content-Length", "0"), ("Connection", "close"), ("Retry-After", "1")])


class ConnectionSet:
    """The worker's open connections and their limits."""

    def __init__(self, proxy: Proxy, limits: Limits, connection_limits: ConnectionLimits) -> None:
        self.proxy = proxy
        self.limits = limits
        self.idle_timeout = connection_limits.idle_timeout
        self.header_timeout = connection_limits.header_timeout
        self.body_timeout = connection_limits.body_timeout
        self.max_pipeline = connection_limits.max_pipeline
        self.max_connections = connection_limits.max_connections
        self.max_per_client = connection_limits.max_per_client
        self.open: set[Connection] = set()
        self.per_client: dict[str, int] = {}

    def admit(self, client: str) -> bool:
        """Count a new connection from ``client``; False (not counted) when a cap is reached."""
        count = self.per_client.get(client, 0)
        if len(self.open) >= self.max_connections or count >= self.max_per_client:
            return False
        self.per_client[client] = count + 1
        return True

    def release(self, client: str) -> None:
        count = self.per_client.get(client, 0) - 1
        if count > 0:
            self.per_client[client] = count
        else:
            self.per_client.pop(client, None)

    def factory(self) -> Connection:
        return Connection(self)

    def sweep(self, now: float) -> None:
        """Close connections past their timeouts (called once a second)."""
        for conn in list(self.open):
            conn.check_timeouts(now)

    def close_idle(self) -> None:
        for conn in list(self.open):
            if not conn.busy and not conn.queue:
                conn.close()

    def busy(self) -> int:
        return sum(1 for conn in self.open if conn.busy)


class Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, owner: ConnectionSet) -> None:
        self.owner = owner
        self.proxy = owner.proxy
        self.response_times = owner.proxy.stats.response_times
        self.parser = RequestParser(owner.limits, owner.proxy.check_head, self)
        self.queue: deque[Request] = deque()
        self.busy = False
        self.closing = False
        self.peer_ip = ""
        self.tls_version: str | None = None  # "TLSv1.3" on the TLS listener (set by front.tls), None in cleartext
        self.last_active = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self._write_paused_at = 0.0
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._body_paused = False
        self._head_started = 0.0
        self._rejection: BadRequest | None = None
        self._admitted = False

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        if not self.owner.admit(self.peer_ip):
            self.proxy.stats.connections_refused += 1
            self.closing = True
            transport.write(REFUSED)  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        self.owner.open.add(self)
        self.proxy.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._admitted:
            self._admitted = False
            self.owner.open.discard(self)
            self.owner.release(self.peer_ip)
            self.proxy.stats.connections -= 1
        self.queue.clear()
        if self.parser.stream is not None:
            self.parser.stream.fail(ConnectionResetError("client closed the connection"))
        self._wake_drain(ConnectionResetError("client closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            requests = self.parser.feed(data)
        except BadRequest as exc:
            stream = self.parser.stream
            if stream is not None and not stream.finished:  # its request answers the error (and closes)
                stream.fail(exc)
                self._stop_reading()
                self.queue.extend(self.parser.take_completed())
                if not self.busy:
                    self._pump()
                return
            self._reject_after(self.parser.take_completed(), exc)
            return
        if not requests:
            if not self._head_started:
                self._head_started = self.last_active
            if self.parser.continue_wanted:  # the head is in and asks before sending its body
                self.parser.continue_wanted = False
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._head_started = 0.0
        self.queue.extend(requests)
        if not self.busy:
            self._pump()
        if len(self.queue) > self.owner.max_pipeline and not self._reading_paused and self.transport:
            self.transport.pause_reading()
            self._reading_paused = True

    def pause_writing(self) -> None:
        """The write buffer passed its high-water mark: stop reading and answering until it drains."""
        self._write_paused_at = time.monotonic()
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()
        if not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True

    def resume_writing(self) -> None:
        """Below the low-water mark again: answer what is queued (the pump resumes reading once it may)."""
        self._write_paused_at = 0.0
        self._wake_drain(None)
        if not self.busy and not self.closing:
            self._pump()

    # --- streamed request bodies (edgefleet.cache.wire.bodies.BodyFlow) ------------------

    def pause_body(self) -> None:
        """The upstream is not taking a streamed body as fast as it comes: stop reading the client."""
        self._body_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_body(self) -> None:
        self._body_paused = False
        if not self._reading_paused and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def send_continue(self) -> None:
        """``Expect: 100-continue`` of a streamed body: an upstream took the head, the body may come."""
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _stop_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self.transport.pause_reading()
        self._reading_paused = True

    # --- what the proxy uses -------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        if self.transport is not None and not self.closing:
            self.transport.writelines(data)

    async def drain(self) -> None:
        if self.closing:
            raise ConnectionResetError("client closed the connection")
        if self._drain is not None:
            await asyncio.shield(self._drain)

    # --- request scheduling ----------------------------------------------------------

    def _pump(self) -> None:
        proxy = self.proxy
        queue = self.queue
        while queue and not self.closing and not self._write_paused_at:
            request = queue.popleft()
            started = self.last_active
            if proxy.serve_fast(self, request):
                self.response_times.observe(started, time.monotonic())
                if not request.keep_alive:  # its answer said Connection: close
                    self.close()
                    return
                continue
            self.busy = True
            request.client = self.peer_ip
            asyncio.get_running_loop().create_task(self._serve(request, started))
            return
        if (
            self._reading_paused
            and not queue
            and not self._write_paused_at
            and self.transport is not None
            and not self.closing
        ):
            if self._rejection is not None:
                self.reject(self._rejection.status, self._rejection.message)
                return
            self._reading_paused = False
            if not self._body_paused:
                self.transport.resume_reading()

    async def _serve(self, request: Request, started: float) -> None:
        keep_alive = False
        try:
            await self.proxy.handle(self, request)
            keep_alive = request.keep_alive
        except ConnectionError:
            pass
        except Exception:
            log.exception("request %s %s failed", request.method, request.target)
        finally:
            stream = request.stream
            if stream is not None and not stream.consumed:  # the rest of its body is not ours to skip
                keep_alive = False
                stream.fail(ConnectionResetError("the request was answered before its body was read"))
            self.busy = False
            self.last_active = ended = time.monotonic()
            self.response_times.observe(started, ended)
            if keep_alive and not self.closing:
                self._pump()
            else:
                self.close()

    def _reject_after(self, requests: list[Request], error: BadRequest) -> None:
        """Answer ``requests`` (parsed before the bad bytes), then ``error``; read nothing more."""
        self._rejection = error
        if self.transport is not None and not self._reading_paused:
            self.transport.pause_reading()
        self._reading_paused = True
        self.queue.extend(requests)
        if not self.busy:
            self._pump()

    def reject(self, status: int, message: str) -> None:
        """Answer a request we cannot parse and close: the stream is no longer trustworthy."""
        stats = self.proxy.stats
        stats.errors += 1
        stats.requests += 1
        if status >= 500:
            stats.server_errors += 1
        headers, body = error_body(status, message, self.proxy.node)
        self.write(response_head(status, [*headers, ("Connection", "close")]) + body)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        idle = now - self.last_active
        if self._write_paused_at and now - self._write_paused_at > self.owner.idle_timeout:
            if self.transport is not None:
                self.transport.abort()
        elif self._body_stalled(now) or self.busy or self.queue:  # a streamed body that stalls: its task answers
            return
        elif self.parser.head_pending():
            if now - (self._head_started or self.last_active) > self.owner.header_timeout:
                self.reject(408, "request head not received in time")
        elif self.parser.pending():  # a body is arriving: bounded in all, and between two reads
            if now - (self._head_started or self.last_active) > self.owner.body_timeout:
                self.reject(408, "request body not received in time")
            elif idle > self.owner.idle_timeout:
                self.close()
        elif idle > self.owner.idle_timeout:
            self.close()

    def _body_stalled(self, now: float) -> bool:
        """A streamed body due from the client made no progress for ``bodyTimeout``: its request answers 408."""
        stream = self.parser.stream
        if stream is None or not stream.waiting_for_client or now - stream.last_progress <= self.owner.body_timeout:
            return False
        stream.fail(BadRequest(408, "request body not received in time"))
        self._stop_reading()
        return True

    def _wake_drain(self, error: Exception | None) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
                waiter.exception()
