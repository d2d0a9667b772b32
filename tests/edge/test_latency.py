"""Latency probes on the agent: what it probes, the figures it reports, and real probes on loopback.

Pure: the targets from a view (order, bounds, its own site left out, default
ports), the samples (median, failures, forgetting), the report's rounding.
Then one round of the prober with an injected probe, and :func:`measure`
against real local servers (TCP, HTTP, a closed port, a silent one).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from edgefleet.edge.latency import LatencyProber, RttSamples, Target, figure, measure, probe_targets


def targets_doc(name: str, *targets: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ProbeTargets", "metadata": {"name": name}, "spec": {"targets": list(targets)}}


def test_sites_first_then_the_operators_then_the_discovered_resolvers_bounded() -> None:
    view = [
        targets_doc("gslb-resolvers", *({"network": f"198.51.{i}.0/24", "address": f"198.51.{i}.9"} for i in range(9))),
        targets_doc("fleet-sites", {"site": "par", "address": "127.0.0.1"}, {"site": "ams", "address": "127.0.0.2"}),
        targets_doc("clients", {"network": "10.0.0.0/8", "address": "10.0.0.1", "port": 8080, "method": "http"}),
        targets_doc("dup", {"network": "10.0.0.0/8", "address": "10.9.9.9"}),
    ]
    chosen = probe_targets(view, "par", 9090, limit=4)
    assert chosen == [
        Target("site/ams", "127.0.0.2", 9090),
        Target("10.0.0.0/8", "10.0.0.1", 8080, "http", "/"),
        Target("198.51.0.0/24", "198.51.0.9", 53),
        Target("198.51.1.0/24", "198.51.1.9", 53),
    ]
    assert [target.key for target in probe_targets(view, "par", None)][:2] == ["10.0.0.0/8", "198.51.0.0/24"]


def test_samples_report_the_median_of_recent_successes() -> None:
    samples = RttSamples(samples=3)
    for value in (10.0, None, 30.0, 20.0):
        samples.observe("10.0.0.0/8", value)
    assert samples.report() == {"10.0.0.0/8": 25.0}  # the last three: None, 30, 20
    for _ in range(3):
        samples.observe("10.0.0.0/8", None)
    assert samples.report() == {}
    samples.observe("site/ams", 1.234)
    samples.retain(["site/ams"])
    assert samples.report() == {"site/ams": 1.2}
    with pytest.raises(ValueError):
        RttSamples(samples=0)


def test_figures_are_clamped_and_rounded_to_two_digits() -> None:
    assert (figure(81.34), figure(0.4321), figure(1234.0), figure(-1.0), figure(1e9)) == (81, 0.43, 1200, 0, 60000)


async def test_a_round_reports_and_calls_on_change_only_on_change() -> None:
    changes: list[int] = []
    results = {"a": 12.0, "b": None}

    async def probe(target: Target, time_limit: float, source: str | None) -> float | None:
        assert time_limit == 0.5 and source == "127.0.0.9"
        if target.key == "boom":
            raise RuntimeError("a probe bug")
        return results[target.key]

    targets = [Target("a", "127.0.0.1", 1), Target("b", "127.0.0.1", 2), Target("boom", "127.0.0.1", 3)]
    prober = LatencyProber(
        lambda: targets, lambda: changes.append(1), period=2, timeout=0.5, source="127.0.0.9", probe=probe
    )
    assert await prober.probe_once() is True
    assert prober.report() == {"a": 12.0} and changes == [1]
    assert await prober.probe_once() is False and changes == [1]
    with pytest.raises(ValueError, match="positive"):
        LatencyProber(lambda: [], lambda: None, period=0)


async def test_measure_tcp_http_closed_and_silent_targets() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        tcp = await measure(Target("t", "127.0.0.1", port), 2.0, "127.0.0.1")
        http = await measure(Target("h", "127.0.0.1", port, "http"), 2.0)
        assert tcp is not None and 0 <= tcp < 2000 and http is not None and 0 <= http < 2000
        assert await measure(Target("c", "127.0.0.1", closed_port), 1.0) is None
        silent_port = silent.getsockname()[1]
        assert await measure(Target("s", "127.0.0.1", silent_port, "http"), 0.2) is None  # connects, never answers
    finally:
        silent.close()
        server.close()
        await server.wait_closed()
