"""Sync benchmark: write-to-agent-commit latency with 1 and with 200 connected agents.

Runs a real ``edgefleet cloud`` (SQLite) and N simulated agents in this
process. Each simulated agent is the real agent link code
(:class:`edgefleet.edge.hubclient.HubClient` driving
:class:`edgefleet.sync.agent.AgentSession` over a real WebSocket) with an
in-memory local store instead of SQLite, so the figure is the sync path
(API write -> store -> hub -> WebSocket -> agent commit), not 200 fsyncs
queued on one disk. Every write changes one Workload that selects every
agent; the latency of a sample is the time from sending the write to one
agent committing the batch that carries it. Target (issue 3): p99 <= 100 ms
at 200 agents. Also prints the bytes a reconnect with nothing changed costs
for a node holding 200 objects, counted by a TCP proxy (target <= 2 KB).
With ``--tls`` the cloud serves TLS (a CA made for the run) and every agent
and API client checks it against that CA: the cost of TLS on the control
channel. Also printed: the time for all agents to connect at once (TLS and
WebSocket handshakes, hello digests).

    .venv/bin/python bench/sync_latency.py [--agents 1,200] [--writes 50] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/

from tests.cloudproc import CloudProcess, make_pki, running_cloud
from tests.faultproxy import fault_proxy

from edgefleet.edge.backoff import Backoff
from edgefleet.edge.hubclient import HubClient
from edgefleet.sync.agent import ApplyBatch, LocalState
from edgefleet.tls import ClientTrust

API = "/apis/edgefleet.io/v1"


class MemoryAgent:
    """The agent side of the link with an in-memory view; records commit times of marked writes."""

    def __init__(self, name: str, commits: dict[str, list[float]]) -> None:
        self.name = name
        self.holdings: dict[str, int] = {}
        self.revision = 0
        self.epoch = ""
        self.commits = commits
        self.connected = asyncio.Event()

    def local_state(self) -> LocalState:
        return LocalState(self.epoch, self.revision, dict(self.holdings), "bench")

    async def apply_batch(self, batch: ApplyBatch) -> None:
        now = time.perf_counter()
        for item in batch.put:
            self.holdings[item.key] = item.rev
            marker = (item.object.get("metadata", {}).get("annotations") or {}).get("bench/write")
            if marker:
                self.commits.setdefault(marker, []).append(now)
        for key in batch.delete:
            self.holdings.pop(key, None)
        self.revision, self.epoch = batch.revision, batch.epoch

    def status_report(self) -> dict[str, Any]:
        return {"agentVersion": "bench"}

    async def read_logs(self, workload: str, tail: int) -> str:
        return ""

    def link_changed(self, connected: bool, hub: str) -> None:
        if connected:
            self.connected.set()


def join_all(cloud: CloudProcess, count: int, prefix: str = "bench") -> list[tuple[str, str]]:
    with cloud.client() as api:
        site = {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Site",
            "metadata": {"name": "bench"},
            "spec": {
                "region": "eu",
                "location": {"lat": 1.0, "lon": 1.0, "country": "FR"},
                "tier": "edge",
                "capacityGbps": 1,
            },
        }
        if api.get(f"{API}/sites/bench").status_code == 404:
            api.post(f"{API}/sites", json=site)
        token = api.post("/edge/v1/bootstrap-tokens", json={"ttlSeconds": 3600}).json()["token"]
        joined = []
        with httpx.Client(
            base_url=cloud.url, headers={"Authorization": f"Bearer {token}"}, verify=cloud.ssl_context()
        ) as joiner:
            for i in range(count):
                name = f"{prefix}-{i}"
                body = {"name": name, "site": "bench", "labels": {"bench": "sync"}}
                credential = joiner.post("/edge/v1/join", json=body).json()["credential"]
                joined.append((name, credential))
        workload = {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Workload",
            "metadata": {"name": "probe"},
            "spec": {"nodeSelector": "bench=sync", "template": {"command": ["true"]}},
        }
        if api.get(f"{API}/workloads/probe").status_code == 404:
            api.post(f"{API}/workloads", json=workload)
        return joined


def trust_of(cloud: CloudProcess) -> ClientTrust | None:
    return None if cloud.tls is None else ClientTrust(cloud.tls.ca_cert)


async def measure(cloud: CloudProcess, joined: list[tuple[str, str]], writes: int) -> tuple[list[float], float]:
    """(write-to-commit latencies, seconds for every agent to connect at once)."""
    commits: dict[str, list[float]] = {}
    agents = [MemoryAgent(name, commits) for name, _ in joined]
    clients = [
        HubClient(
            servers=[cloud.url],
            credential=lambda c=cred: c,
            node_name=name,
            handler=agent,
            heartbeat_seconds=30,
            backoff=Backoff(0.2, 2),
            trust=trust_of(cloud),
        )
        for (name, cred), agent in zip(joined, agents, strict=True)
    ]
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(a.connected.wait() for a in agents)), 60)
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(1)
    sent: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {cloud.token}", "Content-Type": "application/merge-patch+json"}
    async with httpx.AsyncClient(base_url=cloud.url, headers=headers, verify=cloud.ssl_context()) as api:
        for n in range(writes):
            marker = f"w{n}"
            sent[marker] = time.perf_counter()
            patch = json.dumps({"metadata": {"annotations": {"bench/write": marker}}})
            response = await api.patch(f"{API}/workloads/probe", content=patch)
            response.raise_for_status()
            deadline = time.perf_counter() + 10
            while len(commits.get(marker, [])) < len(agents) and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return [t - sent[m] for m, times in commits.items() if m in sent for t in times], connect_seconds


async def reconnect_cost(cloud: CloudProcess, objects: int) -> tuple[int, int]:
    """Wire bytes (both ways, HTTP upgrade included) of a reconnect with nothing changed."""
    with cloud.client() as api:
        for i in range(objects):
            doc = {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Domain",
                "metadata": {"name": f"d{i}"},
                "spec": {"hostnames": [f"d{i}.example.com"], "origins": [{"url": "http://127.0.0.1:9/"}]},
            }
            api.post(f"{API}/domains", json=doc).raise_for_status()
    ((name, cred),) = join_all(cloud, 1, prefix="reconnect")
    agent = MemoryAgent(name, {})
    with fault_proxy(cloud.port) as proxy:
        scheme = "http" if cloud.tls is None else "https"
        client = HubClient(
            servers=[f"{scheme}://127.0.0.1:{proxy.port}"],
            credential=lambda: cred,
            node_name=name,
            handler=agent,
            heartbeat_seconds=60,
            backoff=Backoff(0.1, 0.5),
            trust=trust_of(cloud),
        )
        task = asyncio.create_task(client.run())
        while len(agent.holdings) < objects:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        held = len(agent.holdings)
        agent.connected.clear()
        proxy.set_mode("cut")
        await asyncio.sleep(0.3)
        proxy.reset_counters()
        proxy.set_mode("pass")
        await asyncio.wait_for(agent.connected.wait(), 10)
        await asyncio.sleep(0.5)
        counters = proxy.reset_counters()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return counters.to_upstream + counters.to_client, held


def cloud_for(tmp: Path, tls: bool) -> contextlib.AbstractContextManager[CloudProcess]:
    return running_cloud(f"sqlite:///{tmp}/s.db", tmp, tls=make_pki(tmp / "pki") if tls else None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    logging.getLogger("edgefleet").setLevel(logging.ERROR)  # the fault test's link-down warnings are expected
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="1,200", help="comma-separated agent counts")
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--tls", action="store_true", help="serve the cloud over TLS (a CA made for the run)")
    args = parser.parse_args()
    label = "tls  " if args.tls else "sync "
    for count in (int(c) for c in args.agents.split(",")):
        with tempfile.TemporaryDirectory() as tmp, cloud_for(Path(tmp), args.tls) as cloud:
            joined = join_all(cloud, count)
            samples, connect = asyncio.run(measure(cloud, joined, args.writes))
            expected = count * args.writes
            print(
                f"{label} {count:4d} agents: write-to-agent-commit p50 {statistics.median(samples) * 1000:6.1f} ms"
                f"  p99 {percentile(samples, 0.99) * 1000:6.1f} ms  ({len(samples)}/{expected} commits)"
                f"  all connected in {connect:.2f} s  target p99 <= 100 ms at 200 agents",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as tmp, cloud_for(Path(tmp), args.tls) as cloud:
        wire, held = asyncio.run(reconnect_cost(cloud, 200))
        print(
            f"{label} reconnect with nothing changed, {held} objects held: {wire} bytes on the wire  target <= 2048",
            flush=True,
        )


if __name__ == "__main__":
    main()
