"""Node authorization on the REST API: a node reads its own Node, nothing else (its status goes over its hub session).

401 (who are you?) and 403 (you may not) stay distinct; admins and viewers
keep their rights.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgefleet.store.interface import Store

from .conftest import ADMIN, API, VIEWER, site
from .test_identity import EDGE, Edge, make_edge, node_manifest

NODES = f"{API}/nodes"
CLUSTER_INFOS = f"{API}/clusterinfos"
MERGE = {"Content-Type": "application/merge-patch+json"}
CLUSTER_INFO = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "ClusterInfo",
    "metadata": {"name": "default"},
    "spec": {"servers": ["http://attacker.example:7440"]},
}


@pytest.fixture
async def fleet(store: Store) -> AsyncIterator[tuple[Edge, httpx.AsyncClient]]:
    """Two nodes, a site; a client holding par-edge-1's credential."""
    edge = make_edge(store)
    admin = edge.client(ADMIN)
    assert (await admin.post(f"{API}/sites", json=site("par-edge"))).status_code == 201
    assert (await admin.post(NODES, json=node_manifest("par-edge-2"))).status_code == 201
    credential = await edge.joined("par-edge-1")
    yield edge, edge.client(credential)
    for client in edge.clients:
        await client.aclose()


def status_body(name: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"site": "par-edge"},
        "status": status,
    }


async def test_node_reads_its_own_node(fleet: tuple[Edge, httpx.AsyncClient]) -> None:
    _, node = fleet
    for path in (f"{NODES}/par-edge-1", f"{NODES}/par-edge-1/status"):
        response = await node.get(path)
        assert response.status_code == 200, response.text
        assert response.json()["metadata"]["name"] == "par-edge-1"


async def test_node_cannot_write_its_status_over_rest(fleet: tuple[Edge, httpx.AsyncClient], store: Store) -> None:
    """Issue 12, item 2: a node's status goes over its hub session, where the cloud stamps times and checks
    votes; a REST write with its credential (votes dated 2099, a future heartbeat) is refused, nothing stored."""
    _, node = fleet
    before = await store.current_revision()
    forged = {
        "status": {
            "phase": "Ready",
            "lastHeartbeat": "2099-01-01T00:00:00Z",
            "peerVotes": {"par-edge-2": {"healthy": False, "at": "2099-01-01T00:00:00Z"}},
        }
    }
    patched = await node.patch(f"{NODES}/par-edge-1/status", json=forged, headers=MERGE)
    replaced = await node.put(f"{NODES}/par-edge-1/status", json=status_body("par-edge-1", **forged["status"]))
    for response in (patched, replaced):
        assert response.status_code == 403, response.text
        assert "its status travels over its hub session" in response.json()["message"]
    assert await store.current_revision() == before


FORBIDDEN_TO_A_NODE: list[tuple[str, str, Any]] = [
    ("GET", f"{NODES}/par-edge-2", None),
    ("GET", f"{NODES}/par-edge-2/status", None),
    ("PATCH", f"{NODES}/par-edge-2/status", {"status": {"phase": "Ready"}}),
    ("PATCH", f"{NODES}/par-edge-1/status", {"status": {"lastHeartbeat": "2099-01-01T00:00:00Z"}}),
    ("PUT", f"{NODES}/par-edge-1/status", status_body("par-edge-1", phase="Ready")),
    ("PUT", f"{NODES}/par-edge-2/status", status_body("par-edge-2", phase="Ready")),
    ("GET", NODES, None),
    ("GET", f"{NODES}?watch=true", None),
    ("POST", NODES, node_manifest("par-edge-3")),
    ("PUT", f"{NODES}/par-edge-1", node_manifest("par-edge-1")),
    ("PATCH", f"{NODES}/par-edge-1", {"spec": {"draining": True}}),
    ("DELETE", f"{NODES}/par-edge-1", None),
    ("GET", f"{API}/sites", None),
    ("GET", f"{API}/sites/par-edge", None),
    ("GET", f"{API}/workloads", None),
    ("GET", API, None),
    ("POST", f"{EDGE}/bootstrap-tokens", {}),
    ("GET", f"{EDGE}/bootstrap-tokens", None),
    ("DELETE", f"{EDGE}/nodes/par-edge-2/credentials", None),
    # Nodes receive the ClusterInfo through their view; they may neither read nor write it here
    # (a node that could rewrite it would send every agent to its own server).
    ("GET", f"{CLUSTER_INFOS}/default", None),
    ("POST", CLUSTER_INFOS, CLUSTER_INFO),
    ("PUT", f"{CLUSTER_INFOS}/default", CLUSTER_INFO),
    ("PATCH", f"{CLUSTER_INFOS}/default", {"spec": {"servers": ["http://attacker.example:7440"]}}),
    ("DELETE", f"{CLUSTER_INFOS}/default", None),
]
"""Every request a node credential may not make (one fleet for all: each is refused before any write)."""


async def test_everything_else_is_403_naming_the_rule(fleet: tuple[Edge, httpx.AsyncClient], store: Store) -> None:
    _, node = fleet
    before = await store.current_revision()
    wrong = [
        f"{method} {path}: {problem}"
        for method, path, body in FORBIDDEN_TO_A_NODE
        if (problem := await _refusal_problem(node, method, path, body))
    ]
    assert wrong == [], "\n".join(wrong)
    assert await store.current_revision() == before


async def _refusal_problem(node: httpx.AsyncClient, method: str, path: str, body: Any) -> str:
    """'' when the node's request is a 403 naming the rule; else what is wrong with the answer."""
    headers = MERGE if method == "PATCH" else None
    response = await node.request(method, path, json=body, headers=headers)
    if response.status_code != 403:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    status = response.json()
    if status.get("kind") != "Status" or status.get("reason") != "Forbidden":
        return f"not a Forbidden Status: {status}"
    message = str(status.get("message"))
    if "a node credential may only read its own Node" not in message:
        return f"the message does not name the rule: {message}"
    if f"may not {method} {path.split('?')[0]}" not in message:
        return f"the message does not name the request: {message}"
    return ""


async def test_revoked_node_is_401_not_403(fleet: tuple[Edge, httpx.AsyncClient]) -> None:
    edge, node = fleet
    assert (await edge.client().delete(f"{EDGE}/nodes/par-edge-1/credentials")).status_code == 200
    for path in (f"{NODES}/par-edge-1", f"{NODES}/par-edge-2"):
        assert (await node.get(path)).status_code == 401


async def test_admin_and_viewer_keep_their_rights(fleet: tuple[Edge, httpx.AsyncClient]) -> None:
    edge, _ = fleet
    admin, viewer = edge.client(ADMIN), edge.client(VIEWER)
    assert len((await viewer.get(NODES)).json()["items"]) == 2
    assert (await viewer.get(f"{NODES}/par-edge-2/status")).status_code == 200
    assert (await viewer.patch(f"{NODES}/par-edge-2/status", json={"status": {}}, headers=MERGE)).status_code == 403
    assert (
        await admin.patch(f"{NODES}/par-edge-2/status", json={"status": {"hub": "h"}}, headers=MERGE)
    ).status_code == 200
    assert (
        await admin.patch(f"{NODES}/par-edge-2", json={"spec": {"draining": True}}, headers=MERGE)
    ).status_code == 200


async def test_admins_write_the_cluster_info_and_viewers_only_read_it(fleet: tuple[Edge, httpx.AsyncClient]) -> None:
    edge, _ = fleet
    admin, viewer = edge.client(ADMIN), edge.client(VIEWER)
    mine = {**CLUSTER_INFO, "spec": {"servers": ["http://hub-1.example:7440/"]}}
    created = await admin.post(CLUSTER_INFOS, json=mine)
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["servers"] == ["http://hub-1.example:7440"]
    assert (await viewer.get(f"{CLUSTER_INFOS}/default")).json()["spec"] == created.json()["spec"]
    assert (await viewer.post(CLUSTER_INFOS, json={**mine, "metadata": {"name": "other"}})).status_code == 403
    patch = {"spec": {"servers": ["http://hub-2.example:7440"]}}
    assert (await viewer.patch(f"{CLUSTER_INFOS}/default", json=patch, headers=MERGE)).status_code == 403
    bad = await admin.patch(f"{CLUSTER_INFOS}/default", json={"spec": {"servers": ["hub-2:7440"]}}, headers=MERGE)
    assert bad.status_code == 422 and "spec.servers[0]" in bad.text
