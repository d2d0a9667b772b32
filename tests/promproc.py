"""A real Prometheus (the Debian package's /usr/bin/prometheus) scraping a fleet through its cloud.

:func:`running_prometheus` writes a prometheus.yml the way docs/metrics.md
tells operators to (HTTP service discovery against the cloud with a
metrics-reader token in a ``credentials_file``, the cloud's CA), with a
1 s scrape and discovery interval, starts Prometheus on a free port and
stops it afterwards. :meth:`Prometheus.query` asks its HTTP API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.cloudproc import free_port
from tests.waiting import wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: edgefleet-fleet
    scheme: https
    tls_config: {{ca_file: "{ca}"}}
    authorization: {{type: Bearer, credentials_file: "{credentials}"}}
    http_sd_configs:
      - url: "{cloud}/edge/v1/prometheus/targets"
        refresh_interval: 1s
        tls_config: {{ca_file: "{ca}"}}
        authorization: {{type: Bearer, credentials_file: "{credentials}"}}
  - job_name: edgefleet-cloud
    scheme: https
    tls_config: {{ca_file: "{ca}"}}
    static_configs:
      - targets: ["{cloud_host}"]
"""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def diagnosis(self) -> str:
        """What Prometheus says of its targets, and the end of its log (for a failing test's message)."""
        targets = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = [(t["labels"].get("node"), t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        return f"targets: {health}\nlog:\n{self.log.read_text(errors='replace')[-3000:]}"


def available() -> bool:
    return Path(PROMETHEUS).exists()


@contextlib.contextmanager
def running_prometheus(directory: Path, cloud: str, ca: Path, token: str) -> Iterator[Prometheus]:
    """Prometheus scraping every node of the cloud at ``cloud`` (https://host:port) with ``token``."""
    directory.mkdir(parents=True, exist_ok=True)
    credentials = directory / "metrics-token"
    credentials.write_text(token)
    credentials.chmod(0o600)
    config = directory / "prometheus.yml"
    host = cloud.split("://", 1)[1]
    config.write_text(CONFIG.format(ca=ca, credentials=credentials, cloud=cloud, cloud_host=host))
    port = free_port()
    log = directory / "prometheus.log"
    args = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: _ready(prometheus), 30, what="prometheus ready")
        yield prometheus
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _ready(prometheus: Prometheus) -> bool:
    if prometheus.process.poll() is not None:
        raise AssertionError(f"prometheus exited:\n{prometheus.log.read_text(errors='replace')}")
    try:
        return httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
