"""Fixtures for cache tests that run real processes: an origin and a cache in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cacheproc import CacheProcess, OriginProcess, cache_config


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginProcess]:
    proc = OriginProcess(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def cache(origin: OriginProcess, tmp_path: Path) -> Iterator[CacheProcess]:
    """A one-worker cache serving domain ``demo`` (Host ``demo.test``) from ``origin``."""
    proc = CacheProcess(cache_config(origin.url, tmp_path), tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()
