"""Joining a node as an operator does it: real cloud process, the CLI as subprocesses.

token create -> edge join (files, modes) -> the Node exists and the
credential works only for it -> the lifecycle controller demotes it when it
stays silent -> get nodes shows it -> rotate-credential -> node revoke.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from edgefleet.sync.agent import AgentSession, LocalState
from tests.cloudproc import CloudProcess, running_cloud
from tests.e2e.test_cli import ok, run
from tests.etcd_cluster import running_etcd
from tests.fleet import site_doc
from tests.waiting import wait_until

NODES = "/apis/edgefleet.io/v1/nodes"
SITES = "/apis/edgefleet.io/v1/sites"
# Ready for 3 s after a heartbeat (a CLI run must see it on a loaded machine), then NotReady for 3 s, then Unknown.
FAST_LIFECYCLE = ("--node-not-ready-after", "3", "--node-unknown-after", "6", "--node-monitor-period", "0.1")


@pytest.fixture
def fast_cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path, *FAST_LIFECYCLE) as cloud:
        with cloud.client() as admin:
            assert admin.post(SITES, json=site_doc("par-edge")).status_code == 201  # nodes join into it
        yield cloud


def wait_for(check: Callable[[], bool], within: float = 10.0) -> None:
    wait_until(check, within)


def phase_of(cloud: CloudProcess, name: str) -> str | None:
    with cloud.client() as api:
        value: str | None = api.get(f"{NODES}/{name}").json().get("status", {}).get("phase")
        return value


def join(cloud: CloudProcess, tmp_path: Path, token: str, data_dir: Path, *extra: str) -> Any:
    return run(
        cloud,
        tmp_path,
        "edge",
        "join",
        "--server",
        cloud.url,
        "--token",
        token,
        "--site",
        "par-edge",
        "--name",
        "edge-e2e",
        "--label",
        "tier=edge",
        "--address",
        "127.0.0.1",
        "--data-dir",
        str(data_dir),
        *(["--insecure"] if cloud.tls is None else []),
        *extra,
    )


def test_token_join_lifecycle_rotate_revoke(fast_cloud: CloudProcess, tmp_path: Path) -> None:
    cloud = fast_cloud
    token = ok(run(cloud, tmp_path, "token", "create", "--ttl", "10m", "--description", "e2e")).strip()
    created = json.loads(ok(run(cloud, tmp_path, "token", "create", "-o", "json")))
    assert set(created) >= {"token", "expiresAt", "id"}
    assert token.split(".")[0] in ok(run(cloud, tmp_path, "token", "list"))

    data_dir = tmp_path / "node"
    joined = ok(join(cloud, tmp_path, token, data_dir))
    assert "joined as node/edge-e2e" in joined
    credential_file = data_dir / "credential"
    assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    credential = credential_file.read_text().strip()
    assert yaml.safe_load((data_dir / "node.yaml").read_text()) == {
        "server": cloud.url,
        "servers": [cloud.url],
        "node": "edge-e2e",
        "site": "par-edge",
        "insecure": True,
    }

    with cloud.client() as admin:
        node = admin.get(f"{NODES}/edge-e2e").json()
    assert node["spec"]["site"] == "par-edge" and node["spec"]["addresses"] == ["127.0.0.1"]
    assert node["metadata"]["labels"] == {"tier": "edge"}
    with cloud.client(credential) as as_node:
        assert as_node.get(f"{NODES}/edge-e2e").status_code == 200
        assert as_node.get(NODES).status_code == 403

    again = join(cloud, tmp_path, token, data_dir)
    assert again.returncode == 1 and "joined already" in again.stderr and "--force" in again.stderr

    check_lifecycle(cloud, tmp_path, credential)
    check_rotation(cloud, tmp_path, data_dir, credential)

    revoked = ok(run(cloud, tmp_path, "node", "revoke", "edge-e2e"))
    assert "2 credential(s) revoked" in revoked, "the rotated one and the one in its grace period"
    for token_now in (credential, credential_file.read_text().strip()):
        with cloud.client(token_now) as as_node:
            assert as_node.get(f"{NODES}/edge-e2e").status_code == 401


def check_lifecycle(cloud: CloudProcess, tmp_path: Path, credential: str) -> None:
    """Never heard from: Unknown; a heartbeat (as the hub writes it) then silence: NotReady, Unknown."""
    wait_for(lambda: phase_of(cloud, "edge-e2e") == "Unknown")
    with cloud.client(credential) as as_node:  # its status goes over its hub session only (issue 12, item 2)
        refused = as_node.patch(
            f"{NODES}/edge-e2e/status",
            json={"status": {"lastHeartbeat": "2099-01-01T00:00:00Z"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert refused.status_code == 403, refused.text

    def table_after_a_heartbeat() -> list[str] | None:
        """The table right after a heartbeat; None if the node went NotReady (3 s) before the CLI listed it."""
        with cloud.client() as as_node:  # the admin writes what the hub would
            beat = {
                "status": {
                    "phase": "Ready",
                    "message": None,
                    "hub": "hub-1",
                    "syncedRevision": 5,
                    "lastHeartbeat": datetime.now(UTC).isoformat(),
                    "workloads": {"cache": {"ready": True}, "api": {"ready": False}},
                }
            }
            response = as_node.patch(
                f"{NODES}/edge-e2e/status",
                content=json.dumps(beat),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert response.status_code == 200, response.text
        lines = ok(run(cloud, tmp_path, "get", "nodes")).splitlines()
        return lines if "NotReady" not in lines[-1] else None

    table = wait_until(table_after_a_heartbeat, 30, interval=0, what="a table listed within 3 s of a heartbeat")
    header, row = table[0].split(), table[-1].split()
    assert header == ["NAME", "STATUS", "SITE", "HEARTBEAT", "HUB", "SYNCED", "WORKLOADS", "OFFLOAD", "AGE"]
    assert row[:3] == ["edge-e2e", "Ready", "par-edge"] and row[3].endswith("s") and row[4:7] == ["hub-1", "5", "1/2"]
    assert "127.0.0.1" in ok(run(cloud, tmp_path, "get", "nodes", "-o", "wide"))
    spec = node_spec(cloud)
    wait_for(lambda: phase_of(cloud, "edge-e2e") == "NotReady")
    wait_for(lambda: phase_of(cloud, "edge-e2e") == "Unknown")
    assert node_spec(cloud) == spec
    assert "Unknown" in ok(run(cloud, tmp_path, "get", "nodes"))


def node_spec(cloud: CloudProcess) -> tuple[Any, Any]:
    with cloud.client() as admin:
        node = admin.get(f"{NODES}/edge-e2e").json()
    return node["spec"], node["metadata"]["generation"]


def check_rotation(cloud: CloudProcess, tmp_path: Path, data_dir: Path, old: str) -> None:
    rotated = ok(run(cloud, tmp_path, "edge", "rotate-credential", "--data-dir", str(data_dir)))
    assert "rotated" in rotated and "stops working at" in rotated
    credential_file = data_dir / "credential"
    new = credential_file.read_text().strip()
    assert new != old and stat.S_IMODE(credential_file.stat().st_mode) == 0o600
    assert not [p for p in os.listdir(data_dir) if p.endswith(".tmp")]
    with cloud.client(new) as as_node:
        assert as_node.get(f"{NODES}/edge-e2e").status_code == 200
    with cloud.client(old) as as_node:
        assert as_node.get(f"{NODES}/edge-e2e").status_code == 200, "the old one has a grace period"


def test_join_with_a_bad_token_changes_nothing(token_cloud: CloudProcess, tmp_path: Path) -> None:
    before = node_names(token_cloud)
    result = join(token_cloud, tmp_path, "abcdef." + "0" * 32, tmp_path / "node")
    assert result.returncode == 1 and "bootstrap token" in result.stderr
    assert not (tmp_path / "node").exists()
    assert node_names(token_cloud) == before, "no node joined"


def node_names(cloud: CloudProcess) -> set[str]:
    with cloud.client() as admin:
        return {node["metadata"]["name"] for node in admin.get(NODES).raise_for_status().json()["items"]}


def edge_join_http(cloud: CloudProcess, token: str, name: str, site: str = "par-edge") -> httpx.Response:
    return httpx.post(
        f"{cloud.url}/edge/v1/join",
        json={"name": name, "site": site},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def token_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    """One cloud for the narrowed-token tests (each uses its own node names)."""
    root = tmp_path_factory.mktemp("tokens")
    with running_cloud(f"sqlite:///{root}/store.db", root) as cloud:
        with cloud.client() as admin:
            assert admin.post(SITES, json=site_doc("par-edge")).status_code == 201
        yield cloud


def test_narrowed_tokens_bind_site_name_and_uses(token_cloud: CloudProcess, tmp_path: Path) -> None:
    """Issue 12, item 6: `token create --site S --name N --uses 1`; wrong site or name, or a second use, refused;
    concurrent joins with a one-use token make exactly one node."""
    cloud = token_cloud
    token = ok(
        run(
            cloud,
            tmp_path,
            "token",
            "create",
            "--site",
            "par-edge",
            "--name",
            "edge-e2e",
            "--uses",
            "1",
            "--ttl",
            "10m",
        )
    ).strip()
    for name, site in (("edge-e2e", "ams-edge"), ("edge-other", "par-edge")):
        refused = edge_join_http(cloud, token, name, site)
        assert refused.status_code == 403 and "is bound to" in refused.json()["message"], refused.text
    assert "joined as node/edge-e2e" in ok(join(cloud, tmp_path, token, tmp_path / "node"))
    again = join(cloud, tmp_path, token, tmp_path / "again")
    assert again.returncode == 1 and "used up (1 of 1 joins)" in again.stderr, again.stderr
    listed = ok(run(cloud, tmp_path, "token", "list"))
    assert "1/1" in listed and "par-edge/edge-e2e" in listed, listed

    with cloud.client() as admin:
        once = admin.post("/edge/v1/bootstrap-tokens", json={"uses": 1}).json()["token"]
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda i: edge_join_http(cloud, once, f"edge-{i}").status_code, range(8)))
    assert codes == [201] + [401] * 7, codes
    with cloud.client() as admin:
        names = {node["metadata"]["name"] for node in admin.get(NODES).json()["items"]}
    assert len(names - {"edge-approved"}) == 2, names


def test_a_node_joined_with_an_approval_token_waits_for_node_approve(token_cloud: CloudProcess, tmp_path: Path) -> None:
    """The node joins but its agent is refused (no session, no view) until `edgefleet node approve`."""
    cloud = token_cloud
    with cloud.client() as admin:
        token = admin.post("/edge/v1/bootstrap-tokens", json={"approval": True}).json()["token"]
    joined = ok(
        run(
            cloud,
            tmp_path,
            "edge",
            "join",
            "--server",
            cloud.url,
            "--token",
            token,
            "--site",
            "par-edge",
            "--name",
            "edge-approved",
            "--data-dir",
            str(tmp_path / "node"),
            "--insecure",
        )
    )
    assert "edgefleet node approve edge-approved" in joined
    credential = (tmp_path / "node" / "credential").read_text().strip()
    sync = cloud.url.replace("http", "ws", 1) + "/edge/v1/sync"
    headers = {"Authorization": f"Bearer {credential}"}
    with pytest.raises(InvalidStatus) as refused, connect(sync, additional_headers=headers):
        pass
    assert refused.value.response.status_code == 403
    with cloud.client(credential) as as_node:
        waiting = as_node.get(f"{NODES}/edge-approved")
        assert waiting.status_code == 403 and "edgefleet node approve edge-approved" in waiting.json()["message"]
    assert "approved" in ok(run(cloud, tmp_path, "node", "approve", "edge-approved"))
    with connect(sync, additional_headers=headers) as session:
        session.send(AgentSession("edge-approved", local=LocalState("", 0, {}, "test")).hello())
        assert json.loads(session.recv(timeout=10))["type"] == "welcome"
    with cloud.client() as admin:
        assert admin.post("/edge/v1/nodes/edge-approved/approve").json()["approved"] == 0


@pytest.mark.etcd
def test_two_clouds_on_etcd_run_one_lifecycle_controller(tmp_path: Path) -> None:
    with running_etcd(tmp_path / "etcd") as etcd:
        first_dir, second_dir = tmp_path / "c1", tmp_path / "c2"
        first_dir.mkdir()
        second_dir.mkdir()
        with (
            running_cloud(etcd.url, first_dir, *FAST_LIFECYCLE) as first,
            running_cloud(etcd.url, second_dir, *FAST_LIFECYCLE) as second,
        ):
            second.token = first.token
            with first.client() as admin:
                node = {
                    "apiVersion": "edgefleet.io/v1",
                    "kind": "Node",
                    "metadata": {"name": "edge-e2e"},
                    "spec": {"site": "par-edge"},
                }
                assert admin.post(SITES, json=site_doc("par-edge")).status_code == 201
                assert admin.post(NODES, json=node).status_code == 201
            wait_for(lambda: phase_of(second, "edge-e2e") == "Unknown")
            leaders = [c for c in (first, second) if "became leader" in c.log()]
            assert len(leaders) == 1, [c.log() for c in (first, second)]
            leaders[0].stop()
            assert_still_serving(second)


def assert_still_serving(cloud: CloudProcess) -> None:
    with cloud.client() as admin:
        assert admin.get(f"{NODES}/edge-e2e").status_code == 200
    try:
        httpx.get(cloud.url + "/readyz", timeout=2.0).raise_for_status()
    except httpx.HTTPError as exc:  # pragma: no cover - failure path
        pytest.fail(f"the remaining cloud stopped serving: {exc}")
