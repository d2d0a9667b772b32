"""Node identity over the API, in process: bootstrap tokens, join, revoke, rotate, the hub's hooks.

The clock of :class:`Identity` is a test clock, so expiry checks run without
waiting; the tests that need the store's own lease expiry use 1-second TTLs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from edgefleet.api.common import format_timestamp
from edgefleet.api.documents import StoredDocument
from edgefleet.api.sites import INFO as SITES
from edgefleet.cloud.auth import (
    TOKEN_PREFIX,
    Authenticator,
    Forbidden,
    Unauthorized,
    ensure_admin_token,
    split_token,
)
from edgefleet.cloud.identity import BOOTSTRAP_PREFIX, CREDENTIAL_INDEX_PREFIX, Identity, expiry
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import ServerSettings, create_app
from edgefleet.store.interface import Store
from tests.waiting import eventually

from .conftest import ADMIN, API, MAX_BODY, VIEWER, site, static_tokens

EDGE = "/edge/v1"
NODES = f"{API}/nodes"
TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{32}$")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Edge:
    """The API app with an Identity on a test clock, and clients for any token."""

    store: Store
    registry: Registry
    authenticator: Authenticator
    identity: Identity
    clock: Clock
    transport: httpx.ASGITransport
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, token: str | None = ADMIN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(transport=self.transport, base_url="http://test", headers=headers)
        self.clients.append(client)
        return client

    async def bootstrap_token(self, ttl: int = 3600) -> str:
        response = await self.client().post(f"{EDGE}/bootstrap-tokens", json={"ttlSeconds": ttl})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    async def join(
        self, name: str = "par-edge-1", site: str = "par-edge", token: str | None = None, **extra: Any
    ) -> httpx.Response:
        body = {"name": name, "site": site, **extra}
        return await self.client(token or await self.bootstrap_token()).post(f"{EDGE}/join", json=body)

    async def sites(self, *names: str) -> None:
        """Create these Sites (a Node's site must exist; joins create Nodes)."""
        for name in names:
            await self.registry.create(SITES, site(name))

    async def joined(self, name: str = "par-edge-1", site: str = "par-edge") -> str:
        response = await self.join(name, site)
        assert response.status_code == 201, response.text
        credential: str = response.json()["credential"]
        return credential


def make_edge(store: Store, *, grace: int = 600) -> Edge:
    clock = Clock()
    registry = Registry(store)
    authenticator = Authenticator(store, static_tokens=static_tokens())
    identity = Identity(registry, authenticator, rotation_grace=grace, clock=clock)
    app = create_app(registry, authenticator, ServerSettings(max_body_bytes=MAX_BODY), identity=identity)
    return Edge(store, registry, authenticator, identity, clock, httpx.ASGITransport(app=app))


@pytest.fixture
async def edge(store: Store) -> AsyncIterator[Edge]:
    made = make_edge(store)
    await made.sites("par-edge", "ams-edge")
    yield made
    for client in made.clients:
        await client.aclose()


def node_manifest(name: str = "par-edge-1", site: str = "par-edge", **labels: str) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"site": site, "addresses": ["192.0.2.1"]},
    }


# -- pure helpers ---------------------------------------------------------------


def test_expiry_rounds_up_to_whole_seconds() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, 900_000, tzinfo=UTC)
    assert expiry(now, 1) == datetime(2026, 1, 1, 12, 0, 2, tzinfo=UTC)
    assert expiry(now.replace(microsecond=0), 1) == datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)


# -- bootstrap tokens -------------------------------------------------------------


async def test_bootstrap_token_is_stored_hashed_with_a_lease(edge: Edge) -> None:
    response = await edge.client().post(f"{EDGE}/bootstrap-tokens", json={"ttlSeconds": 600, "description": "rack 4"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert TOKEN_RE.match(body["token"])
    token_id, secret = split_token(body["token"])
    assert body["id"] == token_id and body["description"] == "rack 4" and body["createdBy"] == "root"
    assert body["expiresAt"].endswith("Z")
    kv = await edge.store.get(BOOTSTRAP_PREFIX + token_id)
    assert kv is not None and kv.lease != 0
    assert secret.encode() not in kv.value


async def test_bootstrap_token_needs_an_admin(edge: Edge) -> None:
    assert (await edge.client(VIEWER).post(f"{EDGE}/bootstrap-tokens", json={})).status_code == 403
    missing = await edge.client(None).post(f"{EDGE}/bootstrap-tokens", json={})
    assert missing.status_code == 401 and missing.json()["kind"] == "Status"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttlSeconds": 0}, "ttlSeconds"),
        ({"ttlSeconds": 10**9}, "ttlSeconds"),
        ({"ttl": 5}, "ttl"),
        ({"description": "x" * 300}, "description"),
    ],
)
async def test_bad_bootstrap_token_request_is_422_with_field(edge: Edge, body: dict[str, Any], field: str) -> None:
    response = await edge.client().post(f"{EDGE}/bootstrap-tokens", json=body)
    assert response.status_code == 422, response.text
    assert field in [cause["field"] for cause in response.json()["details"]["causes"]]
    assert (await edge.store.list(BOOTSTRAP_PREFIX)).items == []


async def test_list_and_delete_bootstrap_tokens(edge: Edge) -> None:
    token = await edge.bootstrap_token()
    token_id = split_token(token)[0]
    listing = (await edge.client().get(f"{EDGE}/bootstrap-tokens")).json()
    assert [item["id"] for item in listing["items"]] == [token_id]
    assert "token" not in listing["items"][0] and token not in json.dumps(listing)
    assert (await edge.client().delete(f"{EDGE}/bootstrap-tokens/{token_id}")).status_code == 200
    assert (await edge.client().delete(f"{EDGE}/bootstrap-tokens/{token_id}")).status_code == 404
    refused = await edge.join(token=token)
    assert refused.status_code == 401


async def test_expired_bootstrap_token_is_401_even_before_its_lease_ends(edge: Edge) -> None:
    token = await edge.bootstrap_token(ttl=60)
    edge.clock.advance(61)
    response = await edge.join(token=token)
    assert response.status_code == 401
    assert "expired" in response.json()["message"] and "edgefleet token create" in response.json()["message"]
    assert (await edge.client().get(f"{NODES}/par-edge-1")).status_code == 404


async def test_bootstrap_token_disappears_with_its_lease(edge: Edge) -> None:
    token = await edge.bootstrap_token(ttl=1)
    key = BOOTSTRAP_PREFIX + split_token(token)[0]

    async def gone() -> bool:
        return await edge.store.get(key) is None

    await eventually(gone, within=5.0)
    assert (await edge.join(token=token)).status_code == 401


async def test_bootstrap_token_is_good_for_nothing_but_join(edge: Edge) -> None:
    token = await edge.bootstrap_token()
    bootstrap = edge.client(token)
    assert (await bootstrap.get(NODES)).status_code == 401
    assert (await bootstrap.post(f"{EDGE}/credentials/rotate")).status_code == 401
    assert (await bootstrap.post(f"{EDGE}/bootstrap-tokens", json={})).status_code == 401


async def test_api_tokens_cannot_join(edge: Edge) -> None:
    for token in (ADMIN, VIEWER):
        response = await edge.join(token=token)
        assert response.status_code == 401 and "bootstrap token" in response.json()["message"]


# -- join -----------------------------------------------------------------------


async def test_join_creates_the_node_and_a_node_credential(edge: Edge) -> None:
    response = await edge.join(labels={"tier": "edge"}, addresses=["192.0.2.7", "2001:DB8::7"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["node"] == "par-edge-1" and body["adopted"] is False
    node = (await edge.client().get(f"{NODES}/par-edge-1")).json()
    assert node["spec"] == {
        "site": "par-edge",
        "addresses": ["192.0.2.7", "2001:db8::7"],
        "unschedulable": False,
        "draining": False,
    }
    assert node["metadata"]["labels"] == {"tier": "edge"}
    token_id = split_token(body["credential"])[0]
    kv = await edge.store.get(TOKEN_PREFIX + token_id)
    assert kv is not None
    record = json.loads(kv.value)
    assert (record["role"], record["name"]) == ("node", "par-edge-1")
    assert split_token(body["credential"])[1] not in kv.value.decode()
    assert (await edge.client(body["credential"]).get(f"{NODES}/par-edge-1")).status_code == 200


async def test_invalid_join_is_422_and_changes_nothing(edge: Edge) -> None:
    token = await edge.bootstrap_token()
    before = await edge.store.current_revision()
    bad_name = await edge.join("Not_A_Name", token=token)
    assert bad_name.status_code == 422
    assert "metadata.name" in [c["field"] for c in bad_name.json()["details"]["causes"]]
    bad_address = await edge.join(token=token, addresses=["example.com"])
    assert bad_address.status_code == 422
    assert "spec.addresses[0]" in [c["field"] for c in bad_address.json()["details"]["causes"]]
    missing_site = await edge.client(token).post(f"{EDGE}/join", json={"name": "x"})
    assert missing_site.status_code == 422
    assert await edge.store.current_revision() == before


async def test_join_adopts_a_manifest_node_of_the_same_site(edge: Edge) -> None:
    assert (await edge.client().post(NODES, json=node_manifest(role="cache"))).status_code == 201
    response = await edge.join(labels={"other": "x"}, addresses=["192.0.2.99"])
    assert response.status_code == 201, response.text
    assert response.json()["adopted"] is True
    node = (await edge.client().get(f"{NODES}/par-edge-1")).json()
    assert node["metadata"]["labels"] == {"role": "cache"}, "the manifest wins"
    assert node["spec"]["addresses"] == ["192.0.2.1"]


async def test_join_into_another_site_is_409(edge: Edge) -> None:
    assert (await edge.client().post(NODES, json=node_manifest(site="ams-edge"))).status_code == 201
    response = await edge.join(site="par-edge")
    assert response.status_code == 409
    message = response.json()["message"]
    assert '"ams-edge"' in message and "--site ams-edge" in message
    assert await edge.identity._credentials_of("par-edge-1") == []


async def set_status(edge: Edge, name: str, **status: Any) -> None:
    response = await edge.client().patch(f"{NODES}/{name}/status", json={"status": status})
    assert response.status_code == 200, response.text


async def test_join_refuses_the_name_of_a_live_node(edge: Edge) -> None:
    first = await edge.joined()
    await set_status(edge, "par-edge-1", phase="Ready", lastHeartbeat="2026-01-01T00:00:00Z")
    response = await edge.join()
    assert response.status_code == 409
    assert "edgefleet node revoke par-edge-1" in response.json()["message"]
    assert (await edge.client(first).get(f"{NODES}/par-edge-1")).status_code == 200


async def test_a_join_never_takes_over_a_node_holding_a_credential(edge: Edge) -> None:
    """Issue 12, item 6: silent (NotReady) or not, a node with a credential is not anyone's to take."""
    first = await edge.joined()
    await set_status(edge, "par-edge-1", phase="NotReady")
    token = await edge.bootstrap_token()
    before = await edge.store.current_revision()
    response = await edge.join(token=token)
    assert response.status_code == 409, response.text
    assert "edgefleet node revoke par-edge-1" in response.json()["message"]
    assert "--takeover" in response.json()["message"]
    assert (await edge.client(first).get(f"{NODES}/par-edge-1")).status_code == 200
    assert await edge.store.current_revision() == before


async def test_an_admin_lets_a_rejoin_replace_the_credentials(edge: Edge) -> None:
    """Revoking first, or a takeover token bound to the name: the reinstalled machine gets its identity back."""
    first = await edge.joined()
    takeover = await edge.client().post(f"{EDGE}/bootstrap-tokens", json={"name": "par-edge-1", "takeover": True})
    assert takeover.status_code == 201, takeover.text
    second = (await edge.join(token=takeover.json()["token"])).json()["credential"]
    assert (await edge.client(first).get(f"{NODES}/par-edge-1")).status_code == 401
    assert (await edge.client(second).get(f"{NODES}/par-edge-1")).status_code == 200
    assert len(await edge.identity._credentials_of("par-edge-1")) == 1
    assert (await edge.client().delete(f"{EDGE}/nodes/par-edge-1/credentials")).status_code == 200
    third = await edge.joined()
    assert (await edge.client(third).get(f"{NODES}/par-edge-1")).status_code == 200


async def test_credentials_are_found_through_the_per_node_index(edge: Edge) -> None:
    """A join reads its own node's index entries, not every token (joining N nodes was O(N^2))."""
    first = await edge.joined("par-edge-1")
    await edge.joined("par-edge-2")
    entries = [kv.key for kv in (await edge.store.list(CREDENTIAL_INDEX_PREFIX)).items]
    assert [key.rsplit("/", 2)[1] for key in entries] == ["par-edge-1", "par-edge-2"]
    # A credential written before the index existed (an older cloud): indexed at start, then found.
    legacy = entries[0]
    await edge.store.delete(legacy)
    assert await edge.identity._credentials_of("par-edge-1") == []
    assert await edge.identity.index_credentials() == 1
    assert await edge.identity.index_credentials() == 0, "once indexed, nothing to add"
    assert (await edge.join("par-edge-1")).status_code == 409, "the old one was found"
    await edge.identity.revoke_node("par-edge-1")
    assert (await edge.client(first).get(f"{NODES}/par-edge-1")).status_code == 401, "and revoked"
    # An entry whose credential is gone (revoked, expired) is dropped when read.
    token_id = next(kv.key for kv in (await edge.store.list(CREDENTIAL_INDEX_PREFIX + "par-edge-2/")).items)
    await edge.store.delete("/system/tokens/" + token_id.rsplit("/", 1)[1])
    assert await edge.identity._credentials_of("par-edge-2") == []
    assert (await edge.store.list(CREDENTIAL_INDEX_PREFIX + "par-edge-2/")).items == []


async def test_one_bootstrap_token_joins_many_nodes(edge: Edge) -> None:
    token = await edge.bootstrap_token()
    for name in ("par-edge-1", "par-edge-2"):
        assert (await edge.join(name, token=token)).status_code == 201


# -- revoke ----------------------------------------------------------------------


async def test_revoke_makes_the_node_credential_401(edge: Edge) -> None:
    credential = await edge.joined()
    node = edge.client(credential)
    assert (await node.get(f"{NODES}/par-edge-1")).status_code == 200  # now cached by the authenticator
    response = await edge.client().delete(f"{EDGE}/nodes/par-edge-1/credentials")
    assert response.status_code == 200 and response.json() == {"node": "par-edge-1", "revoked": 1}
    refused = await node.get(f"{NODES}/par-edge-1")
    assert refused.status_code == 401 and refused.json()["reason"] == "Unauthorized"
    again = await edge.client().delete(f"{EDGE}/nodes/par-edge-1/credentials")
    assert again.json()["revoked"] == 0
    assert (await edge.client().get(f"{NODES}/par-edge-1")).status_code == 200, "the Node stays"


async def test_only_admins_revoke(edge: Edge) -> None:
    credential = await edge.joined()
    assert (await edge.client(VIEWER).delete(f"{EDGE}/nodes/par-edge-1/credentials")).status_code == 403
    own = await edge.client(credential).delete(f"{EDGE}/nodes/par-edge-1/credentials")
    assert own.status_code == 403 and "a node credential may only" in own.json()["message"]
    assert (await edge.client(credential).get(f"{NODES}/par-edge-1")).status_code == 200


# -- rotate ----------------------------------------------------------------------


async def test_rotate_issues_a_new_credential_and_retires_the_old(edge: Edge) -> None:
    old = await edge.joined()
    response = await edge.client(old).post(f"{EDGE}/credentials/rotate")
    assert response.status_code == 200, response.text
    body = response.json()
    new = body["credential"]
    assert body["node"] == "par-edge-1" and new != old
    assert body["previousExpiresAt"] == format_timestamp(expiry(edge.clock.now, 600))
    for token in (old, new):  # the old one still works during the grace period
        assert (await edge.client(token).get(f"{NODES}/par-edge-1")).status_code == 200
    old_kv = await edge.store.get(TOKEN_PREFIX + split_token(old)[0])
    new_kv = await edge.store.get(TOKEN_PREFIX + split_token(new)[0])
    assert old_kv is not None and old_kv.lease != 0
    assert new_kv is not None and new_kv.lease == 0


async def test_repeated_rotations_leave_one_permanent_credential(edge: Edge) -> None:
    old = await edge.joined()
    for _ in range(3):  # the node never stores the answer and retries with the old credential
        assert (await edge.client(old).post(f"{EDGE}/credentials/rotate")).status_code == 200
    credentials = await edge.identity._credentials_of("par-edge-1")
    assert len(credentials) == 4
    assert sum(1 for kv in credentials if kv.lease == 0) == 1


async def test_only_node_credentials_rotate(edge: Edge) -> None:
    response = await edge.client().post(f"{EDGE}/credentials/rotate")
    assert response.status_code == 403 and "edgefleet edge rotate-credential" in response.json()["message"]
    assert (await edge.client(None).post(f"{EDGE}/credentials/rotate")).status_code == 401


async def test_rotated_credential_expires_after_the_grace_period(store: Store) -> None:
    edge = make_edge(store, grace=1)
    await edge.sites("par-edge")
    try:
        old = await edge.joined()
        new = (await edge.client(old).post(f"{EDGE}/credentials/rotate")).json()["credential"]
        key = TOKEN_PREFIX + split_token(old)[0]

        async def expired() -> bool:
            return await store.get(key) is None

        await eventually(expired, within=5.0)
        edge.authenticator.forget()  # the watch does this on a running cloud
        assert (await edge.client(old).get(f"{NODES}/par-edge-1")).status_code == 401
        assert (await edge.client(new).get(f"{NODES}/par-edge-1")).status_code == 200
    finally:
        for client in edge.clients:
            await client.aclose()


# -- hooks for the hub ---------------------------------------------------------------


async def test_authenticate_node(edge: Edge) -> None:
    credential = await edge.joined()
    assert await edge.identity.authenticate_node(f"Bearer {credential}") == "par-edge-1"
    with pytest.raises(Forbidden, match="node credential"):
        await edge.identity.authenticate_node(f"Bearer {ADMIN}")
    for header in (None, "Bearer nope", f"Basic {credential}", "Bearer abcdef." + "0" * 32):
        with pytest.raises(Unauthorized):
            await edge.identity.authenticate_node(header)


async def test_credential_watch_notifies_and_forgets_cached_tokens(edge: Edge) -> None:
    removed: list[str] = []
    closed: list[str] = []

    async def close_sessions(node: str) -> None:
        closed.append(node)

    edge.identity.on_credential_removed(removed.append)
    edge.identity.on_credential_removed(close_sessions)
    unsubscribe = edge.identity.on_credential_removed(lambda node: 1 / 0)  # a broken subscriber
    credential = await edge.joined()
    assert await edge.identity.authenticate_node(f"Bearer {credential}") == "par-edge-1"  # cached now
    joined_at = await edge.store.current_revision()
    watcher = asyncio.create_task(edge.identity.watch_credentials())
    try:
        await eventually(lambda: edge.identity._watched >= joined_at)  # the watch runs: it will see the deletion
        # Another replica revokes it: only the store changes here.
        await store_delete_credentials(edge.store, "par-edge-1")

        async def notified() -> bool:
            return removed == ["par-edge-1"] and closed == ["par-edge-1"]

        await eventually(notified)
        with pytest.raises(Unauthorized):
            await edge.identity.authenticate_node(f"Bearer {credential}")
        unsubscribe()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def store_delete_credentials(store: Store, node: str) -> None:
    for kv in (await store.list(TOKEN_PREFIX)).items:
        if json.loads(kv.value).get("name") == node:
            await store.delete(kv.key)


async def test_a_node_called_admin_is_not_the_admin_token(edge: Edge) -> None:
    credential = await edge.joined("admin")
    assert (await edge.client(credential).get(f"{NODES}/par-edge-1")).status_code == 403
    assert await ensure_admin_token(edge.store) is not None, "the store still has no admin token"


# -- narrowed bootstrap tokens (issue 12, item 6) ------------------------------------------


async def narrowed_token(edge: Edge, **body: Any) -> str:
    response = await edge.client().post(f"{EDGE}/bootstrap-tokens", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def test_a_bound_token_joins_only_its_site_and_name(edge: Edge) -> None:
    token = await narrowed_token(edge, site="par-edge", name="par-edge-7")
    before = await edge.store.current_revision()
    for name, site_name in (("par-edge-8", "par-edge"), ("par-edge-7", "ams-edge")):
        refused = await edge.join(name, site_name, token=token)
        assert refused.status_code == 403, refused.text
        assert "bound to" in refused.json()["message"]
    assert await edge.store.current_revision() == before, "a refused join changes nothing"
    assert (await edge.join("par-edge-7", "par-edge", token=token)).status_code == 201


async def test_a_one_use_token_joins_once_and_a_failed_join_gives_its_use_back(edge: Edge) -> None:
    token = await narrowed_token(edge, uses=1)
    failed = await edge.join("par-edge-1", "no-such-site", token=token)
    assert failed.status_code == 422, failed.text
    assert (await edge.join("par-edge-1", token=token)).status_code == 201
    used_up = await edge.join("par-edge-2", token=token)
    assert used_up.status_code == 401 and "used up (1 of 1 joins)" in used_up.json()["message"]
    listed = (await edge.client().get(f"{EDGE}/bootstrap-tokens")).json()["items"]
    assert [(item["uses"], item["used"]) for item in listed if item["role"] == "bootstrap"] == [(1, 1)]


async def test_concurrent_joins_with_a_one_use_token_make_one_node(edge: Edge) -> None:
    token = await narrowed_token(edge, uses=1)
    answers = await asyncio.gather(*(edge.join(f"par-edge-{i}", token=token) for i in range(6)))
    assert sorted(answer.status_code for answer in answers) == [201] + [401] * 5, [a.text for a in answers]
    nodes = (await edge.client().get(NODES)).json()["items"]
    assert len(nodes) == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"role": "viewer", "site": "par-edge"}, "only for bootstrap tokens"),
        ({"takeover": True}, "takeover needs name"),
        ({"uses": 0}, "uses"),
    ],
)
async def test_narrowing_is_for_bootstrap_tokens_only(edge: Edge, body: dict[str, Any], words: str) -> None:
    response = await edge.client().post(f"{EDGE}/bootstrap-tokens", json=body)
    assert response.status_code == 422 and words in response.text, response.text


async def test_an_approval_token_joins_a_node_that_waits_for_an_admin(edge: Edge) -> None:
    token = await narrowed_token(edge, approval=True)
    joined = await edge.join(token=token)
    assert joined.status_code == 201 and joined.json()["pending"] is True
    credential = joined.json()["credential"]
    refused = await edge.client(credential).get(f"{NODES}/par-edge-1")
    assert refused.status_code == 403 and "edgefleet node approve par-edge-1" in refused.json()["message"]
    with pytest.raises(Forbidden, match="approve"):
        await edge.identity.authenticate_node(f"Bearer {credential}")  # the hub: no session, no view
    assert (await edge.client(credential).post(f"{EDGE}/nodes/par-edge-1/approve")).status_code == 403
    approved = await edge.client().post(f"{EDGE}/nodes/par-edge-1/approve")
    assert approved.status_code == 200 and approved.json() == {"node": "par-edge-1", "approved": 1}
    assert await edge.identity.authenticate_node(f"Bearer {credential}") == "par-edge-1"
    assert (await edge.client(credential).get(f"{NODES}/par-edge-1")).status_code == 200
