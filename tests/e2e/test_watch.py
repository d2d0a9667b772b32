"""Watch through a real cloud process: ordering, initial state, selectors, bookmarks, 410.

One cloud for the module (the 410 test starts its own, with fast
compaction); :func:`cloud` deletes every Site after each test, so the next
one starts without any.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloudproc import CloudProcess, delete_objects, running_cloud
from tests.fleet import site_doc as site
from tests.waiting import wait_until

SITES = "/apis/edgefleet.io/v1/sites"


@pytest.fixture(scope="module")
def shared_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    data = tmp_path_factory.mktemp("watch-cloud")
    with running_cloud(f"sqlite:///{data}/store.db", data) as proc:
        yield proc


@pytest.fixture
def cloud(shared_cloud: CloudProcess) -> Iterator[CloudProcess]:
    yield shared_cloud
    delete_objects(shared_cloud, ("sites",))


class Collector:
    """Reads a watch stream in a thread until ``count`` events (or ``timeout``)."""

    def __init__(self, cloud: CloudProcess, params: dict[str, str], count: int, timeout: float = 10.0) -> None:
        self.events: list[dict[str, Any]] = []
        self.status = 0
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cloud, params, count, timeout), daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "watch did not start"

    def _run(self, cloud: CloudProcess, params: dict[str, str], count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {cloud.token}"}
        try:
            with httpx.stream(
                "GET", cloud.url + SITES, params={"watch": "true", **params}, headers=headers, timeout=timeout
            ) as response:
                self.status = response.status_code
                self.ready.set()
                for line in response.iter_lines():
                    if line:
                        self.events.append(json.loads(line))
                    if len(self.events) >= count or time.monotonic() > deadline:
                        return
        except httpx.TimeoutException:
            return
        finally:
            self.ready.set()

    def join(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        self._thread.join(timeout)
        return self.events


def test_watch_from_revision_sees_every_change_in_order(cloud: CloudProcess) -> None:
    with cloud.client() as api:
        start = api.get(SITES).json()["metadata"]["resourceVersion"]
        watcher = Collector(cloud, {"resourceVersion": start, "allowWatchBookmarks": "false"}, 4)
        api.post(SITES, json=site("a"))
        b = api.post(SITES, json=site("b")).json()
        b["spec"]["capacityGbps"] = 20
        api.put(f"{SITES}/b", json=b)
        api.delete(f"{SITES}/a")
    events = watcher.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "b"),
        ("DELETED", "a"),
    ]
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    assert events[2]["object"]["spec"]["capacityGbps"] == 20


def test_watch_without_revision_starts_with_current_objects(cloud: CloudProcess) -> None:
    with cloud.client() as api:
        api.post(SITES, json=site("old"))
        watcher = Collector(cloud, {"allowWatchBookmarks": "false"}, 2)
        api.post(SITES, json=site("new"))
    events = watcher.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "old"), ("ADDED", "new")]


def test_selector_watch_reports_objects_leaving_and_entering(cloud: CloudProcess) -> None:
    with cloud.client() as api:
        start = api.get(SITES).json()["metadata"]["resourceVersion"]
        watcher = Collector(
            cloud, {"resourceVersion": start, "labelSelector": "env=prod", "allowWatchBookmarks": "false"}, 3
        )
        doc = api.post(SITES, json=site("x", env="dev")).json()
        doc["metadata"]["labels"] = {"env": "prod"}
        doc = api.put(f"{SITES}/x", json=doc).json()
        doc["metadata"]["labels"] = {"env": "staging"}
        api.put(f"{SITES}/x", json=doc)
        api.post(SITES, json=site("y", env="prod"))
    events = watcher.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "x"),
        ("DELETED", "x"),
        ("ADDED", "y"),
    ]


def test_idle_watch_gets_bookmarks(cloud: CloudProcess) -> None:
    with cloud.client() as api:
        rv = api.post(SITES, json=site("a")).json()["metadata"]["resourceVersion"]
    watcher = Collector(cloud, {"resourceVersion": rv}, 1, timeout=8)
    events = watcher.join()
    assert events and events[0]["type"] == "BOOKMARK"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_watch_timeout_seconds_ends_the_stream(cloud: CloudProcess) -> None:
    started = time.monotonic()
    with cloud.client() as api:
        response = api.get(SITES, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": "0"})
    assert response.status_code == 200
    assert time.monotonic() - started < 5


def test_compacted_revision_is_410(tmp_path: Path) -> None:
    with (
        running_cloud(f"sqlite:///{tmp_path}/s.db", tmp_path, "--compact-interval", "0.3") as cloud,
        cloud.client() as api,
    ):
        first = api.post(SITES, json=site("a")).json()["metadata"]["resourceVersion"]
        for i in range(5):
            api.post(SITES, json=site(f"n{i}"))

        def compacted() -> bool:
            metrics = api.get("/metrics").text
            line = next(x for x in metrics.splitlines() if x.startswith("edgefleet_store_compacted_revision"))
            return float(line.split()[-1]) > int(first) + 1

        with contextlib.suppress(AssertionError):  # the 410 below says whether it was
            wait_until(compacted, 10, interval=0.2, what="history compacted")
        response = api.get(SITES, params={"watch": "true", "resourceVersion": first})
        assert response.status_code == 410
        assert response.json()["reason"] == "Expired"
        assert "list again" in response.json()["message"]
