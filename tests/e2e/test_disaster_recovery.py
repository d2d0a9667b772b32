"""Moving the cloud, twice, under live traffic: nothing at the edge notices. Real processes only.

A fleet of 2 sites x 2 nodes, each node on its own loopback address running
the real built-in cache in front of a real origin; a thread of clients
requests through the four caches all along. The ClusterInfo lists the
current cloud and the two addresses it will move to (the operator adds
them before a move, docs/operations.md). Then, twice:

1. ``edgefleet backup`` of the running cloud's store (SQLite, read beside
   the running cloud);
2. the cloud is killed (SIGKILL);
3. ``edgefleet restore`` into a fresh store: SQLite the first time, etcd
   (a real member) the second, i.e. a SQLite backup restored into etcd;
4. a cloud starts on the new address, on the restored store (new epoch),
   with the same TLS files (the agents pinned the CA when they joined).

Each time the agents reconnect by themselves to the new address, with the
credentials they had; the new cloud sends them next to nothing (its hub's
``edgefleet_hub_bytes_sent``: no object is sent again, each agent's
``edgefleet_agent_sync_objects_received`` is unchanged) and accepts the old
admin token. The last cloud also writes scheduled backups (``--backup-dir``),
on etcd. At the end: no workload restarted (same cache pids, restart
counts 0), not one client request failed, and a Domain change made on the
moved cloud reaches every cache.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cacheproc import OriginProcess
from tests.cloudproc import EDGEFLEET, CloudProcess, free_port, make_pki
from tests.etcd_cluster import EtcdCluster, etcd_server
from tests.faultproxy import FaultProxy
from tests.fleet import API, AgentProcess, Fleet, RequestLoop, cache_workload, replace_object, site_doc
from tests.waiting import wait_until

__all__ = ["etcd_server"]  # the session's etcd member, a fixture

pytestmark = pytest.mark.etcd

CLOUD_FLAGS = ["--heartbeat", "1", "--node-monitor-period", "0.5"]
NODES = {"a1": ("s1", "127.0.0.61"), "a2": ("s1", "127.0.0.62"), "b1": ("s2", "127.0.0.63"), "b2": ("s2", "127.0.0.64")}
HOST = "www.dr.test"
NEW_HOST = "img.dr.test"
PATH = "/bytes/2048/dr"
OBJECTS = "edgefleet_agent_sync_objects_received"


def domain_doc(origin: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "dr"},
        "spec": {"hostnames": [HOST], "origins": [{"url": origin}]},
    }


def cli(*args: str) -> str:
    result = subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"edgefleet {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stderr


def metric(cloud: CloudProcess, name: str) -> float:
    for line in httpx.get(cloud.url + "/metrics", timeout=5, verify=cloud.ssl_context()).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} missing from the cloud's /metrics")


def serves(http_port: int, address: str, host: str) -> bool:
    url = f"http://{address}:{http_port}/bytes/16/new"
    return httpx.get(url, headers={"Host": host}, timeout=5).status_code == 200


def connected_to(agent: AgentProcess, url: str) -> bool:
    status = agent.status()
    return bool(status["connected"]) and status["server"] == url


def holds(agent: AgentProcess, servers: list[str]) -> bool:
    return bool(agent.status()["servers"] == servers)


def move(fleet: Fleet, backup: Path, target_url: str, new: CloudProcess) -> CloudProcess:
    """Back the current cloud's store up, kill the cloud, restore into ``target_url``, start ``new`` there."""
    old = fleet.cloud
    received = {name: agent.metric(OBJECTS) for name, agent in fleet.agents.items()}
    said = cli("backup", "--store", old.store_url, "-o", str(backup))
    assert "backed up" in said and backup.stat().st_mode & 0o077 == 0, said
    old.kill()
    said = cli("restore", str(backup), "--store", target_url)
    assert "new epoch" in said, said
    new.data_dir.mkdir(exist_ok=True)  # restore made it for a SQLite store
    new.start()
    assert not (new.data_dir / "admin-token").exists(), "the restored store has its tokens: no new admin token"
    new.token = old.token
    fleet.cloud = new
    for name, agent in fleet.agents.items():
        wait_until(partial(connected_to, agent, new.url), 30, what=f"{name} to reconnect to {new.url} by itself")
    assert {name: agent.metric(OBJECTS) for name, agent in fleet.agents.items()} == received, "no object sent again"
    sent = metric(new, "edgefleet_hub_bytes_sent_total")
    assert sent < 1000 * len(fleet.agents), f"the new cloud sent {sent} bytes: unchanged state was sent again"
    with new.client() as api:
        assert api.get(f"{API}/nodes").status_code == 200, "the old admin token works on the moved cloud"
    return new


def test_moving_the_cloud_twice_under_traffic(tmp_path: Path, etcd_server: EtcdCluster) -> None:
    origin = OriginProcess(tmp_path).start()
    (tmp_path / "a").mkdir()
    pki = make_pki(tmp_path / "pki")  # one CA, carried from cloud to cloud: the agents pinned it at join
    cloud_a = CloudProcess(f"sqlite:///{tmp_path}/a/store.db", tmp_path / "a", extra_args=CLOUD_FLAGS, tls=pki)
    cloud_b = CloudProcess(
        f"sqlite:///{tmp_path}/b/store.db", tmp_path / "b", port=free_port(), extra_args=CLOUD_FLAGS, tls=pki
    )
    etcd_url = f"{etcd_server.url}/dr-{uuid.uuid4().hex[:8]}"
    backups = ["--backup-dir", str(tmp_path / "backups"), "--backup-every", "1h", "--backup-keep", "2"]
    cloud_c = CloudProcess(etcd_url, tmp_path / "c", port=free_port(), extra_args=[*CLOUD_FLAGS, *backups], tls=pki)
    fleet = Fleet(tmp_path, cloud_a.start(), FaultProxy("127.0.0.1", cloud_a.port).start())
    http_port, admin_port = free_port(), free_port()
    try:
        cluster_info: dict[str, Any] = {
            "apiVersion": "edgefleet.io/v1",
            "kind": "ClusterInfo",
            "metadata": {"name": "default"},
            "spec": {"servers": [fleet.agent_server, cloud_b.url, cloud_c.url]},
        }
        workload = cache_workload(http_port, admin_port, "edgefleet.io/site in (s1,s2)")
        with fleet.api() as api:
            for site in ("s1", "s2"):
                assert api.post(f"{API}/sites", json=site_doc(site)).status_code == 201
            assert api.post(f"{API}/domains", json=domain_doc(origin.url)).status_code == 201
            assert api.post(f"{API}/workloads", json=workload).status_code == 201
            assert api.post(f"{API}/clusterinfos", json=cluster_info).status_code == 201
        with ThreadPoolExecutor(len(NODES)) as pool:  # joins are CLI runs: in parallel
            joined = list(pool.map(lambda node: fleet.join(node[0], node[1][0], address=node[1][1]), NODES.items()))
        for agent in joined:
            agent.start()
        fleet.wait_ready(list(NODES))
        servers = cluster_info["spec"]["servers"]
        for name, agent in fleet.agents.items():
            wait_until(partial(holds, agent, servers), 20, what=f"{name} to hold the list")
        pids = {name: agent.workload_pids()["cache"] for name, agent in fleet.agents.items()}
        urls = [f"http://{address}:{http_port}{PATH}" for _, address in NODES.values()]
        with RequestLoop(urls, interval=0.02, headers={"Host": HOST}, timeout=5.0) as clients:
            wait_until(lambda: clients.ok >= 8, 20, what="clients served")
            move(fleet, tmp_path / "backup-1.jsonl.gz", cloud_b.store_url, cloud_b)
            move(fleet, tmp_path / "backup-2.jsonl.gz", etcd_url, cloud_c)
            with fleet.api() as api:
                replace_object(api, f"{API}/domains/dr", lambda d: d["spec"]["hostnames"].append(NEW_HOST))
            for name, (_, address) in NODES.items():
                wait_until(partial(serves, http_port, address, NEW_HOST), 20, what=f"{name} serving the new name")
            served = clients.ok
            wait_until(lambda: clients.ok >= served + 8, 20, what="clients still served")
        assert clients.failures == [], clients.failures[:10]
        assert {name: agent.workload_pids()["cache"] for name, agent in fleet.agents.items()} == pids
        for name in NODES:
            assert fleet.node(name)["status"]["workloads"]["cache"]["restarts"] == 0
        scheduled = wait_until(lambda: os.listdir(tmp_path / "backups"), 10, what="the moved cloud's scheduled backup")
        assert len(scheduled) == 1 and scheduled[0].startswith("edgefleet-backup-"), scheduled
        assert (
            metric(cloud_c, "edgefleet_backup_last_size_bytes") == (tmp_path / "backups" / scheduled[0]).stat().st_size
        )
    finally:
        fleet.close()
        for cloud in (cloud_a, cloud_b, cloud_c):
            cloud.stop()
        origin.stop()
