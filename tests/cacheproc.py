"""Start real origin and ``edgefleet cache`` processes for tests and benchmarks.

``OriginProcess`` runs ``python -m edgefleet.demo.origin`` (the programmable
origin) and reads its request counters; ``CacheProcess`` writes a cache
config, runs the installed ``edgefleet cache`` console script and offers a
raw-socket and an httpx client to it. Both are stopped (SIGTERM, then
SIGKILL) however the test ends (``with started(proc)``).

``RawConnection`` is a client that writes exact bytes and reads responses
one at a time with its own small HTTP/1.1 response reader (Content-Length,
chunked or close-delimited bodies, none for HEAD/1xx/204/304): what
pipelining, keep-alive and framing tests need and httpx hides.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.cloudproc import EDGEFLEET, free_port
from tests.waiting import wait_until

ADMIN_TOKEN = "test-admin-token-0123456789"


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    def answered() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return True
        return False

    try:
        wait_until(answered, timeout, what=url, give_up=RuntimeError)
    except AssertionError as failure:
        raise RuntimeError(f"{failure}:\n{log.read_text()[-3000:]}") from None


@dataclass
class OriginProcess:
    """The programmable origin (``src/edgefleet/origin.py``) on a free loopback port."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> OriginProcess:
        log = self.data_dir / f"origin-{self.port}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.demo.origin", "--listen", f"{self.host}:{self.port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(f"{self.url}/__origin/stats", timeout, self.proc, log)
        return self

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/__origin/stats", timeout=5).json()
        return data

    def count(self, path: str) -> int:
        """Requests the origin received for ``path`` (path + '?' + query, as sent)."""
        return int(self.stats()["by_path"].get(path, 0))

    def reset(self) -> None:
        httpx.post(f"{self.url}/__origin/reset", timeout=5)

    def mode(self, mode: str) -> None:
        httpx.post(f"{self.url}/__origin/mode", json={"mode": mode}, timeout=5)

    def bump(self, path: str) -> None:
        httpx.post(f"{self.url}/__origin/version", params={"path": path}, timeout=5)

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class RawResponse:
    """One response as read off the wire."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"

    def header(self, name: str) -> str | None:
        """The first field named ``name`` (case-insensitive), or None."""
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def names(self) -> list[str]:
        return [key.lower() for key, _ in self.headers]


class RawConnection:
    """A client connection that sends exact bytes and reads responses in order (see the module docstring)."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self._buffer = b""
        self.eof = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self._buffer += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed inside a response head: {self._buffer[:200]!r}")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise ConnectionError(f"connection closed after {len(self._buffer)} of {size} body bytes")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read_response(self, method: str = "GET") -> RawResponse:
        """The next response; ``method`` is the request's (a HEAD response has no body)."""
        version, _, rest = self._line().decode("latin-1").partition(" ")
        assert version == "HTTP/1.1", version
        code, _, reason = rest.partition(" ")
        headers = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        response = RawResponse(int(code), reason, headers, b"", "none")
        if method == "HEAD" or response.status < 200 or response.status in (204, 304):
            return response
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            response.body, response.framing = self._chunked(), "chunked"
        elif response.header("content-length") is not None:
            response.body, response.framing = self._exactly(int(response.header("content-length") or 0)), "length"
        else:
            while self._fill():
                pass
            response.body, response.framing, self._buffer = self._buffer, "close", b""
        return response

    def _chunked(self) -> bytes:
        parts = []
        while size := int(self._line().split(b";")[0], 16):
            parts.append(self._exactly(size))
            assert self._exactly(2) == b"\r\n"
        while self._line():  # trailers
            pass
        return b"".join(parts)

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within ``seconds`` (bytes sent meanwhile are kept)."""
        deadline = time.monotonic() + seconds
        while not self.eof and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                self._fill()
        return self.eof

    def pending_bytes(self) -> bytes:
        return self._buffer


def http_request(
    method: str,
    target: str,
    host: str | None = "demo.test",
    *headers: tuple[str, str],
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    """The bytes of one request (a Content-Length is added for a body unless a framing header is given)."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    framed = any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers)
    if body and not framed:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def cache_config(
    origin_url: str,
    data_dir: Path,
    *,
    node: str = "t1",
    host: str = "127.0.0.1",
    port: int | None = None,
    admin_port: int | None = None,
    workers: int = 1,
    hostnames: tuple[str, ...] = ("demo.test",),
    cache_policy: dict[str, Any] | None = None,
    disk: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """A cache config document for one domain ``demo`` served from ``origin_url``."""
    domain: dict[str, Any] = {"name": "demo", "hostnames": list(hostnames), "origins": [{"url": origin_url}]}
    if cache_policy is not None:
        domain["cachePolicy"] = cache_policy
    storage: dict[str, Any] = {"memoryBytes": 64 * 2**20}
    if disk:
        storage["disk"] = {"path": str(data_dir / f"disk-{node}"), "maxBytes": 256 * 2**20}
    config: dict[str, Any] = {
        "node": node,
        "listen": f"{host}:{port or free_port()}",
        "workers": workers,
        "admin": {"listen": f"{host}:{admin_port or free_port()}", "token": ADMIN_TOKEN},
        "storage": storage,
        "accessLog": {"path": str(data_dir / f"access-{node}.log"), "sample": 1.0},
        "domains": [domain],
    }
    config.update(overrides)
    return config


@dataclass
class CacheProcess:
    """``edgefleet cache --config`` with a config document written to ``data_dir``."""

    config: dict[str, Any]
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / f"cache-{self.config['node']}.yaml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"cache-{self.config['node']}.log"

    @property
    def url(self) -> str:
        return f"http://{self.config['listen']}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config['admin']['listen']}"

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.config["listen"].rpartition(":")
        return host, int(port)

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self, timeout: float = 20.0) -> CacheProcess:
        self.write_config()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [EDGEFLEET, "cache", "--config", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(f"{self.admin_url}/healthz", timeout, self.proc, self.log_path)
        self.wait_healthy(timeout)
        return self

    def reload(self, config: dict[str, Any]) -> None:
        """Write a new config and SIGHUP the master."""
        self.config = config
        self.write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def client(self, host: str = "demo.test") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Host": host}, timeout=10, cookies=no_cookies())

    def get(self, path: str, host: str = "demo.test", **headers: str) -> httpx.Response:
        with self.client(host) as client:
            return client.get(path, headers=headers)

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send raw bytes, read until the server closes or ``timeout``; the bytes received."""
        with socket.create_connection(self.address, timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        return b"".join(chunks)

    def connect(self, timeout: float = 10.0) -> RawConnection:
        return RawConnection(self.address, timeout)

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The master's worker processes (its children), as ``pgrep -P`` lists them."""
        found = subprocess.run(["pgrep", "-P", str(self.master_pid)], capture_output=True, text=True, check=False)
        return sorted(int(pid) for pid in found.stdout.split())

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until /healthz says every worker is up."""
        try:
            wait_until(
                lambda: httpx.get(f"{self.admin_url}/healthz", timeout=2).status_code == 200,
                timeout,
                what="every cache worker up",
            )
        except AssertionError as failure:
            raise RuntimeError(f"{failure}:\n{self.log()[-3000:]}") from None

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the log contains ``text``; the log."""
        try:

            def logged() -> str:
                log = self.log()
                return log if text in log else ""

            return wait_until(logged, timeout, what=f"{text!r} logged")
        except AssertionError as failure:
            raise AssertionError(f"{failure}:\n{self.log()[-3000:]}") from None

    def admin(self, method: str, path: str, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.request(method, f"{self.admin_url}{path}", headers=headers, timeout=30, **kwargs)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.admin_url}/status", timeout=5).json()
        return data

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.admin_url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


Proc = TypeVar("Proc", OriginProcess, CacheProcess)


@contextlib.contextmanager
def started(proc: Proc) -> Iterator[Proc]:
    """``proc`` started, and stopped however the block ends (a start that fails included)."""
    try:
        yield proc.start()
    finally:
        proc.stop()


@contextlib.contextmanager
def all_started(procs: list[CacheProcess]) -> Iterator[None]:
    """The caches started in parallel (each start waits for health), all stopped however the block ends."""
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(CacheProcess.start, procs))
        yield
    finally:
        for proc in procs:
            proc.stop()


_keepalive: dict[str, httpx.Client] = {}


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: a test's requests carry no Cookie unless it sends one.

    A response with ``Set-Cookie`` (``?setcookie=1``) would otherwise make every later request of a
    shared client carry a Cookie, and the cache does not store responses to those.
    """
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def keepalive_client(base_url: str) -> httpx.Client:
    """A keep-alive client for ``base_url``, made once per test module (making one costs milliseconds).

    It sends no default ``Accept-Encoding`` and keeps no cookies: a request has exactly the fields its test
    gives (and httpx's Host, Accept, Connection and User-Agent). ``tests/cache/conftest.py`` closes the
    clients after each module.
    """
    client = _keepalive.get(base_url)
    if client is None:
        client = _keepalive[base_url] = httpx.Client(base_url=base_url, timeout=15, cookies=no_cookies())
        del client.headers["accept-encoding"]
    return client


def close_keepalive_clients() -> None:
    for client in _keepalive.values():
        client.close()
    _keepalive.clear()


@contextlib.contextmanager
def running(*processes: OriginProcess | CacheProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in reversed(processes):
            proc.stop()
