"""The agents' WebSocket as plain ASGI, with a direct lane: the sync endpoint bypasses the framework and the queues.

How: :class:`SyncEndpoint` sits in front of the API application. A
WebSocket request for ``/edge/v1/sync`` goes straight to the hub with an
:class:`AgentSocket`, a few lines over the ASGI ``receive``/``send`` pair
the server (uvicorn) gives; every other request goes to the API app.

The direct lane: ``edgefleet cloud`` runs uvicorn with
:class:`HubWebSocketProtocol`, uvicorn's own sans-I/O WebSocket protocol
(the ``websockets`` library's parser and handshake) plus three things the
hub uses once a session is streaming (:meth:`AgentSocket.go_direct`):

- every data frame from the agent is handed to a plain callback from
  ``data_received``, instead of being put on an ``asyncio.Queue`` (with
  reading paused until a task takes it) for a reader task to wake up for;
- :meth:`AgentSocket.write_now` frames a message itself (a server frame is
  unmasked: a two- to ten-byte header before the payload) and writes it to
  the transport from the caller, so the hub's fan-out loop sends a batch
  to ten thousand nodes without waking ten thousand sender tasks;
- :meth:`AgentSocket.pause_reading_for` throttles a session that sends too
  much (the hub's rates) without a task sleeping.

Everything else (the handshake, pings, close handshakes, oversized and
malformed frames, disconnects) is uvicorn's unchanged, and the app still
learns of a disconnect through ``receive``. A server without the lane (any
other ASGI server) gives no extension; the hub then uses the queue path.

Why: a push to ten thousand nodes is ten thousand frames out and ten
thousand acknowledgements in. Measured on a push to 2,000 simulated nodes,
waking a sender task per node and a reader task per acknowledgement (with a
``pause_reading``/``resume_reading`` pair each) was about 40% of the hub's
push CPU, and websockets' frame serialiser another few percent; earlier,
Starlette's per-frame wrappers were about a fifth (this module bypasses
them too).

:class:`AgentSocket` keeps Starlette's names (``accept``, ``receive_text``,
``send_text``, ``close``...) and raises
:class:`starlette.websockets.WebSocketDisconnect` when the peer is gone, so
the hub reads the same either way. It never lets ``close`` raise (the hub
closes sessions from background tasks), and an agent's binary frame is a
protocol error, not a crash.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from starlette.datastructures import Headers
from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.protocol import State

from edgefleet.cloud.wsframes import HAND_OVER, FrameSplitter, frame_header
from edgefleet.sync.errors import ProtocolError

SYNC_PATH = "/edge/v1/sync"
DIRECT_EXTENSION = "edgefleet.direct"
"""Key of the ASGI scope extension under which :class:`HubWebSocketProtocol` offers itself."""
_INTERRUPT = "edgefleet.interrupt"
"""A message the lane puts on the app's queue so that a waiting ``receive`` raises the stored failure."""
_JOIN_BELOW = 64 * 1024
"""Payloads below this are joined with their frame header (one write); larger ones are written after it."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Receiver = Callable[[bytes, bool], None]
"""Called with each data message of the agent (its bytes; True: a text frame)."""


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the hub's direct lane (see the module docstring)."""

    _receiver: Receiver | None = None
    _throttled = False
    _splitter: FrameSplitter | None = None
    _started = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = self.__dict__.get("scope")
        if scope is not None:  # a 101: the app runs with this scope (its task starts after this returns)
            scope["extensions"][DIRECT_EXTENSION] = self

    def data_received(self, data: bytes) -> None:
        splitter = self._splitter
        if splitter is None:
            super().data_received(data)
            if not self._started:  # the first call carries exactly the upgrade request (uvicorn's handoff)
                self._started = True
                self._start_splitting()
            return
        splitter.feed(data)
        self._take_frames()

    def _take_frames(self) -> None:
        """Handle the whole frames read, in order, until one throttles the session (the rest wait for it)."""
        splitter = self._splitter
        while splitter is not None and not self._throttled and (frame := splitter.next()) is not None:
            if frame is HAND_OVER:
                self._stop_splitting()
                return
            if frame.text is not None and self._receiver is not None and self._fast():
                self._receiver(frame.text, True)
            else:
                super().data_received(frame.raw)
                if self.conn.parser_exc is not None or self.conn.state is not State.OPEN:
                    self._stop_splitting()  # closing or failed: the general parser sees the rest
                    return

    def _start_splitting(self) -> None:
        """Split frames from here on if the general parser is at a frame boundary (the request parsed, nothing more)."""
        buffer = getattr(getattr(self.conn, "reader", None), "buffer", None)
        if (
            self.__dict__.get("scope") is not None
            and self.conn.parser_exc is None
            and self.conn.handshake_exc is None
            and isinstance(buffer, bytearray)
            and not buffer
        ):
            self._splitter = FrameSplitter(self.config.ws_max_size)

    def _stop_splitting(self) -> None:
        splitter, self._splitter = self._splitter, None
        if splitter is not None and splitter.buffered:
            super().data_received(splitter.rest())

    def _fast(self) -> bool:
        """A final text frame may skip the general parser: open, no fragmented message open, not closing."""
        return self.conn.state is State.OPEN and self.conn.current_size is None and not self.close_sent

    def send_receive_event_to_app(self) -> None:
        receiver = self._receiver
        if receiver is None or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        receiver(bytes(data), self.curr_msg_data_type == "text")

    def go_direct(self, receiver: Receiver) -> None:
        """Hand every data message to ``receiver`` from now on, first those the app has not taken yet."""
        self._receiver = receiver
        queued: list[Any] = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        for message in queued:
            if message["type"] == "websocket.receive" and self._receiver is not None:
                text = message.get("text")
                self._receiver(text.encode() if text is not None else bytes(message["bytes"]), text is not None)
            else:
                self.queue.put_nowait(message)
        if self.read_paused and not self._throttled:
            self.read_paused = False
            self.transport.resume_reading()

    def interrupt(self) -> None:
        """Stop the lane (messages queue again) and wake the app's ``receive``."""
        self._receiver = None
        self.queue.put_nowait(cast(Any, {"type": _INTERRUPT}))

    def open_for_writing(self) -> bool:
        """Open, not closing, and the transport's buffer is below its high-water mark."""
        return self.writable.is_set() and self._open()

    def _open(self) -> bool:
        return not self.close_sent and not self.disconnected and self.conn.state is State.OPEN

    def write_message(self, payload: bytes, binary: bool) -> bool:
        """Frame ``payload`` and write it now (the transport buffers what the socket does not take); False: closed."""
        if not self._open() or self.transport.is_closing():
            return False
        header = frame_header(len(payload), binary)
        if len(payload) < _JOIN_BELOW:
            self.transport.write(header + payload)
        else:
            self.transport.write(header)
            self.transport.write(payload)
        return True

    def pause_reading_for(self, seconds: float) -> None:
        """Take no more messages from the agent for ``seconds``: those already read wait, TCP pushes back."""
        if self._throttled or self.transport.is_closing():
            return
        self._throttled = True
        if not self.read_paused:
            self.transport.pause_reading()
        self.loop.call_later(seconds, self._end_throttle)

    def _end_throttle(self) -> None:
        self._throttled = False
        if self.transport.is_closing():
            return
        self._take_frames()  # those read before the pause, one by one (each may throttle again)
        if not self._throttled and not self.read_paused:
            self.transport.resume_reading()

    def handle_close(self, event: Frame) -> None:
        self._receiver = None
        super().handle_close(event)


class AgentSocket:
    """One agent's WebSocket over raw ASGI, with the direct lane when the server offers it (module docstring)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers = Headers(scope=scope)
        self._receive = receive
        self._send = send
        self._connected = False  # the websocket.connect message was taken
        self._closed = False
        lane = (scope.get("extensions") or {}).get(DIRECT_EXTENSION)
        self._lane: HubWebSocketProtocol | None = lane if isinstance(lane, HubWebSocketProtocol) else None
        self._direct = False
        self._failure: BaseException | None = None

    async def _take_connect(self) -> None:
        if not self._connected:
            message = await self._receive()
            self._connected = True
            if message["type"] != "websocket.connect":
                self._closed = True
                raise WebSocketDisconnect(1006, "the client left before the handshake")

    async def accept(self) -> None:
        await self._take_connect()
        await self._send({"type": "websocket.accept"})

    async def send_denial_response(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Refuse the upgrade with an HTTP response (e.g. 503 and Retry-After)."""
        await self._take_connect()
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await self._send({"type": "websocket.http.response.start", "status": status, "headers": raw})
        await self._send({"type": "websocket.http.response.body", "body": body})
        self._closed = True

    async def receive_text(self) -> str:
        """The next text message; in direct mode, only returns by raising (disconnect, or :meth:`fail`)."""
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is None:
                raise ProtocolError("binary frames are not part of the protocol from agents")
            return str(text)
        if kind == "websocket.disconnect":
            self._closed = True
            raise WebSocketDisconnect(int(message.get("code", 1000)), message.get("reason"))
        if kind == _INTERRUPT and self._failure is not None:
            raise self._failure
        raise RuntimeError(f"unexpected ASGI message {kind!r} on the agents' WebSocket")

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    # the direct lane ---------------------------------------------------------

    def go_direct(self, receiver: Receiver) -> bool:
        """Deliver the agent's messages to ``receiver`` from ``data_received``; False: no lane (use receive_text)."""
        if self._lane is None or self._closed:
            return False
        self._direct = True
        self._lane.go_direct(receiver)
        return True

    @property
    def direct(self) -> bool:
        return self._direct and self._failure is None

    def fail(self, error: BaseException) -> None:
        """Stop the lane and make the pending (or next) :meth:`receive_text` raise ``error``."""
        if self._failure is None and self._lane is not None:
            self._failure = error
            self._lane.interrupt()

    def writable_now(self) -> bool:
        """:meth:`write_now` may be used: direct, open and not pushing back."""
        return self._lane is not None and self._failure is None and self._lane.open_for_writing()

    def write_now(self, payload: bytes, binary: bool = False) -> bool:
        """Write one message from the caller (no await); False when the connection is closed or has no lane."""
        return self._lane is not None and self._lane.write_message(payload, binary)

    def pause_reading_for(self, seconds: float) -> None:
        if self._lane is not None:
            self._lane.pause_reading_for(seconds)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (before the handshake: refuse with 403); never raises, and only once."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._take_connect()
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            return


class SyncEndpoint:
    """ASGI front: ``/edge/v1/sync`` WebSockets to ``serve``, everything else to ``app``."""

    def __init__(self, app: ASGIApp, serve: Callable[[AgentSocket], Awaitable[None]]) -> None:
        self.app = app
        self._serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") == SYNC_PATH:
            await self._serve(AgentSocket(scope, receive, send))
        else:
            await self.app(scope, receive, send)
