"""Fleet simulator: thousands of simulated edge agents against real ``edgefleet cloud`` processes.

    .venv/bin/python bench/fleet_sim.py [push] [--nodes 1000,5000,10000] [--idle-seconds 30] [--writes 20]
    .venv/bin/python bench/fleet_sim.py replicas [--nodes 3000] [--observe-seconds 150] [--plot FILE]

What a simulated agent is: the REAL agent link code, :class:`edgefleet.edge.hubclient.HubClient`
driving :class:`edgefleet.sync.agent.AgentSession` over a real WebSocket, with an in-memory local
view (key -> rev only) instead of SQLite and no workload processes. Its status report looks like an
idle real agent's (agentVersion, one running workload, no purges, prefetches or peer votes; like a
real agent it does not report its synced revision, which the hub takes from its acks), so the
cloud's status-write path is exercised as with real nodes. The agents are spread over ``--workers``
processes (this same file run as ``fleet_sim.py worker SPEC``), each running its share on one uvloop
event loop and talking to the parent by JSON lines on stdin/stdout. Nodes are grouped in sites like
a real CDN (``--nodes-per-site``, default 10; sites ``sim-0000``... of tier edge, nodes labelled
``sim=fleet``) and one Workload ``sim-probe`` selects them all. With a *tracked* workload
(``FleetOptions.track``, used by bench/rollout_scale.py) the agents also run it: each keeps the
document its view carries and reports ``{revision: template_revision(template), ready: true, state:
Running}`` for it as soon as a new revision arrives (optionally ``Starting`` for ``restart_seconds``
first), stamping when it received the revision, was ready and built the report that says so.

Joining: each worker joins its own share over HTTP (async httpx, ``--join-concurrency`` requests
at a time, one bootstrap token). Credentials are cached in ``--state DIR`` (with the SQLite store
or etcd data of a local cloud), so a second run against the same store checks each cached
credential with one GET of its own Node and joins only the nodes whose credential no longer works.

Scenarios:

``push`` (default): for each count in ``--nodes``, a fresh cloud (SQLite, in ``--state`` or a
temporary directory; or ``--cloud URL --token T`` to attach to one you run, with ``--cloud-pid``
for CPU and RSS). Agents connect with a ramp of ``--connect-rate`` per second (``--storm``: all at
once), idle ``--idle-seconds`` while the tool measures the cloud process's CPU (utime+stime from
/proc, % of one core), its RSS, and store writes per second (the increase of
``edgefleet_store_revision`` on /metrics). Then ``--writes`` merge patches of an annotation of the
Workload, one at a time, each waited for until every agent committed it: write-to-commit latency
over all nodes (workers stamp commits with time.time(), one clock for all processes of the
machine), and the hub's CPU per push per 1,000 nodes (its utime+stime over the pushes, divided
by pushes and thousands of nodes; also "above idle", less what the idle window's rate would
have spent): unlike latency, it does not depend on what else the machine runs. One line per
count; ``--json FILE`` keeps every figure.

``replicas``: a real 3-member etcd cluster and 3 cloud processes (``--hub-id sim-hub-<i>``), N
agents (default 3,000) given all three URLs (with a HubClient that takes ``servers``; an older
single-URL HubClient gets one replica at random per agent). Every second: sessions per replica
(``edgefleet_hub_sessions`` on each /metrics, when the hub exports it) and, from the agents' side,
who is connected to which hub (the welcome's hub id). Steps: connect all; kill -9 one replica; time
until every agent is connected again; restart it (same port and hub id); watch
``--observe-seconds`` and report when max/mean sessions per replica first falls to <= 1.1 and stays
there; push one more Workload change and check that no change is lost: every agent holds the
latest sim-probe and its whole view equals the view the cloud computes for it
(:class:`edgefleet.sync.views.FleetIndex` over the API's listing; views differ per node: each
holds its own Node and its site's). Plot of sessions per replica over time to ``--plot``.

Why this shape: separate processes measure the hub, not a simulator that shares its CPU quota
inside one interpreter; JSON lines keep workers independent and debuggable; joining in the
workers and caching credentials make 10,000 nodes practical (a join costs the cloud O(nodes)).
Lean agents: key -> rev holdings (no objects but the tracked Workload's), one Random and one
status report per state shared by all agents of a worker, ``__slots__``. Everything is bounded:
each wait has a timeout; Ctrl-C or an error stops every worker, cloud and etcd member (workers also
die with the parent: PDEATHSIG). Only loopback addresses. The targets are printed beside the
figures; the bench never fails on them.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ctypes
import gc
import inspect
import json
import logging
import math
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/ and bench/

from bench import benchutil
from tests.cloudproc import EDGEFLEET, CloudProcess, free_port

import edgefleet
from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.edge.hubclient import HubClient
from edgefleet.sync.agent import ApplyBatch, LocalState
from edgefleet.sync.views import digest

API = "/apis/edgefleet.io/v1"
PROBE = "sim-probe"
PROBE_KEY = f"/registry/workloads/{PROBE}"
MARK = "sim/write"
LABELS = {"sim": "fleet"}
VIEW_KINDS = ("nodes", "sites", "workloads", "domains", "purges", "prefetches", "clusterinfos")
"""URL plurals that can be in a node's view (what the expected-view check lists)."""

TARGET_NODES = 10_000
TARGETS = {  # at TARGET_NODES; printed beside the figures, never enforced
    "push_p99_ms": 1000.0,
    "hub_cpu_idle_pct": 25.0,
    "store_writes_idle_per_s": 50.0,
    "hub_rss_mib": 1024.0,
}
BALANCED_RATIO = 1.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRIPT = str(Path(__file__).resolve())

log = logging.getLogger("fleet_sim")


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# --- /proc and system ---------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def raise_nofile() -> None:
    """Soft open-files limit up to the hard one: 10,000 sockets need it (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (a worker never outlives the tool)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: value}, labelled series of one name summed."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.partition("{")[0]
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


async def scrape(http: httpx.AsyncClient, base_url: str) -> dict[str, float] | None:
    try:
        response = await http.get(base_url + "/metrics", timeout=3.0)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


def sync_url(server: str) -> str:
    scheme, _, rest = server.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/edge/v1/sync"


# --- the worker: simulated agents ---------------------------------------------------------------

AGENT_VERSION = edgefleet.__version__
WORKLOADS = {PROBE: {"revision": "sim", "state": "Running", "ready": True, "restarts": 0}}
"""The status of the one workload an idle simulated node runs: shared by every agent, never mutated."""
NO_TASKS: list[Any] = []
NO_VOTES: dict[str, Any] = {}


class SimAgent:
    """The agent side of the link (a ``LinkHandler``) with a key -> rev view; costs a few hundred bytes."""

    __slots__ = (
        "client",
        "credential",
        "epoch",
        "fleet",
        "holdings",
        "hub",
        "marker",
        "name",
        "report",
        "revision",
        "site",
        "task",
        "tracked",
    )

    def __init__(self, fleet: Fleet, name: str, site: str, credential: str | None) -> None:
        self.fleet = fleet
        self.name = name
        self.site = site
        self.credential = credential
        self.holdings: dict[str, int] = {}
        self.revision = 0
        self.epoch = ""
        self.hub = ""
        self.marker = ""
        self.task: asyncio.Task[None] | None = None
        self.client: HubClient | None = None
        self.report: dict[str, Any] | None = None
        """With a tracked workload: this agent's status report (one shared dict per state, see Fleet.report_of)."""
        self.tracked: dict[str, Any] | None = None
        """With a tracked workload: its document as this agent last received it."""

    def local_state(self) -> LocalState:
        return LocalState(self.epoch, self.revision, self.holdings, AGENT_VERSION)  # the session copies it

    async def apply_batch(self, batch: ApplyBatch) -> None:
        now = time.time()
        tracked_key = self.fleet.tracked_key
        for key in batch.delete:
            self.holdings.pop(key, None)
            if key == tracked_key:
                self.fleet.untrack(self)
        for item in batch.put:
            self.holdings[sys.intern(item.key)] = item.rev
            if item.key == PROBE_KEY:
                annotations = item.object.get("metadata", {}).get("annotations") or {}
                marker = annotations.get(MARK)
                if marker and marker != self.marker:  # a resend after a reconnect is not a new commit
                    self.marker = marker
                    self.fleet.committed(marker, now)
            if item.key == tracked_key:
                self.fleet.received(self, item.object, now)  # kept: the agent "runs" it
                continue
            # Committed: the object is not needed any more (the session keeps key and rev only); emptied
            # now in case the batch outlives this call (an idle link's last batch, in its caller's locals).
            item.object.clear()
        self.revision, self.epoch = batch.revision, batch.epoch

    def status_report(self) -> dict[str, Any]:
        if self.report is not None:  # a tracked workload: what this agent runs of it
            self.fleet.reporting(self)
            return self.report
        return {
            "agentVersion": AGENT_VERSION,
            "workloads": WORKLOADS,
            "purges": NO_TASKS,
            "prefetches": NO_TASKS,
            "peerVotes": NO_VOTES,
        }

    async def read_logs(self, workload: str, tail: int) -> str:
        return ""

    def link_changed(self, connected: bool, hub: str) -> None:
        self.fleet.link(self, connected, hub)


class LogCounter(logging.Handler):
    """Counts the agents' log records by message template (how many 503s, link losses...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.msg}"[:160]] += 1
        if self.counts.total() <= 50:  # the first few in full, in the worker's log file
            sys.stderr.write(f"{record.levelname} {record.getMessage()}\n")


LOG_COUNTER = LogCounter()

HUBCLIENT_PARAMS = inspect.signature(HubClient.__init__).parameters
MULTI_SERVER = "servers" in HUBCLIENT_PARAMS
"""True once HubClient takes a list of server base URLs (else one ``url`` per agent)."""


class Fleet:
    """One worker's agents, counters and commit times; answers the parent's commands."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.rng = random.Random(spec.get("seed"))  # one for all agents: a Random is 2.5 KB
        self.agents = [SimAgent(self, name, site, cred) for name, site, cred in spec["nodes"]]
        self.connected = 0
        self.connects = 0
        self.hubs: Counter[str] = Counter()
        self.commits: dict[str, array.array[float]] = {}
        self._dirty: set[str] = set()
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = 0
        track = spec.get("track") or {}
        self.tracked_workload: str = track.get("workload", "")
        self.tracked_key = f"/registry/workloads/{self.tracked_workload}" if self.tracked_workload else None
        """The Workload whose revision the agents report (the rollout scenario), or None."""
        self.restart_seconds = float(track.get("restart_seconds", 0.0))
        self._reports: dict[tuple[str | None, bool], dict[str, Any]] = {}
        self.steps: dict[str, dict[str, list[float]]] = {}
        """revision -> agent -> [received, ready, reported] (time.time()) of the tracked workload."""
        self._unreported: dict[str, list[float]] = {}  # agent -> its step whose ready report is not built yet
        if self.tracked_key:
            for agent in self.agents:
                agent.report = self.report_of(None, False)

    # callbacks from the agents
    def link(self, agent: SimAgent, connected: bool, hub: str) -> None:
        if agent.hub:
            self.hubs[agent.hub] -= 1
            self.connected -= 1
            agent.hub = ""
        if connected:
            agent.hub = hub
            self.hubs[hub] += 1
            self.connected += 1
            self.connects += 1

    def committed(self, marker: str, at: float) -> None:
        self.commits.setdefault(marker, array.array("d")).append(at)
        self._dirty.add(marker)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(0.01, self._flush_commits)

    def _flush_commits(self) -> None:
        self._flush_scheduled = False
        counts = {marker: len(self.commits[marker]) for marker in self._dirty}
        self._dirty.clear()
        emit({"ev": "commits", "counts": counts})

    # the tracked workload: agents "run" the revision their view carries
    def report_of(self, revision: str | None, ready: bool) -> dict[str, Any]:
        """The status report of an agent running ``revision`` of the tracked workload (None: not running it).

        Like a real agent's (InstanceStatus as the supervisor reports it); one dict per state, shared by every
        agent in that state and never mutated, so an agent costs a pointer.
        """
        report = self._reports.get((revision, ready))
        if report is None:
            workloads = (
                {}
                if revision is None
                else {
                    self.tracked_workload: {
                        "revision": revision,
                        "state": "Running" if ready else "Starting",
                        "ready": ready,
                        "restarts": 0,
                    }
                }
            )
            report = self._reports[(revision, ready)] = {
                "agentVersion": AGENT_VERSION,
                "workloads": workloads,
                "purges": NO_TASKS,
                "prefetches": NO_TASKS,
                "peerVotes": NO_VOTES,
            }
        return report

    def received(self, agent: SimAgent, document: dict[str, Any], at: float) -> None:
        """The tracked Workload arrived: run its template's revision, ready at once or after restart_seconds."""
        agent.tracked = document
        try:
            revision = template_revision(WorkloadTemplate.model_validate(document["spec"]["template"]))
        except (KeyError, TypeError, ValidationError) as exc:
            sys.stderr.write(f"{agent.name}: invalid {self.tracked_workload}: {exc}\n")
            return
        if agent.report is self.report_of(revision, True) or agent.report is self.report_of(revision, False):
            return  # the revision it runs already (a resend after a reconnect, an edit outside the template)
        self.steps.setdefault(revision, {})[agent.name] = [at, 0.0, 0.0]
        if self.restart_seconds <= 0:
            self._ready(agent, revision)
            return
        agent.report = self.report_of(revision, False)  # a process restart: the new revision, starting
        asyncio.get_running_loop().call_later(self.restart_seconds, self._restarted, agent, revision)
        if agent.client is not None:
            agent.client.status_changed()

    def _restarted(self, agent: SimAgent, revision: str) -> None:
        if agent.report is self.report_of(revision, False):  # not replaced meanwhile by another revision
            self._ready(agent, revision)

    def _ready(self, agent: SimAgent, revision: str) -> None:
        agent.report = self.report_of(revision, True)
        step = self.steps[revision][agent.name]
        step[1] = time.time()
        self._unreported[agent.name] = step
        if agent.client is not None:
            agent.client.status_changed()  # the HubClient reports soon (at most one report a second)

    def reporting(self, agent: SimAgent) -> None:
        """The HubClient builds a report: the first one that says the new revision is ready stamps its step."""
        step = self._unreported.pop(agent.name, None)
        if step is not None:
            step[2] = time.time()

    def untrack(self, agent: SimAgent) -> None:
        """The tracked Workload left this agent's view: it runs nothing of it any more."""
        agent.tracked = None
        agent.report = self.report_of(None, False)
        self._unreported.pop(agent.name, None)
        if agent.client is not None:
            agent.client.status_changed()

    def running(self) -> dict[str, int]:
        """Revision -> agents reporting it ready, of the tracked workload."""
        counts: Counter[str] = Counter()
        for agent in self.agents:
            for status in ((agent.report or {}).get("workloads") or {}).values():
                if status["ready"]:
                    counts[status["revision"]] += 1
        return dict(counts)

    # commands from the parent
    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "ping":
            return {"agents": len(self.agents)}
        if op == "join":
            return await self.join(command)
        if op == "connect":
            task = asyncio.create_task(self.connect(float(command["rate"])))
            self._tasks.add(task)
            return {"agents": sum(1 for a in self.agents if a.credential)}
        if op == "stats":
            return {
                "connected": self.connected,
                "connects": self.connects,
                "started": self.started,
                "agents": len(self.agents),
                "hubs": {h: n for h, n in self.hubs.items() if n},
                "tasks": len(asyncio.all_tasks()),
                "logs": dict(LOG_COUNTER.counts),
            }
        if op == "views":
            return {
                "digests": {a.name: digest(a.holdings.items()) for a in self.agents if a.task},
                "probe": {a.name: a.holdings.get(PROBE_KEY, 0) for a in self.agents if a.task},
            }
        if op == "samples":
            text = json.dumps({m: list(t) for m, t in self.commits.items()})
            await asyncio.to_thread(Path(command["path"]).write_text, text)
            return {"path": command["path"], "count": sum(len(t) for t in self.commits.values())}
        if op == "memory":
            return self.memory(int(command.get("top", 15)))
        if op == "tracked":
            revision = command.get("revision")
            return {"running": self.running(), "steps": self.steps.get(revision, {}) if revision else {}}
        raise ValueError(f"unknown op {op!r}")

    async def join(self, command: dict[str, Any]) -> dict[str, Any]:
        """Join (or check the cached credential of) every node of this worker."""
        outcome: Counter[str] = Counter()
        errors: list[str] = []
        fresh: dict[str, str] = {}
        semaphore = asyncio.Semaphore(int(command["concurrency"]))
        limits = httpx.Limits(max_connections=int(command["concurrency"]))
        async with httpx.AsyncClient(base_url=command["api"], timeout=60.0, limits=limits, trust_env=False) as http:

            async def one(agent: SimAgent) -> None:
                async with semaphore:
                    try:
                        kind = await join_one(http, agent, command["bootstrap"], command["admin"])
                    except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
                        outcome["failed"] += 1
                        agent.credential = None
                        if len(errors) < 5:
                            errors.append(f"{agent.name}: {exc!r}"[:300])
                        return
                    outcome[kind] += 1
                    if kind == "joined" and agent.credential:
                        fresh[agent.name] = agent.credential

            await asyncio.gather(*(one(agent) for agent in self.agents))
        return {
            "joined": outcome["joined"],
            "reused": outcome["reused"],
            "failed": outcome["failed"],
            "errors": errors,
            "credentials": fresh,
        }

    async def connect(self, rate: float) -> None:
        """Start every agent's HubClient, ``rate`` per second (0: all at once)."""
        servers = list(self.spec["servers"])
        if self.spec.get("trace_memory"):
            import tracemalloc

            tracemalloc.start(1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = 1.0 / rate if rate > 0 else 0.0
        for agent in self.agents:
            if not agent.credential:
                continue
            client = agent.client = make_hub_client(agent, servers, self.rng, float(self.spec["ping_interval"]))
            agent.task = asyncio.create_task(client.run())
            self.started += 1
            if interval:
                delay = start + self.started * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif self.started % 200 == 0:
                await asyncio.sleep(0)

    def memory(self, top: int) -> dict[str, Any]:
        gc.collect()
        out: dict[str, Any] = {
            "agents": self.started,
            "tasks": len(asyncio.all_tasks()),
            "gc_objects": len(gc.get_objects()),
        }
        import tracemalloc

        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.statistics("lineno")
            per = max(1, self.started)
            out["traced_bytes_per_agent"] = sum(s.size for s in stats) / per
            out["top"] = [
                [f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size / per, s.count / per] for s in stats[:top]
            ]
        return out

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        tasks = [a.task for a in self.agents if a.task is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def make_hub_client(agent: SimAgent, servers: list[str], rng: random.Random, ping_interval: float) -> HubClient:
    """The real HubClient, with whatever server interface it has (``servers`` or one ``url``)."""
    assert agent.credential is not None
    kwargs: dict[str, Any] = {
        "credential": agent.credential.__str__,
        "node_name": agent.name,
        "handler": agent,
        "ping_interval": ping_interval,
    }
    if "rng" in HUBCLIENT_PARAMS:
        kwargs["rng"] = rng
    if MULTI_SERVER:
        kwargs["servers"] = servers
    else:
        kwargs["url"] = sync_url(rng.choice(servers))
    return HubClient(**kwargs)


async def join_one(http: httpx.AsyncClient, agent: SimAgent, bootstrap: str, admin: str) -> str:
    """'reused' when the cached credential still reads its Node, else 'joined' (retries, 409 revoke)."""
    if agent.credential:
        response = await http.get(f"{API}/nodes/{agent.name}", headers={"Authorization": f"Bearer {agent.credential}"})
        if response.status_code == 200:
            return "reused"
    body = {"name": agent.name, "site": agent.site, "labels": LABELS}
    last = ""
    for attempt in range(6):
        try:
            response = await http.post("/edge/v1/join", json=body, headers={"Authorization": f"Bearer {bootstrap}"})
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code in (200, 201):
                agent.credential = str(response.json()["credential"])
                return "joined"
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code == 409:  # Ready with a credential we lost: revoke, then join again
                await http.delete(
                    f"/edge/v1/nodes/{agent.name}/credentials", headers={"Authorization": f"Bearer {admin}"}
                )
            elif response.status_code < 500 and response.status_code != 429:
                break
        await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
    raise RuntimeError(f"join failed: {last}")


def emit(message: dict[str, Any]) -> None:
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]


async def serve_worker(spec: dict[str, Any]) -> None:
    fleet = Fleet(spec)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    running: set[asyncio.Task[None]] = set()

    async def answer(command: dict[str, Any]) -> None:
        try:
            reply = await fleet.handle(command)
        except Exception as exc:  # reported to the parent, which decides
            reply = {"error": f"{exc.__class__.__name__}: {exc}"[:1000]}
        emit({"id": command["id"], **reply})

    try:
        while True:
            line = await reader.readline()
            if not line:
                return  # the parent is gone
            command = json.loads(line)
            if command["op"] == "stop":
                await fleet.stop()
                emit({"id": command["id"], "stopped": True})
                return
            task = asyncio.create_task(answer(command))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        for task in running:
            task.cancel()


def worker_main(spec_path: str) -> None:
    die_with_parent()
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (Ctrl-C reaches it too)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    hub_log = logging.getLogger("edgefleet.edge.hub")
    hub_log.addHandler(LOG_COUNTER)
    hub_log.setLevel(logging.INFO)
    hub_log.propagate = False  # counted, not written: thousands of agents losing a replica say it thousands of times
    spec = json.loads(Path(spec_path).read_text())
    import uvloop

    uvloop.run(serve_worker(spec))


# --- the parent: workers, clouds, measurements ------------------------------------------------


class WorkerError(RuntimeError):
    pass


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process
    log_path: Path
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    commits: dict[str, int] = field(default_factory=dict)
    next_id: int = 0
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            if "id" in message:
                future = self.pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("ev") == "commits":
                self.commits.update(message["counts"])
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WorkerError(f"worker {self.index} exited:\n{self.log_tail()}"))

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-10:])

    async def request(self, op: str, within: float, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.next_id += 1
        request_id = self.next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            self.proc.stdin.write((json.dumps({"id": request_id, "op": op, **args}) + "\n").encode())
            await self.proc.stdin.drain()
            reply = await asyncio.wait_for(future, within)
        finally:
            self.pending.pop(request_id, None)
        if "error" in reply:
            raise WorkerError(f"worker {self.index}: {op}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        """Ask the worker to close its agents' links and exit (it exits by itself); kill it after 20 s."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, ConnectionError):
                self.proc.stdin.write(b'{"id": 0, "op": "stop"}\n')
                await self.proc.stdin.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 20)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class Children:
    """Every process the tool started, for the last-resort cleanup however it ends."""

    clouds: list[CloudProcess] = []
    worker_pids: list[int] = []
    etcd: list[Any] = []

    @classmethod
    def stop_all(cls) -> None:
        for pid in cls.worker_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for cloud in cls.clouds:
            with contextlib.suppress(Exception):
                cloud.stop()
        for cluster in cls.etcd:
            with contextlib.suppress(Exception):
                cluster.stop()


class SimCloud(CloudProcess):
    """A :class:`CloudProcess` that also dies with this tool (PDEATHSIG), even when the tool is killed -9."""

    def launch(self) -> None:
        """Start the process (call it on the event loop's thread: the death signal follows the forking thread)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.data_dir / "admin-token"
        args = [
            EDGEFLEET,
            "cloud",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--store",
            self.store_url,
            "--admin-token-file",
            str(token_file),
            *self.extra_args,
        ]
        if not any(a.startswith("--dns-listen") for a in self.extra_args):
            args += ["--dns-listen", f"127.0.0.1:{self.dns_port}"]
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )

    def ready(self, timeout: float) -> None:
        self.wait_ready(timeout)
        token_file = self.data_dir / "admin-token"
        if token_file.exists():
            self.token = token_file.read_text().strip()


async def start_cloud(
    store_url: str, data_dir: Path, args: list[str], port: int | None = None, within: float = 120.0
) -> SimCloud:
    cloud = SimCloud(store_url, data_dir, extra_args=list(args))
    if port is not None:
        cloud.port = port
    Children.clouds.append(cloud)
    cloud.launch()
    await asyncio.to_thread(cloud.ready, within)
    return cloud


def node_names(count: int, per_site: int) -> list[tuple[str, str]]:
    """(node, site) for ``count`` nodes, ``per_site`` per site: sim-0000-n0, ... in sim-0000, ..."""
    out = []
    for i in range(count):
        site = f"sim-{i // per_site:04d}"
        out.append((f"{site}-n{i % per_site}", site))
    return out


def site_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"tier": "edge"}},
        "spec": {
            "region": "eu",
            "location": {"lat": 48.0, "lon": 2.0, "country": "FR"},
            "tier": "edge",
            "capacityGbps": 10,
        },
    }


WORKLOAD: dict[str, Any] = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Workload",
    "metadata": {"name": PROBE},
    "spec": {"nodeSelector": "sim=fleet", "template": {"command": ["true"]}},
}


class CredentialCache:
    """node -> credential, kept as JSON in the state directory (None: not kept)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.credentials: dict[str, str] = {}
        if path is not None and path.exists():
            with contextlib.suppress(ValueError, OSError):
                self.credentials = dict(json.loads(path.read_text()))

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.credentials))
            tmp.chmod(0o600)
            tmp.replace(self.path)


@dataclass
class FleetOptions:
    nodes: int
    per_site: int
    workers: int
    connect_rate: float
    join_concurrency: int
    ping_interval: float
    trace_memory: bool
    track: dict[str, Any] | None = None
    """{"workload": name, "restart_seconds": s}: the agents run and report that Workload's revision."""


class SimFleet:
    """The parent's handle on N simulated agents in W worker processes."""

    def __init__(
        self,
        options: FleetOptions,
        api_url: str,
        admin_token: str,
        servers: list[str],
        workdir: Path,
        cache: CredentialCache,
    ) -> None:
        self.options = options
        self.api_url = api_url
        self.admin_token = admin_token
        self.servers = servers
        self.workdir = workdir
        self.cache = cache
        self.workers: list[Worker] = []
        self.joined = 0
        self.http = httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60.0, trust_env=False
        )

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        await self.http.aclose()

    # preparation --------------------------------------------------------
    async def prepare(self, workload: dict[str, Any] = WORKLOAD) -> str:
        """Sites and the probe Workload (``workload`` when it is created) exist; returns a bootstrap token."""
        names = node_names(self.options.nodes, self.options.per_site)
        sites = sorted({site for _, site in names})
        listing = await self.http.get(f"{API}/sites")
        listing.raise_for_status()
        existing = {item["metadata"]["name"] for item in listing.json()["items"]}
        semaphore = asyncio.Semaphore(8)

        async def create(site: str) -> None:
            async with semaphore:
                response = await self.http.post(f"{API}/sites", json=site_doc(site))
                if response.status_code not in (201, 409):
                    raise RuntimeError(f"cannot create site {site}: {response.status_code} {response.text[:200]}")

        missing = [s for s in sites if s not in existing]
        started = time.monotonic()
        await asyncio.gather(*(create(s) for s in missing))
        if missing:
            progress(f"created {len(missing)} sites in {time.monotonic() - started:.1f} s")
        if (await self.http.get(f"{API}/workloads/{PROBE}")).status_code == 404:
            (await self.http.post(f"{API}/workloads", json=workload)).raise_for_status()
        response = await self.http.post("/edge/v1/bootstrap-tokens", json={"ttlSeconds": 7200})
        response.raise_for_status()
        return str(response.json()["token"])

    async def spawn(self) -> None:
        names = node_names(self.options.nodes, self.options.per_site)
        count = max(1, min(self.options.workers, len(names)))
        bounds = [len(names) * i // count for i in range(count + 1)]
        for index in range(count):
            share = names[bounds[index] : bounds[index + 1]]
            spec = {
                "index": index,
                "servers": self.servers,
                "ping_interval": self.options.ping_interval,
                "seed": index,
                "trace_memory": self.options.trace_memory,
                "track": self.options.track,
                "nodes": [[name, site, self.cache.credentials.get(name)] for name, site in share],
            }
            spec_path = self.workdir / f"worker-{index}.json"
            spec_path.write_text(json.dumps(spec))
            log_path = self.workdir / f"worker-{index}.log"
            with log_path.open("ab") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    SCRIPT,
                    "worker",
                    str(spec_path),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log_file,
                    limit=64 * 1024 * 1024,
                )
            Children.worker_pids.append(proc.pid)
            worker = Worker(index, proc, log_path)
            worker.reader = asyncio.create_task(worker.read())
            self.workers.append(worker)
        await asyncio.gather(*(w.request("ping", 60) for w in self.workers))  # imported and listening

    async def join(self, bootstrap: str, join_urls: list[str], within: float) -> dict[str, Any]:
        started = time.monotonic()
        replies = await asyncio.gather(
            *(
                w.request(
                    "join",
                    within,
                    api=join_urls[w.index % len(join_urls)],
                    bootstrap=bootstrap,
                    admin=self.admin_token,
                    concurrency=self.options.join_concurrency,
                )
                for w in self.workers
            )
        )
        seconds = time.monotonic() - started
        for reply in replies:
            self.cache.credentials.update(reply["credentials"])
        self.cache.save()
        total = {key: sum(r[key] for r in replies) for key in ("joined", "reused", "failed")}
        errors = [e for r in replies for e in r["errors"]][:5]
        self.joined = total["joined"] + total["reused"]
        rate = total["joined"] / seconds if seconds > 0 else 0.0
        progress(
            f"join: {total['joined']} joined, {total['reused']} reused from the cache, {total['failed']} failed "
            f"in {seconds:.1f} s ({rate:.0f} joins/s)" + (f"; first errors: {errors}" if errors else "")
        )
        return {**total, "seconds": round(seconds, 2), "joins_per_s": round(rate, 1), "errors": errors}

    # running ------------------------------------------------------------
    async def connect(self, rate: float) -> None:
        per_worker = rate / len(self.workers) if rate > 0 else 0.0
        await asyncio.gather(*(w.request("connect", 30, rate=per_worker) for w in self.workers))

    async def stats(self) -> dict[str, Any]:
        replies = await asyncio.gather(*(w.request("stats", 30) for w in self.workers))
        hubs: Counter[str] = Counter()
        logs: Counter[str] = Counter()
        for reply in replies:
            hubs.update(reply["hubs"])
            logs.update(reply["logs"])
        return {
            "connected": sum(r["connected"] for r in replies),
            "connects": sum(r["connects"] for r in replies),
            "started": sum(r["started"] for r in replies),
            "hubs": dict(hubs),
            "logs": dict(logs),
        }

    async def wait_connected(self, target: int, within: float, label: str) -> float:
        """Seconds until ``target`` agents are connected; TimeoutError with the count otherwise."""
        started = time.monotonic()
        last_print = started
        while True:
            stats = await self.stats()
            if stats["connected"] >= target:
                return time.monotonic() - started
            now = time.monotonic()
            if now - started > within:
                raise TimeoutError(f"{label}: {stats['connected']}/{target} agents connected after {within:.0f} s")
            if now - last_print >= 10:
                progress(f"{label}: {stats['connected']}/{target} connected ({stats['started']} started)")
                last_print = now
            await asyncio.sleep(0.5)

    def rss_mib(self) -> float:
        return sum(proc_rss_mib(w.proc.pid) or 0.0 for w in self.workers)

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(w.proc.pid) or 0.0 for w in self.workers)

    def commit_count(self, marker: str) -> int:
        return sum(w.commits.get(marker, 0) for w in self.workers)

    async def push(self, marker: str, expected: int, within: float) -> float:
        """Patch the probe Workload with ``marker``; wait until ``expected`` agents committed it. Returns sent time."""
        patch = json.dumps({"metadata": {"annotations": {MARK: marker}}})
        sent = time.time()
        response = await self.http.patch(
            f"{API}/workloads/{PROBE}", content=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        response.raise_for_status()
        deadline = time.monotonic() + within
        while self.commit_count(marker) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        return sent

    async def latencies(self, sent: dict[str, float]) -> list[float]:
        samples: list[float] = []
        for worker in self.workers:
            path = self.workdir / f"samples-{worker.index}.json"
            await worker.request("samples", 120, path=str(path))
            for marker, times in json.loads(path.read_text()).items():
                if marker in sent:
                    samples.extend(t - sent[marker] for t in times)
        return samples

    async def views(self) -> tuple[dict[str, str], dict[str, int]]:
        digests: dict[str, str] = {}
        probe: dict[str, int] = {}
        for reply in await asyncio.gather(*(w.request("views", 120) for w in self.workers)):
            digests.update(reply["digests"])
            probe.update(reply["probe"])
        return digests, probe

    async def memory(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.request("memory", 300) for w in self.workers)))

    async def tracked(self, revision: str | None = None) -> tuple[dict[str, int], dict[str, list[float]]]:
        """Of the tracked workload: revision -> agents reporting it ready; and, for ``revision``, agent ->
        [received, ready, reported] times (see :meth:`Fleet.received`)."""
        running: Counter[str] = Counter()
        steps: dict[str, list[float]] = {}
        for reply in await asyncio.gather(*(w.request("tracked", 60, revision=revision) for w in self.workers)):
            running.update(reply["running"])
            steps.update(reply["steps"])
        return dict(running), steps


async def expected_digests(http: httpx.AsyncClient, nodes: list[str]) -> dict[str, str]:
    """The view digest the cloud computes for each node, from the API's listing (the real FleetIndex)."""
    from edgefleet.sync.views import FleetIndex

    discovery = (await http.get(API)).json()
    plurals = [r["name"] for r in discovery["resources"] if r["name"] in VIEW_KINDS]
    items: list[tuple[str, int, dict[str, Any]]] = []
    revision = 0
    for plural in plurals:
        listing = (await http.get(f"{API}/{plural}")).json()
        revision = max(revision, int(listing["metadata"].get("resourceVersion") or 0))
        for doc in listing["items"]:
            mod = int(doc["metadata"].get("resourceVersion") or 0)
            items.append((f"/registry/{plural}/{doc['metadata']['name']}", mod, doc))
    index = FleetIndex()
    index.load(items, revision)
    return {node: digest((key, obj.rev) for key, obj in index.view(node).items()) for node in nodes}


# --- push scenario ------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def verdict(value: float | None, target: float) -> str:
    return "n/a" if value is None else ("ok" if value <= target else "MISS")


@dataclass
class Attached:
    url: str
    token: str
    pid: int | None


async def run_push_count(args: argparse.Namespace, count: int, workdir: Path) -> dict[str, Any]:
    state = Path(args.state) / f"push-sqlite-{count}" if args.state else workdir / f"push-{count}"
    state.mkdir(parents=True, exist_ok=True)
    cloud: CloudProcess | None = None
    attached: Attached | None = None
    if args.cloud:
        attached = Attached(args.cloud.rstrip("/"), args.token, args.cloud_pid)
        cache_dir = (
            Path(args.state) / ("attach-" + "".join(c if c.isalnum() else "_" for c in args.cloud))
            if args.state
            else state
        )
    else:
        progress(f"{count} nodes: starting a cloud on sqlite:///{state}/store.db")
        cloud = await start_cloud(f"sqlite:///{state}/store.db", state, args.cloud_arg)
        attached = Attached(cloud.url, cloud.token, cloud.proc.pid if cloud.proc else None)
        cache_dir = state
        if not attached.token:
            raise RuntimeError(f"no admin token in {state}/admin-token (a store of another run? remove {state})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    pid = attached.pid
    result: dict[str, Any] = {"nodes": count, "workers": 0, "cloud": attached.url}
    fleet = SimFleet(
        fleet_options(args, count),
        attached.url,
        attached.token,
        [attached.url],
        workdir,
        CredentialCache(cache_dir / "credentials.json"),
    )
    try:
        result["hub_rss_mib_start"] = proc_rss_mib(pid) if pid else None
        bootstrap = await fleet.prepare()
        await fleet.spawn()
        result["workers"] = len(fleet.workers)
        cpu_before_join = proc_cpu_seconds(pid) if pid else None
        result["join"] = await fleet.join(bootstrap, [attached.url], args.join_timeout)
        if fleet.joined == 0:
            raise RuntimeError("no node could join; see the worker logs")
        gc_sim_rss = fleet.rss_mib()
        hub_rss_before = proc_rss_mib(pid) if pid else None
        result["hub_rss_mib_before_connect"] = hub_rss_before
        cpu0 = proc_cpu_seconds(pid) if pid else None
        if cpu_before_join is not None and cpu0 is not None:
            result["join"]["hub_cpu_seconds"] = round(cpu0 - cpu_before_join, 1)
        rate = 0.0 if args.storm else args.connect_rate
        progress(
            f"{count} nodes: connecting {fleet.joined} agents in {len(fleet.workers)} workers "
            f"({'storm' if args.storm else f'{rate:.0f}/s'}; HubClient {'servers' if MULTI_SERVER else 'url'})"
        )
        t0 = time.monotonic()
        await fleet.connect(rate)
        connect_timeout = (fleet.joined / rate if rate else 0) + args.connect_timeout
        seconds = await fleet.wait_connected(fleet.joined, connect_timeout, f"{count} nodes")
        cpu1 = proc_cpu_seconds(pid) if pid else None
        result["agent_logs_connect"] = (await fleet.stats())["logs"]
        if result["agent_logs_connect"]:
            progress(f"{count} nodes: the agents logged while connecting: {result['agent_logs_connect']}")
        result["connect_seconds"] = round(seconds, 2)
        result["hub_cpu_pct_connect"] = (cpu1 - cpu0) / (time.monotonic() - t0) * 100 if cpu0 and cpu1 else None
        progress(
            f"{count} nodes: all {fleet.joined} connected in {seconds:.1f} s; settling {args.settle:.0f} s, "
            f"then idle {args.idle_seconds:.0f} s"
        )
        await asyncio.sleep(args.settle)
        result.update(await measure_idle(fleet, attached, pid, args.idle_seconds))
        sim_rss = fleet.rss_mib()
        result["sim_rss_mib"] = sim_rss + (proc_rss_mib(os.getpid()) or 0)
        result["sim_kib_per_agent"] = (sim_rss - gc_sim_rss) * 1024 / fleet.joined
        if hub_rss_before is not None and result.get("hub_rss_mib") is not None:
            result["hub_mib_per_1000_connections"] = (result["hub_rss_mib"] - hub_rss_before) / fleet.joined * 1000
        if args.trace_memory:
            result["sim_memory"] = await fleet.memory()
        hub_cpu, sim_cpu, started = (proc_cpu_seconds(pid) if pid else None), fleet.cpu_seconds(), time.monotonic()
        result.update(await measure_push(fleet, args, count))
        elapsed = time.monotonic() - started
        hub_cpu_end = proc_cpu_seconds(pid) if pid else None
        result["hub_cpu_pct_push"] = (
            (hub_cpu_end - hub_cpu) / elapsed * 100 if hub_cpu is not None and hub_cpu_end is not None else None
        )
        if hub_cpu is not None and hub_cpu_end is not None:
            result.update(push_cpu_figures(hub_cpu_end - hub_cpu, elapsed, result, fleet.joined))
        result["sim_cpu_pct_push"] = (fleet.cpu_seconds() - sim_cpu) / elapsed * 100
        result["load_avg_end"] = os.getloadavg()
        stats = await fleet.stats()
        result["connects_total"] = stats["connects"]
        result["connected_end"] = stats["connected"]
        result["agent_logs_end"] = stats["logs"]
    finally:
        await fleet.close()
        if cloud is not None:
            await asyncio.to_thread(cloud.stop)
            result["cloud_log_tail"] = "\n".join(cloud.log().splitlines()[-5:])
    return result


def fleet_options(args: argparse.Namespace, count: int) -> FleetOptions:
    workers = args.workers or min(8, max(2, math.ceil(count / 2500)))
    return FleetOptions(
        count,
        args.nodes_per_site,
        workers,
        args.connect_rate,
        args.join_concurrency,
        args.ping_interval,
        args.trace_memory,
    )


async def measure_idle(fleet: SimFleet, attached: Attached, pid: int | None, seconds: float) -> dict[str, Any]:
    """Hub CPU, RSS and store writes/s over an idle window of ``seconds``."""
    async with httpx.AsyncClient(trust_env=False) as http:
        before = await scrape(http, attached.url)
        cpu0, sim_cpu0, t0 = (proc_cpu_seconds(pid) if pid else None), fleet.cpu_seconds(), time.monotonic()
        rss_max = 0.0
        min_connected = fleet.joined
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
            rss_max = max(rss_max, (proc_rss_mib(pid) or 0.0) if pid else 0.0)
            min_connected = min(min_connected, (await fleet.stats())["connected"])
        elapsed = time.monotonic() - t0
        cpu1, sim_cpu1 = (proc_cpu_seconds(pid) if pid else None), fleet.cpu_seconds()
        after = await scrape(http, attached.url)
    out: dict[str, Any] = {
        "idle_seconds": round(elapsed, 1),
        "hub_cpu_pct_idle": (cpu1 - cpu0) / elapsed * 100 if cpu0 is not None and cpu1 is not None else None,
        "hub_rss_mib": proc_rss_mib(pid) if pid else None,
        "hub_rss_mib_max": rss_max or None,
        "sim_cpu_pct_idle": (sim_cpu1 - sim_cpu0) / elapsed * 100,
        "min_connected_idle": min_connected,
        "load_avg_idle": os.getloadavg(),
        "store_writes_per_s_idle": None,
    }
    if before and after:
        for name, key in (
            ("edgefleet_store_revision", "store_writes_per_s_idle"),
            ("edgefleet_hub_status_writes_total", "hub_status_writes_per_s_idle"),
            ("edgefleet_hub_status_reports_total", "hub_status_reports_per_s_idle"),
            ("edgefleet_hub_frames_sent_total", "hub_frames_sent_per_s_idle"),
        ):
            if name in before and name in after:
                out[key] = (after[name] - before[name]) / elapsed
        out["hub_sessions"] = after.get("edgefleet_hub_sessions")
    return out


async def measure_push(fleet: SimFleet, args: argparse.Namespace, count: int) -> dict[str, Any]:
    run = f"{os.getpid()}-{int(time.time())}"
    sent: dict[str, float] = {}
    incomplete = 0
    expected_each = fleet.joined
    cpu0 = time.monotonic()
    for n in range(args.writes):
        marker = f"{run}-{n}"
        sent[marker] = await fleet.push(marker, expected_each, args.write_timeout)
        if fleet.commit_count(marker) < expected_each:
            incomplete += 1
            progress(
                f"{count} nodes: write {n}: {fleet.commit_count(marker)}/{expected_each} commits "
                f"after {args.write_timeout:.0f} s"
            )
        await asyncio.sleep(args.write_gap)
    push_seconds = time.monotonic() - cpu0
    await asyncio.sleep(0.2)  # the workers' last commit reports
    samples = await fleet.latencies(sent)
    out: dict[str, Any] = {
        "writes": args.writes,
        "commits": len(samples),
        "commits_expected": expected_each * args.writes,
        "writes_incomplete": incomplete,
        "push_seconds": round(push_seconds, 1),
    }
    if samples:
        out.update(
            push_p50_ms=statistics.median(samples) * 1000,
            push_p99_ms=percentile(samples, 0.99) * 1000,
            push_max_ms=max(samples) * 1000,
            push_min_ms=min(samples) * 1000,
        )
    return out


def push_cpu_figures(cpu_seconds: float, elapsed: float, r: dict[str, Any], nodes: int) -> dict[str, float]:
    """Hub CPU per push per 1,000 nodes (ms): all of it, and above the idle rate measured before.

    Load-independent, unlike latency: what the hub process spent (utime +
    stime) while the pushes ran, divided by pushes and thousands of nodes.
    "Above idle" takes out what an idle hub spends in the same time
    (controllers' rounds, pings, reports), leaving the push's own cost.
    """
    writes = max(1, int(r.get("writes") or 1))
    per = 1000.0 / writes / (max(1, nodes) / 1000)
    idle = (r.get("hub_cpu_pct_idle") or 0.0) / 100 * elapsed
    return {
        "hub_cpu_ms_per_push_per_1000": cpu_seconds * per,
        "hub_cpu_ms_per_push_per_1000_above_idle": max(0.0, cpu_seconds - idle) * per,
    }


def push_line(r: dict[str, Any]) -> str:
    per_1000 = r.get("hub_mib_per_1000_connections")
    load = r.get("load_avg_idle") or os.getloadavg()
    return (
        f"push {r['nodes']:6d} nodes: p50 {fmt(r.get('push_p50_ms'), '.1f')} p99 {fmt(r.get('push_p99_ms'), '.1f')}"
        f" max {fmt(r.get('push_max_ms'), '.1f')} ms  commits {r.get('commits', 0)}/{r.get('commits_expected', 0)}"
        f"  hub CPU idle {fmt(r.get('hub_cpu_pct_idle'), '.1f', '%')}"
        f" (push {fmt(r.get('hub_cpu_pct_push'), '.0f', '%')};"
        f" {fmt(r.get('hub_cpu_ms_per_push_per_1000'), '.0f')} ms CPU per push per 1,000 nodes,"
        f" {fmt(r.get('hub_cpu_ms_per_push_per_1000_above_idle'), '.0f')} above idle)"
        f"  hub RSS {fmt(r.get('hub_rss_mib'), '.0f')} MiB ({fmt(per_1000, '.1f')} MiB/1000 conns)"
        f"  store writes idle {fmt(r.get('store_writes_per_s_idle'), '.1f', '/s')}"
        f"  sim RSS {fmt(r.get('sim_rss_mib'), '.0f')} MiB ({fmt(r.get('sim_kib_per_agent'), '.0f')} KiB/agent,"
        f" CPU idle {fmt(r.get('sim_cpu_pct_idle'), '.0f', '%')}, push {fmt(r.get('sim_cpu_pct_push'), '.0f', '%')})"
        f"  load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def target_line(r: dict[str, Any]) -> str:
    scale = "" if r["nodes"] >= TARGET_NODES else f" (targets are for {TARGET_NODES:,} nodes; this is {r['nodes']:,})"
    checks = [
        f"push p99 <= {TARGETS['push_p99_ms']:.0f} ms: {verdict(r.get('push_p99_ms'), TARGETS['push_p99_ms'])}",
        f"idle hub CPU <= {TARGETS['hub_cpu_idle_pct']:.0f}%: "
        f"{verdict(r.get('hub_cpu_pct_idle'), TARGETS['hub_cpu_idle_pct'])}",
        f"store writes idle <= {TARGETS['store_writes_idle_per_s']:.0f}/s: "
        f"{verdict(r.get('store_writes_per_s_idle'), TARGETS['store_writes_idle_per_s'])}",
        f"hub RSS <= 1 GiB: {verdict(r.get('hub_rss_mib'), TARGETS['hub_rss_mib'])}",
    ]
    return "     targets: " + "; ".join(checks) + scale


async def run_push(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    results = []
    for count in args.nodes:
        try:
            result = await run_push_count(args, count, workdir)
        except (RuntimeError, TimeoutError, WorkerError, httpx.HTTPError, OSError) as exc:
            result = {"nodes": count, "error": f"{exc.__class__.__name__}: {exc}"}
            print(f"push {count:6d} nodes: FAILED: {result['error'][:2000]}", flush=True)
        else:
            print(push_line(result), flush=True)
            print(target_line(result), flush=True)
            if result.get("sim_memory"):
                print_memory(result["sim_memory"])
        results.append(result)
        if args.json:
            write_json(args.json, {"scenario": "push", "multi_server_hubclient": MULTI_SERVER, "results": results})
    return results


def print_memory(reports: list[dict[str, Any]]) -> None:
    report = reports[0]
    if "top" not in report:
        return
    print(
        f"     worker 0: {report['agents']} agents, {report['tasks']} tasks, traced "
        f"{report['traced_bytes_per_agent'] / 1024:.1f} KiB/agent; top allocation sites per agent:",
        flush=True,
    )
    for where, size, count in report["top"]:
        print(f"       {size / 1024:7.2f} KiB {count:6.1f} blocks  {where}", flush=True)


def write_json(path: str, document: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=2, default=str) + "\n")


# --- replicas scenario --------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    sessions: list[float | None]  # hub-reported, per replica (None: not exported or down)
    agents: list[int]  # agent-reported connections per replica
    connected: int


async def run_replicas(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tests.etcd_cluster import start_cluster

    count = args.nodes[0]
    base = Path(args.state) / f"replicas-{count}" if args.state else workdir / f"replicas-{count}"
    shutil.rmtree(base, ignore_errors=True)  # always a new etcd cluster: its members get new ports each run
    base.mkdir(parents=True)
    progress("starting a 3-member etcd cluster")
    cluster = start_cluster(base / "etcd", 3)  # on this thread: the members' death signal follows the forking thread
    Children.etcd.append(cluster)
    clouds: list[SimCloud] = []
    result: dict[str, Any] = {"scenario": "replicas", "nodes": count, "multi_server_hubclient": MULTI_SERVER}
    fleet: SimFleet | None = None
    sampler: asyncio.Task[None] | None = None
    try:
        ports = [free_port() for _ in range(3)]
        for i in range(3):
            url = f"http://127.0.0.1:{ports[i]}"
            extra = ["--hub-id", f"sim-hub-{i}", *(a.replace("{url}", url) for a in args.replica_arg), *args.cloud_arg]
            clouds.append(await start_cloud(cluster.url, base / f"cloud-{i}", extra, ports[i]))
        token = clouds[0].token or next((c.token for c in clouds if c.token), "")
        token_file = base / "admin-token"
        if token:
            token_file.write_text(token)
        elif token_file.exists():
            token = token_file.read_text().strip()
        if not token:
            raise RuntimeError(f"no admin token: the etcd store in {base} was made by another run; remove {base}")
        urls = [c.url for c in clouds]
        progress(
            f"3 clouds on {cluster.url}: {', '.join(urls)}; HubClient "
            f"{'takes servers' if MULTI_SERVER else 'takes one url: each agent gets one replica at random'}"
        )
        fleet = SimFleet(
            fleet_options(args, count), urls[0], token, urls, workdir, CredentialCache(base / "credentials.json")
        )
        bootstrap = await fleet.prepare()
        await fleet.spawn()
        result["join"] = await fleet.join(bootstrap, urls, args.join_timeout)
        n = fleet.joined
        samples: list[Sample] = []
        hub_ids = [f"sim-hub-{i}" for i in range(3)]
        sampler = asyncio.create_task(sample_replicas(fleet, urls, hub_ids, samples))
        t_start = time.monotonic()
        rate = 0.0 if args.storm else args.connect_rate
        await fleet.connect(rate)
        result["connect_seconds"] = await fleet.wait_connected(
            n, (n / rate if rate else 0) + args.connect_timeout, "replicas"
        )
        await asyncio.sleep(args.settle)
        kill = args.kill
        result["before_kill"] = samples[-1].agents if samples else None
        progress(f"all {n} connected ({samples[-1].agents if samples else '?'} per replica); kill -9 sim-hub-{kill}")
        t_kill = time.monotonic() - t_start
        await asyncio.to_thread(clouds[kill].kill)
        recovered = await wait_recovered(samples, kill, n, t_kill, args.recover_timeout)
        result["recovered_seconds"] = recovered
        how = "NOT all" if recovered is None else f"all reconnected in {recovered:.1f} s"
        progress(
            f"after the kill: {how} ({samples[-1].connected if samples else '?'}/{n} connected); "
            f"restarting sim-hub-{kill}"
        )
        t_restart = time.monotonic() - t_start
        clouds[kill] = await start_cloud(
            cluster.url, base / f"cloud-{kill}", clouds[kill].extra_args, clouds[kill].port
        )
        clouds[kill].token = token
        result["restart_ready_seconds"] = round(time.monotonic() - t_start - t_restart, 2)
        progress(f"sim-hub-{kill} back; observing {args.observe_seconds:.0f} s")
        await asyncio.sleep(args.observe_seconds)
        t_end = time.monotonic() - t_start
        observed = [s for s in samples if t_restart <= s.t <= t_end]
        balanced_at, source = balanced_since(observed)
        result["balanced_after_restart_seconds"] = None if balanced_at is None else round(balanced_at - t_restart, 1)
        result["balance_source"] = source
        result["final_ratio"] = ratio_of(observed[-1], source) if observed else None
        result["after_observe"] = (
            {"hub_sessions": observed[-1].sessions, "agents": observed[-1].agents} if observed else None
        )
        result.update(await final_push_check(fleet, args, n))
        sampler.cancel()
        stats = await fleet.stats()
        result["agent_logs"] = stats["logs"]
        result["connects_total"] = stats["connects"]
        result["sim_rss_mib"] = fleet.rss_mib()
        result["hub_rss_mib"] = [proc_rss_mib(c.proc.pid) if c.proc else None for c in clouds]
        result["events"] = {"kill": t_kill, "restart": t_restart, "end": t_end, "balanced": balanced_at}
        result["samples"] = [
            {"t": round(s.t, 2), "sessions": s.sessions, "agents": s.agents, "connected": s.connected} for s in samples
        ]
        plot_replicas(samples, result["events"], args.plot, n, kill)
        result["plot"] = args.plot
        result["load_avg_end"] = os.getloadavg()
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if fleet is not None:
            await fleet.close()
        for cloud in clouds:
            await asyncio.to_thread(cloud.stop)
        await asyncio.to_thread(cluster.stop)
        if not args.state:
            shutil.rmtree(base / "etcd", ignore_errors=True)
    print_replicas(result)
    if args.json:
        write_json(args.json, result)
    return result


async def sample_replicas(fleet: SimFleet, urls: list[str], hub_ids: list[str], samples: list[Sample]) -> None:
    start = time.monotonic()
    async with httpx.AsyncClient(trust_env=False) as http:
        while True:
            tick = time.monotonic()
            try:
                metrics, stats = await asyncio.gather(asyncio.gather(*(scrape(http, u) for u in urls)), fleet.stats())
            except (WorkerError, TimeoutError) as exc:
                progress(f"sampling failed: {exc!r}")
                await asyncio.sleep(1.0)
                continue
            sessions = [m.get("edgefleet_hub_sessions") if m else None for m in metrics]
            agents = [int(stats["hubs"].get(h, 0)) for h in hub_ids]
            samples.append(Sample(tick - start, sessions, agents, stats["connected"]))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


async def wait_recovered(samples: list[Sample], kill: int, n: int, t_kill: float, within: float) -> float | None:
    """Seconds from the kill until every agent is connected to a live replica (None: not ``within`` seconds)."""
    deadline = time.monotonic() + within
    seen = len(samples)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        for sample in samples[seen:]:
            live = [s for i, s in enumerate(sample.sessions) if i != kill]
            hub_ok = all(s is None for s in live) or sum(s or 0 for s in live) >= n
            if sample.t > t_kill and sample.connected >= n and sample.agents[kill] == 0 and hub_ok:
                return round(sample.t - t_kill, 2)
        seen = len(samples)
    return None


def ratio_of(sample: Sample, source: str) -> float | None:
    if source == "hub":
        values = [float(v) for v in sample.sessions if v is not None]
    else:
        values = [float(a) for a in sample.agents]
    if len(values) < 3 or sum(values) == 0:
        return None
    return max(values) / (sum(values) / len(values))


def balanced_since(samples: list[Sample]) -> tuple[float | None, str]:
    """When max/mean first fell to <= 1.1 and stayed there (hub gauges if exported, else the agents' view)."""
    source = "hub" if samples and all(all(v is not None for v in s.sessions) for s in samples[-5:]) else "agents"
    since: float | None = None
    for sample in samples:
        ratio = ratio_of(sample, source)
        if ratio is not None and ratio <= BALANCED_RATIO:
            since = sample.t if since is None else since
        else:
            since = None
    return since, source


async def final_push_check(fleet: SimFleet, args: argparse.Namespace, n: int) -> dict[str, Any]:
    """One more change; every agent commits it and ends on the view the cloud computes for it."""
    marker = f"final-{os.getpid()}-{int(time.time())}"
    await fleet.push(marker, n, args.write_timeout * 2)
    committed = fleet.commit_count(marker)
    out: dict[str, Any] = {"final_commits": committed}
    names = [name for name, _ in node_names(n, args.nodes_per_site)]
    matching = None
    for _attempt in range(10):  # status writes may move a peer's phase meanwhile: a few tries
        digests, probe = await fleet.views()
        try:
            expected = await expected_digests(fleet.http, names)
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
            out["expected_error"] = repr(exc)
            expected = {}
        matching = sum(1 for node, d in digests.items() if expected.get(node) == d)
        if matching == len(digests):
            break
        await asyncio.sleep(2)
    revs = Counter(probe.values())
    out.update(
        final_views=len(digests),
        views_equal_to_cloud=matching,
        empty_views=sum(1 for d in digests.values() if d == digest([])),
        distinct_digests=len(set(digests.values())),
        probe_revs=len(revs),
        probe_missing=revs.get(0, 0),
        no_change_lost=committed >= n and matching == len(digests) == n and len(revs) == 1 and 0 not in revs,
    )
    return out


def plot_replicas(samples: list[Sample], events: dict[str, Any], path: str, n: int, kill: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    t = [s.t for s in samples]
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for i in range(3):
        hub = [math.nan if s.sessions[i] is None else s.sessions[i] for s in samples]
        if any(not math.isnan(v) for v in hub):
            ax.plot(t, hub, color=colors[i], label=f"sim-hub-{i} (hub gauge)")
        ax.plot(t, [s.agents[i] for s in samples], color=colors[i], linestyle=":", label=f"sim-hub-{i} (agents' view)")
    ax.axhline(n / 3, color="gray", linestyle="--", linewidth=0.8, label="fair share")
    ax.axhline(n / 3 * BALANCED_RATIO, color="gray", linestyle=":", linewidth=0.8, label="share x 1.1")
    top = ax.get_ylim()[1]
    for row, (key, label, color) in enumerate(
        (
            ("kill", f"kill -9 sim-hub-{kill}", "red"),
            ("restart", f"restart sim-hub-{kill}", "green"),
            ("balanced", "balanced (max/mean <= 1.1)", "purple"),
        )
    ):
        if events.get(key) is not None:
            ax.axvline(events[key], color=color, linestyle="--")
            ax.text(events[key], top * (0.97 - 0.06 * row), " " + label, color=color, va="top", fontsize=9)
    ax.set_xlabel("seconds since the agents started connecting")
    ax.set_ylabel("connections")
    ax.set_title(f"{n} simulated agents, 3 hub replicas on etcd")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_replicas(r: dict[str, Any]) -> None:
    def secs(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} s"

    print(
        f"replicas {r['nodes']} nodes (HubClient {'servers' if r['multi_server_hubclient'] else 'single url'}): "
        f"connected in {secs(r.get('connect_seconds'))}; after kill -9 all reconnected in "
        f"{secs(r.get('recovered_seconds'))}; restarted replica ready in {secs(r.get('restart_ready_seconds'))}; "
        f"balanced (max/mean <= {BALANCED_RATIO}, {r.get('balance_source')}) "
        f"{secs(r.get('balanced_after_restart_seconds'))} after the restart"
        f" (final ratio {fmt(r.get('final_ratio'), '.2f')}, per replica {r.get('after_observe')})",
        flush=True,
    )
    if "final_views" in r:
        print(
            f"     final push: {r['final_commits']}/{r['nodes']} commits; views equal to the cloud's "
            f"{r['views_equal_to_cloud']}/{r['final_views']}, empty {r['empty_views']}, latest sim-probe held by "
            f"{r['final_views'] - r['probe_missing']} ({r['probe_revs']} distinct revs); "
            f"no change lost: {'yes' if r['no_change_lost'] else 'NO'}"
            f"{'; expected views: ' + r['expected_error'] if r.get('expected_error') else ''}",
            flush=True,
        )
    if r.get("plot"):
        print(f"     plot: {r['plot']}", flush=True)


# --- command line ------------------------------------------------------------------------------


def counts(text: str) -> list[int]:
    values = [int(v) for v in text.replace("_", "").split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive comma-separated counts, e.g. 1000,5000")
    return values


def add_fleet_arguments(parser: argparse.ArgumentParser, state_help: str) -> None:
    """The options of a simulated fleet and its clouds (shared with bench/rollout_scale.py)."""
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default: one per 2,500 agents, at least 2, at most 8)"
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=500.0,
        help="agents started per second, all workers together (default 500)",
    )
    parser.add_argument("--storm", action="store_true", help="start every agent at once (a reconnect storm)")
    parser.add_argument("--join-concurrency", type=int, default=4, help="concurrent join requests per worker")
    parser.add_argument("--join-timeout", type=float, default=1800.0, help="seconds for all joins (default 1800)")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=180.0,
        help="seconds allowed beyond the ramp for every agent to connect (default 180)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=10.0,
        help="the agents' WebSocket ping interval (default 10, the agent's default)",
    )
    parser.add_argument("--state", metavar="DIR", help=state_help)
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument(
        "--cloud-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for each `edgefleet cloud` (repeat; e.g. --cloud-arg=--dns-listen=off)",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="tracemalloc in the workers: where a simulated agent's memory goes (slower)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs) and print its path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet_sim.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="scenario", metavar="{push,replicas}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--nodes-per-site", type=int, default=10, help="nodes per simulated site (default 10)")
    add_fleet_arguments(
        common,
        "push: keep stores, admin tokens and node credentials here; a second run reuses "
        "them (replicas: kept for reading, but each run makes a new etcd cluster)",
    )
    common.add_argument("--settle", type=float, default=5.0, help="seconds between connected and measuring")
    common.add_argument("--write-timeout", type=float, default=30.0, help="seconds to wait for one write's commits")

    push = sub.add_parser(
        "push",
        parents=[common],
        help="one cloud: idle cost and write-to-commit latency (default)",
        description="One cloud; for each count: connect, idle, push writes.",
    )
    push.add_argument(
        "--nodes",
        type=counts,
        default=counts("1000,5000,10000"),
        help="comma-separated node counts, each with a fresh cloud (default 1000,5000,10000)",
    )
    push.add_argument("--idle-seconds", type=float, default=30.0, help="idle measuring window (default 30)")
    push.add_argument("--writes", type=int, default=20, help="Workload changes pushed (default 20)")
    push.add_argument("--write-gap", type=float, default=0.1, help="seconds between two writes")
    push.add_argument("--cloud", metavar="URL", help="attach to this running cloud instead of starting one")
    push.add_argument("--token", help="admin token for --cloud")
    push.add_argument("--cloud-pid", type=int, help="pid of the --cloud process, for its CPU and RSS")

    replicas = sub.add_parser(
        "replicas",
        parents=[common],
        help="3 clouds on a 3-member etcd: kill, restart, balance",
        description="3 clouds on a 3-member etcd: kill one, restart it, watch the balance.",
    )
    replicas.add_argument("--nodes", type=counts, default=counts("3000"), help="node count (default 3000)")
    replicas.add_argument(
        "--observe-seconds", type=float, default=150.0, help="seconds watched after the restart (default 150)"
    )
    replicas.add_argument(
        "--recover-timeout",
        type=float,
        default=120.0,
        help="seconds allowed for the killed replica's agents to reconnect elsewhere",
    )
    replicas.add_argument("--kill", type=int, default=0, choices=(0, 1, 2), help="replica to kill -9 (default 0)")
    replicas.add_argument("--plot", default="fleet-sim-replicas.png", help="PNG of connections per replica")
    replicas.add_argument(
        "--replica-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument per replica; {url} is that replica's base URL",
    )
    worker = sub.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("spec")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or (argv[0] not in ("push", "replicas", "worker", "-h", "--help")):
        argv = ["push", *argv]
    args = build_parser().parse_args(argv)
    if args.scenario == "push" and args.cloud and not args.token:
        raise SystemExit("--cloud needs --token (an admin token of that cloud)")
    return args


def run_tool(scenario: Callable[[Path], Awaitable[Any]], keep: bool) -> None:
    """Run ``scenario(workdir)`` on an event loop: Ctrl-C or SIGTERM unwinds it, and every worker, cloud and
    etcd member it started is stopped however it ends (shared with bench/rollout_scale.py)."""
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)

    async def guarded(workdir: Path) -> None:
        main_task = asyncio.current_task()
        assert main_task is not None
        # SIGTERM unwinds like Ctrl-C: the scenario's own cleanup runs while the workers' pipes still work.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        await scenario(workdir)

    def run() -> None:
        with benchutil.scratch_dir("fleet-sim-", keep, "worker specs and logs, cloud logs") as workdir:
            try:
                asyncio.run(guarded(workdir))
            except asyncio.CancelledError:
                sys.exit("terminated; every process started was stopped")
            finally:
                Children.stop_all()

    benchutil.run_main(run)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.scenario == "worker":
        worker_main(args.spec)
        return
    run_scenario: Callable[[argparse.Namespace, Path], Awaitable[Any]] = (
        run_replicas if args.scenario == "replicas" else run_push
    )
    run_tool(lambda workdir: run_scenario(args, workdir), args.keep)


if __name__ == "__main__":
    main()
