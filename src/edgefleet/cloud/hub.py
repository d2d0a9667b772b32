"""The hub: the cloud end of every agent's WebSocket.

How: one store watch feeds an in-memory :class:`~edgefleet.sync.views.FleetIndex`
of every ``/registry/`` object. Each change is turned by the index into
per-node view changes, which go into that node's
:class:`~edgefleet.sync.cloud.CloudSession` (pure: it coalesces them into a
bounded pending map). The fan-out loop writes each affected node's frames
straight to its transport (``AgentSocket.write_now``: no task is woken per
node), and the agents' acknowledgements are handled from the protocol's
``data_received`` (``AgentSocket.go_direct``), see
:mod:`edgefleet.cloud.agentsocket`. A connection whose transport pushes back
falls back to its own sender task, which drains its session when the socket
can take more, so a slow or reconnecting node only ever delays itself.

Handshake order matters: the hub registers the node in the index and takes
its view and revision in one synchronous step, so no change can fall between
the view and the live stream. If the node synced from a hub replica that is
ahead of this one (several clouds on one etcd), the hub waits until its own
index reaches the node's revision before diffing, so it never mistakes
"I have not seen it yet" for "it was deleted".

Rates: every agent message is charged to its session's
:class:`~edgefleet.cloud.limits.SessionBudget` (messages and bytes a
second, ``HubLimits.rates``); a session over budget is not read until the
budget refills, so a node flooding reports slows itself only, and the
reports it manages to send coalesce as below.

Status reports are *not* one store write each: they go through
:class:`~edgefleet.cloud.statuswrites.StatusWrites`, which writes
``Node.status`` only when it says something new (coalesced per node, lazy
counters rate-limited, a refresh every few minutes). Liveness is the set of
live sessions, which the hub publishes in its own Hub object
(:class:`HubPresence`, bound to a store lease) and the node lifecycle
controller reads; an idle fleet costs no store writes.

Replicas: every replica keeps the other replicas' Hub objects (they arrive
through the same watch) and balances its sessions against them with
:class:`~edgefleet.cloud.balance.Balancer`: an over-loaded replica closes
some sessions with ``CLOSE_REBALANCE`` and the least-loaded replica's URL
as a hint. It refuses new upgrades politely (HTTP 503, ``Retry-After``)
while it is at ``max_connections`` or has too many handshakes in flight,
so a reconnect storm queues at the agents instead of toppling the cloud.

Log requests (``GET /edge/v1/nodes/{node}/logs/{workload}``) travel over the
node's session and wait for its answer; a replica that does not hold the
node's session forwards the request to the replica that does (found in the
Hub objects), with the caller's own credentials. Only admins may read logs
(403 for viewers): a workload's output may hold anything it printed.
"""

import asyncio
import contextlib
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from starlette.websockets import WebSocketDisconnect

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.hubs import INFO as HUBS
from edgefleet.api.hubs import hub_object_name
from edgefleet.api.nodes import INFO as NODES
from edgefleet.cloud.agentsocket import AgentSocket
from edgefleet.cloud.auth import AuthError, Principal
from edgefleet.cloud.balance import Balancer, BalanceSettings, Release, ReplicaLoad
from edgefleet.cloud.blobs import record_failed_updates
from edgefleet.cloud.errors import Status, status_body
from edgefleet.cloud.limits import SessionBudget, SessionRates
from edgefleet.cloud.metricsrelay import MetricsRelay, RelaySettings
from edgefleet.cloud.registry import ObjectNotFound, Registry, RegistryError, VersionConflict
from edgefleet.cloud.rulestatus import EventGate, record_condition_events, stamp_conditions
from edgefleet.cloud.statuswrites import Intervals, StatusWrite, StatusWrites, merge_patch_for
from edgefleet.store.interface import Compacted, Event, EventType, LeaseNotFound, Progress, StoreError
from edgefleet.sync import messages
from edgefleet.sync.cloud import Acked, CloudSession, LogsReply, MetricsReply, StatusReport
from edgefleet.sync.errors import ProtocolError
from edgefleet.sync.views import FleetIndex

log = logging.getLogger("edgefleet.cloud.hub")

REGISTRY = "/registry/"
HUBS_PREFIX = REGISTRY + "hubs/"
HELLO_TIMEOUT = 10.0
CATCH_UP_TIMEOUT = 10.0
LOGS_TIMEOUT = 10.0
STATUS_WRITE_CONCURRENCY = 32
"""Status writes in flight at once (a burst after a push or a reconnect wave)."""
FORWARDED_HEADER = "X-Edgefleet-Forwarded-By"
"""Marks a logs request one replica forwarded to another (never forwarded again)."""

NodeAuthenticator = Callable[[str | None], Awaitable[str]]


class HubMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sessions = Gauge("edgefleet_hub_sessions", "Connected agents", registry=self.registry)
        self.traffic = Traffic(self.registry)
        self.closed = Counter(
            "edgefleet_hub_sessions_closed", "Sessions closed, by reason", ["reason"], registry=self.registry
        )
        self.revision = Gauge(
            "edgefleet_hub_revision", "Store revision the hub's index has reached", registry=self.registry
        )
        self.ack_latency = Histogram(
            "edgefleet_hub_ack_seconds",
            "From cutting a batch to its acknowledgement",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.status_reports = Counter(
            "edgefleet_hub_status_reports",
            "Status reports that said something new (repeats are skipped undecoded)",
            registry=self.registry,
        )
        self.status_writes = Counter(
            "edgefleet_hub_status_writes", "Node.status writes made from reports", registry=self.registry
        )
        self.refused = Counter(
            "edgefleet_hub_refused", "Upgrades refused with 503, by reason", ["reason"], registry=self.registry
        )
        self.released = Counter(
            "edgefleet_hub_released", "Sessions released to balance the replicas", registry=self.registry
        )
        self.replicas = Gauge("edgefleet_hub_replicas", "Live hub replicas (Hub objects)", registry=self.registry)
        self.throttled = Counter(
            "edgefleet_hub_throttled",
            "Pauses in reading a session that sent more than its message or byte rate allows",
            registry=self.registry,
        )


class Traffic:
    """The hub's per-message counters as plain integers, exported when /metrics is read.

    Why not ``prometheus_client.Counter``: its ``inc`` takes a lock (about
    1 µs on the 2-core VM), and a push to N nodes costs four of them per
    node (a frame and its bytes out, a message and its bytes in).
    """

    _HELP = (
        ("edgefleet_hub_frames_sent", "Frames sent to agents", "frames_out"),
        ("edgefleet_hub_bytes_sent", "Bytes sent to agents", "bytes_out"),
        ("edgefleet_hub_bytes_received", "Bytes received from agents", "bytes_in"),
        ("edgefleet_hub_messages_received", "Messages received from agents", "messages_in"),
        (
            "edgefleet_hub_frames_deferred",
            "Frames sent by a session's own task, not from the fan-out or the message that caused them "
            "(the agent's socket pushed back, or the server has no direct lane)",
            "frames_deferred",
        ),
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_out = self.bytes_out = self.bytes_in = self.messages_in = self.frames_deferred = 0
        registry.register(self)

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(name, text) for name, text, _ in self._HELP]

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, text, attribute in self._HELP:
            yield CounterMetricFamily(name, text, value=getattr(self, attribute))


@dataclass(frozen=True, slots=True)
class HubLimits:
    """When the hub refuses new sessions (HTTP 503 with Retry-After) instead of falling over."""

    max_connections: int = 20_000
    max_handshakes: int = 256
    """Sessions between upgrade and the first batch at once (a reconnect storm queues at the agents)."""
    retry_after: int = 5
    rates: SessionRates = field(default_factory=SessionRates)
    """What one session may send; past it the hub stops reading that session for a while (limits.SessionBudget)."""


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """How the hub publishes itself (its Hub object)."""

    url: str | None = None
    """Base URL agents and other replicas reach this replica at; None: not advertised."""
    ttl: int = 15
    """Seconds the Hub object outlives a dead replica (its store lease)."""
    min_interval: float = 2.0
    """At most one Hub status write per this many seconds (connects and disconnects coalesce)."""
    peer_verify: ssl.SSLContext | None = None
    """How the other replicas' certificates are checked (logs forwarding); None: against the system's CAs."""


@dataclass(frozen=True, slots=True)
class Replica:
    """Another (or this) replica, as its Hub object says."""

    hub_id: str
    url: str | None
    connections: int
    nodes: frozenset[str]
    demand: Mapping[str, float]


@dataclass
class Connection:
    node: str
    session: CloudSession
    websocket: AgentSocket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    logs: dict[int, asyncio.Future[LogsReply]] = field(default_factory=dict)
    metrics: dict[int, asyncio.Future[MetricsReply]] = field(default_factory=dict)
    """Metrics requests of the relay (cloud.metricsrelay) waiting for the node's answer."""
    last_heard: float = field(default_factory=time.monotonic)
    compress: bool = False
    """The agent takes zlib-compressed binary frames for large messages (messages.COMPRESSION_HEADER)."""
    budget: SessionBudget = field(default_factory=SessionBudget)
    sending: bool = False
    """The sender task holds frames it has not written yet: nothing may overtake them."""


class Hub:
    def __init__(
        self,
        registry: Registry,
        *,
        hub_id: str,
        authenticate: NodeAuthenticator,
        heartbeat_seconds: float = 10.0,
        metrics: HubMetrics | None = None,
        status_intervals: Intervals | None = None,
        limits: HubLimits | None = None,
        presence: PresenceSettings | None = None,
        balance: BalanceSettings | None = None,
        demand: Callable[[], Mapping[str, float]] | None = None,
        relay: RelaySettings | None = None,
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.hub_id = hub_id
        self.heartbeat_seconds = heartbeat_seconds
        self.metrics = metrics or HubMetrics()
        self.limits = limits or HubLimits()
        self.presence_settings = presence or PresenceSettings()
        self.balancer = Balancer(hub_id, balance)
        self.demand = demand
        self._authenticate = authenticate
        self.index = FleetIndex()
        self.connections: dict[str, Connection] = {}
        self.replicas: dict[str, Replica] = {}
        """Live replicas by Hub object name, this one included, from the watched Hub objects."""
        self.status_writes = StatusWrites(status_intervals)
        self.condition_events = EventGate()  # Node condition Events, one per problem and minute (cloud.rulestatus)
        self._status_wake = asyncio.Event()
        self.index_listeners: list[Callable[[str, StoredDocument | None], None]] = []
        """Called with the key and document (None: deleted) of every store event the index applied
        (controllers wake on them)."""
        self._presence_wake = asyncio.Event()
        self._handshakes = 0
        self._revision_changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.relay = MetricsRelay(self, relay)
        """Fleet metrics through the nodes' links, and Prometheus discovery (its routes are in :meth:`router`)."""

    # the index -------------------------------------------------------------

    async def start(self) -> None:
        await self._load()
        self._tasks = [
            asyncio.create_task(self._watch_forever(), name="hub-watch"),
            asyncio.create_task(self._write_statuses_forever(), name="hub-status-writes"),
            asyncio.create_task(HubPresence(self).run(), name="hub-presence"),
            asyncio.create_task(self._balance_forever(), name="hub-balance"),
            asyncio.create_task(self._close_silent_forever(), name="hub-silence"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in list(self.connections.values()):
            with contextlib.suppress(Exception):
                await connection.websocket.close(code=1012, reason="cloud shutting down")
        if self._http is not None:
            await self._http.aclose()

    async def _load(self) -> None:
        listing = await self.store.list(REGISTRY)
        self.index = FleetIndex()
        documents: list[tuple[str, int, StoredDocument]] = [
            (kv.key, kv.mod_revision, json.loads(kv.value)) for kv in listing.items
        ]
        self.index.load(documents, listing.revision)
        self.replicas = {}
        for key, _, document in documents:
            if key.startswith(HUBS_PREFIX):
                self._note_replica(key, document)
        self.metrics.revision.set(listing.revision)

    async def _watch_forever(self) -> None:
        while True:
            try:
                await self._watch(self.index.revision)
            except (Compacted, StoreError) as exc:
                log.warning("hub watch ended (%s); reloading the index and resyncing agents", exc)
                await asyncio.sleep(1)
                with contextlib.suppress(StoreError):
                    await self._load()
                    await self._drop_all("the hub reloaded its index")

    async def _watch(self, after: int) -> None:
        stream = self.store.watch(REGISTRY, after)
        try:
            async for item in stream:
                if isinstance(item, Progress):
                    await self._advance(item.revision)
                else:
                    self._apply(item)
                    await self._advance(item.revision)
        finally:
            await stream.aclose()

    def _apply(self, event: Event) -> None:
        document: StoredDocument | None = None if event.type is EventType.DELETE else json.loads(event.kv.value)
        if event.kv.key.startswith(HUBS_PREFIX):
            self._note_replica(event.kv.key, document)
        deltas = self.index.apply(event.kv.key, event.revision, document)
        for listener in self.index_listeners:
            listener(event.kv.key, document)
        frames = size = 0
        for node, changes in deltas.items():
            connection = self.connections.get(node)
            if connection is not None and connection.session.started:
                connection.session.update(changes, event.revision)
                sent = self._flush(connection)
                frames, size = frames + sent[0], size + sent[1]
        self.metrics.traffic.frames_out += frames
        self.metrics.traffic.bytes_out += size

    def _note_replica(self, key: str, document: StoredDocument | None) -> None:
        name = key[len(HUBS_PREFIX) :]
        if document is None:
            self.replicas.pop(name, None)
        else:
            spec, status = document.get("spec") or {}, document.get("status") or {}
            self.replicas[name] = Replica(
                str(spec.get("hubId", name)),
                spec.get("url"),
                int(status.get("connections") or 0),
                frozenset(status.get("nodes") or ()),
                dict(status.get("demand") or {}),
            )
        self.metrics.replicas.set(len(self.replicas))

    def live_nodes(self) -> set[str]:
        """Nodes with a live session on any replica: this one's own sessions and every Hub object's list."""
        alive = {name for name, connection in self.connections.items() if connection.session.started}
        for replica in self.replicas.values():
            alive.update(replica.nodes)
        return alive

    def fleet_demand(self) -> dict[str, float]:
        """DNS demand by region summed over every live replica (this one's own figure is its live one)."""
        total: dict[str, float] = {}
        own = self.replicas.get(hub_object_name(self.hub_id))
        sources = [replica.demand for replica in self.replicas.values() if replica is not own]
        sources.append(self.demand() if self.demand is not None else {})
        for demand in sources:
            for region, rate in demand.items():
                total[region] = total.get(region, 0.0) + rate
        return total

    async def _advance(self, revision: int) -> None:
        self.metrics.revision.set(self.index.revision)
        async with self._revision_changed:
            self._revision_changed.notify_all()

    async def wait_for_revision(self, revision: int) -> None:
        async with self._revision_changed:
            await asyncio.wait_for(
                self._revision_changed.wait_for(lambda: self.index.revision >= revision), CATCH_UP_TIMEOUT
            )

    async def _drop_all(self, reason: str) -> None:
        for connection in list(self.connections.values()):
            with contextlib.suppress(Exception):
                await connection.websocket.close(code=1012, reason=reason)

    async def disconnect_node(self, node: str, reason: str) -> None:
        """Close a node's session (credential revoked, node deleted)."""
        connection = self.connections.get(node)
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.websocket.close(code=1008, reason=reason)

    # one agent connection --------------------------------------------------

    async def serve(self, websocket: AgentSocket) -> None:
        refusal = self._refusal()
        if refusal is not None:
            await self._refuse(websocket, refusal)
            return
        slot = _HandshakeSlot(self)
        try:
            await self._serve_counted(websocket, slot)
        finally:
            slot.release()

    async def _serve_counted(self, websocket: AgentSocket, slot: "_HandshakeSlot") -> None:
        try:
            node = await self._authenticate(websocket.headers.get("authorization"))
        except AuthError as exc:
            self.metrics.closed.labels("unauthorized").inc()
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await websocket.accept()
        session = CloudSession(
            node, epoch=self.store.epoch, hub_id=self.hub_id, heartbeat_seconds=int(self.heartbeat_seconds)
        )
        compress = websocket.headers.get(messages.COMPRESSION_HEADER, "").lower() == "zlib"
        connection = Connection(node, session, websocket, compress=compress, budget=SessionBudget(self.limits.rates))
        try:
            await self._run(connection, slot)
        except ProtocolError as exc:
            self.metrics.closed.labels("protocol").inc()
            log.warning("closing session: %s", exc, extra={"node": node})
            with contextlib.suppress(Exception):
                await websocket.close(code=exc.close_code, reason=str(exc)[:120])
        except (WebSocketDisconnect, TimeoutError, RuntimeError) as exc:
            self.metrics.closed.labels("disconnect").inc()
            log.info("agent disconnected: %r", exc, extra={"node": node})
        finally:
            self._forget(connection)

    def _refusal(self) -> str | None:
        """Why a new session must be refused now (None: take it)."""
        if len(self.connections) >= self.limits.max_connections:
            return "connections"
        if self._handshakes >= self.limits.max_handshakes:
            return "handshakes"
        return None

    async def _refuse(self, websocket: AgentSocket, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()
        retry = max(1, round(self.limits.retry_after * (0.5 + random.random())))
        body = status_body(
            messages.OVERLOADED_STATUS,
            "Overloaded",
            f"hub {self.hub_id} is at its {reason} limit; retry in {retry} s or use another replica",
        )
        await websocket.send_denial_response(
            messages.OVERLOADED_STATUS,
            json.dumps(body).encode(),
            {"Retry-After": str(retry), "Content-Type": "application/json"},
        )

    async def _run(self, connection: Connection, slot: "_HandshakeSlot") -> None:
        text = await asyncio.wait_for(connection.websocket.receive_text(), HELLO_TIMEOUT)
        self._receive(connection, text)
        hello = connection.session.hello
        if hello is None:
            raise ProtocolError("the first message must be hello")
        if hello.node != connection.node:
            raise ProtocolError(f"hello names node {hello.node!r} but the credential is {connection.node!r}")
        await self.wait_for_revision(hello.revision if hello.epoch == self.store.epoch else 0)
        self._replace_existing(connection)
        self.index.register(connection.node)
        connection.session.start(self.index.view(connection.node), self.index.revision)
        slot.release()
        self._sessions_changed()
        sender = asyncio.create_task(self._send_loop(connection))
        connection.websocket.go_direct(functools.partial(self._on_message, connection))
        self._count_out(self._flush(connection))  # welcome and the first batch
        try:
            while True:  # on the direct lane this only ends (disconnect, or the lane's failure raised)
                text = await connection.websocket.receive_text()
                self._receive(connection, text)
                self._handle_events(connection)
                self._count_out(self._flush(connection))
                await self._pace(connection, len(text))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    def _replace_existing(self, connection: Connection) -> None:
        old = self.connections.get(connection.node)
        if old is not None:
            self._spawn(old.websocket.close(code=1000, reason="replaced by a newer connection"))
        self.connections[connection.node] = connection

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background, keeping a reference until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, connection: Connection) -> None:
        if self.connections.get(connection.node) is connection:
            del self.connections[connection.node]
            self.index.unregister(connection.node)
            self.status_writes.forget(connection.node)
            self._spawn(self._mark_disconnected(connection.node))
            self._sessions_changed()
        waiting: list[asyncio.Future[Any]] = [*connection.logs.values(), *connection.metrics.values()]
        for future in waiting:
            if not future.done():
                future.set_exception(ConnectionError("the node disconnected"))

    def _sessions_changed(self) -> None:
        self.metrics.sessions.set(len(self.connections))
        self._presence_wake.set()

    def _receive(self, connection: Connection, text: str | bytes) -> None:
        if len(text) > messages.MAX_AGENT_MESSAGE_BYTES:
            raise ProtocolError("message too large", close_code=1009)
        self.metrics.traffic.bytes_in += len(text)
        self.metrics.traffic.messages_in += 1
        connection.last_heard = time.monotonic()
        connection.session.receive(text)

    async def _pace(self, connection: Connection, size: int) -> None:
        """Stop reading a session that sent more than its rates allow until its budget refills (TCP pushes back)."""
        wait = connection.budget.charge(size, time.monotonic())
        if wait > 0:
            self.metrics.throttled.inc()
            await asyncio.sleep(wait)

    def _on_message(self, connection: Connection, data: bytes, text: bool) -> None:
        """One agent message on the direct lane, called from the protocol's ``data_received`` (no task wakes)."""
        try:
            if not text:
                raise ProtocolError("binary frames are not part of the protocol from agents")
            self._receive(connection, data)
            self._handle_events(connection)
            self._count_out(self._flush(connection))
            wait = connection.budget.charge(len(data), time.monotonic())
            if wait > 0:
                self.metrics.throttled.inc()
                connection.websocket.pause_reading_for(wait)
        except Exception as exc:  # the session's task raises it and ends the session as on the queue path
            connection.websocket.fail(exc)

    def _flush(self, connection: Connection) -> tuple[int, int]:
        """Send what the session has to send now: from the caller when the socket takes it, else by the sender task.

        The fan-out loop calls this for every node a change reaches, so a
        push writes each node's frame straight to its transport. A session
        whose transport pushes back (or whose sender task holds frames)
        keeps its changes coalescing in its pending map until the task can
        write, so a slow node costs the others nothing. Returns the frames
        and bytes written (the caller counts them, once per fan-out).
        """
        websocket = connection.websocket
        if connection.sending or not websocket.writable_now():
            connection.wake.set()
            return 0, 0
        frames = size = 0
        for frame in connection.session.data_to_send():
            data, binary = self._payload(connection, frame)
            if not websocket.write_now(data, binary):
                break  # closed: the session's task sees the disconnect
            frames, size = frames + 1, size + len(data)
        return frames, size

    def _count_out(self, sent: tuple[int, int]) -> None:
        self.metrics.traffic.frames_out += sent[0]
        self.metrics.traffic.bytes_out += sent[1]

    @staticmethod
    def _payload(connection: Connection, frame: str) -> tuple[bytes, bool]:
        """The bytes of one message and whether they go as a binary (compressed) frame."""
        if connection.compress and len(frame) >= messages.COMPRESS_MIN_BYTES:
            return messages.compress_frame(frame), True
        return frame.encode(), False

    async def _send_loop(self, connection: Connection) -> None:
        while True:
            await connection.wake.wait()
            connection.wake.clear()
            connection.sending = True
            try:
                await self._send_pending(connection)  # its locals die with it: an idle session keeps no frame alive
            finally:
                connection.sending = False

    async def _send_pending(self, connection: Connection) -> None:
        for frame in connection.session.data_to_send():
            if connection.compress and len(frame) >= messages.COMPRESS_MIN_BYTES:
                data = messages.compress_frame(frame)
                await connection.websocket.send_bytes(data)
                self._count_out((1, len(data)))
            else:
                await connection.websocket.send_text(frame)
                self._count_out((1, len(frame)))
            self.metrics.traffic.frames_deferred += 1

    def _handle_events(self, connection: Connection) -> None:
        for event in connection.session.events():
            if isinstance(event, StatusReport):
                self._take_report(connection.node, event.status)
            elif isinstance(event, LogsReply):
                future = connection.logs.pop(event.id, None)
                if future is not None and not future.done():
                    future.set_result(event)
            elif isinstance(event, MetricsReply):
                waiting = connection.metrics.pop(event.id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(event)
            elif isinstance(event, Acked):
                self.status_writes.synced(connection.node, event.revision, self.store.epoch, now=time.monotonic())
                self._status_wake.set()

    async def _close_silent_forever(self) -> None:
        """Close sessions that sent nothing for three heartbeats (agents report every heartbeat).

        This replaces WebSocket pings from the server: one scan per heartbeat
        instead of a ping and a pong per connection per heartbeat, which at
        ten thousand nodes is most of an idle hub's work. (Agents still ping
        the hub, to notice a dead link from their side.)
        """
        silent_after = 3 * self.heartbeat_seconds
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            deadline = time.monotonic() - silent_after
            for connection in [c for c in self.connections.values() if c.last_heard < deadline]:
                self.metrics.closed.labels("silent").inc()
                log.info("closing a silent session", extra={"node": connection.node, "seconds": silent_after})
                self._spawn(connection.websocket.close(code=1001, reason=f"nothing heard for {silent_after:g}s"))
                connection.last_heard = time.monotonic()  # one close per silence

    # node status -----------------------------------------------------------

    def _take_report(self, node: str, status: JSONObject) -> None:
        self.metrics.status_reports.inc()
        self.status_writes.report(node, status, now=time.monotonic(), wall=_now(), peers=self.index.peers_of(node))
        self._status_wake.set()

    async def _write_statuses_forever(self) -> None:
        """Write what :class:`StatusWrites` says is due, then sleep until the next deadline or report."""
        while True:
            self._status_wake.clear()
            writes = self.status_writes.due(time.monotonic())
            for start in range(0, len(writes), STATUS_WRITE_CONCURRENCY):
                chunk = writes[start : start + STATUS_WRITE_CONCURRENCY]
                await asyncio.gather(*(self._write_status(write) for write in chunk))
            deadline = self.status_writes.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_wake.wait(), timeout)

    async def _write_status(self, write: StatusWrite) -> None:
        if write.node not in self.connections:
            return  # the session ended: its disconnect write says what is true now
        try:
            current = await self.registry.get(NODES, write.node)
            status = merge_patch_for(write.status, current.get("status") or {})
            status.update(lastHeartbeat=_now(), hub=self.hub_id, phase="Ready", message=None)
            stamp_conditions(status, current.get("status"), status["lastHeartbeat"])
            await self.registry.patch(NODES, write.node, {"status": status}, status=True)
            self.metrics.status_writes.inc()
            await record_failed_updates(self.registry, write.node, current.get("status"), status)
            await record_condition_events(
                self.registry, write.node, current.get("status"), status, self.condition_events, time.monotonic()
            )
        except ObjectNotFound:
            return  # the Node was deleted; the session ends when its credential goes
        except (RegistryError, StoreError) as exc:
            log.warning("cannot record status of %s: %s", write.node, exc)
            self.status_writes.failed(write.node, time.monotonic())

    async def _mark_disconnected(self, node: str) -> None:
        """The node left this replica: last heard now, no hub, and its votes no longer count."""
        for _ in range(3):
            try:
                current = await self.registry.get(NODES, node)
                if (current.get("status") or {}).get("hub") != self.hub_id:
                    return  # it is already held elsewhere (or was never recorded here)
                patch = {
                    "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "status": {"hub": None, "lastHeartbeat": _now(), "peerVotes": None},
                }
                await self.registry.patch(NODES, node, patch, status=True)
                self.metrics.status_writes.inc()
                return
            except VersionConflict:
                continue
            except (RegistryError, StoreError):
                return

    # balancing ---------------------------------------------------------------

    async def _balance_forever(self, period: float = 5.0) -> None:
        while True:
            now = time.monotonic()
            release = self.balancer.tick(now, self._loads())
            if release is not None:
                self._release(release)
            await asyncio.sleep(max(0.05, self.balancer.next_tick(now, period) - now))

    def _loads(self) -> list[ReplicaLoad]:
        """Every live replica's published load, with this replica's live count instead of its published one."""
        own = hub_object_name(self.hub_id)
        loads = [ReplicaLoad(r.hub_id, r.connections, r.url) for name, r in self.replicas.items() if name != own]
        loads.append(ReplicaLoad(self.hub_id, len(self.connections), self.presence_settings.url))
        return loads

    def _release(self, release: Release) -> None:
        started = [c for c in self.connections.values() if c.session.started]
        chosen = random.sample(started, min(release.count, len(started)))
        reason = messages.CLOSE_REBALANCE_REASON
        if release.hint and len(reason) + 1 + len(release.hint) <= 123:  # a close reason is at most 123 bytes
            reason = f"{reason} {release.hint}"
        for connection in chosen:
            self.metrics.released.inc()
            self._spawn(connection.websocket.close(code=messages.CLOSE_REBALANCE, reason=reason))
        if chosen:
            log.info(
                "released sessions to balance the replicas",
                extra={"released": len(chosen), "hint": release.hint, "sessions": len(self.connections)},
            )

    # logs ------------------------------------------------------------------

    async def logs(self, node: str, workload: str, tail: int) -> LogsReply:
        connection = self.connections.get(node)
        if connection is None or not connection.session.started:
            raise NodeNotConnected(
                f"node {node!r} is not connected to this hub ({self.hub_id}); "
                "logs are readable only while the node is connected"
            )
        request_id = connection.session.request_logs(workload, tail)
        future: asyncio.Future[LogsReply] = asyncio.get_running_loop().create_future()
        connection.logs[request_id] = future
        connection.wake.set()
        try:
            return await asyncio.wait_for(future, LOGS_TIMEOUT)
        except (TimeoutError, ConnectionError):
            raise NodeNotConnected(f"node {node!r} did not answer the logs request in time") from None

    def holder_of(self, node: str) -> Replica | None:
        """The other replica whose Hub object lists ``node`` as connected, if any."""
        own = hub_object_name(self.hub_id)
        return next((r for name, r in self.replicas.items() if name != own and node in r.nodes), None)

    async def forward_logs(self, request: Request, node: str) -> Response | None:
        """Ask the replica holding ``node``'s session; None when no other replica holds it (or this is a forward)."""
        holder = self.holder_of(node)
        if holder is None or request.headers.get(FORWARDED_HEADER):
            return None
        if not holder.url:
            body = status_body(
                409,
                "NotConnected",
                f"node {node!r} is connected to hub {holder.hub_id}, which "
                "advertises no URL (edgefleet cloud --advertise-url); ask that replica",
            )
            return Response(json.dumps(body), status_code=409, media_type="application/json")
        if self._http is None:
            verify = self.presence_settings.peer_verify or True
            self._http = httpx.AsyncClient(timeout=LOGS_TIMEOUT + 2, verify=verify)
        headers = {FORWARDED_HEADER: self.hub_id}
        if "authorization" in request.headers:
            headers["Authorization"] = request.headers["authorization"]
        try:
            answer = await self._http.get(
                holder.url.rstrip("/") + request.url.path, params=request.query_params, headers=headers
            )
        except httpx.HTTPError as exc:
            body = status_body(
                502,
                "BadGateway",
                f"hub {holder.hub_id} holds node {node!r} but cannot be reached at {holder.url}: {exc}",
            )
            return Response(json.dumps(body), status_code=502, media_type="application/json")
        return Response(
            answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type", "text/plain")
        )

    def router(self, reader: Callable[..., Awaitable[Any]]) -> APIRouter:
        router = APIRouter(tags=["edge"])

        @router.get(
            "/edge/v1/nodes/{node}/logs/{workload}",
            summary="The last lines of a workload's log on a connected node (through whichever replica holds it)",
            response_class=Response,
            responses={
                200: {"description": "The log lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
                400: {"model": Status, "description": "Invalid request parameters"},
                401: {"model": Status, "description": "Missing, malformed or unknown bearer token"},
                403: {"model": Status, "description": "Not an admin token: logs need role admin"},
                404: {"model": Status, "description": "The node has no such workload"},
                409: {"model": Status, "description": "The node is not connected to any hub replica"},
                502: {"model": Status, "description": "The replica holding the node cannot be reached"},
            },
        )
        async def workload_logs(
            request: Request,
            node: str,
            workload: str,
            principal: Annotated[Principal, Depends(reader)],
            tail: Annotated[int, Query(ge=1, le=100_000)] = 200,
        ) -> Response:
            # Workloads print what they like (their env, request data): their logs are for admins only.
            principal.require_admin("reading workload logs")
            try:
                reply = await self.logs(node, workload, tail)
            except NodeNotConnected as exc:
                forwarded = await self.forward_logs(request, node)
                if forwarded is not None:
                    return forwarded
                body = status_body(409, "NotConnected", str(exc))
                return Response(json.dumps(body), status_code=409, media_type="application/json")
            if reply.error:
                body = status_body(404, "NotFound", reply.error)
                return Response(json.dumps(body), status_code=404, media_type="application/json")
            return PlainTextResponse(reply.data)

        router.include_router(self.relay.router(reader))
        return router


class HubPresence:
    """Publish the hub's Hub object under a store lease: sessions (liveness), demand, URL; see the module docstring.

    The object is rewritten when what it says changes, at most every
    ``min_interval``; the lease is kept alive every ``ttl / 3`` seconds
    (etcd keepalives are not revisions, so an idle replica writes nothing).
    A lost lease (a long store outage) is granted again and the object
    recreated. On shutdown the lease is revoked, so the object goes at once.
    """

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub
        self.settings = hub.presence_settings
        self.name = hub_object_name(hub.hub_id)
        self.started = _now()
        self._lease = 0
        self._published: JSONObject | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._round()
                except LeaseNotFound:
                    log.warning("the hub's lease expired; publishing the Hub object again")
                    self._lease, self._published = 0, None
                except (StoreError, RegistryError) as exc:
                    log.warning("cannot publish the Hub object: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hub._presence_wake.wait(), self.settings.ttl / 3)
                self.hub._presence_wake.clear()
                await asyncio.sleep(self.settings.min_interval)
        finally:
            if self._lease:
                with contextlib.suppress(StoreError, asyncio.CancelledError):
                    await asyncio.shield(self.hub.store.revoke_lease(self._lease))

    async def _round(self) -> None:
        store = self.hub.store
        if not self._lease:
            self._lease = (await store.grant_lease(self.settings.ttl)).id
            await self._create()
        else:
            await store.keepalive(self._lease)
        status = self._status()
        if status != self._published:
            await self.hub.registry.patch(HUBS, self.name, {"status": {**status, "updated": _now()}}, status=True)
            self._published = status

    async def _create(self) -> None:
        document = {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Hub",
            "metadata": {"name": self.name},
            "spec": {"hubId": self.hub.hub_id, "url": self.settings.url},
        }
        with contextlib.suppress(ObjectNotFound):
            await self.hub.registry.delete(HUBS, self.name)  # a previous incarnation's, on its old lease
        await self.hub.registry.create(HUBS, document, lease=self._lease)
        self._published = None

    def _status(self) -> JSONObject:
        hub = self.hub
        nodes = sorted(name for name, connection in hub.connections.items() if connection.session.started)
        demand = {
            region: round(rate, 1)
            for region, rate in (hub.demand() if hub.demand else {}).items()
            if round(rate, 1) > 0
        }
        return {
            "connections": len(nodes),
            "maxConnections": hub.limits.max_connections,
            "nodes": nodes,
            "demand": demand,
            "started": self.started,
        }


class _HandshakeSlot:
    """One upgrade counted against ``HubLimits.max_handshakes`` until its session starts (or ends)."""

    def __init__(self, hub: "Hub") -> None:
        self._hub: Hub | None = hub
        hub._handshakes += 1

    def release(self) -> None:
        if self._hub is not None:
            self._hub._handshakes -= 1
            self._hub = None


class NodeNotConnected(Exception):
    pass


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
