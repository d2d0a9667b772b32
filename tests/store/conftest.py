"""Fixtures for the store conformance suite: the same tests against both backends.

``backend`` is parametrized over ``sqlite`` and ``etcd``; ``stores`` opens
(and reopens) stores of that backend and closes them all at the end;
``store`` is the usual single store. SQLite stores live in the test's
``tmp_path``; etcd stores share one etcd member for the session and are
isolated by a root prefix of their own, so each test sees an empty store
(revisions, though, are shared: tests never assume where they start).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgefleet.store.interface import Store
from tests.etcd_cluster import etcd_cluster3, etcd_server
from tests.store.storekit import Stores

__all__ = ["etcd_cluster3", "etcd_server"]  # fixtures, re-exported for pytest


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def stores(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    # Only etcd tests start (or fail for lack of) etcd.
    etcd = request.getfixturevalue("etcd_server") if backend == "etcd" else None
    opened = Stores(backend, tmp_path, etcd)
    try:
        yield opened
    finally:
        await opened.close_all()


@pytest.fixture
def store(stores: Stores) -> Store:
    return stores.open()
