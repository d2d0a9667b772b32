"""Start a real ``edgefleet cloud`` process for tests and benchmarks.

The process runs the installed console script (the same one operators run)
on a free loopback port, with its own store and admin-token file, and is
stopped (SIGTERM, then SIGKILL) however the test ends.

Test clouds serve cleartext HTTP (no handshake per request: the suite stays
as fast as it was), so the CLI and agents of tests allow it explicitly
(:data:`INSECURE_ENV`, ``edge join --insecure``). ``tls=`` (a
:class:`~edgefleet.tls.PkiFiles`, e.g. from :func:`make_pki`) serves HTTPS
instead; ``client()`` then trusts that CA alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from edgefleet.tls import PkiFiles, ensure_pki
from tests.waiting import wait_until

EDGEFLEET = str(Path(sys.executable).with_name("edgefleet"))
INSECURE_ENV = {"EDGEFLEET_INSECURE": "1"}
"""What the CLI of a test needs to talk to a cleartext test cloud."""


def make_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> PkiFiles:
    """A CA and a server certificate for loopback (made once per directory)."""
    return ensure_pki(directory, list(hosts))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class CloudProcess:
    store_url: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    dns_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    tls: PkiFiles | None = None

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://127.0.0.1:{self.port}"

    @property
    def cli_env(self) -> dict[str, str]:
        """What the CLI needs to trust this cloud: its CA file, or cleartext allowed."""
        return INSECURE_ENV if self.tls is None else {"EDGEFLEET_CA_FILE": str(self.tls.ca_cert)}

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"cloud-{self.port}.log"

    def start(self, timeout: float = 20.0) -> CloudProcess:
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
        if "--dns-listen" not in self.extra_args:  # each test cloud's DNS on its own port
            args += ["--dns-listen", f"127.0.0.1:{self.dns_port}"]
        if self.tls is not None:
            args += [
                "--tls-cert",
                str(self.tls.server_cert),
                "--tls-key",
                str(self.tls.server_key),
                "--tls-ca",
                str(self.tls.ca_cert),
            ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        if token_file.exists():
            self.token = token_file.read_text().strip()
        return self

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"edgefleet cloud exited with {self.proc.returncode}:\n{self.log()}")
            return httpx.get(self.url + "/readyz", timeout=1.0, verify=self.ssl_context()).status_code == 200

        try:
            wait_until(ready, timeout, what="edgefleet cloud ready", give_up=RuntimeError)
        except AssertionError as failure:
            raise RuntimeError(f"{failure}:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def ssl_context(self) -> ssl.SSLContext | bool:
        """For httpx ``verify``: this cloud's CA alone when it serves TLS."""
        return True if self.tls is None else ssl.create_default_context(cafile=str(self.tls.ca_cert))

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=10.0,
            verify=self.ssl_context(),
        )


@contextlib.contextmanager
def running_cloud(
    store_url: str,
    data_dir: Path,
    *extra_args: str,
    tls: PkiFiles | None = None,
) -> Iterator[CloudProcess]:
    cloud = CloudProcess(store_url, data_dir, extra_args=list(extra_args), tls=tls)
    try:
        yield cloud.start()
    finally:
        cloud.stop()


def delete_objects(cloud: CloudProcess, plurals: tuple[str, ...]) -> None:
    """Delete every object of these kinds (dependents first; ``force``): a module-scoped cloud, emptied per test."""
    with cloud.client() as api:
        for plural in plurals:
            path = f"/apis/edgefleet.io/v1/{plural}"
            for item in api.get(path).raise_for_status().json()["items"]:
                name = item["metadata"]["name"]
                assert api.delete(f"{path}/{name}", params={"force": "true"}).status_code in (200, 404), name
