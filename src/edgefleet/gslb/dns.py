"""The GSLB's DNS server: a thin asyncio shell around :mod:`dnswire` and a resolver.

How: :class:`DnsServer` binds one UDP socket and one TCP listener on the same
address and port. UDP is read with ``loop.add_reader`` on the non-blocking
socket: each wake-up drains up to :data:`UDP_BATCH` datagrams with
``recvfrom`` and answers each with ``sendto`` at once (a reply that does not
fit in the socket buffer is dropped and counted, as the network would).
That is asyncio without a ``DatagramProtocol``: measured against one under
dnsperf, with uvloop, it answers 20-30% more queries per second, because a
wake-up serves many datagrams and no transport object sits between the
socket and the code. TCP uses an ordinary ``asyncio.Protocol``. Each
message goes through :meth:`DnsServer.answer`:
parse (:func:`~edgefleet.gslb.dnswire.parse_query`), resolve
(``resolver.resolve(query, client_address)``, e.g.
:class:`~edgefleet.gslb.zone.Resolver`), build
(:func:`~edgefleet.gslb.dnswire.response`, truncated to the client's UDP
size on UDP). A malformed message gets FORMERR when its id is readable and
is dropped otherwise; a message with the QR bit set (a response) is always
dropped. No callback lets an exception out: a resolver bug costs one query a
SERVFAIL and a log line, never the server.

UDP answers are rate limited per client network and kind of response
(RRL, :mod:`edgefleet.gslb.rrl`: over the rate, a response is dropped or,
every ``slip``-th time, replaced by a truncated reply), so the server cannot
be used to reflect traffic at a spoofed victim; TCP answers are not (TCP
cannot be spoofed). Questions about the diagnostic names
(``Resolving.tcp_only``: ``whoami``, ``_route.*``, large TXT answers) get
TC=1 over UDP and are answered over TCP only.

Demand (queries per client region, :meth:`DnsServer.take_demand`, which
switches elastic sites on) counts a query only when its answer was sent (not
rate limited) and only up to ``demand_per_sender`` queries a second per
sender network (/24, /56; :data:`~edgefleet.gslb.demand.DEMAND_PER_SENDER`,
:class:`~edgefleet.gslb.demand.SenderAllowance`). Why: the region comes
from the EDNS Client Subnet, which anyone may set, so without a bound one
host could claim a whole region's demand and switch its sites on; with it,
moving demand by N queries a second takes N / ``demand_per_sender`` sender
networks. Limit: over UDP a sender that spoofs source addresses still gets
one allowance per spoofed network (DNS cookies, RFC 7873, would close that).

TCP (RFC 7766): two-byte length prefix, any number of queries per
connection answered in order, an idle timeout, at most
``max_tcp_connections`` at once; reading pauses while the client does not
read its answers, so a slow reader cannot make the server buffer without
bound. Messages are at most 65535 bytes by construction of the prefix.

Why a packet cache in front of the resolver: an authoritative server sees
the same few questions from the same resolvers over and over. The answer to
a message is a function of its bytes after the id (question, EDNS size,
Client Subnet), of the client address (used when there is no Client
Subnet) and of the fleet state, so ``(message[2:], client address)`` is a
complete key and a hit costs a dict probe and a two-byte id splice instead
of a parse, a routing decision and an encode. The cache is emptied when the
resolver's ``generation`` moves (checked on every message: a store change, a
peer vote going stale, a geo table reload), every ``cache_max_age`` seconds
as a safety net, and whole when it reaches ``cache_size`` entries (cheaper
than LRU bookkeeping on every hit, and a full cache means a flood of
distinct questions that no cache helps with). ``cache_size=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, cast

from edgefleet.gslb import dnswire
from edgefleet.gslb.demand import DEMAND_PER_SENDER, SenderAllowance
from edgefleet.gslb.errors import DnsFormatError
from edgefleet.gslb.rrl import ResponseRateLimiter, RrlSettings, Verdict

log = logging.getLogger("edgefleet.gslb.dns")

Resolution = tuple[int, Sequence[bytes], Sequence[bytes], Sequence[bytes], int | None]
"""What a resolver returns: rcode, answer, authority and additional records, ECS scope prefix."""

UDP_BATCH = 64
"""Datagrams read per wake-up before the loop runs other callbacks (TCP, timers)."""
MAX_UDP_QUERY = 4096
"""Security limit: bytes read of a UDP datagram; a longer one is cut there, fails to parse and gets FORMERR."""
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
"""Socket receive buffer asked for the UDP socket, so bursts are queued rather than dropped."""


class Resolving(Protocol):
    """What the server needs from a resolver (:class:`edgefleet.gslb.zone.Resolver`)."""

    @property
    def generation(self) -> object:
        """Changes whenever answers may change other than by time (fleet state, geo table)."""

    def resolve(self, query: dnswire.Query, client_address: str) -> Resolution: ...

    def region_of(self, query: dnswire.Query, client_address: str) -> str:
        """The client's region, for demand counting ("" when unknown)."""

    def tcp_only(self, query: dnswire.Query) -> bool:
        """Whether the question is answered over TCP only (diagnostics: large, and must not be reflected)."""


@dataclass
class DnsMetrics:
    """Counters since the server started."""

    queries: int = 0
    """Messages received, UDP and TCP, well-formed or not."""
    tcp_queries: int = 0
    tcp_connections: int = 0
    cache_hits: int = 0
    formerr: int = 0
    dropped: int = 0
    """Messages not answered: too short to hold an id, or responses."""
    truncated: int = 0
    send_errors: int = 0
    errors: int = 0
    """Resolver failures answered with SERVFAIL (bugs: see the log)."""
    by_rcode: Counter[int] = field(default_factory=Counter)
    rrl_dropped: int = 0
    """UDP responses not sent: over the client network's rate (response rate limiting)."""
    rrl_slipped: int = 0
    """UDP responses over the rate replaced by a truncated reply (TC=1), so real clients retry over TCP."""
    tcp_only: int = 0
    """Questions about diagnostic names over UDP, answered TC=1."""
    demand_capped: int = 0
    """Answered queries not counted as demand: their sender network was over its demand allowance."""


class _Answer(NamedTuple):
    """One reply as the server keeps it (also in its packet cache)."""

    body: bytes
    """The reply without its id (its first two bytes)."""
    rcode: int
    truncated: bool
    region: str | None
    """The placed client's region, for demand counting; None for replies that count no demand (FORMERR)."""
    response_class: str
    """What response rate limiting groups this reply with (see :mod:`edgefleet.gslb.rrl`)."""


class DnsServer:
    """Authoritative DNS over UDP and TCP on ``host:port`` (port 0: any free port, the same for both)."""

    def __init__(
        self,
        resolver: Resolving,
        host: str = "127.0.0.1",
        port: int = 53,
        *,
        tcp: bool = True,
        idle_timeout: float = 10.0,
        max_tcp_connections: int = 1024,
        cache_size: int = 100_000,
        cache_max_age: float = 10.0,
        rrl: RrlSettings | None = None,
        demand_per_sender: int = DEMAND_PER_SENDER,
    ) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.tcp = tcp
        self.idle_timeout = idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self.cache_size = cache_size
        self.cache_max_age = cache_max_age
        self.metrics = DnsMetrics()
        self.rrl = ResponseRateLimiter(rrl if rrl is not None else RrlSettings())
        self._demand_allowance = SenderAllowance(demand_per_sender)
        self._cache: dict[tuple[bytes, str, bool], _Answer] = {}
        self.demand: collections.Counter[str] = collections.Counter()
        """Queries by client region since the last :meth:`take_demand` (the site activation controller's input)."""
        self._cache_generation: object = None
        self._cache_until = 0.0
        self._udp: socket.socket | None = None
        self._tcp_server: asyncio.Server | None = None
        self._connections: set[_TcpConnection] = set()

    # --- answering (shared by UDP and TCP) ----------------------------------------------

    def answer(self, data: bytes, client_address: str, *, udp: bool) -> bytes | None:
        """The reply to one message (``udp``: truncated to fit, rate limited), or None to send nothing. Never raises."""
        self.metrics.queries += 1
        try:
            now = time.monotonic()
            if now >= self._cache_until or self.resolver.generation != self._cache_generation:
                self._reset_cache()
            key = (data[2:], client_address, udp)
            found = self._cache.get(key)
            if found is None:
                found = self._answer_fresh(data, client_address, udp, key)
                if found is None:
                    return None
            else:
                self.metrics.cache_hits += 1
            body, rcode, truncated, region, response_class = found
            self._count(rcode, truncated)
            if udp:
                verdict = self.rrl.check(client_address, response_class, now)
                if verdict is not Verdict.SEND:
                    return self._limited(data, verdict)
            if region is not None:
                if self._demand_allowance.allow(client_address, now):
                    self.demand[region] += 1
                else:
                    self.metrics.demand_capped += 1
            return data[:2] + body
        except Exception:  # a bug; this query gets nothing, the server carries on
            self.metrics.errors += 1
            log.exception("error answering a DNS message from %s", client_address)
            return None

    def _answer_fresh(
        self, data: bytes, client_address: str, udp: bool, key: tuple[bytes, str, bool]
    ) -> _Answer | None:
        try:
            query = dnswire.parse_query(data)
        except DnsFormatError:
            reply = dnswire.formerr(data)
            if reply is None:
                self.metrics.dropped += 1
                return None
            self.metrics.formerr += 1
            return _Answer(reply[2:], dnswire.FORMERR, False, None, _ERROR_CLASS)
        if udp and self.resolver.tcp_only(query):
            self.metrics.tcp_only += 1
            return self._cached(key, _Answer(_truncated(query)[2:], dnswire.NOERROR, True, None, _ERROR_CLASS))
        max_size = query.udp_limit() if udp else dnswire.MAX_MESSAGE
        region = self.resolver.region_of(query, client_address)
        try:
            rcode, answers, authority, additional, scope = self.resolver.resolve(query, client_address)
        except Exception:
            self.metrics.errors += 1
            log.exception("resolver failed for %s type %d from %s", query.qname, query.qtype, client_address)
            reply = dnswire.response(query, dnswire.SERVFAIL, (), (), (), aa=False, ecs_scope=None, max_size=max_size)
            return _Answer(reply[2:], dnswire.SERVFAIL, False, region, _ERROR_CLASS)
        reply = dnswire.response(
            query,
            rcode,
            answers,
            authority,
            additional,
            aa=rcode in (dnswire.NOERROR, dnswire.NXDOMAIN),
            ecs_scope=scope,
            max_size=max_size,
        )
        truncated = bool(reply[2] & 0x02)
        return self._cached(key, _Answer(reply[2:], rcode, truncated, region, _response_class(query, rcode)))

    def _cached(self, key: tuple[bytes, str, bool], found: _Answer) -> _Answer:
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        if self.cache_size:
            self._cache[key] = found
        return found

    def _limited(self, data: bytes, verdict: Verdict) -> bytes | None:
        """What a response over its rate becomes: nothing, or (slip) a truncated reply without records."""
        if verdict is Verdict.DROP:
            self.metrics.rrl_dropped += 1
            return None
        self.metrics.rrl_slipped += 1
        try:
            return _truncated(dnswire.parse_query(data))
        except DnsFormatError:
            return dnswire.formerr(data)  # 12 bytes: nothing to amplify

    def take_demand(self) -> dict[str, int]:
        """Queries per client region counted since the last call (and reset)."""
        taken, self.demand = dict(self.demand), collections.Counter()
        return taken

    def _count(self, rcode: int, truncated: bool) -> None:
        self.metrics.by_rcode[rcode] += 1
        if truncated:
            self.metrics.truncated += 1

    def _reset_cache(self) -> None:
        self._cache.clear()
        self._cache_generation = self.resolver.generation
        self._cache_until = time.monotonic() + self.cache_max_age

    def _udp_readable(self) -> None:
        sock = self._udp
        if sock is None:
            return
        recvfrom, sendto, answer = sock.recvfrom, sock.sendto, self.answer
        for _ in range(UDP_BATCH):
            try:
                data, addr = recvfrom(MAX_UDP_QUERY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            reply = answer(data, addr[0], udp=True)
            if reply is not None:
                try:
                    sendto(reply, addr)
                except OSError:
                    self.metrics.send_errors += 1

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP; with port 0 both get the same free port (retrying on a clash)."""
        loop = asyncio.get_running_loop()
        for attempt in range(20):
            udp_sock = _udp_socket(self.host, self.port)
            port = udp_sock.getsockname()[1]
            try:
                tcp_sock = _tcp_socket(self.host, port) if self.tcp else None
            except OSError as exc:
                udp_sock.close()
                if self.port or exc.errno != errno.EADDRINUSE or attempt == 19:
                    raise
                continue
            break
        self.port = port
        self._udp = udp_sock
        loop.add_reader(udp_sock.fileno(), self._udp_readable)
        if tcp_sock is not None:
            self._tcp_server = await loop.create_server(lambda: _TcpConnection(self), sock=tcp_sock)
        log.info("DNS listening on %s port %d (UDP%s)", self.host, self.port, " and TCP" if self.tcp else "")

    async def close(self) -> None:
        """Stop listening and close open TCP connections."""
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            for connection in list(self._connections):
                connection.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


_ERROR_CLASS = "error"
_NXDOMAIN_CLASS = "nxdomain"


def _response_class(query: dnswire.Query, rcode: int) -> str:
    """The RRL class of an answer: its question when positive or NODATA, else NXDOMAIN or error as a whole."""
    if rcode == dnswire.NOERROR:
        return f"{query.qname}/{query.qtype}"
    return _NXDOMAIN_CLASS if rcode == dnswire.NXDOMAIN else _ERROR_CLASS


def _truncated(query: dnswire.Query) -> bytes:
    """An empty answer with the TC bit: "ask again over TCP"."""
    return dnswire.response(query, dnswire.NOERROR, (), (), (), aa=False, ecs_scope=None, max_size=0)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _tcp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _TcpConnection(asyncio.Protocol):
    """One TCP client: length-prefixed messages in, answers out in order."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client_address = ""
        self.buffer = bytearray()
        self.last_activity = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server._connections) >= self.server.max_tcp_connections:
            self.transport.abort()
            return
        self.server._connections.add(self)
        self.server.metrics.tcp_connections += 1
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if peer else ""
        self.last_activity = time.monotonic()
        self._schedule_idle_check(self.server.idle_timeout)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.buffer += data
        while len(self.buffer) >= 2 and self.transport is not None and not self.transport.is_closing():
            length = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + length:
                return
            message = bytes(self.buffer[2 : 2 + length])
            del self.buffer[: 2 + length]
            self.server.metrics.tcp_queries += 1
            reply = self.server.answer(message, self.client_address, udp=False)
            if reply is None:  # unreadable or a response: this stream cannot be trusted any more
                self.close()
                return
            self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _schedule_idle_check(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        if self.transport is None:
            return
        idle = time.monotonic() - self.last_activity
        if idle >= self.server.idle_timeout:
            self.transport.close()
        else:
            self._schedule_idle_check(self.server.idle_timeout - idle)
