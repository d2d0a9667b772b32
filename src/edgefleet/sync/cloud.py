"""The cloud side of one sync session, sans I/O: feed it agent messages, send what it returns.

How the hub shell drives a :class:`CloudSession` (one per WebSocket)::

    session = CloudSession(node, epoch=store.epoch, hub_id=..., heartbeat_seconds=...)
    index.register(node)
    for each text frame:   session.receive(text)             # ProtocolError: close(code)
                           if session.needs_view:
                               session.start(index.view(node), index.revision)
    for each store event:  changes = index.apply(...)
                           session.update(changes.get(node, {}), index.revision)
    after any of these:    send session.data_to_send(); handle session.events()
    on close:              index.unregister(node)

``start`` is called once the hello has arrived (``needs_view`` says so; the
parsed hello is ``session.hello``). With several hub replicas, the shell
should first let its index catch up to ``hello.revision`` when
``hello.epoch`` is the store's: a replica whose watch lags would otherwise
answer with a view older than what the node holds, and the node would run
older objects until the replica catches up. The session keeps its node's
view from then on through ``update``; the shell must not skip updates
between ``start`` and the end of the session. ``update({}, revision)`` just
tells the session the hub's revision moved (batches carry it).

State machine (message -> allowed states; anything else is a ProtocolError)::

    AWAIT_HELLO --hello--> NEED_VIEW --start()--> STREAMING <--> AWAIT_INVENTORY
    hello: AWAIT_HELLO       ack, status, logs, metrics: after hello       inventory: AWAIT_INVENTORY

Any ProtocolError moves the session to CLOSED; a closed session refuses
``receive`` (SessionStateError) and ignores ``update``. A status message
identical to the previous one is skipped without being decoded (an idle
agent repeats its report every heartbeat; what it says was already taken).

Streaming (see the package docstring for why): ``pending`` maps key -> the
latest put or delete not yet sent, each with the rev the node will hold
before it (its *base*: the node's holdings after every sent batch are the
view with pending keys at their base). A change that returns a key to its
base, or deletes a key the node will not hold, is dropped, so once the node's
holdings are known (:attr:`CloudSession.holdings_known`) pending never exceeds
the keys of the view plus the keys the node holds. Batches are cut
from pending, oldest first, within ``max_batch_bytes``, while fewer than
``window`` are unacknowledged. A batch that completes an unverified
handshake carries ``check``; nothing more is cut until its ack, whose digest
decides between streaming on and need-inventory.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from edgefleet.api.documents import JSONObject
from edgefleet.sync.errors import ProtocolError, SessionStateError
from edgefleet.sync.messages import (
    FEATURE_METRICS,
    MAX_CLOUD_MESSAGE_BYTES,
    MAX_LIST_ITEMS,
    Ack,
    AgentMessage,
    Batch,
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
    batch_overhead,
    decode_agent_message,
    decode_cloud_message,
    delete_size,
    encode,
    put_size,
)
from edgefleet.sync.views import digest

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
"""Batches are cut at about this size, far below the 8 MiB frame limit, so a
large resync streams in pieces the node commits one by one."""

MAX_INVENTORY_ITEMS = 1_000_000
"""Security limit: keys one inventory (all its parts) may list."""

MAX_LOGS_REQUESTS = 64
"""Logs requests one session may have unanswered."""


MAX_METRICS_REQUESTS = 8
"""Metrics requests one session may have unanswered (the relay answers 504 to the rest)."""


class CloudState(enum.Enum):
    AWAIT_HELLO = "await-hello"
    NEED_VIEW = "need-view"
    STREAMING = "streaming"
    AWAIT_INVENTORY = "await-inventory"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The node reported status fields (validated against NodeStatus, wire names)."""

    status: JSONObject


@dataclass(frozen=True, slots=True)
class LogsReply:
    """The answer to :meth:`CloudSession.request_logs` ``id``."""

    id: int
    data: str
    error: str | None


@dataclass(frozen=True, slots=True)
class MetricsReply:
    """The answer to :meth:`CloudSession.request_metrics` ``id`` (possibly after the shell stopped waiting)."""

    id: int
    data: str
    truncated: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class Acked:
    """Batch ``seq`` is committed on the node, which is now at ``revision``."""

    seq: int
    revision: int


CloudEvent: TypeAlias = StatusReport | LogsReply | MetricsReply | Acked

_ALLOWED: dict[CloudState, tuple[type, ...]] = {
    CloudState.AWAIT_HELLO: (Hello,),
    CloudState.NEED_VIEW: (Ack, Status, Logs, Metrics),
    CloudState.STREAMING: (Ack, Status, Logs, Metrics),
    CloudState.AWAIT_INVENTORY: (Inventory, Ack, Status, Logs, Metrics),
    CloudState.CLOSED: (),
}


@dataclass(slots=True)
class _Pending:
    target: ViewObject | None  # the latest object, or None: delete the key
    base: int | None  # rev the node will hold before this change; None: not held
    since: int  # the target's since; for a deletion, the hub revision it was queued at


@dataclass(frozen=True, slots=True)
class _InFlight:
    revision: int
    expected_digest: str | None  # set on a check batch


class CloudSession:
    """One node's sync session on the hub (see the module docstring)."""

    def __init__(
        self,
        node_name: str,
        *,
        epoch: str,
        hub_id: str,
        heartbeat_seconds: int,
        window: int = 4,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.node_name = node_name
        self.epoch = epoch
        self.hub_id = hub_id
        self.heartbeat_seconds = heartbeat_seconds
        self.window = window
        self.max_batch_bytes = max_batch_bytes
        self.state = CloudState.AWAIT_HELLO
        self.hello: Hello | None = None
        """The node's hello once it arrived."""
        self.revision = 0
        """The hub revision the session's view is at."""
        self._view: dict[str, ViewObject] = {}
        self._pending: dict[str, _Pending] = {}
        self._unverified: set[str] | None = None  # keys to send before the check batch
        self._must_send = False  # the handshake batch goes out even when empty
        self._node_revision = 0  # the revision the node records with the last sent batch
        self._next_seq = 1
        self._last_acked = 0
        self._in_flight: dict[int, _InFlight] = {}
        self._checking = False
        self._inventory: dict[str, int] = {}
        self._outbox: list[str] = []
        self._early_requests: list[str] = []
        self._logs_waiting: set[int] = set()
        self._next_logs_id = 1
        self._metrics_waiting: set[int] = set()
        self._next_metrics_id = 1
        self._events: list[CloudEvent] = []
        self._last_status: str | bytes | None = None  # the last status text, to skip exact repeats

    # --- what the shell reads ---------------------------------------------

    @property
    def needs_view(self) -> bool:
        """The hello arrived: call :meth:`start` with the node's current view."""
        return self.state is CloudState.NEED_VIEW

    @property
    def started(self) -> bool:
        """The welcome is queued and the session is open: updates and logs requests are taken."""
        return self.state in (CloudState.STREAMING, CloudState.AWAIT_INVENTORY)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def holdings_known(self) -> bool:
        """Whether the cloud knows what the node holds: an exact hello or an inventory, or a check it confirmed.

        Until then (a resumed handshake whose digest did not match, before its check batch is acknowledged)
        pending may hold deletes of keys the handshake assumed the node kept; they are harmless (a node deletes
        nothing it does not hold) and the check's answer corrects the picture.
        """
        return self.state is CloudState.STREAMING and self._unverified is None and not self._checking

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    def events(self) -> list[CloudEvent]:
        """Events since the last call: status reports, logs replies, acks."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """Encoded messages to send now, in order (batches are cut here, window allowing)."""
        out, self._outbox = self._outbox, []
        while self._can_cut():
            out.append(self._cut())
        return out

    # --- what the shell feeds -----------------------------------------------

    def receive(self, text: str | bytes) -> None:
        """Handle one agent message. ProtocolError closes the session (close with its code)."""
        if self.state is CloudState.CLOSED:
            raise SessionStateError("receive() on a closed session")
        if self._last_status is not None and text == self._last_status:
            return  # an idle agent repeats its report: nothing new to decode or to tell the shell
        try:
            message = decode_agent_message(text)
            if not isinstance(message, _ALLOWED[self.state]):
                raise ProtocolError(f"{message.TYPE} is not allowed in state {self.state.value}")
            self._handle(message)
            if isinstance(message, Status):
                self._last_status = text
        except ProtocolError:
            self.state = CloudState.CLOSED
            raise

    def start(self, view: Mapping[str, ViewObject], revision: int) -> None:
        """Give the node's full current view at ``revision``; the handshake answer is queued."""
        if self.state is not CloudState.NEED_VIEW or self.hello is None:
            raise SessionStateError(f"start() in state {self.state.value}")
        self._view = dict(view)
        self.revision = revision
        self._outbox.append(encode(Welcome(self.hub_id, self.epoch, self.heartbeat_seconds)))
        self._outbox.extend(self._early_requests)
        self._early_requests.clear()
        self._handshake(self.hello)

    def update(self, changes: Mapping[str, ViewObject | None], revision: int) -> None:
        """Live view changes (key -> object, None: left the view) up to hub ``revision``."""
        if self.state in (CloudState.AWAIT_HELLO, CloudState.NEED_VIEW, CloudState.CLOSED):
            return  # start() will bring the whole view; a closed session is done
        self.revision = max(self.revision, revision)
        for key, target in changes.items():
            self._change(key, target)

    def request_logs(self, workload: str, tail: int) -> int:
        """Ask the node for a workload's last ``tail`` log lines; the reply comes as LogsReply(id)."""
        if self.state is CloudState.CLOSED:
            raise SessionStateError("request_logs() on a closed session")
        if len(self._logs_waiting) >= MAX_LOGS_REQUESTS:
            raise SessionStateError(f"{MAX_LOGS_REQUESTS} logs requests are already unanswered")
        request_id = self._next_logs_id
        text = encode(LogsRequest(request_id, workload, tail))
        try:
            decode_cloud_message(text)  # the agent would close the session on a bad name or tail
        except ProtocolError as exc:
            raise ValueError(exc.reason) from None
        self._next_logs_id += 1
        (self._outbox if self.started else self._early_requests).append(text)
        self._logs_waiting.add(request_id)
        return request_id

    @property
    def supports_metrics(self) -> bool:
        """The node's hello named the metrics feature (older agents are never sent a metrics-request)."""
        return self.hello is not None and FEATURE_METRICS in self.hello.features

    def request_metrics(self, target: str, max_bytes: int) -> int:
        """Ask the node for the Prometheus text of ``target``; the reply comes as MetricsReply(id).

        ValueError for a target the node would refuse or a node without the
        feature; SessionStateError when :data:`MAX_METRICS_REQUESTS` are
        unanswered. :meth:`forget_metrics` gives up on one (a timeout).
        """
        if self.state is CloudState.CLOSED or not self.started:
            raise SessionStateError(f"request_metrics() in state {self.state.value}")
        if not self.supports_metrics:
            raise ValueError(f"node {self.node_name!r} runs an agent without the metrics relay (upgrade it)")
        if len(self._metrics_waiting) >= MAX_METRICS_REQUESTS:
            raise SessionStateError(f"{MAX_METRICS_REQUESTS} metrics requests are already unanswered")
        request_id = self._next_metrics_id
        text = encode(MetricsRequest(request_id, target, max_bytes))
        try:
            decode_cloud_message(text)  # the agent would close the session on a bad target or size
        except ProtocolError as exc:
            raise ValueError(exc.reason) from None
        self._next_metrics_id += 1
        self._outbox.append(text)
        self._metrics_waiting.add(request_id)
        return request_id

    def forget_metrics(self, request_id: int) -> None:
        """Stop waiting for metrics request ``request_id``; its late reply is then dropped, not an error."""
        self._metrics_waiting.discard(request_id)

    # --- handshake ------------------------------------------------------------

    def _handshake(self, hello: Hello) -> None:
        """Pick the cheapest correct answer to the hello (cases of the package docstring)."""
        same_epoch = hello.epoch == self.epoch
        self._node_revision = hello.revision if same_epoch else 0
        if hello.count == len(self._view) and hello.digest == digest(self._held_items(self._view)):
            self._stream({}, verified=True)  # 1: the node holds exactly the view
        elif not same_epoch and hello.count > 0:
            self._request_inventory()  # 2: its revision means nothing in this store
        else:
            since = self._node_revision  # 3: resend what changed since its revision
            old = {key: obj for key, obj in self._view.items() if obj.since <= since}
            changed = [obj for obj in self._view.values() if obj.since > since]
            exact = hello.count == len(old) and hello.digest == digest(self._held_items(old))
            self._stream({obj.key: _Pending(obj, None, obj.since) for obj in _by_since(changed)}, verified=exact)

    @staticmethod
    def _held_items(view: Mapping[str, ViewObject]) -> list[tuple[str, int]]:
        return [(key, obj.rev) for key, obj in view.items()]

    def _stream(self, pending: dict[str, _Pending], *, verified: bool) -> None:
        self._pending = pending
        self._unverified = None if verified else set(pending)
        self._must_send = True
        self.state = CloudState.STREAMING

    def _request_inventory(self) -> None:
        self._outbox.append(encode(NeedInventory()))
        self._pending = {}
        self._unverified = None
        self._inventory = {}
        self.state = CloudState.AWAIT_INVENTORY

    def _on_inventory(self, message: Inventory) -> None:
        for key, rev in message.items:
            if key in self._inventory:
                raise ProtocolError(f"inventory: {key[:80]!r} is listed twice")
            self._inventory[key] = rev
        if len(self._inventory) > MAX_INVENTORY_ITEMS:
            raise ProtocolError(f"inventory: more than {MAX_INVENTORY_ITEMS} keys")
        if message.more:
            return
        held, self._inventory = self._inventory, {}
        pending = {key: _Pending(None, rev, 0) for key, rev in held.items() if key not in self._view}
        changed = [obj for key, obj in self._view.items() if held.get(key) != obj.rev]
        pending.update({obj.key: _Pending(obj, held.get(obj.key), obj.since) for obj in _by_since(changed)})
        self._stream(pending, verified=True)  # the inventory is the node's own word

    # --- streaming -----------------------------------------------------------

    def _change(self, key: str, target: ViewObject | None) -> None:
        entry = self._pending.get(key)
        current = self._view.get(key)
        if target is None:
            self._view.pop(key, None)
        else:
            self._view[key] = target
        if self.state is not CloudState.STREAMING:
            return  # awaiting an inventory: the diff will start from the view
        base = entry.base if entry is not None else (current.rev if current is not None else None)
        since = target.since if target is not None else self.revision
        if (target.rev if target is not None else None) == base:
            if entry is not None:  # back to what the node holds: nothing to send
                del self._pending[key]
                self._settled(key)
        elif entry is not None:
            entry.target, entry.since = target, since  # latest wins; the entry keeps its place in line
        else:
            self._pending[key] = _Pending(target, base, since)

    def _settled(self, key: str) -> None:
        if self._unverified is not None:
            self._unverified.discard(key)

    def _can_cut(self) -> bool:
        return (
            self.state is CloudState.STREAMING
            and not self._checking
            and len(self._in_flight) < self.window
            and (bool(self._pending) or self._must_send)
        )

    def _cut(self) -> str:
        seq = self._next_seq
        self._next_seq += 1
        keys = self._take(batch_overhead(seq, self.revision))
        put: list[ViewObject] = []
        delete: list[str] = []
        for key in keys:
            target = self._pending.pop(key).target
            if target is None:
                delete.append(key)
            else:
                put.append(target)
            self._settled(key)
        check = self._unverified is not None and not self._unverified
        if check:
            self._unverified = None
        revision = self._node_revision = self._batch_revision()
        expected = digest(self._belief()) if check else None
        self._in_flight[seq] = _InFlight(revision, expected)
        self._checking = check
        self._must_send = False
        return encode(Batch(seq, revision, tuple(put), tuple(delete), check))

    def _batch_revision(self) -> int:
        """The revision the node records with the batch being cut.

        The node then holds every view object whose ``since`` is at or below
        it: the hub's revision when nothing is left pending, else just below
        the oldest change left behind, so that a reconnect resends exactly
        what is missing. Never below the node's previous revision: a key
        that entered the view with an old ``since`` is found by the digest.
        """
        if not self._pending:
            return self.revision
        oldest = min(entry.since for entry in self._pending.values())
        return max(self._node_revision, min(self.revision, oldest - 1))

    def _take(self, overhead: int) -> list[str]:
        """The oldest pending keys whose items fit in one batch (at least one key)."""
        budget = self.max_batch_bytes - overhead
        keys: list[str] = []
        size = 0
        for key, entry in self._pending.items():
            cost = put_size(entry.target) if entry.target is not None else delete_size(key)
            if keys and (size + cost > budget or len(keys) >= MAX_LIST_ITEMS):
                break
            if cost + overhead > MAX_CLOUD_MESSAGE_BYTES:
                raise SessionStateError(f"{key}: {cost} bytes cannot fit in one batch")
            keys.append(key)
            size += cost
        return keys

    def _belief(self) -> list[tuple[str, int]]:
        """(key, rev) the node holds after every sent batch, if its base was as assumed."""
        items = [(key, obj.rev) for key, obj in self._view.items() if key not in self._pending]
        items.extend((key, entry.base) for key, entry in self._pending.items() if entry.base is not None)
        return items

    # --- agent messages --------------------------------------------------------

    def _handle(self, message: AgentMessage) -> None:
        match message:
            case Hello():
                self._on_hello(message)
            case Ack():
                self._on_ack(message)
            case Inventory():
                self._on_inventory(message)
            case Status():
                self._events.append(StatusReport(message.status))
            case Logs():
                self._on_logs(message)
            case Metrics():
                self._on_metrics(message)

    def _on_hello(self, hello: Hello) -> None:
        if hello.node != self.node_name:
            raise ProtocolError(f"hello.node {hello.node!r} is not the authenticated node {self.node_name!r}")
        self.hello = hello
        self.state = CloudState.NEED_VIEW

    def _on_ack(self, ack: Ack) -> None:
        if ack.seq >= self._next_seq:
            raise ProtocolError(f"ack for batch {ack.seq}, which was never sent (last sent: {self._next_seq - 1})")
        if ack.seq <= self._last_acked:
            return  # a repeated ack: the node re-acks batches it received twice
        record = self._in_flight[ack.seq]
        if (record.expected_digest is None) != (ack.digest is None):
            wanted = "needs" if ack.digest is None else "must not have"
            raise ProtocolError(f"ack of batch {ack.seq} {wanted} a digest")
        for seq in [seq for seq in self._in_flight if seq <= ack.seq]:
            self._events.append(Acked(seq, self._in_flight.pop(seq).revision))
        self._last_acked = ack.seq
        if record.expected_digest is not None:
            self._checking = False
            if ack.digest != record.expected_digest:
                self._request_inventory()  # the node's holdings were not what its hello implied

    def _on_logs(self, logs: Logs) -> None:
        if logs.id not in self._logs_waiting:
            raise ProtocolError(f"logs reply {logs.id} answers no pending request")
        self._logs_waiting.discard(logs.id)
        self._events.append(LogsReply(logs.id, logs.data, logs.error))

    def _on_metrics(self, metrics: Metrics) -> None:
        if metrics.id >= self._next_metrics_id:
            raise ProtocolError(f"metrics reply {metrics.id} answers no request")
        if metrics.id not in self._metrics_waiting:
            return  # a late reply to a request the shell gave up on (it answered 504 already)
        self._metrics_waiting.discard(metrics.id)
        self._events.append(MetricsReply(metrics.id, metrics.data, metrics.truncated, metrics.error))


def _by_since(objects: list[ViewObject]) -> list[ViewObject]:
    """Oldest change first, so batch revisions can advance as batches are committed."""
    return sorted(objects, key=lambda obj: obj.since)
