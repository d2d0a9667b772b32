"""The hub client over several servers: random order, failover, DNS names, rebalance hints, 503s, new lists.

Each test runs real WebSocket servers on loopback (:class:`FakeHub`: just
enough of the protocol, a ``welcome`` for every ``hello``, so that the real
:class:`HubClient` and :class:`AgentSession` count a session) and waits on
events with bounded timeouts; none sleeps for a fixed time. The last test
checks that the agent hands its hub client the ClusterInfo list of its
local view (at start and after batches), else the node.yaml list.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from edgefleet.api.clusterinfo import normalise_servers
from edgefleet.edge import agent as edge_agent
from edgefleet.edge.backoff import Backoff
from edgefleet.edge.hubclient import (
    HubClient,
    rebalance_hint,
    retry_after_seconds,
    sync_url,
)
from edgefleet.sync import messages
from edgefleet.sync.agent import ApplyBatch, LocalState
from edgefleet.sync.messages import ViewObject

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.5)
"""Backoff for tests: a failed round costs at most 0.2 s."""
SLOW = Backoff(initial=5.0, maximum=10.0, jitter=0.5)
"""Backoff that a test must never wait for: proves a failover happened inside one round."""


@dataclass
class FakeHub:
    """A WebSocket server on ``host``: welcomes every hello, or answers 503 while ``overloaded``."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    overloaded: bool = False
    retry_after: str | None = "1"
    upgrades: list[float] = field(default_factory=list)  # monotonic time of each upgrade request
    hosts: list[str] = field(default_factory=list)  # the Host header of each upgrade request
    paths: list[str] = field(default_factory=list)
    sessions: list[ServerConnection] = field(default_factory=list)
    server: Server | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeHub:
        self.server = await serve(self._handler, self.host, self.port, process_request=self._process_request)
        self.port = self.server.sockets[0].getsockname()[1] if not self.port else self.port
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.upgrades.append(time.monotonic())
        self.hosts.append(request.headers.get("Host", ""))
        self.paths.append(request.path)
        self.changed.set()
        if self.overloaded:
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "overloaded\n")
            if self.retry_after is not None:
                response.headers["Retry-After"] = self.retry_after
            return response
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        await ws.recv()  # hello
        self.sessions.append(ws)
        welcome = messages.Welcome(hub=self.name, epoch="e1", heartbeat_seconds=30)
        await ws.send(messages.encode(welcome))
        self.changed.set()
        async for _ in ws:  # acks and status reports
            pass

    @property
    def live(self) -> list[ServerConnection]:
        return [ws for ws in self.sessions if ws.close_code is None]

    async def release(self, reason: str = messages.CLOSE_REBALANCE_REASON) -> None:
        for ws in self.live:
            await ws.close(messages.CLOSE_REBALANCE, reason)

    async def drop(self) -> None:
        for ws in self.live:
            await ws.close(1011, "going away")


class Handler:
    """The LinkHandler side: an empty view, and every link change recorded."""

    def __init__(self) -> None:
        self.hubs: list[str] = []  # hub names, one per welcome
        self.changed = asyncio.Event()

    def welcomed_times(self, count: int) -> bool:
        """Whether ``count`` welcomes (from any hubs) have been recorded."""
        return len(self.hubs) == count

    def welcomed_by(self, *names: str) -> bool:
        """Whether the welcomes recorded so far came from ``names``, in this order."""
        return self.hubs == list(names)

    def local_state(self) -> LocalState:
        return LocalState(epoch="", revision=0, holdings={}, agent_version="test")

    async def apply_batch(self, batch: ApplyBatch) -> None:
        return None

    def status_report(self) -> dict[str, Any]:
        return {}

    async def read_logs(self, workload: str, tail: int) -> str:
        return ""

    def link_changed(self, connected: bool, hub: str) -> None:
        if connected:
            self.hubs.append(hub)
        self.changed.set()


async def until(check: Callable[[], bool], *events: asyncio.Event, within: float = 3.0) -> None:
    """Wait until ``check()`` holds, waking on ``events`` (and every 50 ms), for at most ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "condition not reached in time"
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=min(0.05, remaining))
        finally:
            for task in waits:
                task.cancel()
        for event in events:
            event.clear()


@pytest.fixture
async def hubs() -> AsyncIterator[Callable[..., Awaitable[FakeHub]]]:
    started: list[FakeHub] = []

    async def start(name: str, **options: Any) -> FakeHub:
        hub = await FakeHub(name, **options).start()
        started.append(hub)
        return hub

    yield start
    for hub in started:
        await hub.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., tuple[HubClient, Handler]]]:
    tasks: list[asyncio.Task[None]] = []

    def start(servers: list[str], seed: int = 0, **options: Any) -> tuple[HubClient, Handler]:
        agent = Handler()
        options.setdefault("backoff", FAST)
        client = HubClient(
            servers=servers,
            credential=lambda: "abcdef." + "0" * 32,
            node_name="edge-1",
            handler=agent,
            rng=random.Random(seed),
            release_delay=(0.01, 0.05),
            **options,
        )
        tasks.append(asyncio.create_task(client.run()))
        return client, agent

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def dead_url() -> str:
    """An http URL on a loopback port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- pure helpers ---------------------------------------------------------------------------


def test_server_lists_are_validated_and_normalised() -> None:
    assert normalise_servers(["HTTP://A.example:7440/", "http://a.example:7440", "https://[::1]:7440"]) == [
        "http://a.example:7440",
        "https://[::1]:7440",
    ]
    assert sync_url("https://a.example:7440") == "wss://a.example:7440/edge/v1/sync"
    assert sync_url("http://10.0.0.1:7440/prefix") == "ws://10.0.0.1:7440/prefix/edge/v1/sync"
    for bad in ([], ["ws://a.example"], ["a.example:7440"], ["http://a.example/?q=1"]):
        with pytest.raises(ValueError):
            normalise_servers(bad)


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("rebalance http://10.0.0.2:7440", "http://10.0.0.2:7440"),
        ("rebalance HTTPS://Hub-2.example:7440/", "https://hub-2.example:7440"),
        ("rebalance", None),
        ("rebalance ", None),
        ("rebalance ftp://10.0.0.2", None),
        ("rebalance not a url", None),
        ("rebalance http://user:pw@10.0.0.2", None),
        ("shutdown http://10.0.0.2:7440", None),
        ("", None),
    ],
)
def test_rebalance_hints(reason: str, hint: str | None) -> None:
    assert rebalance_hint(reason) == hint


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("-3") == 0.0
    for unusable in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(unusable) is None


# --- against real servers -------------------------------------------------------------------


async def test_agents_spread_over_the_servers_in_random_order(hubs: Any, clients: Any) -> None:
    a, b = await hubs("hub-a"), await hubs("hub-b")
    started = [clients([a.url, b.url], seed=seed) for seed in range(16)]
    await until(lambda: all(agent.hubs for _, agent in started), a.changed, b.changed)
    firsts = [agent.hubs[0] for _, agent in started]
    assert set(firsts) == {"hub-a", "hub-b"}, "not always the first of the list"
    assert a.paths[0] == "/edge/v1/sync"
    assert {client.server for client, _ in started} == {a.url, b.url}


async def test_a_dead_server_is_skipped_within_the_round(hubs: Any, clients: Any) -> None:
    live = await hubs("live")
    started = [clients([dead_url(), live.url], seed=seed, backoff=SLOW) for seed in range(6)]
    began = time.monotonic()
    await until(lambda: all(agent.hubs == ["live"] for _, agent in started), live.changed)
    assert time.monotonic() - began < 2.0, "failed over without waiting for the backoff"


async def test_a_name_with_several_addresses_is_several_servers(hubs: Any, clients: Any) -> None:
    one = await hubs("one", host="127.0.0.1")
    two = await hubs("two", host="127.0.0.2", port=one.port)
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1", "127.0.0.2"] if host == "hub.test" else []

    url = f"http://hub.test:{one.port}"
    started = [clients([url], seed=seed, resolver=resolver) for seed in range(12)]
    await until(lambda: all(agent.hubs for _, agent in started), one.changed, two.changed)
    assert {agent.hubs[0] for _, agent in started} == {"one", "two"}
    assert set(asked) == {("hub.test", one.port)}
    assert set(one.hosts + two.hosts) == {f"hub.test:{one.port}"}, "the Host header keeps the name"
    assert {client.server for client, _ in started} == {url}


async def test_a_name_that_does_not_resolve_is_skipped(hubs: Any, clients: Any) -> None:
    live = await hubs("live")

    async def resolver(host: str, port: int) -> list[str]:
        raise OSError(f"{host}: no such name")

    _client, agent = clients(["http://nowhere.test:7440", live.url], resolver=resolver, backoff=SLOW)
    await until(lambda: agent.hubs == ["live"], live.changed)


async def test_a_release_with_a_hint_goes_to_the_hinted_server(hubs: Any, clients: Any) -> None:
    a, b = await hubs("hub-a"), await hubs("hub-b")
    client, agent = clients([a.url], backoff=SLOW)
    await until(lambda: agent.hubs == ["hub-a"], agent.changed)
    await a.release(f"rebalance {b.url}/")
    await until(lambda: agent.hubs == ["hub-a", "hub-b"], agent.changed, within=2.0)
    assert client.server == b.url and client.releases == 1
    assert client.servers == [a.url], "a hint is used once, it does not join the list"


@pytest.mark.parametrize("reason", ["rebalance", "rebalance ftp://elsewhere", "rebalance garbage here"])
async def test_a_release_without_a_usable_hint_goes_to_another_server(hubs: Any, clients: Any, reason: str) -> None:
    a, b = await hubs("hub-a"), await hubs("hub-b")
    for seed in range(4):
        client, agent = clients([a.url, b.url], seed=seed, backoff=SLOW)
        await until(partial(agent.welcomed_times, 1), agent.changed)
        first = a if agent.hubs[0] == "hub-a" else b
        other = b if first is a else a
        await first.release(reason)
        await until(partial(agent.welcomed_times, 2), agent.changed, within=2.0)
        assert agent.hubs[1] == other.name
        assert client.server == other.url


async def test_a_release_by_the_only_server_redials_it_soon(hubs: Any, clients: Any) -> None:
    a = await hubs("hub-a")
    _client, agent = clients([a.url], backoff=SLOW)
    await until(lambda: agent.hubs == ["hub-a"], agent.changed)
    await a.release()
    await until(lambda: agent.hubs == ["hub-a", "hub-a"], agent.changed, within=2.0)


async def test_a_503_is_retried_after_retry_after_and_not_before(hubs: Any, clients: Any) -> None:
    busy = await hubs("busy", overloaded=True, retry_after="1")
    _client, agent = clients([busy.url], backoff=FAST)
    await until(lambda: len(busy.upgrades) == 1, busy.changed)
    busy.overloaded = False
    await until(lambda: agent.hubs == ["busy"], agent.changed, busy.changed, within=4.0)
    assert len(busy.upgrades) == 2
    waited = busy.upgrades[1] - busy.upgrades[0]
    assert 1.0 <= waited <= 2.0, f"waited {waited:.2f}s for Retry-After: 1 (jitter adds at most half)"


async def test_a_503_sends_the_agent_to_another_server_and_keeps_it_away(hubs: Any, clients: Any) -> None:
    busy = await hubs("busy", overloaded=True, retry_after="30")
    free = await hubs("free")
    for seed in range(3):
        _client, agent = clients([busy.url, free.url], seed=seed, backoff=SLOW)
        await until(partial(agent.welcomed_by, "free"), agent.changed)
        await free.release()  # no hint: busy would be next, but it asked for 30 s
        await until(partial(agent.welcomed_by, "free", "free"), agent.changed, within=2.0)
    assert len(busy.upgrades) <= 3, "each agent asked the busy server once at most"


async def test_new_servers_keep_the_connection_and_serve_the_next_dial(hubs: Any, clients: Any) -> None:
    a, b = await hubs("hub-a"), await hubs("hub-b")
    client, agent = clients([a.url])
    await until(lambda: agent.hubs == ["hub-a"], agent.changed)
    assert client.set_servers([b.url + "/"]) is True
    assert client.set_servers([b.url]) is False, "the same list, normalised"
    assert client.servers == [b.url] and client.server == a.url and client.connected
    assert len(a.live) == 1 and not b.sessions
    await a.drop()
    await until(lambda: agent.hubs == ["hub-a", "hub-b"], agent.changed)
    assert len(a.upgrades) == 1, "the old server is not dialled again"
    with pytest.raises(ValueError):
        client.set_servers([])


# --- the agent follows the ClusterInfo of its view --------------------------------------------


async def test_the_agent_follows_the_cluster_info_of_its_view(tmp_path: Path) -> None:
    (tmp_path / "node.yaml").write_text(
        "server: http://joined-1:7440\nservers: [http://joined-1:7440, "
        "http://joined-2:7440]\nnode: edge-1\nsite: par\ninsecure: true\n"
    )
    (tmp_path / "credential").write_text("abcdef." + "0" * 32 + "\n")
    key = "/registry/clusterinfos/default"

    def cluster_info(*servers: object) -> ViewObject:
        return ViewObject.of(
            key,
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "ClusterInfo",
                "metadata": {"name": "default"},
                "spec": {"servers": list(servers), "futureField": 1},
            },
        )

    agent = edge_agent.Agent(edge_agent.AgentOptions(data_dir=tmp_path))
    try:
        assert agent.hub.servers == ["http://joined-1:7440", "http://joined-2:7440"]
        await agent.apply_batch(ApplyBatch(1, 5, (cluster_info("http://hub-a:7440/", "bad url", 7),), (), "e1"))
        assert agent.hub.servers == ["http://hub-a:7440"], "valid entries kept, unknown fields tolerated"
        assert agent.describe()["servers"] == ["http://hub-a:7440"]
        await agent.apply_batch(ApplyBatch(2, 6, (cluster_info("nothing valid"),), (), "e1"))
        assert agent.hub.servers == ["http://joined-1:7440", "http://joined-2:7440"], "else node.yaml"
        await agent.apply_batch(ApplyBatch(3, 7, (cluster_info("https://hub-b:7440"),), (), "e1"))
    finally:
        agent.local.close()
    restarted = edge_agent.Agent(edge_agent.AgentOptions(data_dir=tmp_path))
    try:
        assert restarted.hub.servers == ["https://hub-b:7440"], "read back from the local view at start"
        await restarted.apply_batch(ApplyBatch(1, 8, (), (key,), "e1"))
        assert restarted.hub.servers == ["http://joined-1:7440", "http://joined-2:7440"], "deleted: node.yaml"
    finally:
        restarted.local.close()
