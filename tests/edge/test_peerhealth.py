"""Peer health votes: the hysteresis, the vote report, the peer list, and the prober on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgefleet.api.nodes import NodeStatus
from edgefleet.edge.peerhealth import (
    REFRESH_SECONDS,
    PeerProber,
    PeerTarget,
    PeerVotes,
    peer_targets,
    probe_cache,
)

T0 = 1_700_000_000.0


def feed(votes: PeerVotes, peer: str, results: str, start: float = T0, step: float = 2.0) -> list[bool]:
    """Observe ``results`` ('+' pass, '-' fail) a probe period apart; the changed flags."""
    return [votes.observe(peer, result == "+", start + i * step) for i, result in enumerate(results)]


# -- the state machine ------------------------------------------------------------------------------


def test_no_verdict_before_enough_probes_in_a_row() -> None:
    votes = PeerVotes()
    assert feed(votes, "b", "-") == [False]
    assert votes.verdict("b") is None and votes.votes(T0) == {}
    assert votes.verdict("unknown") is None


def test_two_failures_in_a_row_make_a_peer_unhealthy_and_one_pass_healthy() -> None:
    votes = PeerVotes()
    assert feed(votes, "b", "+--+-+") == [True, False, True, True, False, False]
    assert votes.verdict("b") is True
    assert feed(votes, "c", "--") == [False, True]
    assert votes.verdict("c") is False


def test_one_failure_between_passes_does_not_flap() -> None:
    votes = PeerVotes()
    changed = feed(votes, "b", "+-+-+-+")
    assert changed == [True] + [False] * 6
    assert votes.verdict("b") is True


def test_thresholds_are_configurable() -> None:
    votes = PeerVotes(fall=3, rise=2)
    assert feed(votes, "b", "+++") == [False, True, False]
    assert feed(votes, "b", "--+---") == [False, False, False, False, False, True]
    with pytest.raises(ValueError, match="at least 1"):
        PeerVotes(fall=0)


def test_at_is_when_the_verdict_changed_or_was_last_confirmed() -> None:
    votes = PeerVotes()
    votes.observe("b", True, T0)
    assert votes.votes(T0)["b"] == {"healthy": True, "at": "2023-11-14T22:13:20Z"}
    votes.observe("b", True, T0 + 5)
    assert votes.votes(T0 + 5)["b"]["at"] == "2023-11-14T22:13:25Z", "confirmed"
    votes.observe("b", False, T0 + 7)
    unconfirmed = votes.votes(T0 + 7)["b"]
    assert unconfirmed == {"healthy": True, "at": "2023-11-14T22:13:25Z"}, "a single failure confirms nothing"
    votes.observe("b", False, T0 + 9)
    assert votes.votes(T0 + 9)["b"] == {"healthy": False, "at": "2023-11-14T22:13:29Z"}
    votes.observe("b", False, T0 + 11)
    assert votes.votes(T0 + 11)["b"]["at"] == "2023-11-14T22:13:31Z", "unhealthy, confirmed"


def test_votes_not_confirmed_for_long_are_left_out() -> None:
    votes = PeerVotes(stale_after=30)
    votes.observe("b", True, T0)
    assert "b" in votes.votes(T0 + 29)
    assert votes.votes(T0 + 30) == {}


def test_votes_about_peers_that_left_are_dropped() -> None:
    votes = PeerVotes()
    feed(votes, "b", "+")
    feed(votes, "d", "--")
    assert votes.retain(["b", "d", "e"]) is False, "nobody left"
    assert votes.retain(["b"]) is True
    assert set(votes.votes(T0 + 2)) == {"b"} and votes.verdict("d") is None
    feed(votes, "d", "+")
    assert votes.verdict("d") is True, "a peer that comes back starts afresh"


def test_dropping_a_voted_peer_is_a_change_and_an_unvoted_one_is_not() -> None:
    votes = PeerVotes()
    feed(votes, "b", "+")
    feed(votes, "c", "-")
    assert votes.retain(["b"]) is False, "c never had a verdict"
    assert votes.retain([]) is True, "b had one"


def test_the_report_validates_as_node_status() -> None:
    votes = PeerVotes()
    feed(votes, "b", "+")
    feed(votes, "c", "--")
    status = NodeStatus.model_validate({"peerVotes": votes.votes(T0 + 2)})
    assert status.peer_votes is not None
    assert {peer: vote.healthy for peer, vote in status.peer_votes.items()} == {"b": True, "c": False}


# -- the peers of a node ---------------------------------------------------------------------------


def node(name: str, site: str, *addresses: str) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {"site": site, "addresses": list(addresses)}}


def test_peers_are_the_other_nodes_of_the_site_with_an_address() -> None:
    nodes = [
        node("a", "lab", "127.0.0.2"),
        node("c", "lab", "127.0.0.4", "::1"),
        node("b", "lab", "127.0.0.3"),
        node("x", "other", "127.0.0.9"),
        node("bare", "lab"),
        {"kind": "Node", "metadata": {}},
    ]
    assert peer_targets(nodes, "a", "lab", 9081) == [
        PeerTarget("b", "127.0.0.3", 9081),
        PeerTarget("c", "127.0.0.4", 9081),
    ]


# -- the prober ----------------------------------------------------------------------------------------


class FakeProbe:
    def __init__(self) -> None:
        self.ok: dict[str, bool] = {}
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, target: PeerTarget, time_limit: float) -> bool:
        self.calls.append((target.name, time_limit))
        if target.name == "broken":
            raise RuntimeError("probe bug")
        return self.ok.get(target.name, True)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def test_the_prober_reports_changes_at_once_and_refreshes_otherwise() -> None:
    targets = [PeerTarget("b", "127.0.0.3", 1), PeerTarget("c", "127.0.0.4", 1)]
    reports: list[float] = []
    probe, clock = FakeProbe(), Clock()
    prober = PeerProber(
        PeerVotes(), lambda: targets, lambda: reports.append(clock.now), period=0.5, probe=probe, clock=clock
    )
    assert prober.timeout == 0.5, "a probe never outlives its period"
    assert await prober.probe_once() is True and reports == [T0]
    clock.now += 2
    assert await prober.probe_once() is False and len(reports) == 1
    probe.ok["c"] = False
    clock.now += 4
    calls = len(probe.calls)
    assert await prober.probe_once() is True and reports[-1] == T0 + 6, "a failure confirmed at once is a verdict"
    assert prober.votes.verdict("c") is False
    assert len(probe.calls) == calls + 3, "b probed once, c twice (the failure re-checked)"
    clock.now = T0 + 6 + REFRESH_SECONDS
    assert await prober.probe_once() is False
    assert reports[-1] == T0 + 6 + REFRESH_SECONDS, "a refresh keeps the reported times fresh"
    targets.pop()
    clock.now += 1
    assert await prober.probe_once() is True, "c left the site: its vote is dropped"
    assert set(prober.votes.votes(clock.now)) == {"b"}


async def test_a_probe_that_breaks_is_a_failed_probe() -> None:
    probe = FakeProbe()
    prober = PeerProber(PeerVotes(), lambda: [PeerTarget("broken", "127.0.0.3", 1)], lambda: None, probe=probe)
    await prober.probe_once()
    await prober.probe_once()
    assert prober.votes.verdict("broken") is False


async def test_no_peers_no_reports() -> None:
    reports: list[int] = []
    prober = PeerProber(PeerVotes(), lambda: [], lambda: reports.append(1), probe=FakeProbe())
    assert await prober.probe_once() is False
    assert reports == []
    with pytest.raises(ValueError, match="positive"):
        PeerProber(PeerVotes(), lambda: [], lambda: None, period=0)


async def test_the_loop_probes_every_period_until_cancelled() -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    third = asyncio.Event()

    async def probe(target: PeerTarget, time_limit: float) -> bool:
        times.append(loop.time())
        if len(times) == 3:
            third.set()
        return True

    prober = PeerProber(PeerVotes(), lambda: [PeerTarget("b", "127.0.0.3", 1)], lambda: None, period=0.05,
                        probe=probe)  # fmt: skip
    task = asyncio.create_task(prober.run())
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    # Rounds are a period apart (the loop may wake a clock tick early: half a period is the safe bound).
    assert all(later - earlier >= 0.025 for earlier, later in itertools.pairwise(times[:3]))


# -- the real probe on loopback -------------------------------------------------------------------------


class Servers:
    """Loopback servers that answer every request with a fixed response, or (None) never answer."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()
        self.started: list[asyncio.Server] = []

    async def serve(self, answer: bytes | None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.handlers.add(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                if answer is None:
                    await self.release.wait()
                else:
                    writer.write(answer)
                    await writer.drain()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.started.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.release.set()
        for server in self.started:
            server.close()
            await server.wait_closed()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, int]]:
    answers = {
        "ok": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
        "busy": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        "silent": None,
    }
    running = Servers()
    try:
        yield {name: await running.serve(answer) for name, answer in answers.items()}
    finally:
        await running.close()


async def test_the_real_probe_reads_the_health_endpoint(servers: dict[str, int]) -> None:
    assert await probe_cache(PeerTarget("b", "127.0.0.1", servers["ok"]), 1.0) is True
    assert await probe_cache(PeerTarget("b", "127.0.0.1", servers["busy"]), 1.0) is False
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await probe_cache(PeerTarget("b", "127.0.0.1", servers["silent"]), 0.2) is False
    assert loop.time() - started < 1.0, "bounded by the time limit"
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()  # nothing listens there now
    assert await probe_cache(PeerTarget("b", "127.0.0.1", port), 1.0) is False
