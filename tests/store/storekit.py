"""Test helpers: open stores of one backend (and close them all), read watches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.store.etcd import EtcdStore
from edgefleet.store.interface import Event, Progress, Store
from edgefleet.store.sqlite import SqliteStore
from tests.etcd_cluster import EtcdCluster

# Idle time after which a SQLite watch yields Progress; etcd's is the
# server flag set in etcd_cluster (250ms).
PROGRESS_INTERVAL = 0.2


@dataclass
class Stores:
    """Opens stores of one backend on one place (file or etcd root); closes them all."""

    backend: str
    path: Path
    etcd: EtcdCluster | None
    root: str = field(default_factory=lambda: f"/test-{uuid.uuid4().hex[:12]}")
    opened: list[Store] = field(default_factory=list)

    def open(self, **options: Any) -> Store:
        store: Store
        if self.backend == "sqlite":
            options.setdefault("progress_interval", PROGRESS_INTERVAL)
            store = SqliteStore(self.path / "store.db", **options)
        else:
            assert self.etcd is not None
            store = EtcdStore(self.etcd.endpoints, root=self.root, **options)
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


WatchStream = AsyncIterator[Event | Progress]


async def next_events(watch: WatchStream, count: int, within: float = 10.0) -> list[Event]:
    """The next ``count`` events of a watch, skipping Progress markers."""
    events: list[Event] = []
    async with asyncio.timeout(within):
        while len(events) < count:
            item = await anext(watch)
            if isinstance(item, Event):
                events.append(item)
    return events


async def next_progress(watch: WatchStream, within: float = 10.0) -> Progress:
    async with asyncio.timeout(within):
        while True:
            item = await anext(watch)
            if isinstance(item, Progress):
                return item
