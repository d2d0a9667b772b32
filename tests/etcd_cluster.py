"""Start real etcd members on loopback for tests: one member or a cluster.

How: each member is the Debian ``etcd`` binary (package ``etcd-server``) on
two free 127.0.0.1 ports (client, peer) with its own data directory and log
file. ``start_cluster`` launches every member, then waits until each answers
``/health`` on its client port. Members are stopped (SIGTERM, then SIGKILL)
however the test ends; as a last resort each member also gets SIGKILL from
the kernel when the test process dies (``PR_SET_PDEATHSIG``), so a crashed
pytest leaves no etcd behind.

Why real etcd: the store's etcd backend is only worth something if it holds
against the real server's revisions, compaction, leases and member failures.
A missing binary is a test *failure* that says what to install, never a skip,
so that a machine without etcd cannot pass the suite by hiding it.

Tuning: short heartbeat/election timeouts make leader elections (and the
minimum lease TTL, 1.5 x election timeout) short; a short
``--experimental-watch-progress-notify-interval`` makes idle watches report
progress quickly, as the store's ``Progress`` contract expects.

Use ``running_etcd(tmp_path, size=3)`` as a context manager, or the
``etcd_server`` (one member for the whole session) and ``etcd_cluster3``
(three members, one test) fixtures.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# EDGEFLEET_ETCD_BINARY points at another build (or, set to a missing path,
# shows what a machine without etcd reports).
ETCD_BINARY = os.environ.get("EDGEFLEET_ETCD_BINARY") or shutil.which("etcd") or "/usr/bin/etcd"
INSTALL_HINT = "install the Debian package etcd-server (apt-get install etcd-server)"

# Fast elections: a killed leader is replaced in about a second.
HEARTBEAT_MS = 50
ELECTION_MS = 500
PROGRESS_NOTIFY_INTERVAL = "250ms"


def require_etcd() -> str:
    """The etcd binary path; fails (not skips) the test when it is missing."""
    if not os.access(ETCD_BINARY, os.X_OK):
        pytest.fail(f"{ETCD_BINARY} not found. {INSTALL_HINT}", pytrace=False)
    return ETCD_BINARY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the test process dies."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


@dataclass
class EtcdMember:
    name: str
    data_dir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    def start(self, initial_cluster: str, token: str) -> None:
        args = [
            require_etcd(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-token",
            token,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            str(HEARTBEAT_MS),
            "--election-timeout",
            str(ELECTION_MS),
            "--experimental-watch-progress-notify-interval",
            PROGRESS_NOTIFY_INTERVAL,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "warn",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # only prctl, then exec
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1.0) as resp:
                return bool(json.load(resp).get("health") == "true")
        except (OSError, ValueError):
            return False

    def status(self) -> dict[str, str]:
        """This member's view from the HTTP gateway: ``member_id`` and ``leader``."""
        request = urllib.request.Request(self.client_url + "/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=2.0) as resp:
            body = json.load(resp)
        return {"member_id": body["header"]["member_id"], "leader": body["leader"]}

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class EtcdCluster:
    members: list[EtcdMember]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """The store URL naming every member: ``etcd://h1:p1,h2:p2,...``."""
        return "etcd://" + ",".join(self.endpoints)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = [m for m in self.members if m.running()]
        while waiting:
            for member in waiting:
                if not member.running():
                    raise RuntimeError(f"etcd {member.name} exited:\n{member.log()}")
            waiting = [m for m in waiting if not m.healthy()]
            if waiting and time.monotonic() > deadline:
                logs = "\n".join(f"--- {m.name}\n{m.log()}" for m in waiting)
                raise RuntimeError(f"etcd not healthy after {timeout}s:\n{logs}")
            if waiting:
                time.sleep(0.05)

    def leader_index(self) -> int:
        """Index in ``members`` of the current leader, asked of a live member."""
        for member in self.members:
            if member.running():
                with contextlib.suppress(OSError, KeyError, ValueError):
                    leader = member.status()["leader"]
                    for index, candidate in enumerate(self.members):
                        if candidate.running() and candidate.status()["member_id"] == leader:
                            return index
        raise RuntimeError("no member knows a leader")

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def start_cluster(base_dir: Path, size: int = 1, timeout: float = 20.0) -> EtcdCluster:
    """Start ``size`` members on free loopback ports and wait until all are healthy."""
    require_etcd()
    base_dir.mkdir(parents=True, exist_ok=True)
    cluster = EtcdCluster([EtcdMember(f"m{i}", base_dir / f"m{i}") for i in range(size)])
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster.members)
    token = f"edgefleet-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        for member in cluster.members:
            member.start(initial, token)
        cluster.wait_healthy(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_etcd(base_dir: Path, size: int = 1) -> Iterator[EtcdCluster]:
    """An etcd cluster for the duration of the ``with`` block; data removed after."""
    cluster = start_cluster(base_dir, size)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member shared by the session; tests isolate by key prefix."""
    with running_etcd(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def etcd_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A fresh three-member etcd cluster for one test."""
    with running_etcd(tmp_path_factory.mktemp("etcd3"), size=3) as cluster:
        yield cluster
