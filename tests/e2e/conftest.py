"""Fixtures that start real ``edgefleet cloud`` processes on SQLite (and etcd)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloudproc import CloudProcess, running_cloud


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path) as proc:
        yield proc
