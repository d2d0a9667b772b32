"""Latency probes: the agent measures round-trip times to the ProbeTargets of its view.

Why: the GSLB's ``latency`` policy sends a client to the site with the
lowest measured RTT to the client's network; only the edge can measure
that, from where the users' traffic leaves (docs/architecture.md, "The
GSLB"). Each agent reports ``Node.status.latency: {key: ms}`` (a network
in CIDR form, or ``site/<name>``), the latency controller takes the median
over each site's nodes.

What (:func:`probe_targets`, pure): every target of every ProbeTargets
object of the view, deduplicated by key, at most :data:`MAX_TARGETS`:
site targets first (not the node's own site), then the operators' objects,
then the cloud's ``gslb-resolvers`` (so a flood of discovered networks
cannot push out what the operator asked for). A site target without a port
is probed on this node's cache admin port (every site runs the same cache
template); without a cache it is skipped.

How (:class:`RttSamples`, pure): the last :data:`SAMPLES` results per
target; the reported figure is the median of the successful ones, rounded
to two significant digits (so a steady link gives byte-identical reports,
which cost the hub nothing), clamped to
:data:`~edgefleet.api.probetargets.MAX_RTT_MS`. A target whose last
:data:`SAMPLES` probes all failed is not reported; targets that left the
view are forgotten.

The prober (:class:`LatencyProber`, a thin asyncio loop) runs a round every
``period`` seconds with ±20 % jitter (agents that started together do not
probe in step), at most :data:`CONCURRENCY` probes at once, each bounded by
``timeout`` (1 s): a slow or silent target costs one timeout, never a
stuck round. ``source`` binds the probes to a local address (a node with
several addresses measures from the one its users reach). When the report
changes it calls ``on_change`` (the agent asks for a status report; the hub
writes ``latency`` as a lazy field, at most every few seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.api.probetargets import MAX_RTT_MS, RESOLVERS_NAME, SITE_PREFIX

log = logging.getLogger("edgefleet.edge.latency")

DEFAULT_PERIOD = 10.0
PROBE_TIMEOUT = 1.0
MAX_TARGETS = 64
"""Security limit: targets one agent probes (the view may list more; see the module docstring)."""
SAMPLES = 5
"""Results kept per target; the report is their median."""
CONCURRENCY = 8
"""Probes in flight at once."""
JITTER = 0.2
MAX_HTTP_LINE = 8 * 1024
"""Security limit: longest status line read from an http target."""


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to probe: its report key, where, and how."""

    key: str
    host: str
    port: int
    method: str = "tcp"
    path: str = "/"


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _target(item: Mapping[str, Any], cache_port: int | None) -> Target | None:
    network, site, address = item.get("network"), item.get("site"), item.get("address")
    if not isinstance(address, str):
        return None
    port = item.get("port")
    if not isinstance(port, int):
        port = 53 if network is not None else cache_port
    if port is None:
        return None
    method = "http" if item.get("method") == "http" else "tcp"
    path = item.get("path") if isinstance(item.get("path"), str) else "/"
    key = network if isinstance(network, str) else f"{SITE_PREFIX}{site}" if isinstance(site, str) else None
    return None if key is None else Target(key, address, port, method, str(path))


def probe_targets(
    objects: Iterable[Mapping[str, Any]], own_site: str, cache_port: int | None, limit: int = MAX_TARGETS
) -> list[Target]:
    """What to probe, from the ProbeTargets documents of the view (see the module docstring)."""
    sites: list[Target] = []
    operators: list[Target] = []
    discovered: list[Target] = []
    for document in sorted(objects, key=lambda doc: str(_dict(doc.get("metadata")).get("name", ""))):
        name = _dict(document.get("metadata")).get("name")
        for item in _dict(document.get("spec")).get("targets") or []:
            target = _target(_dict(item), cache_port)
            if target is None or target.key == f"{SITE_PREFIX}{own_site}":
                continue
            if target.key.startswith(SITE_PREFIX):
                sites.append(target)
            elif name == RESOLVERS_NAME:
                discovered.append(target)
            else:
                operators.append(target)
    chosen: dict[str, Target] = {}
    for target in (*sites, *operators, *discovered):
        if len(chosen) >= limit:
            break
        chosen.setdefault(target.key, target)
    return list(chosen.values())


def figure(ms: float) -> float:
    """An RTT as reported: clamped to [0, MAX_RTT_MS], two significant digits."""
    return float(f"{min(max(ms, 0.0), MAX_RTT_MS):.2g}")


class RttSamples:
    """The last :data:`SAMPLES` results per target and the figures they make (see the module docstring)."""

    def __init__(self, samples: int = SAMPLES) -> None:
        if samples < 1:
            raise ValueError("samples must be at least 1")
        self.samples = samples
        self._results: dict[str, deque[float | None]] = {}

    def observe(self, key: str, rtt_ms: float | None) -> None:
        """One result: the RTT in ms, or None for a failed probe."""
        self._results.setdefault(key, deque(maxlen=self.samples)).append(rtt_ms)

    def retain(self, keys: Iterable[str]) -> None:
        """Forget targets not in ``keys``."""
        keep = set(keys)
        for key in [key for key in self._results if key not in keep]:
            del self._results[key]

    def report(self) -> dict[str, float]:
        """``{key: ms}``: the median of each target's successful recent results, by key."""
        out = {}
        for key, results in sorted(self._results.items()):
            good = [value for value in results if value is not None]
            if good:
                out[key] = figure(statistics.median(good))
        return out


Probe = Callable[[Target, float, str | None], Awaitable[float | None]]


async def measure(target: Target, time_limit: float, source: str | None = None) -> float | None:
    """One probe: the RTT in ms, or None when the target did not answer within ``time_limit`` seconds."""
    local = (source, 0) if source else None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(time_limit):
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection(
                target.host, target.port, local_addr=local, limit=MAX_HTTP_LINE
            )
            if target.method == "tcp":
                return (time.perf_counter() - started) * 1000.0
            host = f"[{target.host}]" if ":" in target.host else target.host
            request = f"HEAD {target.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgefleet-latency\r\n\r\n"
            started = time.perf_counter()
            writer.write(request.encode("ascii"))
            await writer.drain()
            line = await reader.readline()
            if not line.startswith(b"HTTP/"):
                return None
            return (time.perf_counter() - started) * 1000.0
    except (TimeoutError, OSError, ValueError, UnicodeEncodeError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class LatencyProber:
    """Every ``period`` seconds (jittered): probe the targets, keep the samples, call ``on_change``."""

    def __init__(
        self,
        targets: Callable[[], list[Target]],
        on_change: Callable[[], None],
        *,
        period: float = DEFAULT_PERIOD,
        timeout: float = PROBE_TIMEOUT,
        source: str | None = None,
        probe: Probe = measure,
    ) -> None:
        if period <= 0:
            raise ValueError("--latency-probe-period must be positive")
        self.period = period
        self.timeout = min(timeout, period)
        self.source = source
        self.samples = RttSamples()
        self._targets = targets
        self._on_change = on_change
        self._probe = probe
        self._reported: dict[str, float] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)

    def report(self) -> dict[str, float]:
        """The figures to put in ``Node.status.latency``."""
        return self._reported

    async def run(self) -> None:
        """Until cancelled; one failing round (a bug) is logged and the next one tried."""
        while True:
            started = time.monotonic()
            try:
                await self.probe_once()
            except Exception:
                log.exception("latency probe round failed")
            pause = self.period * random.uniform(1.0 - JITTER, 1.0 + JITTER)
            await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))

    async def probe_once(self) -> bool:
        """One round; True if the report changed."""
        targets = self._targets()
        self.samples.retain(target.key for target in targets)
        results = await asyncio.gather(*(self._bounded(target) for target in targets))
        for target, rtt in zip(targets, results, strict=True):
            self.samples.observe(target.key, rtt)
        report = self.samples.report()
        if report == self._reported:
            return False
        self._reported = report
        self._on_change()
        return True

    async def _bounded(self, target: Target) -> float | None:
        async with self._limit:
            with contextlib.suppress(Exception):  # a probe that breaks is a failed probe, never a dead loop
                return await self._probe(target, self.timeout, self.source)
            return None
