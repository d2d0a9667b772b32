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

The same two tiers carry edge rules (the demo origin behind them): the
parent trusts its child site's nodes (their addresses are in its view for
that), so it takes their rules decision instead of running the rules
again: a prefix rewrite and a client-hash split reach the origin once,
with one prefix, and a signed URL checked at the edge is not refused at the
parent. A Domain whose token rule names a missing Secret is accepted with a
warning; every serving node reports ``RulesReady: False`` (and the cloud
records one Warning Event) until the Secret exists, then ``True``.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import pytest

from edgefleet.cache.policy.rules import sign_path
from tests.cacheproc import OriginProcess
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


# -- edge rules across the tiers --------------------------------------------------------------------------------

TIERED_HOST, VAULT_HOST = "www.tiers.test", "www.vault.test"
KEY = "tiers-signing-key-0123456789"


def secret_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": {"k": KEY}}}


def signed_rule(secret: str) -> dict[str, Any]:
    return {
        "name": "signed",
        "match": {"path": {"prefix": "/bytes/256/"}},
        "actions": [{"tokenAuth": {"keys": [{"secret": secret, "key": "k"}]}}],
    }


def rules_domain(name: str, host: str, origin: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    spec = {"hostnames": [host], "origins": [{"url": origin}], "rules": rules}
    return {"apiVersion": "edgefleet.io/v1", "kind": "Domain", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def origin(fleet: Fleet) -> Iterator[OriginProcess]:
    process = OriginProcess(fleet.root).start()
    try:
        yield process
    finally:
        process.stop()


def get(fleet: Fleet, node: str, host: str, path: str) -> httpx.Response:
    return httpx.get(f"http://{ADDRESSES[node]}:{fleet.ports['http']}{path}", headers={"Host": host}, timeout=10)


def serves(fleet: Fleet, node: str, host: str) -> bool:
    return get(fleet, node, host, "/x").status_code != 421


def signed(path: str) -> str:
    expires = int(time.time()) + 300
    return f"{path}?expires={expires}&token={sign_path(KEY, path, expires)}"


def test_the_parent_takes_the_edges_rules_decision(fleet: Fleet, origin: OriginProcess) -> None:
    rules = [
        {
            "name": "moved",
            "match": {"path": {"suffix": ".tiered"}},  # matches what it rewrote too
            "actions": [{"rewrite": {"path": "/bytes/128${path}"}}],
        },
        {
            "name": "split",
            "match": {"path": {"suffix": ".split"}},
            "actions": [
                {
                    "split": {
                        "name": "h",
                        "by": "client",
                        "variants": [
                            {"name": "a", "pathPrefix": "/bytes/10"},
                            {"name": "b", "pathPrefix": "/bytes/20"},
                        ],
                    }
                }
            ],
        },
        signed_rule("tier-keys"),
    ]
    with fleet.api() as api:
        assert api.post(f"{API}/secrets", json=secret_doc("tier-keys")).status_code == 201
        assert (
            api.post(f"{API}/domains", json=rules_domain("tiered", TIERED_HOST, origin.url, rules)).status_code == 201
        )
    for node in ADDRESSES:
        wait_until(partial(serves, fleet, node, TIERED_HOST), 30, what=f"the Domain on {node}")
    rewritten = get(fleet, "e1", TIERED_HOST, "/t/page.tiered")
    assert rewritten.status_code == 200 and len(rewritten.content) == 128
    assert "p1" in rewritten.headers["x-cache"], "a miss goes through the parent site"
    # Without the parent's trust it ran the rules again: /bytes/128/bytes/128/t/page.tiered.
    assert origin.count("/bytes/128/t/page.tiered") == 1
    variant = get(fleet, "e1", TIERED_HOST, "/h/page.split")
    assert variant.status_code == 200 and len(variant.content) in (10, 20)
    # The parent would hash the edge node's address, not the client's: the origin sees the edge's variant only.
    assert origin.count(f"/bytes/{len(variant.content)}/h/page.split") == 1
    assert len(get(fleet, "e2", TIERED_HOST, "/h/page.split").content) == len(variant.content), "sticky on any node"
    doubled = [path for path in origin.stats()["by_path"] if path.count("/bytes/") > 1]
    assert doubled == [], f"a rule ran twice: {doubled}"
    # A signed URL checked at the edge reaches the origin without its token: the parent does not check again.
    assert get(fleet, "e1", TIERED_HOST, signed("/bytes/256/video")).status_code == 200
    assert get(fleet, "e1", TIERED_HOST, "/bytes/256/video").status_code == 403
    # A client (not a fleet address) that says it is a tier below cannot make the parent skip the rules.
    url = f"http://{ADDRESSES['p1']}:{fleet.ports['http']}/bytes/256/video"
    forged = {"Host": TIERED_HOST, "X-Edgefleet-Tier": "parent", "X-Edgefleet-Rules": "{}", "Via": "1.1 e1"}
    assert httpx.get(url, headers=forged, timeout=10).status_code == 403


def rules_ready(fleet: Fleet, node: str) -> dict[str, Any] | None:
    conditions = fleet.node(node).get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "RulesReady"), None)


def condition_is(fleet: Fleet, node: str, status: str) -> bool:
    condition = rules_ready(fleet, node)
    return condition is not None and condition["status"] == status


def node_event(fleet: Fleet, reason: str, text: str = "") -> dict[str, Any] | None:
    with fleet.api() as api:
        events = api.get(f"{API}/events").json()["items"]
    return next((e for e in events if e["spec"]["reason"] == reason and text in e["spec"]["message"]), None)


def test_a_missing_secret_is_a_node_condition_and_an_event(fleet: Fleet, origin: OriginProcess) -> None:
    with fleet.api() as api:
        created = api.post(
            f"{API}/domains", json=rules_domain("vault", VAULT_HOST, origin.url, [signed_rule("vault-keys")])
        )
        assert created.status_code == 201, created.text
        assert 'Secret \\"vault-keys\\" does not exist' in created.headers.get("warning", ""), created.headers
    for node in ADDRESSES:
        wait_until(partial(condition_is, fleet, node, "False"), 30, what=f"RulesReady False on {node}")
    condition = rules_ready(fleet, "e1")
    assert condition is not None and condition["reason"] == "SecretMissing" and condition["lastTransitionTime"]
    assert "domain vault, rule signed: Secret vault-keys" in condition["message"], condition
    event = wait_until(partial(node_event, fleet, "SecretMissing", "vault-keys"), 20, what="a SecretMissing Event")
    assert event["spec"]["type"] == "Warning" and event["spec"]["involvedObject"]["kind"] == "Node", event
    assert "SecretMissing" in fleet.cli("get", "events").stdout
    assert "Ready,SecretMissing" in fleet.cli("get", "nodes").stdout
    assert get(fleet, "e1", VAULT_HOST, signed("/bytes/256/safe")).status_code == 403, "fail closed meanwhile"
    with fleet.api() as api:
        assert api.post(f"{API}/secrets", json=secret_doc("vault-keys")).status_code == 201
    for node in ADDRESSES:
        wait_until(partial(condition_is, fleet, node, "True"), 30, what=f"RulesReady True on {node}")
    wait_until(lambda: get(fleet, "e1", VAULT_HOST, signed("/bytes/256/safe")).status_code == 200, 30, what="served")
    assert wait_until(partial(node_event, fleet, "SecretsPresent"), 20, what="a SecretsPresent Event")
