"""The GSLB's DNS server: a thin asyncio shell around :mod:`dnswire` and a resolver.

How: :class:`DnsServer` binds one UDP socket and one TCP listener on the same
address and port. UDP is read with ``loop.add_reader`` on the non-blocking
socket: each wake-up reads up to :data:`UDP_BATCH` waiting datagrams in one
``recvmmsg``, answers each and sends the replies in one ``sendmmsg``
(:mod:`edgefleet.gslb.dgram`, a small C extension; where it is not built,
``recvfrom`` and ``sendto`` per datagram, with a warning: ``udp_io.path``
says which runs). A reply that does not fit in the socket buffer is dropped
and counted, as the network would.
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

Why a shape cache behind it: a real authoritative server sees millions of
resolver subnets, so most queries with a Client Subnet miss the packet
cache. But queries that differ only in their subnet *address* (same id
aside, same flags, name as spelled, type, EDNS fields, family and source
prefix) have the same *shape*, and the resolver can say once per shape
how the answer depends on the address (:meth:`Resolver.ecs_route
<edgefleet.gslb.zone.Resolver.ecs_route>`: a geo lookup and a read of the
site decision precomputed for the client's location). The server keys
shapes by the message without its id and its address bytes (which must be
the message's last bytes: an OPT record last, the Client Subnet its last
option), keeps one encoded answer per shape and chosen site, and patches in
the ECS scope and the address. A query of a known shape from a new subnet
so costs a slice, two dict probes, a bisect and a concatenation: no parse
(its bytes are those of a valid query but for the address, whose only rule,
no bit past the source prefix, is checked), no decision, no encoding. A
query without a Client Subnet (or with a /0 one) is placed by its sender's
address, which is not in the message: its shape is the whole message but
the id (:meth:`Resolver.address_route <edgefleet.gslb.zone.Resolver.address_route>`),
so a known question from a new resolver costs the same. Shapes are bounded
(:data:`SHAPE_CACHE_SIZE` of each kind) and dropped with the packet cache.
A shape also keeps its answer per client *location* when the decision there
depends on the location alone (no draw, no measured network), so a new
subnet costs the geo lookup and one dict probe (measured: 8.4 -> 5 CPU µs a
fresh query in ``bench/dns_path_cpu.py``); those entries are bounded by
:data:`LOCATION_MEMO_SIZE` over all shapes.

Counters per answer: the site an answer names is kept with the answer as a
slot of :attr:`DnsServer.site_answers`, so counting answers per site costs
one list increment (``edgefleet_gslb_answers_total{site}`` on the cloud's
``/metrics``, :mod:`edgefleet.cloud.gslbmetrics`); the Client Subnets of
demand-counted queries are counted as bytes for the latency probe targets
(:mod:`edgefleet.gslb.networks`).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from edgefleet.gslb import dnswire
from edgefleet.gslb.demand import DEMAND_PER_SENDER, SenderAllowance
from edgefleet.gslb.dgram import IoPath, datagram_io
from edgefleet.gslb.errors import DnsFormatError
from edgefleet.gslb.geo import Location, Match
from edgefleet.gslb.rrl import SEND, ResponseRateLimiter, RrlSettings, Verdict

log = logging.getLogger("edgefleet.gslb.dns")

Resolution = tuple[int, Sequence[bytes], Sequence[bytes], Sequence[bytes], int | None]
"""What a resolver returns: rcode, answer, authority and additional records, ECS scope prefix."""

UDP_BATCH = 64
"""Datagrams read per wake-up (one ``recvmmsg``; their replies go in one ``sendmmsg``) before the loop runs
other callbacks (TCP, timers)."""
MAX_UDP_QUERY = 4096
"""Security limit: bytes read of a UDP datagram; a longer one is cut there, fails to parse and gets FORMERR."""
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
"""Socket receive buffer asked for the UDP socket, so bursts are queued rather than dropped."""
MAX_SENDERS = 65536
"""Security limit: sender addresses counted between two :meth:`DnsServer.take_senders` (once a second)."""
MAX_CLIENT_SUBNETS = 8192
"""Security limit: Client Subnets counted between two :meth:`DnsServer.take_client_subnets` (once a second;
twice what :class:`~edgefleet.gslb.networks.NetworkCounter` tracks), so a flood of distinct subnets costs the
once-a-second count (an address parse per subnet) a bounded few milliseconds."""
SHAPE_CACHE_SIZE = 4096
"""Security limit: query shapes kept (see the module docstring) before they are all dropped."""
LOCATION_MEMO_SIZE = 65536
"""Security limit: answers kept per (query shape, client location), all shapes together, between two resets
of the caches (see :class:`_Shape`)."""
MAX_SITE_SLOTS = 4096
"""Security limit: sites counted apart in :attr:`DnsServer.site_answers` (sites are operators' objects; the
rest count as no site)."""
SHAPE_ADMISSION_WINDOW = 16384
"""Shape hits after which the server checks that the packet cache still earns its keep: unless it
answered at least 1/8 as many queries meanwhile, only 1 in 16 answers from shapes enter it until the
next check. Why: under a flood of distinct subnets every entry is written, never read, and pushed
out (on a 2-core VM inserting cost ~4 µs a query of ~20: memory, not Python); sampled entries keep
finding out when clients start repeating again."""


class EcsRouting(Protocol):
    """A routed question's answer as a function of the Client Subnet address (:class:`edgefleet.gslb.zone.EcsRoute`)."""

    @property
    def lookup(self) -> Callable[[bytes], Match | None]:
        """The geo table's lookup of a subnet address in wire form."""

    def place_found(
        self, address_wire: bytes, found: Match | None
    ) -> tuple[str | None, tuple[int, Sequence[bytes], Sequence[bytes]], int, str]:
        """:meth:`place` for a subnet whose :attr:`lookup` gave ``found``."""

    def fixed(self, location: Location | None) -> bool:
        """Whether every subnet placed at ``location`` gets the same answer, scoped ``min(source, matched)``."""

    def place(self, address_wire: bytes) -> tuple[str | None, tuple[int, Sequence[bytes], Sequence[bytes]], int, str]:
        """(chosen site, the answer's key: equal sites mean equal records, (rcode, answer, authority), ECS scope,
        region)."""


class SenderRouting(Protocol):
    """A routed question's answer as a function of the sender's address (:class:`edgefleet.gslb.zone.AddressRoute`)."""

    def place(self, client_address: str) -> tuple[str | None, tuple[int, Sequence[bytes], Sequence[bytes]], None, str]:
        """(chosen site, the answer's key: equal sites mean equal records, (rcode, answer, authority), no scope,
        region)."""


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
    shape_hits: int = 0
    """Packet cache misses answered from a known query shape (a new subnet: no parse, no decision)."""
    udp_batches: int = 0
    """UDP reads that returned datagrams (``queries`` over UDP / this: datagrams per system call)."""


_Answer = tuple[bytes, int, bool, str | None, str, int, bytes | None]
"""One reply as the server keeps it (also in its packet cache): its body (the reply without its id,
the first two bytes), rcode, TC bit, the placed client's region (for demand counting; None for
replies that count no demand: FORMERR), what response rate limiting groups it with
(:mod:`edgefleet.gslb.rrl`), the slot of the site it names in :attr:`DnsServer.site_answers`
(0: none; precomputed, so counting an answer per site is one list increment, no name lookup) and
the query's Client Subnet as the family byte and the address bytes (None without one: the latency
probe targets' input, counted as bytes and turned into text once a second).
A plain tuple of strings, bytes and numbers, not a NamedTuple: the
garbage collector stops tracking such tuples, so the hundred thousand entries of a full packet
cache do not lengthen its collections (with a flood of fresh subnets it refills every second)."""


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
        udp_io: IoPath | None = None,
    ) -> None:
        self.resolver = resolver
        self.udp_io = datagram_io(udp_io)
        """How UDP datagrams are read and sent (:mod:`edgefleet.gslb.dgram`; ``udp_io.path`` says which)."""
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
        ecs_route: Callable[[dnswire.Query], EcsRouting | None] | None = getattr(resolver, "ecs_route", None)
        self._ecs_route = ecs_route if cache_size else None
        self._shapes: dict[tuple[bytes, bool], _Shape] = {}
        self._memo_budget = [LOCATION_MEMO_SIZE]
        address_route: Callable[[dnswire.Query], SenderRouting | None] | None = getattr(resolver, "address_route", None)
        self._address_route = address_route if cache_size else None
        self._sender_shapes: dict[tuple[bytes, bool], _SenderShape] = {}
        self._admit_all_shaped = True
        self._window_cache_hits = 0
        self._ecs_tails: dict[int, tuple[int, ...]] = {}
        """Message length -> lengths of the subnet addresses that end the known shapes of that length."""
        resolve_site: Callable[[dnswire.Query, str], tuple[Resolution, str | None]] | None = getattr(
            resolver, "resolve_site", None
        )
        self._resolve_site = resolve_site
        self.site_answers: list[int] = [0]
        """Answers sent, by site slot (:meth:`answers_by_site`); slot 0 counts the answers that name no site."""
        self._site_names: list[str] = [""]
        self._site_slots: dict[str, int] = {}
        self.demand: collections.Counter[str] = collections.Counter()
        """Queries by client region since the last :meth:`take_demand` (the site activation controller's input)."""
        self.client_subnets: collections.Counter[bytes] = collections.Counter()
        """Demand-counted queries by Client Subnet (family byte and address) since the last
        :meth:`take_client_subnets` (at most :data:`MAX_CLIENT_SUBNETS`: latency probe targets too)."""
        self.senders: collections.Counter[str] = collections.Counter()
        """Demand-counted queries by sender address since the last :meth:`take_senders` (at most
        :data:`MAX_SENDERS` addresses: the latency probe targets' input, :mod:`edgefleet.gslb.networks`)."""
        self._cache_generation: object = None
        self._cache_until = 0.0
        self._udp: socket.socket | None = None
        self._tcp_server: asyncio.Server | None = None
        self._connections: set[_TcpConnection] = set()

    # --- answering (shared by UDP and TCP) ----------------------------------------------

    def answer(self, data: bytes, client_address: str, *, udp: bool, now: float | None = None) -> bytes | None:
        """The reply to one message (``udp``: truncated to fit, rate limited), or None to send nothing. Never raises.

        ``now``: the ``time.monotonic()`` :meth:`check_generation` returned to the caller, which
        answers a batch of datagrams read in one wake-up after one check (no store change can
        land in between: changes are callbacks of the same event loop); None: check now.
        """
        metrics = self.metrics
        metrics.queries += 1
        try:
            if now is None:
                now = self.check_generation()
            key = (data[2:], client_address, udp)
            found = self._cache.get(key)
            if found is None:
                found = self._answer_shaped(data, client_address, udp, key[0])
                if found is None:
                    found = self._answer_fresh(data, client_address, udp, key)
                    if found is None:
                        return None
                else:
                    self._shape_hit(key, found)
            else:
                metrics.cache_hits += 1
            body, rcode, truncated, region, response_class, site, subnet = found
            metrics.by_rcode[rcode] += 1  # what _count does, inline: this is the hot path
            if truncated:
                metrics.truncated += 1
            if udp:
                verdict = self.rrl.check(client_address, response_class, now)
                if verdict is not SEND:
                    return self._limited(data, verdict)
            self.site_answers[site] += 1
            if region is not None:
                if self._demand_allowance.allow(client_address, now):
                    self.demand[region] += 1
                    senders = self.senders
                    if client_address in senders or len(senders) < MAX_SENDERS:
                        senders[client_address] += 1
                    if subnet is not None:
                        subnets = self.client_subnets
                        if subnet in subnets or len(subnets) < MAX_CLIENT_SUBNETS:
                            subnets[subnet] += 1
                else:
                    self.metrics.demand_capped += 1
            return data[:2] + body
        except Exception:  # a bug; this query gets nothing, the server carries on
            self.metrics.errors += 1
            log.exception("error answering a DNS message from %s", client_address)
            return None

    def check_generation(self) -> float:
        """Empty the caches if the resolver's generation moved or they are too old; the time checked."""
        now = time.monotonic()
        if now >= self._cache_until or self.resolver.generation != self._cache_generation:
            self._reset_cache()
        return now

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
            return (reply[2:], dnswire.FORMERR, False, None, _ERROR_CLASS, 0, None)
        if udp and self.resolver.tcp_only(query):
            self.metrics.tcp_only += 1
            return self._cached(key, (_truncated(query)[2:], dnswire.NOERROR, True, None, _ERROR_CLASS, 0, None))
        max_size = query.udp_limit() if udp else dnswire.MAX_MESSAGE
        shaped = self._new_shape(data, query, udp, max_size, client_address)
        if shaped is not None:
            return self._cached(key, shaped)
        region = self.resolver.region_of(query, client_address)
        try:
            if self._resolve_site is not None:
                resolution, site = self._resolve_site(query, client_address)
            else:
                resolution, site = self.resolver.resolve(query, client_address), None
            rcode, answers, authority, additional, scope = resolution
        except Exception:
            self.metrics.errors += 1
            log.exception("resolver failed for %s type %d from %s", query.qname, query.qtype, client_address)
            reply = dnswire.response(query, dnswire.SERVFAIL, (), (), (), aa=False, ecs_scope=None, max_size=max_size)
            return (reply[2:], dnswire.SERVFAIL, False, region, _ERROR_CLASS, 0, _subnet_key(query))
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
        response_class, slot = _response_class(query, rcode), self.site_slot(site)
        answer = (reply[2:], rcode, truncated, region, response_class, slot, _subnet_key(query))
        return self._cached(key, answer)

    def _shape_hit(self, key: tuple[bytes, str, bool], found: _Answer) -> None:
        """Count a shape hit and admit its answer to the packet cache (all, or 1 in 16: see SHAPE_ADMISSION_WINDOW)."""
        hits = self.metrics.shape_hits = self.metrics.shape_hits + 1
        if self._admit_all_shaped or not hits % 16:
            self._cached(key, found)
        if not hits % SHAPE_ADMISSION_WINDOW:
            cache_hits = self.metrics.cache_hits - self._window_cache_hits
            self._window_cache_hits = self.metrics.cache_hits
            self._admit_all_shaped = cache_hits * 8 >= SHAPE_ADMISSION_WINDOW

    def _answer_shaped(self, data: bytes, client_address: str, udp: bool, body: bytes) -> _Answer | None:
        """The answer from a known query shape (see the module docstring); None if the shape is unknown.

        ``body``: ``data`` without its id, the key of the shapes of queries without a Client Subnet.
        """
        size = len(data)
        for length in self._ecs_tails.get(size, ()):
            shape = self._shapes.get((data[2 : size - length], udp))
            if shape is not None:
                return shape.answer(data[size - length :])
        sender = self._sender_shapes.get((body, udp))
        return None if sender is None else sender.answer(client_address)

    def _new_shape(
        self, data: bytes, query: dnswire.Query, udp: bool, max_size: int, client_address: str
    ) -> _Answer | None:
        """Learn the shape of ``query`` and answer it from there; None if it has none (then it is resolved)."""
        ecs = query.edns.ecs if query.edns is not None else None
        if ecs is None or ecs.source_prefix == 0:
            return self._new_sender_shape(data, query, udp, max_size, client_address)
        if self._ecs_route is None or ecs.address_offset + len(ecs.address_wire) != len(data):
            return None
        route = self._ecs_route(query)
        if route is None:
            return None
        length = len(ecs.address_wire)
        if len(self._shapes) >= SHAPE_CACHE_SIZE:
            self._shapes.clear()
            self._ecs_tails.clear()
            self._memo_budget = [LOCATION_MEMO_SIZE]
        shape = _Shape(query, route, max_size, self.site_slot, self._memo_budget)
        self._shapes[(data[2 : len(data) - length], udp)] = shape
        tails = self._ecs_tails.get(len(data), ())
        if length not in tails:
            self._ecs_tails[len(data)] = (*tails, length)
        return shape.answer(ecs.address_wire)

    def _new_sender_shape(
        self, data: bytes, query: dnswire.Query, udp: bool, max_size: int, client_address: str
    ) -> _Answer | None:
        """Learn the shape of a query placed by its sender's address and answer it from there (or None)."""
        route = self._address_route(query) if self._address_route is not None else None
        if route is None:
            return None
        if len(self._sender_shapes) >= SHAPE_CACHE_SIZE:
            self._sender_shapes.clear()
        shape = self._sender_shapes[(data[2:], udp)] = _SenderShape(query, route, max_size, self.site_slot)
        return shape.answer(client_address)

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

    def site_slot(self, site: str | None) -> int:
        """The slot of ``site`` in :attr:`site_answers` (0 for None, or past :data:`MAX_SITE_SLOTS` sites)."""
        if site is None:
            return 0
        slot = self._site_slots.get(site)
        if slot is None:
            if len(self._site_names) >= MAX_SITE_SLOTS:
                return 0
            slot = self._site_slots[site] = len(self._site_names)
            self.site_answers.append(0)
            self._site_names.append(site)
        return slot

    def answers_by_site(self) -> dict[str, int]:
        """Answers sent per site since the server started (any thread may call it: it only reads)."""
        names, counts = list(self._site_names), list(self.site_answers)
        return {name: counts[slot] for slot, name in enumerate(names) if slot and slot < len(counts)}

    def take_client_subnets(self) -> dict[str, int]:
        """Demand-counted queries per Client Subnet address (text) since the last call (and reset)."""
        taken, self.client_subnets = self.client_subnets, collections.Counter()
        return {dnswire.address_text(key[0], key[1:]): count for key, count in taken.items()}

    def take_senders(self) -> dict[str, int]:
        """Demand-counted queries per sender address since the last call (and reset)."""
        taken, self.senders = dict(self.senders), collections.Counter()
        return taken

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
        self._shapes.clear()
        self._memo_budget = [LOCATION_MEMO_SIZE]
        self._ecs_tails.clear()
        self._sender_shapes.clear()
        self._cache_generation = self.resolver.generation
        self._cache_until = time.monotonic() + self.cache_max_age

    def _udp_readable(self) -> None:
        """Read a batch of waiting datagrams, answer each, send the replies as one batch (module docstring)."""
        sock = self._udp
        if sock is None:
            return
        try:
            received = self.udp_io.receive(sock, UDP_BATCH, MAX_UDP_QUERY)
        except OSError:  # a pending socket error, consumed: the loop calls again while datagrams wait
            return
        if not received:
            return
        self.metrics.udp_batches += 1
        try:
            now: float | None = self.check_generation()
        except Exception:  # a resolver bug: each message checks again (and answers SERVFAIL or nothing)
            log.exception("error checking the resolver's generation")
            now = None
        answer, replies = self.answer, []
        for data, addr in received:
            reply = answer(data, addr[0], udp=True, now=now)
            if reply is not None:
                replies.append((reply, addr))
        if replies:
            try:
                self.metrics.send_errors += len(replies) - self.udp_io.send(sock, replies)
            except (OSError, TypeError, ValueError):  # cannot happen with our replies; never lose the server
                self.metrics.send_errors += len(replies)
                log.exception("error sending %d DNS replies", len(replies))

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
        log.info(
            "DNS listening on %s port %d (UDP via %s%s)",
            self.host,
            self.port,
            self.udp_io.path,
            " and TCP" if self.tcp else "",
        )

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


_SCOPES = tuple(bytes((length,)) for length in range(129))
"""The one-byte ECS scope prefixes, built once."""


class _Shape:
    """Queries that differ only in their Client Subnet address: one encoded answer per answer key.

    The fast path: the geo lookup of the address, then the answer kept for the client's *location*
    (``_memo``, keyed by the identity of the table's Location object, which it holds so the identity
    cannot be reused), when the route says that the answer there depends on the location alone
    (``EcsRouting.fixed``: no draw, no measured network); the scope byte is ``min(source, matched)``.
    Otherwise :meth:`EcsRouting.place_found` decides. The memo entries of all shapes together are
    bounded by ``budget`` (:data:`LOCATION_MEMO_SIZE`, restored when the caches are reset).
    """

    __slots__ = (
        "_bits",
        "_bodies",
        "_budget",
        "_family",
        "_lookup",
        "_mask",
        "_max_size",
        "_memo",
        "_query",
        "_route",
        "_site_slot",
        "_source",
    )

    def __init__(
        self,
        query: dnswire.Query,
        route: EcsRouting,
        max_size: int,
        site_slot: Callable[[str | None], int],
        budget: list[int],
    ) -> None:
        ecs = query.edns.ecs if query.edns is not None else None
        assert ecs is not None
        self._query, self._route, self._max_size, self._site_slot = query, route, max_size, site_slot
        self._lookup = route.lookup
        self._bits = 32 if ecs.family == dnswire.FAMILY_IPV4 else 128
        self._source = ecs.source_prefix
        self._family = bytes((ecs.family,))
        self._mask = 0xFF >> (ecs.source_prefix % 8) if ecs.source_prefix % 8 else 0
        self._bodies: dict[str | None, tuple[bytes, int, bool, str, int]] = {}
        self._memo: dict[int, tuple[Location, bytes, int, bool, str, str, int]] = {}
        self._budget = budget

    def answer(self, address: bytes) -> _Answer | None:
        """The reply (without id) for a query of this shape from subnet ``address``; None if that is malformed."""
        if address[-1] & self._mask:
            return None  # a bit set past the source prefix: the full parse answers FORMERR
        found = self._lookup(address)
        if found is not None:
            location, matched = found
            kept = self._memo.get(id(location))
            if kept is not None and kept[0] is location:
                _, prefix, rcode, truncated, region, response_class, slot = kept
                reply = prefix + _SCOPES[matched if matched < self._source else self._source] + address
                return (reply, rcode, truncated, region, response_class, slot, self._family + address)
        site, records, scope_length, region = self._route.place_found(address, found)
        body = self._bodies.get(site)
        if body is None:
            body = self._bodies[site] = (*self._encode(records), self._site_slot(site))
        prefix, rcode, truncated, response_class, slot = body
        if found is not None and self._budget[0] > 0 and self._route.fixed(found[0]):
            self._budget[0] -= 1
            self._memo[id(found[0])] = (found[0], prefix, rcode, truncated, region, response_class, slot)
        reply = prefix + _SCOPES[min(scope_length, self._bits)] + address
        return (reply, rcode, truncated, region, response_class, slot, self._family + address)

    def _encode(self, records: tuple[int, Sequence[bytes], Sequence[bytes]]) -> tuple[bytes, int, bool, str]:
        """The reply's bytes after the id and before the ECS scope prefix, its rcode, TC bit and RRL class."""
        query = self._query
        rcode, answers, authority = records
        reply = dnswire.response(
            query,
            rcode,
            answers,
            authority,
            (),
            aa=rcode in (dnswire.NOERROR, dnswire.NXDOMAIN),
            ecs_scope=0,
            max_size=self._max_size,
        )
        ecs = query.edns.ecs if query.edns is not None else None
        assert ecs is not None and reply.endswith(b"\0" + ecs.address_wire)
        body = reply[2 : len(reply) - len(ecs.address_wire) - 1]
        return body, rcode, bool(reply[2] & 0x02), _response_class(query, rcode)


class _SenderShape:
    """Queries placed by their sender's address (no Client Subnet): one encoded answer per answer key."""

    __slots__ = ("_bodies", "_max_size", "_query", "_route", "_site_slot")

    def __init__(
        self, query: dnswire.Query, route: SenderRouting, max_size: int, site_slot: Callable[[str | None], int]
    ) -> None:
        self._query, self._route, self._max_size, self._site_slot = query, route, max_size, site_slot
        self._bodies: dict[str | None, tuple[bytes, int, bool, str, int]] = {}

    def answer(self, client_address: str) -> _Answer:
        """The reply (without id) for a query of this shape sent from ``client_address``."""
        site, records, _, region = self._route.place(client_address)
        found = self._bodies.get(site)
        if found is None:
            query, (rcode, answers, authority) = self._query, records
            aa = rcode in (dnswire.NOERROR, dnswire.NXDOMAIN)
            reply = dnswire.response(
                query, rcode, answers, authority, (), aa=aa, ecs_scope=None, max_size=self._max_size
            )
            truncated = bool(reply[2] & 0x02)
            slot = self._site_slot(site)
            found = self._bodies[site] = (reply[2:], rcode, truncated, _response_class(query, rcode), slot)
        body, rcode, truncated, response_class, slot = found
        return body, rcode, truncated, region, response_class, slot, None


def _response_class(query: dnswire.Query, rcode: int) -> str:
    """The RRL class of an answer: its question when positive or NODATA, else NXDOMAIN or error as a whole."""
    if rcode == dnswire.NOERROR:
        return f"{query.qname}/{query.qtype}"
    return _NXDOMAIN_CLASS if rcode == dnswire.NXDOMAIN else _ERROR_CLASS


def _subnet_key(query: dnswire.Query) -> bytes | None:
    """The query's Client Subnet as counted (family byte, address bytes), None without one (or /0)."""
    ecs = query.edns.ecs if query.edns is not None else None
    if ecs is None or ecs.source_prefix == 0:
        return None
    return bytes((ecs.family,)) + ecs.address_wire


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
