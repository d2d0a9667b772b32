"""A small real fleet for end-to-end tests: one cloud, agents, workloads, a fault proxy.

Everything is a real process started through the ``edgefleet`` console
script: the cloud (SQLite), ``edgefleet edge join`` and ``edgefleet edge run``
per node. Agents reach the cloud through a :class:`~tests.faultproxy.FaultProxy`
so a test can cut, blackhole or slow the link. Workloads are tiny HTTP
servers (``python -m http.server``) on free loopback ports, one per node, so
a bounded request loop can prove that serving never stops; or the built-in
cache (:func:`cache_workload`), each agent on its own loopback address
(``Fleet.join(..., address=...)``) so that every node serves the same ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self

import httpx

from tests.cloudproc import EDGEFLEET, CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.waiting import wait_until

API = "/apis/edgefleet.io/v1"


def site_doc(
    name: str,
    country: str = "FR",
    *,
    at: tuple[float, float] = (48.0, 2.0),
    region: str = "eu",
    capacity: float = 10,
    **labels: str,
) -> dict[str, Any]:
    """An edge Site at ``at`` (lat, lon); ``labels`` are added to ``tier=edge``."""
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"tier": "edge", **labels}},
        "spec": {
            "region": region,
            "location": {"lat": at[0], "lon": at[1], "country": country},
            "tier": "edge",
            "capacityGbps": capacity,
        },
    }


def http_workload(name: str, node: str, port: int, *, marker: str = "v1") -> dict[str, Any]:
    """A workload that serves its own directory over HTTP on ``port`` on one node."""
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": f"edgefleet.io/node={node}",
            "template": {
                "command": ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                "files": [{"path": "index.html", "content": f"{name} {marker}\n"}],
                "healthProbe": {"http": {"path": "/index.html", "port": port}, "periodSeconds": 1},
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 2,
            },
        },
    }


def cache_workload(http_port: int, admin_port: int, node_selector: str = "edgefleet.io/site=lab") -> dict[str, Any]:
    """The built-in cache on every selected node, on the same two ports (each node has its own address)."""
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "cache"},
        "spec": {
            "nodeSelector": node_selector,
            "template": {
                "builtin": "cache",
                "command": ["edgefleet", "cache"],
                "ports": [{"name": "http", "port": http_port}, {"name": "admin", "port": admin_port}],
                "healthProbe": {"http": {"path": "/healthz", "port": admin_port}, "periodSeconds": 1},
                "terminationGracePeriodSeconds": 5,
            },
        },
    }


def replace_object(api: httpx.Client, path: str, change: Any, attempts: int = 20) -> dict[str, Any]:
    """GET, ``change(document)``, PUT with its resourceVersion; again on 409 (a controller wrote the status)."""
    for _ in range(attempts):
        document = api.get(path).json()
        change(document)
        response = api.put(path, json=document)
        if response.status_code != 409:
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result
    raise AssertionError(f"PUT {path}: still conflicting after {attempts} attempts")


@dataclass
class AgentProcess:
    """``edgefleet edge run`` for one joined node; ``extra_args`` go to ``edge run`` (e.g. a probe period)."""

    name: str
    site: str
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "agent.log"

    def start(self, heartbeat: float = 1.0) -> AgentProcess:
        (self.data_dir / "agent.addr").unlink(missing_ok=True)
        # Tests run as root and keep data under tmp_path (0700 ancestors), where a workload of another user
        # could not reach its working directory by absolute path: workloads run as root here, unless a test
        # (tests/security/test_workload_isolation.py) asks for the isolation an agent gives by default.
        isolation = [] if "--workload-user" in self.extra_args else ["--workload-user", "root"]
        args = [
            EDGEFLEET,
            "edge",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            str(heartbeat),
            "--ping-interval",
            "1",
            *isolation,
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: (self.data_dir / "agent.addr").exists(), 20, what=f"agent {self.name} to listen")
        return self

    @property
    def url(self) -> str:
        return "http://" + (self.data_dir / "agent.addr").read_text().strip()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(self.url + "/status", timeout=5).json()
        return result

    def metric(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return 0.0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def workload_pids(self) -> dict[str, int]:
        """Running workload pids, from the supervisor's state files (``process`` is null when stopped)."""
        pids = {}
        for state in (self.data_dir / "workloads").glob("*/state.json"):
            with contextlib.suppress(ValueError, KeyError, OSError, TypeError):
                pids[state.parent.name] = int(json.loads(state.read_text())["process"]["pid"])
        return pids

    def kill_workloads(self) -> None:
        for pid in self.workload_pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@dataclass
class Fleet:
    root: Path
    cloud: CloudProcess
    proxy: FaultProxy
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def agent_server(self) -> str:
        return f"{'http' if self.cloud.tls is None else 'https'}://127.0.0.1:{self.proxy.port}"

    def api(self) -> httpx.Client:
        return self.cloud.client()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "EDGEFLEET_SERVER": self.cloud.url,
            "EDGEFLEET_TOKEN": self.cloud.token,
            "EDGEFLEET_CONFIG": str(self.root / "cli.yaml"),
            "COLUMNS": "200",
            **self.cloud.cli_env,
        }
        result = subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, env=env, timeout=60, check=False)
        if check:
            assert result.returncode == 0, f"edgefleet {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result

    def join(
        self,
        name: str,
        site: str,
        *,
        address: str | None = None,
        server: str | None = None,
        agent_args: list[str] | None = None,
    ) -> AgentProcess:
        """Join node ``name`` (not started yet), through the fault proxy unless ``server`` says otherwise."""
        token = self.cli("token", "create", "--ttl", "1h").stdout.strip().split()[-1]
        data_dir = self.root / name
        trust = ["--insecure"] if self.cloud.tls is None else ["--ca-file", str(self.cloud.tls.ca_cert)]
        self.cli(
            "edge",
            "join",
            "--server",
            server or self.agent_server,
            "--token",
            token,
            "--site",
            site,
            "--name",
            name,
            *(["--address", address] if address else []),
            "--data-dir",
            str(data_dir),
            *trust,
        )
        agent = AgentProcess(name, site, data_dir, extra_args=list(agent_args or []))
        self.agents[name] = agent
        return agent

    def add_http_workload(self, node: str, marker: str = "v1") -> str:
        name = f"web-{node}"
        port = self.ports.setdefault(name, free_port())
        with self.api() as api:
            doc = http_workload(name, node, port, marker=marker)
            if api.get(f"{API}/workloads/{name}").status_code == 404:
                assert api.post(f"{API}/workloads", json=doc).status_code == 201
            else:
                replace_object(api, f"{API}/workloads/{name}", lambda current: current.update(spec=doc["spec"]))
        return name

    def workload_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/index.html"

    def node(self, name: str) -> dict[str, Any]:
        with self.api() as api:
            result: dict[str, Any] = api.get(f"{API}/nodes/{name}").json()
            return result

    def phase(self, name: str) -> str | None:
        return (self.node(name).get("status") or {}).get("phase")

    def ready(self, name: str) -> bool:
        """Whether node ``name`` is in phase Ready."""
        return self.phase(name) == "Ready"

    def workload_ready(self, node: str, workload: str = "cache") -> bool:
        """Whether ``node`` reports ``workload`` ready in its Node.status."""
        workloads = self.node(node).get("status", {}).get("workloads") or {}
        return bool((workloads.get(workload) or {}).get("ready"))

    def wait_ready(self, nodes: list[str], workload: str = "cache", timeout: float = 60.0) -> None:
        for node in nodes:
            wait_until(partial(self.workload_ready, node, workload), timeout, what=f"the {workload} on {node} ready")

    def peer_votes(self, node: str) -> dict[str, bool]:
        """The health ``node`` voted for each of its peers, from its Node.status."""
        reported = self.node(node).get("status", {}).get("peerVotes") or {}
        return {peer: vote["healthy"] for peer, vote in reported.items()}

    def close(self) -> None:
        for agent in self.agents.values():
            agent.kill()
            agent.kill_workloads()
        self.proxy.close()
        self.cloud.stop()


class BackgroundLoop:
    """``_run`` on a daemon thread from ``with`` entry; exit sets ``_stop`` and joins (10 s at most)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        raise NotImplementedError


class RequestLoop(BackgroundLoop):
    """GETs each URL every ``interval`` s in a thread, for at most ``max_requests`` and ``max_seconds``."""

    def __init__(
        self,
        urls: list[str],
        *,
        interval: float = 0.05,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        headers: dict[str, str] | None = None,
        timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self.urls = urls
        self.headers = headers or {}
        self.timeout = timeout
        self.interval = interval
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.ok = 0
        self.failures: list[str] = []

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            while (
                not self._stop.is_set()
                and time.monotonic() < deadline
                and self.ok + len(self.failures) < self.max_requests
            ):
                for url in self.urls:
                    try:
                        response = client.get(url)
                        if response.status_code == 200:
                            self.ok += 1
                        else:
                            self.failures.append(f"{url}: HTTP {response.status_code}")
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{url}: {exc.__class__.__name__}")
                self._stop.wait(self.interval)
