"""The agent's link to the cloud: one WebSocket, redialled with backoff and jitter.

How: a thin asyncio shell around :class:`edgefleet.sync.agent.AgentSession`.
Each connection sends ``hello`` built from the local view store, feeds every
frame to the session, commits batches to the local store *before* acking
them (the session queues the ack when told the batch is applied), and sends
whatever the session has to send. Status reports and log replies go through
the same session.

Why this shape: everything protocol-related is decided in ``sync`` and
tested without sockets; this module only moves bytes and chooses when to
redial. Reconnects wait ``min(cap, base * 2**attempt)`` seconds scaled by a
random factor in [0.5, 1) ("equal jitter"), so a cloud restart does not turn
thousands of agents into a synchronized reconnect storm. A silent partition
(blackhole) is detected by WebSocket pings (``ping_interval`` /
``ping_timeout``), not by TCP, which could take minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from edgefleet.sync import messages
from edgefleet.sync.agent import AgentSession, ApplyBatch, LocalState, LogsRequested, Welcomed
from edgefleet.sync.errors import ProtocolError

log = logging.getLogger("edgefleet.edge.hub")


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * float(2 ** min(attempt, 16)))
        return float(ceiling * (0.5 + rng.random() / 2))


class LinkHandler(Protocol):
    """What the hub client needs from the agent (implemented by :class:`edgefleet.edge.agent.Agent`)."""

    def local_state(self) -> LocalState: ...

    async def apply_batch(self, batch: ApplyBatch) -> None: ...

    def status_report(self) -> dict[str, Any]: ...

    async def read_logs(self, workload: str, tail: int) -> str: ...

    def link_changed(self, connected: bool, hub: str) -> None: ...


class HubClient:
    def __init__(
        self,
        *,
        url: str,
        credential: Callable[[], str],
        node_name: str,
        handler: LinkHandler,
        heartbeat_seconds: float = 10.0,
        ping_interval: float = 5.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self._credential = credential
        self.node_name = node_name
        self._handler = handler
        self.heartbeat_seconds = heartbeat_seconds
        self._ping_interval = ping_interval
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._status_dirty = asyncio.Event()
        self.connected = False
        self.connects = 0
        self.objects_received = 0
        self._background: set[asyncio.Task[None]] = set()

    def status_changed(self) -> None:
        """Ask for a status report soon (coalesced: many changes, one message)."""
        self._status_dirty.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_once()
                attempt = 0
            except InvalidStatus as exc:
                code = exc.response.status_code
                hint = "; the credential was revoked or is wrong: run `edgefleet edge join --force`" \
                    if code in (401, 403) else ""
                log.error("the hub refused the connection: HTTP %s%s", code, hint)
                attempt = max(attempt, 6)
            except (OSError, WebSocketException, TimeoutError, ProtocolError) as exc:
                log.warning("hub link down: %s", exc or exc.__class__.__name__)
            delay = self._backoff.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        headers = {"Authorization": f"Bearer {self._credential()}"}
        async with connect(
            self.url,
            additional_headers=headers,
            max_size=messages.MAX_CLOUD_MESSAGE_BYTES,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval * 2,
            open_timeout=10,
            close_timeout=2,
        ) as ws:
            session = AgentSession(self.node_name, local=self._handler.local_state())
            await ws.send(session.hello())
            try:
                await self._serve(ws, session)
            finally:
                if self.connected:
                    self.connected = False
                    self._handler.link_changed(False, "")

    async def _serve(self, ws: ClientConnection, session: AgentSession) -> None:
        reporter = asyncio.create_task(self._report_loop(ws, session))
        try:
            async for frame in ws:
                if not isinstance(frame, str):
                    raise ProtocolError("binary frames are not part of the protocol")
                for event in session.receive(frame):
                    await self._handle(ws, session, event)
                await self._flush(ws, session)
        finally:
            reporter.cancel()

    async def _handle(self, ws: ClientConnection, session: AgentSession, event: object) -> None:
        if isinstance(event, Welcomed):
            self.connected = True
            self.connects += 1
            self.heartbeat_seconds = event.heartbeat_seconds or self.heartbeat_seconds
            self._handler.link_changed(True, event.hub)
            self._status_dirty.set()
        elif isinstance(event, ApplyBatch):
            await self._handler.apply_batch(event)
            self.objects_received += len(event.put) + len(event.delete)
            session.applied(event.seq)
        elif isinstance(event, LogsRequested):
            task = asyncio.create_task(self._answer_logs(ws, session, event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _answer_logs(self, ws: ClientConnection, session: AgentSession, event: LogsRequested) -> None:
        try:
            session.logs_reply(event.id, await self._handler.read_logs(event.workload, event.tail), None)
        except Exception as exc:  # a logs failure must never take the link down
            session.logs_reply(event.id, "", f"cannot read logs of {event.workload!r}: {exc}")
        await self._flush(ws, session)

    async def _report_loop(self, ws: ClientConnection, session: AgentSession) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_dirty.wait(), timeout=self.heartbeat_seconds)
            self._status_dirty.clear()
            if self.connected:
                session.report_status(self._handler.status_report())
                await self._flush(ws, session)
            await asyncio.sleep(min(1.0, self.heartbeat_seconds / 4))  # rate limit bursts of changes

    @staticmethod
    async def _flush(ws: ClientConnection, session: AgentSession) -> None:
        for message in session.data_to_send():
            await ws.send(message)

