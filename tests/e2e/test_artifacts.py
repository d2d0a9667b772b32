"""Artifacts shipped to the edge through the cache tiers, end to end, with real processes only.

One cloud; a parent site ``hub`` (node p1) and an edge site ``edge`` (e1,
e2) under it, each node on its own loopback address running the built-in
cache. ``edgefleet artifact push`` uploads a binary and a tar.gz bundle; a
Workload on the edge site references both; every edge node fetches them
through its own cache (owner peer, then the parent, whose agent is the
internal Domain's origin), so the cloud serves each blob once. A blob that
rots on the cloud's disk fails the next update cleanly: the old process runs
on and the node's status says why. The blob path refuses viewers; a cache
refuses a request without the fleet capability.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import pytest

from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, replace_object, site_doc
from tests.waiting import wait_until

CLOUD_FLAGS = ["--heartbeat", "1", "--node-monitor-period", "0.5"]
ADDRESSES = {"p1": "127.0.0.61", "e1": "127.0.0.62", "e2": "127.0.0.63"}
SITES = {"p1": "hub", "e1": "edge", "e2": "edge"}
ARTIFACT_HOST = "artifacts.edgefleet.internal"
TOOL = b"#!/bin/sh\necho tool v1\n" + bytes(range(256)) * 4096  # about 1 MiB, binary
TOOL_V2 = b"#!/bin/sh\necho tool v2\n" + bytes(range(255, -1, -1)) * 4096


def bundle() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, content in (("index.html", b"<h1>bundle</h1>\n"), ("static/app.js", b"console.log(1)\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def app_workload(tool_version: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "app"},
        "spec": {
            "nodeSelector": "edgefleet.io/site=edge",
            "template": {
                "command": ["python3", "-c", "import time; time.sleep(3600)"],
                "artifacts": [
                    {"name": "tool", "version": tool_version, "path": "bin/tool", "mode": "0755"},
                    {"name": "bundle", "version": "1.0", "path": "www", "extract": "tar.gz"},
                ],
                "terminationGracePeriodSeconds": 2,
            },
        },
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("artifacts")
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_FLAGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    http_port, admin_port = free_port(), free_port()
    fleet.ports["http"] = http_port
    try:
        with fleet.api() as api:
            hub = site_doc("hub")
            hub["spec"]["tier"] = "parent"
            edge = site_doc("edge")
            edge["spec"]["parents"] = ["hub"]
            for document in (hub, edge):
                assert api.post(f"{API}/sites", json=document).status_code == 201
            workload = cache_workload(http_port, admin_port, node_selector="")
            assert api.post(f"{API}/workloads", json=workload).status_code == 201
        with ThreadPoolExecutor(len(ADDRESSES)) as pool:  # joins are CLI processes: start them side by side
            agents = list(pool.map(lambda name: fleet.join(name, SITES[name], address=ADDRESSES[name]), ADDRESSES))
            list(pool.map(lambda agent: agent.start(), agents))
        fleet.wait_ready(list(ADDRESSES))
        for name in ADDRESSES:  # the internal Domain reaches each cache once its agent listens (a SIGHUP)
            wait_until(partial(serves_artifacts, fleet, name), 30, what=f"{name} serving artifacts")
        yield fleet
    finally:
        fleet.close()


def through_cache(fleet: Fleet, node: str, path: str) -> httpx.Response:
    url = f"http://{ADDRESSES[node]}:{fleet.ports['http']}{path}"
    return httpx.get(url, headers={"Host": ARTIFACT_HOST}, timeout=10)


def serves_artifacts(fleet: Fleet, node: str) -> bool:
    """Whether the node's cache has the internal artifact Domain (a 404 from its agent, not a 421)."""
    return through_cache(fleet, node, "/x").status_code == 404


def app_running(fleet: Fleet, node: str) -> bool:
    return app_status(fleet, node).get("state") == "Running"


def artifact_event(fleet: Fleet) -> dict[str, Any] | None:
    with fleet.api() as api:
        events = api.get(f"{API}/events").json()["items"]
    return next(
        (
            e
            for e in events
            if e["spec"]["reason"] == "ArtifactsFailed" and e["spec"]["involvedObject"]["name"] == "app"
        ),
        None,
    )


def blob_gets(fleet: Fleet) -> float:
    """Successful GETs of blobs the cloud served (its /metrics)."""
    text = httpx.get(f"{fleet.cloud.url}/metrics", timeout=5).text
    found = re.findall(r'^edgefleet_blob_requests_total\{[^}]*code="20[06]"[^}]*method="GET"[^}]*\} (\S+)', text, re.M)
    found += re.findall(r'^edgefleet_blob_requests_total\{[^}]*method="GET"[^}]*code="20[06]"[^}]*\} (\S+)', text, re.M)
    return sum(float(value) for value in found)


def push(fleet: Fleet, name: str, version: str, content: bytes) -> str:
    path = fleet.root / f"{name}-{version}.bin"
    path.write_bytes(content)
    return fleet.cli("artifact", "push", str(path), "--name", name, "--version", version).stdout


def installed(fleet: Fleet, node: str, relative: str) -> bytes | None:
    for path in sorted((fleet.agents[node].data_dir / "workloads" / "app").glob(f"*/{relative}")):
        return path.read_bytes()
    return None


def app_status(fleet: Fleet, node: str) -> dict[str, Any]:
    status: dict[str, Any] = (fleet.node(node)["status"].get("workloads") or {}).get("app") or {}
    return status


def test_a_pushed_artifact_reaches_every_node_through_the_tiers(fleet: Fleet) -> None:
    assert "created" in push(fleet, "tool", "1.0", TOOL)
    assert "created" in push(fleet, "bundle", "1.0", bundle())
    assert "unchanged" in push(fleet, "tool", "1.0", TOOL), "the same bytes again are a no-op"
    listing = fleet.cli("get", "artifacts").stdout
    assert "tool" in listing and "1.0" in listing and "upload" in listing, listing
    before = blob_gets(fleet)
    with fleet.api() as api:
        assert api.post(f"{API}/workloads", json=app_workload("1.0")).status_code == 201
    for node in ("e1", "e2"):
        wait_until(partial(app_running, fleet, node), 60, what=f"app running on {node}")
        assert installed(fleet, node, "bin/tool") == TOOL
        assert installed(fleet, node, "www/static/app.js") == b"console.log(1)\n"
        tool = next((fleet.agents[node].data_dir / "workloads" / "app").glob("*/bin/tool"))
        assert tool.stat().st_mode & 0o777 == 0o755
    assert installed(fleet, "p1", "bin/tool") is None, "the parent runs no app"
    assert blob_gets(fleet) - before == 2, "one origin fetch per blob: the tiers collapsed the rest"


def test_a_blob_that_fails_verification_fails_the_update_cleanly(fleet: Fleet) -> None:
    wait_until(partial(app_running, fleet, "e1"), 60, what="app running")
    old_pids = {node: fleet.agents[node].workload_pids()["app"] for node in ("e1", "e2")}
    push(fleet, "tool", "2.0", TOOL_V2)
    digest = fleet.cli("get", "artifact", "tool-2.0", "-o", "json").stdout.split('"sha256": "')[1][:64]
    blob = fleet.root / "blobs" / "sha256" / digest[:2] / digest
    blob.write_bytes(TOOL_V2.replace(b"v2", b"v3"))  # the disk rots: same size, other bytes
    with fleet.api() as api:
        replace_object(api, f"{API}/workloads/app", lambda current: current.update(spec=app_workload("2.0")["spec"]))
    # The rollout moves one node first; it cannot get the new revision's artifacts, so it stays on the old one.
    failing = wait_until(
        lambda: next(
            (n for n in ("e1", "e2") if "update to revision" in (app_status(fleet, n).get("message") or "")), None
        ),
        60,
        what="a node reporting the failed update",
    )
    message = app_status(fleet, failing)["message"]
    assert "SHA-256" in message and digest in message, message
    assert app_status(fleet, failing)["state"] == "Running", "the old revision still runs"
    event = wait_until(partial(artifact_event, fleet), 20, what="an ArtifactsFailed Event on the Workload")
    assert event["spec"]["type"] == "Warning" and failing in event["spec"]["message"], event
    for node in ("e1", "e2"):
        assert installed(fleet, node, "bin/tool") == TOOL, "the old revision's files stay"
        assert fleet.agents[node].workload_pids()["app"] == old_pids[node], "the old process keeps running"


def test_blobs_are_private(fleet: Fleet) -> None:
    digest = fleet.cli("get", "artifact", "tool-1.0", "-o", "json").stdout.split('"sha256": "')[1][:64]
    url = f"{fleet.cloud.url}/edge/v1/blobs/sha256/{digest}"
    assert httpx.get(url, timeout=5).status_code == 401
    viewer = fleet.cli("token", "create", "--role", "viewer").stdout.strip().split()[-1]
    assert httpx.get(url, headers={"Authorization": f"Bearer {viewer}"}, timeout=5).status_code == 403
    admin = httpx.get(url, headers={"Authorization": f"Bearer {fleet.cloud.token}", "Range": "bytes=0-9"}, timeout=5)
    assert admin.status_code == 206 and admin.content == TOOL[:10], admin.headers
    assert "immutable" in admin.headers["Cache-Control"]
    guessed = through_cache(fleet, "e1", f"/sha256/{digest}/{'0' * 32}")
    assert guessed.status_code == 403, "a cache serves a blob only to a request that knows its capability"


def has_blob(fleet: Fleet, node: str, digest: str) -> bool:
    return (fleet.agents[node].data_dir / "artifacts" / "sha256" / digest[:2] / digest).is_file()


def test_artifact_prefetch_reaches_the_selected_sites_before_a_rollout(fleet: Fleet) -> None:
    content = b"prefetched\n" * 1000
    push(fleet, "data", "1.0", content)
    digest = hashlib.sha256(content).hexdigest()
    result = fleet.cli("artifact", "prefetch", "data", "--version", "1.0", "--sites", "edgefleet.io/site=edge")
    assert "fetch it now" in result.stdout
    for node in ("e1", "e2"):
        wait_until(partial(has_blob, fleet, node, digest), 30, what=f"the blob on {node}")
    assert (fleet.agents["e1"].data_dir / "artifacts" / "sha256" / digest[:2] / digest).read_bytes() == content
    refused = fleet.cli("artifact", "prefetch", "data", "--version", "1.0", "--sites", "a in (", check=False)
    assert refused.returncode != 0 and "--sites" in refused.stderr
