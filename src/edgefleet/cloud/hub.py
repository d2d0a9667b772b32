"""The hub: the cloud end of every agent's WebSocket.

How: one store watch feeds an in-memory :class:`~edgefleet.sync.views.FleetIndex`
of every ``/registry/`` object. Each change is turned by the index into
per-node view changes, which go into that node's
:class:`~edgefleet.sync.cloud.CloudSession` (pure: it coalesces them into a
bounded pending map). Each connection has its own sender task that drains
its session, so a slow or reconnecting node only ever delays itself.

Handshake order matters: the hub registers the node in the index and takes
its view and revision in one synchronous step, so no change can fall between
the view and the live stream. If the node synced from a hub replica that is
ahead of this one (several clouds on one etcd), the hub waits until its own
index reaches the node's revision before diffing, so it never mistakes
"I have not seen it yet" for "it was deleted".

Status reports become ``Node.status`` writes (heartbeat time, hub, synced
revision, workloads, phase Ready); the node lifecycle controller demotes
nodes whose heartbeats stop. Log requests (``GET /edge/v1/nodes/{node}/logs/
{workload}``) travel over the node's session and wait for its answer.
"""


import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgefleet.api.meta import kind_info
from edgefleet.cloud.auth import AuthError
from edgefleet.cloud.errors import Status, status_body
from edgefleet.cloud.registry import ObjectNotFound, Registry, RegistryError
from edgefleet.store.interface import Compacted, Event, EventType, Progress, StoreError
from edgefleet.sync import messages
from edgefleet.sync.cloud import Acked, CloudSession, LogsReply, StatusReport
from edgefleet.sync.errors import ProtocolError
from edgefleet.sync.views import FleetIndex

log = logging.getLogger("edgefleet.cloud.hub")

REGISTRY = "/registry/"
HELLO_TIMEOUT = 10.0
CATCH_UP_TIMEOUT = 10.0
LOGS_TIMEOUT = 10.0

NodeAuthenticator = Callable[[str | None], Awaitable[str]]


class HubMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sessions = Gauge("edgefleet_hub_sessions", "Connected agents", registry=self.registry)
        self.frames_out = Counter("edgefleet_hub_frames_sent", "Frames sent to agents", registry=self.registry)
        self.bytes_out = Counter("edgefleet_hub_bytes_sent", "Bytes sent to agents", registry=self.registry)
        self.bytes_in = Counter("edgefleet_hub_bytes_received", "Bytes received from agents",
                                registry=self.registry)
        self.closed = Counter("edgefleet_hub_sessions_closed", "Sessions closed, by reason", ["reason"],
                              registry=self.registry)
        self.revision = Gauge("edgefleet_hub_revision", "Store revision the hub's index has reached",
                              registry=self.registry)
        self.ack_latency = Histogram(
            "edgefleet_hub_ack_seconds", "From cutting a batch to its acknowledgement",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5), registry=self.registry,
        )


@dataclass
class Connection:
    node: str
    session: CloudSession
    websocket: WebSocket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    logs: dict[int, asyncio.Future[LogsReply]] = field(default_factory=dict)


class Hub:
    def __init__(
        self,
        registry: Registry,
        *,
        hub_id: str,
        authenticate: NodeAuthenticator,
        heartbeat_seconds: float = 10.0,
        metrics: HubMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.hub_id = hub_id
        self.heartbeat_seconds = heartbeat_seconds
        self.metrics = metrics or HubMetrics()
        self._authenticate = authenticate
        self.index = FleetIndex()
        self.connections: dict[str, Connection] = {}
        self._revision_changed = asyncio.Condition()
        self._watch_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # the index -------------------------------------------------------------

    async def start(self) -> None:
        await self._load()
        self._watch_task = asyncio.create_task(self._watch_forever())

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        for connection in list(self.connections.values()):
            with contextlib.suppress(Exception):
                await connection.websocket.close(code=1012, reason="cloud shutting down")

    async def _load(self) -> None:
        listing = await self.store.list(REGISTRY)
        self.index = FleetIndex()
        self.index.load([(kv.key, kv.mod_revision, json.loads(kv.value)) for kv in listing.items], listing.revision)
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
            await stream.aclose()  # type: ignore[attr-defined]

    def _apply(self, event: Event) -> None:
        document = None if event.type is EventType.DELETE else json.loads(event.kv.value)
        deltas = self.index.apply(event.kv.key, event.revision, document)
        for node, changes in deltas.items():
            connection = self.connections.get(node)
            if connection is not None and connection.session.started:
                connection.session.update(changes, event.revision)
                connection.wake.set()

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

    async def serve(self, websocket: WebSocket) -> None:
        try:
            node = await self._authenticate(websocket.headers.get("authorization"))
        except AuthError as exc:
            self.metrics.closed.labels("unauthorized").inc()
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await websocket.accept()
        session = CloudSession(node, epoch=self.store.epoch, hub_id=self.hub_id,
                               heartbeat_seconds=int(self.heartbeat_seconds))
        connection = Connection(node, session, websocket)
        try:
            await self._run(connection)
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

    async def _run(self, connection: Connection) -> None:
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
        connection.wake.set()  # welcome and the first batch are ready to go
        self.metrics.sessions.set(len(self.connections))
        sender = asyncio.create_task(self._send_loop(connection))
        try:
            while True:
                self._receive(connection, await connection.websocket.receive_text())
                await self._handle_events(connection)
                connection.wake.set()
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
            self._spawn(self._mark_disconnected(connection.node))
        for future in connection.logs.values():
            if not future.done():
                future.set_exception(ConnectionError("the node disconnected"))
        self.metrics.sessions.set(len(self.connections))

    def _receive(self, connection: Connection, text: str) -> None:
        if len(text) > messages.MAX_AGENT_MESSAGE_BYTES:
            raise ProtocolError("message too large", close_code=1009)
        self.metrics.bytes_in.inc(len(text))
        connection.session.receive(text)

    async def _send_loop(self, connection: Connection) -> None:
        while True:
            await connection.wake.wait()
            connection.wake.clear()
            for frame in connection.session.data_to_send():
                await connection.websocket.send_text(frame)
                self.metrics.frames_out.inc()
                self.metrics.bytes_out.inc(len(frame))

    async def _handle_events(self, connection: Connection) -> None:
        for event in connection.session.events():
            if isinstance(event, StatusReport):
                await self._record_status(connection.node, event.status)
            elif isinstance(event, LogsReply):
                future = connection.logs.pop(event.id, None)
                if future is not None and not future.done():
                    future.set_result(event)
            elif isinstance(event, Acked):
                pass

    # node status -----------------------------------------------------------

    async def _record_status(self, node: str, reported: dict[str, Any]) -> None:
        info = kind_info("Node")
        try:
            current = await self.registry.get(info, node)
        except ObjectNotFound:
            return  # the Node was deleted; the session ends when its credential goes
        status = dict(reported)
        old_status = current.get("status") or {}
        for name in ("workloads", "peerVotes"):  # maps the report replaces whole: drop keys it no longer has
            if name in status or name == "workloads":
                old, new = old_status.get(name) or {}, status.get(name) or {}
                status[name] = {**{key: None for key in old if key not in new}, **new}
        status.update(lastHeartbeat=_now(), hub=self.hub_id, phase="Ready", message=None)
        try:
            await self.registry.patch(info, node, {"status": status}, status=True)
        except (RegistryError, StoreError) as exc:
            log.warning("cannot record status of %s: %s", node, exc)

    async def _mark_disconnected(self, node: str) -> None:
        with contextlib.suppress(RegistryError, StoreError):
            await self.registry.patch(kind_info("Node"), node, {"status": {"hub": None}}, status=True)

    # logs ------------------------------------------------------------------

    async def logs(self, node: str, workload: str, tail: int) -> LogsReply:
        connection = self.connections.get(node)
        if connection is None or not connection.session.started:
            raise NodeNotConnected(f"node {node!r} is not connected to this hub ({self.hub_id}); "
                                   "logs are readable only while the node is connected")
        request_id = connection.session.request_logs(workload, tail)
        future: asyncio.Future[LogsReply] = asyncio.get_running_loop().create_future()
        connection.logs[request_id] = future
        connection.wake.set()
        try:
            return await asyncio.wait_for(future, LOGS_TIMEOUT)
        except (TimeoutError, ConnectionError):
            raise NodeNotConnected(f"node {node!r} did not answer the logs request in time") from None

    def router(self, reader: Callable[..., Awaitable[Any]]) -> APIRouter:
        router = APIRouter(tags=["edge"])

        @router.websocket("/edge/v1/sync")
        async def sync(websocket: WebSocket) -> None:
            await self.serve(websocket)

        @router.get(
            "/edge/v1/nodes/{node}/logs/{workload}",
            summary="The last lines of a workload's log on a connected node",
            response_class=Response,
            responses={
                200: {"description": "The log lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
                400: {"model": Status, "description": "Invalid request parameters"},
                401: {"model": Status, "description": "Missing, malformed or unknown bearer token"},
                403: {"model": Status, "description": "The token's role does not allow this request"},
                404: {"model": Status, "description": "The node has no such workload"},
                409: {"model": Status, "description": "The node is not connected to this hub"},
            },
        )
        async def workload_logs(
            node: str, workload: str, _: Annotated[Any, Depends(reader)],
            tail: Annotated[int, Query(ge=1, le=100_000)] = 200,
        ) -> Response:
            try:
                reply = await self.logs(node, workload, tail)
            except NodeNotConnected as exc:
                body = status_body(409, "NotConnected", str(exc))
                return Response(json.dumps(body), status_code=409, media_type="application/json")
            if reply.error:
                body = status_body(404, "NotFound", reply.error)
                return Response(json.dumps(body), status_code=404, media_type="application/json")
            return PlainTextResponse(reply.data)

        return router


class NodeNotConnected(Exception):
    pass


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

