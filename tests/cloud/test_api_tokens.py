"""Viewer and admin API tokens made through the API (``edgefleet token create --role viewer|admin``).

They are ordinary API tokens (``/system/tokens/<id>``, hashed) with the
role asked for; the default role stays ``bootstrap``, which is good for
joining only. The listing shows both kinds with their role and never node
credentials; a token deleted by id stops working at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgefleet.cli.fleet import created_message
from edgefleet.cloud.auth import TOKEN_PREFIX, Authenticator, split_token
from edgefleet.cloud.identity import BOOTSTRAP_PREFIX, Identity
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import ServerSettings, create_app
from edgefleet.store.interface import Store

from .conftest import ADMIN, API, MAX_BODY, VIEWER, site, static_tokens

EDGE = "/edge/v1"


class Api:
    def __init__(self, store: Store) -> None:
        registry = Registry(store)
        self.store = store
        self.authenticator = Authenticator(store, static_tokens=static_tokens())
        app = create_app(
            registry,
            self.authenticator,
            ServerSettings(max_body_bytes=MAX_BODY),
            identity=Identity(registry, self.authenticator),
        )
        self.transport = httpx.ASGITransport(app=app)
        self.clients: list[httpx.AsyncClient] = []

    def client(self, token: str = ADMIN) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=self.transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"}
        )
        self.clients.append(client)
        return client

    async def create(self, **body: Any) -> dict[str, Any]:
        response = await self.client().post(f"{EDGE}/bootstrap-tokens", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    made = Api(store)
    yield made
    for client in made.clients:
        await client.aclose()


async def test_a_viewer_token_is_a_hashed_api_token_that_reads_and_never_writes(api: Api) -> None:
    created = await api.create(role="viewer", description="dashboard")
    assert (created["role"], created["expiresAt"], created["description"]) == ("viewer", None, "dashboard")
    token_id, secret = split_token(created["token"])
    kv = await api.store.get(TOKEN_PREFIX + token_id)
    assert kv is not None and kv.lease == 0 and secret not in kv.value.decode()
    record = json.loads(kv.value)
    assert (record["role"], record["createdBy"]) == ("viewer", "root")
    assert await api.store.get(BOOTSTRAP_PREFIX + token_id) is None

    viewer = api.client(created["token"])
    assert (await viewer.get(f"{API}/sites")).status_code == 200
    assert (await viewer.post(f"{API}/sites", json=site())).status_code == 403
    assert (await viewer.post(f"{EDGE}/bootstrap-tokens", json={"role": "viewer"})).status_code == 403
    assert (await viewer.post(f"{EDGE}/join", json={"name": "n", "site": "s"})).status_code == 401


async def test_an_admin_token_writes(api: Api) -> None:
    created = await api.create(role="admin")
    assert (await api.client(created["token"]).post(f"{API}/sites", json=site())).status_code == 201


async def test_an_api_token_with_a_ttl_is_bound_to_a_lease(api: Api) -> None:
    created = await api.create(role="viewer", ttlSeconds=600)
    assert created["expiresAt"].endswith("Z")
    kv = await api.store.get(TOKEN_PREFIX + split_token(created["token"])[0])
    assert kv is not None and kv.lease != 0


async def test_the_default_role_is_still_bootstrap(api: Api) -> None:
    created = await api.create()
    assert created["role"] == "bootstrap" and created["expiresAt"].endswith("Z")
    token_id = split_token(created["token"])[0]
    assert await api.store.get(BOOTSTRAP_PREFIX + token_id) is not None
    assert await api.store.get(TOKEN_PREFIX + token_id) is None
    assert (await api.client(created["token"]).get(f"{API}/sites")).status_code == 401


async def test_only_staff_roles_can_be_asked_for(api: Api) -> None:
    for role in ("node", "root", ""):
        response = await api.client().post(f"{EDGE}/bootstrap-tokens", json={"role": role})
        assert response.status_code == 422, response.text
        assert "role" in [cause["field"] for cause in response.json()["details"]["causes"]]
    assert (await api.client(VIEWER).post(f"{EDGE}/bootstrap-tokens", json={"role": "admin"})).status_code == 403


async def test_the_listing_shows_both_kinds_with_their_role_but_no_node_credential(api: Api) -> None:
    bootstrap = await api.create(description="rack 4")
    viewer = await api.create(role="viewer")
    assert (await api.client().post(f"{API}/sites", json=site("par"))).status_code == 201  # the node's site
    joined = await api.client(bootstrap["token"]).post(f"{EDGE}/join", json={"name": "par-edge-1", "site": "par"})
    assert joined.status_code == 201, joined.text
    listing = (await api.client().get(f"{EDGE}/bootstrap-tokens")).json()["items"]
    roles = {item["id"]: item["role"] for item in listing}
    assert roles == {bootstrap["id"]: "bootstrap", viewer["id"]: "viewer"}
    assert viewer["token"] not in json.dumps(listing)


async def test_deleting_an_api_token_by_id_stops_it_at_once(api: Api) -> None:
    viewer = await api.create(role="viewer")
    reader = api.client(viewer["token"])
    assert (await reader.get(f"{API}/sites")).status_code == 200  # now cached by the authenticator
    deleted = await api.client().delete(f"{EDGE}/bootstrap-tokens/{viewer['id']}")
    assert deleted.status_code == 200 and deleted.json()["role"] == "viewer"
    assert (await reader.get(f"{API}/sites")).status_code == 401
    again = await api.client().delete(f"{EDGE}/bootstrap-tokens/{viewer['id']}")
    assert again.status_code == 404


async def test_a_node_credential_cannot_be_deleted_as_a_token(api: Api) -> None:
    bootstrap = await api.create()
    assert (await api.client().post(f"{API}/sites", json=site("par"))).status_code == 201  # the node's site
    joined = (await api.client(bootstrap["token"]).post(f"{EDGE}/join", json={"name": "n1", "site": "par"})).json()
    credential_id = split_token(joined["credential"])[0]
    refused = await api.client().delete(f"{EDGE}/bootstrap-tokens/{credential_id}")
    assert refused.status_code == 404 and "node revoke" in refused.json()["message"]
    assert (await api.client(joined["credential"]).get(f"{API}/nodes/n1")).status_code == 200


def test_the_cli_says_how_each_kind_is_used() -> None:
    bootstrap = {"id": "abc123", "token": "abc123.x", "expiresAt": "2026-01-01T00:00:00Z", "role": "bootstrap"}
    assert "edgefleet edge join --server http://c:7440 --token abc123.x" in created_message(bootstrap, "http://c:7440")
    viewer = {"id": "def456", "token": "def456.y", "expiresAt": None, "role": "viewer"}
    message = created_message(viewer, "http://c:7440")
    assert "never expires" in message and "EDGEFLEET_TOKEN=def456.y" in message
