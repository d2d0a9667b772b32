"""Health probes against real loopback servers and real commands (readiness rules: test_lifecycle.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edgefleet.api.workloads import HealthProbe
from edgefleet.edge import probes

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Start loopback servers with a handler; returns the port. Closed at the end."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answering(status_line: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /healthz HTTP/1.1\r\n")
        writer.write(status_line + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, never answer; end when the client hangs up."""
    await reader.read()
    writer.close()
    await writer.wait_closed()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("status_line", "ok"),
    [(b"HTTP/1.1 200 OK", True), (b"HTTP/1.0 302 Found", True), (b"HTTP/1.1 404 Not Found", False),
     (b"HTTP/1.1 503 Unavailable", False), (b"SSH-2.0-OpenSSH", False)],
)  # fmt: skip
async def test_http_probe_judges_the_status(
    serve: Callable[[Handler], Awaitable[int]], status_line: bytes, ok: bool
) -> None:
    port = await serve(answering(status_line))
    outcome = await probes.check_http(port, "/healthz", 2)
    assert outcome.ok is ok, outcome.detail


async def test_http_probe_failures_say_why(serve: Callable[[Handler], Awaitable[int]]) -> None:
    refused = await probes.check_http(free_port(), "/", 2)
    assert not refused.ok and "refused" in refused.detail
    port = await serve(silent)
    hung = await probes.check_http(port, "/", 0.2)
    assert not hung.ok and hung.detail == "http: no answer within 0.2 s"


async def test_tcp_probe(serve: Callable[[Handler], Awaitable[int]]) -> None:
    port = await serve(silent)
    assert (await probes.check_tcp(port, 2)).ok
    closed = await probes.check_tcp(free_port(), 2)
    assert not closed.ok and closed.detail.startswith("tcp: ")


async def test_exec_probe_runs_in_the_given_directory_and_environment(tmp_path: Path) -> None:
    (tmp_path / "flag").touch()
    code = "import os, sys; sys.exit(0 if os.path.exists('flag') and os.environ['X'] == '1' else 1)"
    probe = HealthProbe.model_validate({"exec": {"command": [sys.executable, "-c", code]}, "timeoutSeconds": 5})
    assert (await probes.check(probe, cwd=tmp_path, env={**ENV, "X": "1"})).ok
    failed = await probes.check(probe, cwd=tmp_path, env={**ENV, "X": "2"})
    assert not failed.ok and failed.detail == "exec: exited with status 1"


async def test_exec_probe_timeout(tmp_path: Path) -> None:
    outcome = await probes.check_exec(["sleep", "30"], cwd=tmp_path, env=ENV, time_limit=0.2)
    assert not outcome.ok and "timed out" in outcome.detail


async def test_check_dispatches_http_and_tcp(serve: Callable[[Handler], Awaitable[int]], tmp_path: Path) -> None:
    port = await serve(answering(b"HTTP/1.1 204 No Content"))
    http = HealthProbe.model_validate({"http": {"port": port, "path": "/healthz"}})
    assert (await probes.check(http, cwd=tmp_path, env=ENV)).ok
    tcp = HealthProbe.model_validate({"tcp": {"port": await serve(silent)}})
    assert (await probes.check(tcp, cwd=tmp_path, env=ENV)).ok
