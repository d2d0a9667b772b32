"""Registry watches: typed events and bookmarks, and the watch lines the API server makes of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path

from edgefleet.api.documents import StoredDocument
from edgefleet.api.sites import INFO as SITES
from edgefleet.cloud.metrics import ApiMetrics
from edgefleet.cloud.registry import Bookmark, Registry, WatchEvent, bookmark_document
from edgefleet.cloud.server import _watch_lines
from edgefleet.store import open_store
from edgefleet.store.interface import Watch

from .conftest import site


async def test_a_watch_yields_typed_events_then_bookmarks_when_idle(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db", progress_interval=0.05)
    try:
        registry = Registry(store)
        created = await registry.create(SITES, site("paris"))
        revision = int(created["metadata"]["resourceVersion"])
        watch: Watch[WatchEvent | Bookmark] = registry.watch(SITES, after_revision=revision - 1)
        try:
            first = await asyncio.wait_for(anext(watch), 10)
            second = await asyncio.wait_for(anext(watch), 10)  # nothing else happens: the store's progress marker
        finally:
            await watch.aclose()
    finally:
        await store.close()
    assert isinstance(first, WatchEvent) and first.type == "ADDED" and first.revision == revision
    assert first.obj["metadata"]["name"] == "paris"
    assert first.obj["metadata"]["resourceVersion"] == str(revision)
    assert isinstance(second, Bookmark) and second.revision >= revision


def test_a_bookmark_document_carries_only_the_revision() -> None:
    assert bookmark_document(SITES, 42) == {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"resourceVersion": "42"},
    }


class Recorded:
    """A watch that yields fixed items and notes whether it was closed."""

    def __init__(self, items: list[WatchEvent | Bookmark]) -> None:
        self.items = items
        self.closed = False

    async def stream(self) -> AsyncGenerator[WatchEvent | Bookmark, None]:
        try:
            for item in self.items:
                yield item
        finally:
            self.closed = True


def paris(revision: int) -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": "paris", "resourceVersion": str(revision)},
        "spec": {"region": "eu-west"},
    }


async def lines(items: list[WatchEvent | Bookmark], *, bookmarks: bool) -> tuple[list[tuple[str, str]], bool]:
    """(type, object name or resourceVersion) of each line the server writes, and whether the watch was closed."""
    recorded = Recorded(items)
    initial = [paris(3)]
    out = [
        json.loads(line)
        async for line in _watch_lines(ApiMetrics(), SITES, initial, recorded.stream(), 60, bookmarks, lambda doc: doc)
    ]
    summary = [
        (line["type"], line["object"]["metadata"].get("name") or line["object"]["metadata"]["resourceVersion"])
        for line in out
    ]
    return summary, recorded.closed


async def test_the_server_writes_events_and_bookmarks_as_watch_lines_and_closes_the_watch() -> None:
    items: list[WatchEvent | Bookmark] = [WatchEvent("MODIFIED", paris(5), 5), Bookmark(9)]
    assert await lines(items, bookmarks=True) == ([("ADDED", "paris"), ("MODIFIED", "paris"), ("BOOKMARK", "9")], True)
    assert await lines(items, bookmarks=False) == ([("ADDED", "paris"), ("MODIFIED", "paris")], True)
