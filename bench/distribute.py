"""Distribute one artifact to many nodes through the cache tiers, and without them, on loopback.

What runs (all real code, all on 127.0.0.1):

- the **origin**: the cloud's blob endpoint (:class:`edgefleet.cloud.blobs.BlobEndpoint`
  over a :class:`~edgefleet.cloud.blobs.BlobStore`) under uvicorn, in a child
  process, counting the body bytes it sends;
- **caches**: ``edgefleet cache`` processes (one worker each), ``--caches-per-site``
  per edge site and one per parent site; edge sites are spread over the
  parents; every cache has the internal artifact Domain
  (:func:`edgefleet.edge.artifacts.internal_domain`) whose origin is
- the **agent origin** of its node: :meth:`ArtifactManager.serve_origin`, the
  agent's real handler (in this process, one per cache), which fetches the
  blob from the origin once, verifies it and serves it with ranges;
- **simulated nodes**, many per process: each one runs the agent's real
  fetch (:func:`edgefleet.edge.artifacts.download`: resume, SHA-256 check,
  content-addressed commit) through a cache of its site, ``--parallel`` at a
  time, and deletes its copy once verified (disk space).

Then the same nodes fetch straight from the origin (``direct``: no tiers).
Printed: wall time, origin bytes and their ratio to the artifact size (the
target with tiers is at most 3), for both runs.

    python bench/distribute.py              # 200 MB to 100 nodes in 10 sites under 2 parents
    python bench/distribute.py --quick      # 8 MB to 8 nodes in 2 sites under 1 parent
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import Service, run_main, running, scratch_dir, wait_until

from edgefleet.edge.artifacts import (
    ARTIFACT_HOST,
    FLEET_SECRET_KEY,
    ORIGIN_PREFIX,
    ArtifactManager,
    ArtifactRef,
    NodeArtifacts,
    Source,
    cache_path,
    download,
    internal_domain,
)

TOKEN = "bench-node-token"
KEY = "bench-fleet-key"
ORIGIN_SCRIPT = """
import sys, uvicorn
from pathlib import Path
from prometheus_client import CollectorRegistry, generate_latest
from edgefleet.cloud.auth import Principal, Role, Unauthorized
from edgefleet.cloud.blobs import BlobEndpoint, BlobStore

registry = CollectorRegistry()

async def authenticate(header):
    if header != "Bearer " + sys.argv[3]:
        raise Unauthorized("unknown token")
    return Principal("bench", Role.NODE)

async def metrics(scope, receive, send):
    body = generate_latest(registry) if scope.get("path") == "/metrics" else b""
    await send({"type": "http.response.start", "status": 200 if body else 404, "headers": []})
    await send({"type": "http.response.body", "body": body})

app = BlobEndpoint(metrics, BlobStore(Path(sys.argv[1])), authenticate, registry)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", http="httptools")
"""


_TAKEN: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this run (several are picked before any is bound)."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _TAKEN:
            _TAKEN.add(port)
            return port


@dataclass
class Plan:
    size: int
    nodes: int
    sites: int
    parents: int
    caches_per_site: int
    parallel: int


def make_blob(directory: Path, size: int) -> tuple[str, Path]:
    """A random blob stored as the origin's BlobStore would keep it; (digest, path)."""
    digest = hashlib.sha256()
    partial = directory / "blob.tmp"
    with partial.open("wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * 2**20))
            digest.update(chunk)
            file.write(chunk)
            left -= len(chunk)
    hexdigest = digest.hexdigest()
    target = directory / "blobs" / "sha256" / hexdigest[:2] / hexdigest
    target.parent.mkdir(parents=True)
    partial.rename(target)
    return hexdigest, target


class Fleet:
    """Caches and their agent origins; who is in which site."""

    def __init__(self, home: Path, plan: Plan, origin_url: str, ref: ArtifactRef) -> None:
        self.home, self.plan, self.origin_url, self.ref = home, plan, origin_url, ref
        self.caches: dict[str, tuple[str, int]] = {}  # name -> (site, port)
        self.agents: list[web.AppRunner] = []
        self.origin_fetches = 0

    def layout(self) -> dict[str, list[str]]:
        sites: dict[str, list[str]] = {}
        for p in range(self.plan.parents):
            sites[f"parent-{p}"] = [f"parent-{p}-1"]
        for s in range(self.plan.sites):
            sites[f"edge-{s}"] = [f"edge-{s}-{c}" for c in range(1, self.plan.caches_per_site + 1)]
        return sites

    async def start_agent_origin(self, name: str) -> int:
        documents = [
            {
                "kind": "Artifact",
                "spec": {"name": "big", "version": "1", "sha256": self.ref.sha256, "size": self.ref.size},
            }
        ]
        manager = ArtifactManager(
            self.home / "agents" / name,
            view=lambda plural: documents if plural == "artifacts" else [],
            secret=lambda: {"spec": {"data": {FLEET_SECRET_KEY: KEY}}},
            cache_url=lambda: None,
            cloud=lambda: (self.origin_url, TOKEN, True),
            timeout=120,
        )
        app = web.Application()
        app.router.add_routes(manager.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.agents.append(runner)
        return port

    async def configs(self) -> dict[str, Path]:
        sites = self.layout()
        ports = {name: free_port() for members in sites.values() for name in members}
        paths = {}
        for site, members in sites.items():
            parent = f"parent-{int(site.split('-')[1]) % self.plan.parents}" if site.startswith("edge") else None
            for name in members:
                agent_port = await self.start_agent_origin(name)
                home = self.home / name
                home.mkdir(parents=True)
                (home / "admin.token").write_text("t\n")
                config: dict[str, Any] = {
                    "node": name,
                    "listen": f"127.0.0.1:{ports[name]}",
                    "workers": 1,
                    "admin": {"listen": f"127.0.0.1:{free_port()}", "tokenFile": str(home / "admin.token")},
                    "storage": {"disk": {"path": str(home / "disk"), "maxBytes": 4 * self.plan.size + 2**30}},
                    "accessLog": {"enabled": False},
                    "domains": [internal_domain(f"http://127.0.0.1:{agent_port}{ORIGIN_PREFIX}")],
                    "site": {
                        "self": name,
                        "peers": [{"name": m, "url": f"http://127.0.0.1:{ports[m]}"} for m in members],
                        "parents": [
                            {
                                "site": parent,
                                "nodes": [{"name": n, "url": f"http://127.0.0.1:{ports[n]}"} for n in sites[parent]],
                            }
                        ]
                        if parent
                        else [],
                        "trusted": ["127.0.0.1"],
                    },
                }
                (home / "cache.yaml").write_text(yaml.safe_dump(config))
                paths[name] = home / "cache.yaml"
                self.caches[name] = (site, ports[name])
        return paths

    def edge_caches(self) -> list[str]:
        return [name for name, (site, _) in sorted(self.caches.items()) if site.startswith("edge")]


async def fetch_all(plan: Plan, home: Path, ref: ArtifactRef, sources: list[Source]) -> float:
    """Every simulated node fetches ``ref`` from its source (real agent code), ``parallel`` at a time."""
    gate = asyncio.Semaphore(plan.parallel)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=plan.parallel * 2, max_keepalive_connections=plan.parallel)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(index: int, source: Source) -> None:
            async with gate:
                store = NodeArtifacts(home / "nodes" / str(index))
                path = await download(client, source, store, ref)
                path.unlink()  # verified; free the disk for the next node

        await asyncio.gather(*(one(i, s) for i, s in enumerate(sources)))
    return time.monotonic() - started


async def run_tiers(plan: Plan, home: Path, ref: ArtifactRef, origin: OriginCounter) -> tuple[float, int]:
    fleet = Fleet(home / "tiers", plan, origin.url, ref)
    configs = await fleet.configs()
    services = [Service(name, [sys.executable, "-m", "edgefleet", "cache", "--config", str(path)],
                        path.parent / "cache.log") for name, path in configs.items()]  # fmt: skip
    stack = [running(service) for service in services]
    for context in stack:
        context.__enter__()
    try:
        for service in services:
            port = fleet.caches[service.name][1]
            await asyncio.to_thread(wait_until, service, functools.partial(_answers, port), 60)
        before = origin.bytes()
        edge = fleet.edge_caches()
        path = cache_path(KEY, ref.sha256)
        sources = [
            Source(f"http://127.0.0.1:{fleet.caches[edge[i % len(edge)]][1]}{path}", {"Host": ARTIFACT_HOST})
            for i in range(plan.nodes)
        ]
        elapsed = await fetch_all(plan, home / "tiers", ref, sources)
        return elapsed, origin.bytes() - before
    finally:
        for context in reversed(stack):
            context.__exit__(None, None, None)
        for runner in fleet.agents:
            await runner.cleanup()


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": ARTIFACT_HOST}, timeout=2)
    except httpx.HTTPError:
        return False
    return True


async def run_direct(plan: Plan, home: Path, ref: ArtifactRef, origin: OriginCounter) -> tuple[float, int]:
    before = origin.bytes()
    url = f"{origin.url}/edge/v1/blobs/sha256/{ref.sha256}"
    sources = [Source(url, {"Authorization": f"Bearer {TOKEN}"}) for _ in range(plan.nodes)]
    elapsed = await fetch_all(plan, home / "direct", ref, sources)
    return elapsed, origin.bytes() - before


class OriginCounter:
    """The origin process, and its count of bytes sent (from the blob endpoint's counter, via /metrics)."""

    def __init__(self, service: Service, url: str) -> None:
        self.service, self.url = service, url

    def bytes(self) -> int:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("edgefleet_blob_bytes_served_total "):
                return int(float(line.split()[1]))
        return 0


def origin_service(home: Path, port: int) -> Service:
    (home / "origin.py").write_text(ORIGIN_SCRIPT)
    args = [sys.executable, str(home / "origin.py"), str(home / "blobs"), str(port), TOKEN]
    return Service("origin", args, home / "origin.log")


async def main_async(plan: Plan, home: Path) -> None:
    print(f"making a {plan.size / 2**20:.0f} MiB artifact ...", flush=True)
    digest, _ = await asyncio.to_thread(make_blob, home, plan.size)
    ref = ArtifactRef("big", "1", digest, plan.size, "upload")
    port = free_port()
    service = origin_service(home, port)
    with running(service):
        origin = OriginCounter(service, f"http://127.0.0.1:{port}")
        await asyncio.to_thread(wait_until, service, lambda: _up(origin.url), 30)
        shape = (
            f"{plan.nodes} nodes in {plan.sites} sites ({plan.caches_per_site} caches each) under {plan.parents} "
            f"parents, {plan.parallel} fetching at a time"
        )
        print(shape, flush=True)
        rows = []
        for label, run in (("tiers", run_tiers), ("direct", run_direct)):
            elapsed, sent = await run(plan, home, ref, origin)
            rows.append((label, elapsed, sent))
            print(f"  {label:<7} {elapsed:8.1f} s   origin bytes {sent / 2**20:10.1f} MiB "
                  f"= {sent / plan.size:6.2f} x the artifact", flush=True)  # fmt: skip
        tiers, direct = rows
        verdict = "OK" if tiers[2] <= 3 * plan.size else "OVER TARGET"
        print(f"origin bytes with tiers: {tiers[2] / plan.size:.2f} x (target <= 3 x): {verdict}; "
              f"without tiers {direct[2] / plan.size:.0f} x")  # fmt: skip


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 MiB to 8 nodes in 2 sites under 1 parent")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--parents", type=int, default=2)
    parser.add_argument("--caches-per-site", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=20, help="simulated nodes fetching at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if args.quick:
        plan = Plan(8 * 2**20, 8, 2, 1, 2, 4)
    else:
        plan = Plan(args.size_mb * 10**6, args.nodes, args.sites, args.parents, args.caches_per_site, args.parallel)
    with scratch_dir("distribute-", args.keep, "caches, blobs and logs of bench/distribute.py") as home:
        asyncio.run(main_async(plan, home))


if __name__ == "__main__":
    run_main(main)
