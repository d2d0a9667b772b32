"""Fixtures for cache tests that run real processes: an origin and a cache in front of it.

The origin is shared by a module's tests (starting it costs a second): each
test uses its own URL paths, so the origin's counters tell tests apart. A
module that needs other caches defines its own ``cache`` fixture with
:func:`tests.cacheproc.started`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cacheproc import CacheProcess, OriginProcess, cache_config, close_keepalive_clients, started


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginProcess]:
    with started(OriginProcess(tmp_path_factory.mktemp("origin"))) as proc:
        yield proc


@pytest.fixture
def cache(origin: OriginProcess, tmp_path: Path) -> Iterator[CacheProcess]:
    """A one-worker cache serving domain ``demo`` (Host ``demo.test``) from ``origin``."""
    with started(CacheProcess(cache_config(origin.url, tmp_path), tmp_path)) as proc:
        yield proc


@pytest.fixture(scope="module", autouse=True)
def keepalive_clients() -> Iterator[None]:
    """Close the module's keep-alive clients (:func:`tests.cacheproc.keepalive_client`) after its tests."""
    yield
    close_keepalive_clients()
