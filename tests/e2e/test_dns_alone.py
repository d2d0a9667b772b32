"""``edgefleet dns`` alone: the GSLB in its own process, following a real etcd that a real cloud writes to.

One etcd member, one ``edgefleet cloud`` on it (its own DNS off, its node
lifecycle controller slowed down so that a node reported Ready stays Ready
without an agent) and one ``edgefleet dns --store etcd://...`` on the same
etcd, started before anything is applied: every object it answers with
reached it through its etcd watch, not its first listing.

- A Paris site with one node (Ready, reported through the admin API) and a
  Domain: a client placed in Paris by EDNS Client Subnet gets the node.
- ``spec.draining`` set through the cloud's API: the standalone DNS stops
  answering the node within a second.
- The geo table: the cloud (DNS off) and ``edgefleet dns`` get the same
  custom ``--geo`` file; the cloud publishes it to the nodes as an Artifact
  all the same, ``edgefleet dns`` logs that the nodes use its table, and a
  SIGHUP to the cloud after the file changed publishes the new one.
- ``--store sqlite:///...``: refused with a message that says where the GSLB
  runs instead, before the file is opened (a SQLite store cannot be watched
  from a second process, see :mod:`edgefleet.cli.gslb`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest

from edgefleet.api.geotables import SELECTOR, table_object_name
from tests.cloudproc import EDGEFLEET, CloudProcess, free_port, running_cloud
from tests.etcd_cluster import EtcdCluster, running_etcd
from tests.fleet import API
from tests.waiting import wait_until

GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
NAME = "demo.cdn.edgefleet.test"
PARIS = "127.0.1.0"
NODE_ADDRESS = "127.0.1.21"
MERGE = {"Content-Type": "application/merge-patch+json"}
# A node reported Ready once stays Ready for the test: no agent sends heartbeats.
QUIET_LIFECYCLE = ("--node-not-ready-after", "3600", "--node-unknown-after", "7200", "--node-monitor-period", "3600")

SITE = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Site",
    "metadata": {"name": "par", "labels": {"tier": "edge"}},
    "spec": {
        "region": "eu-west",
        "location": {"lat": 48.86, "lon": 2.35, "country": "FR"},
        "tier": "edge",
        "capacityGbps": 10,
    },
}
NODE = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Node",
    "metadata": {"name": "par-1"},
    "spec": {"site": "par", "addresses": [NODE_ADDRESS]},
}
DOMAIN = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Domain",
    "metadata": {"name": "demo"},
    "spec": {"hostnames": ["demo.test"], "origins": [{"url": "http://127.0.0.1:9"}]},
}


@dataclass
class DnsProcess:
    """A running ``edgefleet dns``, its output in a log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def running_dns(store_url: str, data_dir: Path, geo: Path = GEO) -> Iterator[DnsProcess]:
    port = free_port()
    log_path = data_dir / "dns.log"
    args = [EDGEFLEET, "dns", "--store", store_url, "--listen", f"127.0.0.1:{port}", "--geo", str(geo)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = DnsProcess(proc, port, log_path)
    try:
        wait_until(lambda: _listening(server), 20, interval=0.05, what="edgefleet dns to listen")
        yield server
    finally:
        server.stop()


def _listening(server: DnsProcess) -> bool:
    if server.proc.poll() is not None:
        raise AssertionError(f"edgefleet dns exited with {server.proc.returncode}:\n{server.log()}")
    return "dns listening on" in server.log()


def answers(port: int) -> set[str]:
    """The A records for NAME given to a client in PARIS/24 (EDNS Client Subnet)."""
    query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(PARIS, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    return {item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset}


def report_ready(cloud: CloudProcess, node: str) -> None:
    """What an agent's heartbeat would write; the slowed lifecycle controller leaves it Ready."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with cloud.client() as api:
        response = api.patch(
            f"{API}/nodes/{node}/status",
            headers=MERGE,
            content=json.dumps({"status": {"phase": "Ready", "lastHeartbeat": now}}),
        )
        assert response.status_code == 200, response.text


def create(cloud: CloudProcess, plural: str, document: dict[str, Any]) -> None:
    with cloud.client() as api:
        response = api.post(f"{API}/{plural}", json=document)
        assert response.status_code == 201, response.text


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with running_etcd(tmp_path / "etcd") as cluster:
        yield cluster


def geo_tables(cloud: CloudProcess) -> list[str]:
    """The names of the geo table Artifacts the cloud published to the nodes."""
    with cloud.client() as api:
        response = api.get(f"{API}/artifacts", params={"labelSelector": SELECTOR})
        assert response.status_code == 200, response.text
        return sorted(item["metadata"]["name"] for item in response.json()["items"])


@pytest.mark.etcd
def test_the_standalone_dns_follows_the_clouds_writes_through_etcd(etcd: EtcdCluster, tmp_path: Path) -> None:
    custom = GEO.read_text() + "127.0.77.0/24,AQ,antarctica,-75.0,0.0\n"  # not the packaged table: published
    cloud_geo, dns_geo = tmp_path / "cloud-geo.csv", tmp_path / "dns-geo.csv"
    cloud_geo.write_text(custom)
    dns_geo.write_text(custom)
    with (
        running_cloud(etcd.url, tmp_path, *QUIET_LIFECYCLE, "--dns-listen", "off", "--geo", str(cloud_geo)) as cloud,
        running_dns(etcd.url, tmp_path, dns_geo) as server,
    ):
        assert answers(server.port) == set(), "nothing is applied yet: no Domain, no answer"
        create(cloud, "sites", SITE)
        create(cloud, "nodes", NODE)
        create(cloud, "domains", DOMAIN)
        report_ready(cloud, "par-1")
        wait_until(lambda: answers(server.port) == {NODE_ADDRESS}, 5, interval=0.05, what="par-1 in the answers")

        with cloud.client() as api:
            drained = time.monotonic()  # counted from the request: the write is in etcd before the reply
            response = api.patch(f"{API}/nodes/par-1", headers=MERGE, content=json.dumps({"spec": {"draining": True}}))
            assert response.status_code == 200, response.text
        wait_until(lambda: answers(server.port) == set(), 5, interval=0.02, what="par-1 out of the answers")
        elapsed = time.monotonic() - drained
        assert elapsed < 1.0, f"the standalone DNS answered a draining node for {elapsed:.2f}s"
        assert server.proc.poll() is None, server.log()

        first = table_object_name(hashlib.sha256(custom.encode()).hexdigest())
        wait_until(lambda: geo_tables(cloud) == [first], 10, what="the cloud's --geo published without its DNS")
        agreed = f"the nodes use this GSLB's geo table {dns_geo} ({first})"
        if agreed not in server.log():  # it checked before the cloud published: a reload checks again now
            os.killpg(server.proc.pid, signal.SIGHUP)
        wait_until(lambda: agreed in server.log(), 15, what="edgefleet dns: the nodes use its table")
        cloud_geo.write_text(custom.replace(",AQ,antarctica,", ",GB,eu-west,"))
        assert cloud.proc is not None
        cloud.proc.send_signal(signal.SIGHUP)
        second = table_object_name(hashlib.sha256(cloud_geo.read_bytes()).hexdigest())
        wait_until(lambda: geo_tables(cloud) == [second], 10, what="the reloaded table published, the first removed")


def test_a_sqlite_store_is_refused_with_where_the_gslb_runs_instead(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    result = subprocess.run(
        [EDGEFLEET, "dns", "--store", f"sqlite:///{database}", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert "edgefleet dns needs an etcd store; with SQLite the GSLB runs inside edgefleet cloud" in result.stderr
    assert not database.exists() and not database.with_name("store.db.lock").exists(), "refused before opening"


def test_a_store_url_that_is_not_etcd_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [EDGEFLEET, "dns", "--store", "redis://127.0.0.1:6379"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2, result
    assert "edgefleet dns needs an etcd store (etcd://HOST:PORT" in result.stderr
