"""Raw hub sessions against a real cloud: the sync protocol spoken over a bare WebSocket, for hostile tests.

The end-to-end tests that play a node by hand (the hub's direct lane, a
malicious node, the metrics relay) need what a real agent does not give:
send any frame, stop reading, answer a metrics request wrongly. Each
:class:`RawAgent` is one node's hub session over a ``websockets`` client
connection, driven by the real :class:`~edgefleet.sync.agent.AgentSession`
(the protocol's sans-I/O core), with one reader thread; a subclass decides
what to do with each event (:meth:`RawAgent.on_event`). :class:`HubCloud`
is one ``edgefleet cloud`` process with the joins, tokens and metrics those
tests share.

Closing is quick on purpose: ``close`` sends a close frame and waits at most
:data:`CLOSE_TIMEOUT` for the cloud's answer (the library waits 10 s), then
drops the socket. A node that flooded the hub has its close frame queued
behind everything the hub has not read yet; waiting for the handshake there
only slowed the suite down. The cloud's side of that case is tested where it
matters (a revoked or misbehaving session is closed by the hub).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Data

from edgefleet.sync.agent import AgentEvent, AgentSession, ApplyBatch, LocalState
from tests.cloudproc import CloudProcess

EDGE = "/edge/v1"
CLOSE_TIMEOUT = 1.0
"""Seconds ``RawAgent.close`` waits for the cloud's close frame before dropping the connection."""


class RawAgent:
    """One node's hub session by hand: hello, acknowledge batches, send what the test says.

    ``receive_buffer`` sets a small kernel receive window (the hub's writes
    then back up quickly); clearing :attr:`reading` stops the reader thread
    between messages. ``closed`` is the close the cloud sent, once it did.
    """

    def __init__(
        self,
        url: str,
        node: str,
        credential: str,
        *,
        features: tuple[str, ...] = (),
        receive_buffer: int | None = None,
    ) -> None:
        self.node, self.credential = node, credential
        self.session = AgentSession(node, local=LocalState("", 0, {}, "test"), features=features)
        self.closed: ConnectionClosed | None = None
        self.reading = threading.Event()
        self.reading.set()
        self.ws: ClientConnection = connect(
            url,
            sock=_small_window_socket(url, receive_buffer) if receive_buffer is not None else None,
            additional_headers={"Authorization": f"Bearer {credential}"},
            max_size=None,
            close_timeout=CLOSE_TIMEOUT,
            legacy=True,
        )
        self.ws.send(self.session.hello())
        self.lock = threading.RLock()  # on_event may send (under the lock)
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"raw-agent-{node}")
        self._reader.start()

    def on_event(self, event: AgentEvent) -> None:
        """What the node does with one event of its session (called under :attr:`lock`): apply batches at once."""
        if isinstance(event, ApplyBatch):
            self.session.applied(event.seq)

    def _read(self) -> None:
        try:
            while True:
                self.reading.wait()
                text = self.ws.recv()
                with self.lock:
                    for event in self.session.receive(text):
                        self.on_event(event)
                    for frame in self.session.data_to_send():
                        self.ws.send(frame)
        except ConnectionClosed as exc:
            self.closed = exc
        except Exception:  # the session's own checks: the test looks at the socket's close code
            self.ws.close()

    def send(self, payload: Data | Iterable[Data]) -> None:
        """Send ``payload`` as one message (fragmented if an iterable), unchecked: the cloud must check it."""
        with self.lock:
            self.ws.send(payload)

    def close(self) -> None:
        self.reading.set()
        self.ws.close()
        self._reader.join(timeout=CLOSE_TIMEOUT + 1)


def _small_window_socket(url: str, receive_buffer: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock.connect((host, int(port)))
    return sock


A = TypeVar("A", bound=RawAgent)


class HubCloud(Generic[A]):
    """One ``edgefleet cloud`` process (``flags`` added) and the raw agents of the nodes a test joins."""

    def __init__(self, root: Path, flags: list[str], agent: Callable[..., A]) -> None:
        self.process = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=flags).start()
        self.credentials: dict[str, str] = {}
        self.agents: dict[str, A] = {}
        self._agent = agent
        self._opened: list[A] = []  # every agent, replaced ones too: all are closed at the end

    @property
    def sync_url(self) -> str:
        return f"ws://127.0.0.1:{self.process.port}{EDGE}/sync"

    def api(self, token: str | None = None) -> httpx.Client:
        return self.process.client(token)

    def token(self, role: str = "bootstrap") -> str:
        with self.api() as api:
            created = api.post(f"{EDGE}/bootstrap-tokens", json={"role": role, "ttlSeconds": 600})
            assert created.status_code == 201, created.text
            token: str = created.json()["token"]
            return token

    def join(self, name: str, site: str, addresses: Sequence[str] = (), labels: dict[str, str] | None = None) -> str:
        """Join node ``name`` to ``site`` with a fresh bootstrap token; its credential is kept and returned."""
        body: dict[str, Any] = {"name": name, "site": site}
        if addresses:
            body["addresses"] = list(addresses)
        if labels:
            body["labels"] = labels
        headers = {"Authorization": f"Bearer {self.token()}"}
        joined = httpx.post(f"{self.process.url}{EDGE}/join", json=body, headers=headers)
        assert joined.status_code == 201, joined.text
        self.credentials[name] = joined.json()["credential"]
        return self.credentials[name]

    def connect(self, name: str, **options: Any) -> A:
        """A new hub session for ``name`` (joined before); it replaces the last one in :attr:`agents`."""
        agent = self.agents[name] = self._agent(self.sync_url, name, self.credentials[name], **options)
        self._opened.append(agent)
        return agent

    def metric(self, name: str) -> float:
        """The sum of every sample of metric ``name`` on the cloud's ``/metrics`` (all label sets)."""
        text = httpx.get(f"{self.process.url}/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith((name + " ", name + "{")))

    def close(self) -> None:
        """Stop the cloud, then close the agents (the cloud's shutdown closes their sessions first)."""
        self.process.stop()
        for agent in self._opened:
            agent.close()
