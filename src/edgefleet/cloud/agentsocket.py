"""The agents' WebSocket as plain ASGI: the sync endpoint bypasses the web framework on its hot path.

How: :class:`SyncEndpoint` sits in front of the API application. A
WebSocket request for ``/edge/v1/sync`` goes straight to the hub with an
:class:`AgentSocket`, a few lines over the ASGI ``receive``/``send`` pair
the server (uvicorn) gives; every other request goes to the API app.

Why: a push to ten thousand nodes is ten thousand frames out and ten
thousand acknowledgements in, and each passed through Starlette's
``WebSocket`` object and four middleware wrappers of ``send`` and
``receive`` (exception handling, telemetry, body limit) that do nothing for
this endpoint. Measured on a push to 3,000 simulated nodes, the wrappers
were about a fifth of the hub's CPU. The WebSocket protocol itself is still
the server's (uvicorn with the ``websockets`` library's sans-I/O core); only
the framework layer is skipped, on this one measured path.

:class:`AgentSocket` keeps Starlette's names (``accept``, ``receive_text``,
``send_text``, ``close``...) and raises
:class:`starlette.websockets.WebSocketDisconnect` when the peer is gone, so
the hub reads the same either way. It never lets ``close`` raise (the hub
closes sessions from background tasks), and an agent's binary frame is a
protocol error, not a crash.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.websockets import WebSocketDisconnect

from edgefleet.sync.errors import ProtocolError

SYNC_PATH = "/edge/v1/sync"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AgentSocket:
    """One agent's WebSocket over raw ASGI (see the module docstring)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers = Headers(scope=scope)
        self._receive = receive
        self._send = send
        self._connected = False  # the websocket.connect message was taken
        self._closed = False

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
        raise RuntimeError(f"unexpected ASGI message {kind!r} on the agents' WebSocket")

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

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
