"""In-process API fixtures: the real app, a real SQLite store, httpx over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgefleet.api.documents import StoredDocument
from edgefleet.cloud.auth import Authenticator, Principal, Role, _digest, split_token
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import ServerSettings, create_app
from edgefleet.store import open_store
from edgefleet.store.interface import Store

ADMIN = "admin1.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
VIEWER = "viewr1.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
API = "/apis/edgefleet.io/v1"
MAX_BODY = 64 * 1024


def static_tokens() -> dict[str, tuple[str, Principal]]:
    out = {}
    for token, name, role in ((ADMIN, "root", Role.ADMIN), (VIEWER, "watcher", Role.VIEWER)):
        token_id, secret = split_token(token)
        out[token_id] = (_digest(secret), Principal(name, role))
    return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    yield store
    await store.close()


@pytest.fixture
async def api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Registry(store), Authenticator(store, static_tokens=static_tokens()), ServerSettings(max_body_bytes=MAX_BODY)
    )
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield client


def site(name: str = "paris", **labels: str) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "region": "eu-west",
            "location": {"lat": 48.85, "lon": 2.35, "country": "FR"},
            "tier": "edge",
            "capacityGbps": 40,
        },
    }
