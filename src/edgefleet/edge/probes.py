"""Health probes of workloads: one check (:func:`check`), run by the supervisor's probe loop.

How: a probe is one of three checks, each bounded by the probe's
``timeoutSeconds``:

- ``http``: ``GET <path>`` on ``127.0.0.1:<port>``; a status from 200 to 399
  passes. Only the status line is read, so the body's size does not matter.
- ``tcp``: a TCP connection to ``127.0.0.1:<port>`` opens.

(``host`` replaces 127.0.0.1 for workloads that listen elsewhere: the built-in
cache listens on the node's own address, which on a laptop fleet is another
127.0.0.x per node sharing one port number.)
- ``exec``: the command, run in the workload's directory and environment in
  a process group of its own (killed whole on timeout), exits with 0. Its
  output is discarded: a probe every few seconds would drown the log.

:class:`~edgefleet.edge.lifecycle.Readiness` (the sans-I/O part, in the
workload's :class:`~edgefleet.edge.lifecycle.Lifecycle`) turns results into
readiness and says when the next probe is due; the instance's probe loop
(:mod:`edgefleet.edge.instances`) runs this check then. Probes never restart
a process (the template's probe is a readiness probe).

Why a hand-written HTTP request instead of an HTTP client: a probe needs a
status line from loopback, nothing more, and this keeps the check free of
connection pools and their lifetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from edgefleet.api.workloads import HealthProbe
from edgefleet.edge.processes import Outcome, run_command
from edgefleet.edge.users import Account

LOOPBACK = "127.0.0.1"
MAX_STATUS_LINE = 8 * 1024
"""Security limit: longest HTTP status line accepted from a workload."""


async def check(
    probe: HealthProbe, *, cwd: Path, env: Mapping[str, str], host: str = LOOPBACK, account: Account | None = None
) -> Outcome:
    """Run the probe once; never raises for a failing workload."""
    time_limit = float(probe.timeout_seconds)
    if probe.http is not None:
        return await check_http(probe.http.port, probe.http.path, time_limit, host=host)
    if probe.tcp is not None:
        return await check_tcp(probe.tcp.port, time_limit, host=host)
    assert probe.exec is not None  # the model guarantees exactly one kind
    return await check_exec(probe.exec.command, cwd=cwd, env=env, time_limit=time_limit, account=account)


async def check_http(port: int, path: str, time_limit: float, *, host: str = LOOPBACK) -> Outcome:
    authority = f"[{host}]" if ":" in host else host
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {authority}:{port}\r\nUser-Agent: edgefleet-probe\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    try:
        async with asyncio.timeout(time_limit):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_STATUS_LINE)
            try:
                writer.write(request)
                await writer.drain()
                line = await reader.readline()
            finally:
                await _close(writer)
    except TimeoutError:
        return Outcome(False, f"http: no answer within {time_limit:g} s")
    except (OSError, ValueError) as error:
        return Outcome(False, f"http: {_reason(error)}")
    return _judge_status_line(line)


def _judge_status_line(line: bytes) -> Outcome:
    parts = line.split(maxsplit=2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Outcome(False, f"http: not an HTTP response: {line[:80]!r}")
    status = int(parts[1])
    return Outcome(200 <= status < 400, f"http: status {status}")


async def check_tcp(port: int, time_limit: float, *, host: str = LOOPBACK) -> Outcome:
    try:
        async with asyncio.timeout(time_limit):
            _, writer = await asyncio.open_connection(host, port)
            await _close(writer)
    except TimeoutError:
        return Outcome(False, f"tcp: no connection within {time_limit:g} s")
    except OSError as error:
        return Outcome(False, f"tcp: {_reason(error)}")
    return Outcome(True, "tcp: connected")


async def check_exec(
    command: list[str], *, cwd: Path, env: Mapping[str, str], time_limit: float, account: Account | None = None
) -> Outcome:
    """Run the probe command as ``account`` (the workload's user: it runs in the workload's directory)."""
    outcome = await run_command(command, cwd=cwd, env=env, output=None, time_limit=time_limit, account=account)
    return Outcome(outcome.ok, f"exec: {outcome.detail}")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The peer may reset the connection first; the check already has its answer.
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _reason(error: BaseException) -> str:
    # asyncio replaces strerror with "Connect call failed (...)"; the errno says more.
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__
