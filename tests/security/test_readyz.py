"""``/readyz`` says the store is not ready with a fixed message; the detail goes to the log only.

An unauthenticated probe must not learn the store's address, paths or
driver errors (before the fix the 503 body echoed ``repr(exc)``).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edgefleet.cloud.auth import Authenticator
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import NOT_READY_MESSAGE, create_app
from edgefleet.store import open_store
from edgefleet.store.interface import StoreError

DETAIL = "etcd at 10.1.2.3:2379 refused: /var/lib/edgefleet/secret-path"


async def test_readyz_does_not_echo_the_store_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db")

    async def failing() -> None:
        raise StoreError(DETAIL)

    try:
        app = create_app(Registry(store), Authenticator(store), ready_check=failing)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.get("/readyz")
    finally:
        await store.close()
    assert response.status_code == 503
    assert response.json()["message"] == NOT_READY_MESSAGE
    assert "10.1.2.3" not in response.text and "secret-path" not in response.text
    assert DETAIL in caplog.text, "the detail is logged for the operator"
