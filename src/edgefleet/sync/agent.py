"""The agent side of one sync session, sans I/O: feed it cloud messages, commit what it hands out.

How the agent shell drives an :class:`AgentSession` (one per WebSocket)::

    session = AgentSession(node, local=LocalState(epoch, revision, holdings, version))
    send(session.hello())
    for each text frame:
        for event in session.receive(text):            # ProtocolError: close(code)
            ApplyBatch    -> commit put/delete, revision and epoch in ONE local
                             transaction, then session.applied(event.seq)
            Welcomed      -> note the hub; heartbeat every event.heartbeat_seconds
            LogsRequested -> read the logs, then session.logs_reply(id, data, error)
            MetricsRequested -> scrape the target, then session.metrics_reply(id, data, error)
                                (only with features=(FEATURE_METRICS,): the hello says so)
        send(session.data_to_send())
    when status changes:   session.report_status(fields); send(session.data_to_send())

The session keeps the node's holdings (key -> rev) as of the batches the
shell reported applied, so an ack's digest and an inventory describe what is
committed. A need-inventory that arrives while a batch is handed out but not
yet applied is answered once it is.

Batches are taken in ``seq`` order: ``seq`` one above the last handed out is
handed out; one already applied (a duplicate or a stale copy) is
acknowledged again without an ApplyBatch; anything else (a gap, i.e. a lost
or reordered batch) is a ProtocolError, because applying out of order could
put back an older object: the reconnect's handshake repairs it instead.

Status fields are coalesced: report_status merges top-level fields into what
is not sent yet, so one status message carries the latest of each. Rate
limiting is the shell's (it has the clock).
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from edgefleet.api.documents import JSONObject
from edgefleet.sync.errors import ProtocolError, SessionStateError
from edgefleet.sync.messages import (
    FEATURE_METRICS,
    MAX_AGENT_MESSAGE_BYTES,
    MAX_ERROR_LENGTH,
    MAX_LIST_ITEMS,
    Ack,
    Batch,
    CloudMessage,
    Hello,
    Inventory,
    Logs,
    LogsRequest,
    Metrics,
    MetricsRequest,
    NeedInventory,
    Status,
    ViewObject,
    Welcome,
    check_status,
    cut_at_line,
    decode_cloud_message,
    delete_size,
    encode,
)
from edgefleet.sync.views import digest

INVENTORY_PART_BYTES = 512 * 1024
"""An inventory is split into parts of about this size, half the agent message limit."""


@dataclass(frozen=True, slots=True)
class LocalState:
    """What the node's local store holds when the session starts."""

    epoch: str
    revision: int
    holdings: Mapping[str, int]  # key -> rev
    agent_version: str


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The hub accepted the hello."""

    hub: str
    epoch: str
    heartbeat_seconds: int


@dataclass(frozen=True, slots=True)
class ApplyBatch:
    """Commit these changes and ``revision``/``epoch`` atomically, then call ``applied(seq)``."""

    seq: int
    revision: int
    put: tuple[ViewObject, ...]
    delete: tuple[str, ...]
    epoch: str


@dataclass(frozen=True, slots=True)
class LogsRequested:
    """Answer with ``logs_reply(id, data, error)``."""

    id: int
    workload: str
    tail: int


@dataclass(frozen=True, slots=True)
class MetricsRequested:
    """Answer with ``metrics_reply(id, data, error)``; ``max_bytes`` bounds the text (it is cut at a line)."""

    id: int
    target: str
    max_bytes: int


AgentEvent: TypeAlias = Welcomed | ApplyBatch | LogsRequested | MetricsRequested


class AgentState(enum.Enum):
    NEW = "new"
    AWAIT_WELCOME = "await-welcome"
    SYNCING = "syncing"
    CLOSED = "closed"


class AgentSession:
    """One connection's sync session on the node (see the module docstring)."""

    def __init__(self, node_name: str, *, local: LocalState, features: tuple[str, ...] = ()) -> None:
        self.node_name = node_name
        self.local = local
        self.features = features
        """Named in the hello: the requests beyond the base protocol the shell answers."""
        self.state = AgentState.NEW
        self.welcome: Welcome | None = None
        self.epoch = local.epoch
        self.revision = local.revision
        self._holdings: dict[str, int] = dict(local.holdings)
        self._handed: dict[int, Batch] = {}  # handed out, not yet applied, in seq order
        self._last_handed = 0
        self._last_applied = 0
        self._inventory_wanted = False
        self._logs_requested: set[int] = set()
        self._metrics_requested: dict[int, int] = {}  # id -> max bytes
        self._status: JSONObject = {}
        self._outbox: list[str] = []

    @property
    def holdings(self) -> Mapping[str, int]:
        """key -> rev as committed (read-only)."""
        return types.MappingProxyType(self._holdings)

    def hello(self) -> str:
        """The first message to send."""
        if self.state is not AgentState.NEW:
            raise SessionStateError("hello() was already called")
        self.state = AgentState.AWAIT_WELCOME
        return encode(
            Hello(
                node=self.node_name,
                epoch=self.epoch,
                revision=self.revision,
                digest=digest(self._holdings.items()),
                count=len(self._holdings),
                agent_version=self.local.agent_version,
                features=self.features,
            )
        )

    def receive(self, text: str | bytes) -> list[AgentEvent]:
        """Handle one cloud message. ProtocolError closes the session (close with its code)."""
        if self.state in (AgentState.NEW, AgentState.CLOSED):
            raise SessionStateError(f"receive() in state {self.state.value}")
        try:
            return self._handle(decode_cloud_message(text))
        except ProtocolError:
            self.state = AgentState.CLOSED
            raise

    def applied(self, seq: int) -> None:
        """Batch ``seq`` (the oldest handed out) is committed locally: acknowledge it."""
        batch = self._handed.get(seq)
        if batch is None or seq != self._last_applied + 1:
            raise SessionStateError(f"applied({seq}): the next batch to apply is {self._last_applied + 1}")
        del self._handed[seq]
        self._last_applied = seq
        for key in batch.delete:
            self._holdings.pop(key, None)
        for item in batch.put:
            self._holdings[item.key] = item.rev
        self.revision = batch.revision
        self.epoch = self._session_epoch()
        self._ack(seq, batch.check)
        if self._inventory_wanted and not self._handed:
            self._send_inventory()

    def report_status(self, status: Mapping[str, Any]) -> None:
        """Queue Node status fields (wire names); fields not yet sent are merged, latest wins."""
        merged = {**self._status, **status}
        try:
            check_status(merged)
        except ProtocolError as exc:
            raise ValueError(f"invalid status: {exc.reason}") from None
        self._status = merged

    def logs_reply(self, request_id: int, data: str, error: str | None = None) -> None:
        """Answer logs request ``request_id``; data too long for one message loses its head."""
        if request_id not in self._logs_requested:
            raise SessionStateError(f"logs_reply({request_id}): no such request")
        self._logs_requested.discard(request_id)
        error = None if error is None else error[:MAX_ERROR_LENGTH]
        text = encode(Logs(request_id, data, error))
        while len(text.encode("utf-8")) > MAX_AGENT_MESSAGE_BYTES:
            excess = len(text.encode("utf-8")) - MAX_AGENT_MESSAGE_BYTES
            data = data[excess + 64 :]  # every character is at least one byte: this converges
            text = encode(Logs(request_id, data, error))
        self._outbox.append(text)

    def metrics_reply(self, request_id: int, data: str, error: str | None = None) -> None:
        """Answer metrics request ``request_id``; text over its ``max_bytes`` is cut after a whole line."""
        max_bytes = self._metrics_requested.pop(request_id, None)
        if max_bytes is None:
            raise SessionStateError(f"metrics_reply({request_id}): no such request")
        limit = min(max_bytes, MAX_AGENT_MESSAGE_BYTES - 1024 - MAX_ERROR_LENGTH * 6)  # room for the envelope
        data, truncated = cut_at_line(data, limit)
        error = None if error is None else error[:MAX_ERROR_LENGTH]
        text = encode(Metrics(request_id, data, truncated, error))
        while len(text.encode("utf-8")) > MAX_AGENT_MESSAGE_BYTES:  # JSON escapes grew it: cut more
            data, _ = cut_at_line(data, len(data.encode("utf-8")) // 2)
            text = encode(Metrics(request_id, data, True, error))
        self._outbox.append(text)

    def data_to_send(self) -> list[str]:
        """Encoded messages to send now, in order."""
        if self.state is AgentState.NEW:
            return []  # the hello goes first
        out, self._outbox = self._outbox, []
        if self._status:
            out.append(encode(Status(self._status)))
            self._status = {}
        return out

    # --- cloud messages --------------------------------------------------------

    def _handle(self, message: CloudMessage) -> list[AgentEvent]:
        if self.state is AgentState.AWAIT_WELCOME:
            if not isinstance(message, Welcome):
                raise ProtocolError(f"{message.TYPE} before welcome")
            self.welcome = message
            self.state = AgentState.SYNCING
            return [Welcomed(message.hub, message.epoch, message.heartbeat_seconds)]
        match message:
            case Batch():
                return self._on_batch(message)
            case NeedInventory():
                self._inventory_wanted = True
                if not self._handed:
                    self._send_inventory()
                return []
            case LogsRequest():
                self._logs_requested.add(message.id)
                return [LogsRequested(message.id, message.workload, message.tail)]
            case MetricsRequest():
                if FEATURE_METRICS not in self.features:
                    raise ProtocolError("metrics-request to an agent whose hello did not name the metrics feature")
                self._metrics_requested[message.id] = message.max_bytes
                return [MetricsRequested(message.id, message.target, message.max_bytes)]
            case Welcome():
                raise ProtocolError("a second welcome")

    def _on_batch(self, batch: Batch) -> list[AgentEvent]:
        if batch.seq <= self._last_handed:
            if batch.seq <= self._last_applied:
                self._ack(batch.seq, batch.check)  # a duplicate: say again that we have it
            return []
        if batch.seq != self._last_handed + 1:
            raise ProtocolError(f"batch {batch.seq} arrived but {self._last_handed + 1} was expected")
        self._last_handed = batch.seq
        self._handed[batch.seq] = batch
        return [ApplyBatch(batch.seq, batch.revision, batch.put, batch.delete, self._session_epoch())]

    def _session_epoch(self) -> str:
        assert self.welcome is not None  # batches are only handled after the welcome
        return self.welcome.epoch

    def _ack(self, seq: int, check: bool) -> None:
        self._outbox.append(encode(Ack(seq, digest(self._holdings.items()) if check else None)))

    def _send_inventory(self) -> None:
        """The holdings as inventory parts, each within :data:`INVENTORY_PART_BYTES`."""
        self._inventory_wanted = False
        parts: list[list[tuple[str, int]]] = [[]]
        size = 0
        for key, rev in sorted(self._holdings.items()):
            cost = delete_size(key) + 24  # the quoted key, brackets, comma and the rev
            if parts[-1] and (size + cost > INVENTORY_PART_BYTES or len(parts[-1]) >= MAX_LIST_ITEMS):
                parts.append([])
                size = 0
            parts[-1].append((key, rev))
            size += cost
        for index, part in enumerate(parts):
            self._outbox.append(encode(Inventory(tuple(part), more=index < len(parts) - 1)))
