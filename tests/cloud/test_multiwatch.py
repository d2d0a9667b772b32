"""The multiplexed watch in process: several kinds on one stream, resume, 410 per kind, authorization, limits.

The app is called as an ASGI application with a ``send`` that collects the
body and a ``receive`` that says "disconnected" once the test has the lines
it wanted, so a stream is read exactly as far as a test needs, without
waiting for its timeout. The pure parts (``parse_kinds``, ``merged``) are
tested on their own: the bound on what a slow reader makes the server hold,
and the end of a stream whose kind's store watch was dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from edgefleet.api.meta import all_kinds
from edgefleet.cloud import multiwatch
from edgefleet.cloud.auth import Authenticator, Principal, Role, _digest, split_token
from edgefleet.cloud.registry import BadRequest, Registry
from edgefleet.cloud.server import ServerSettings, create_app
from edgefleet.store import open_store
from edgefleet.store.interface import Store, WatchTooSlow
from tests.cloud.conftest import ADMIN, API, VIEWER, site, static_tokens
from tests.pemfiles import certificate_manifest, issue

NODE = "node01.cccccccccccccccccccccccccccccccc"
METRICS = "metric.dddddddddddddddddddddddddddddddd"
BY_PLURAL = {info.plural: info for info in all_kinds()}
Line = dict[str, Any]


def tokens() -> dict[str, tuple[str, Principal]]:
    out = static_tokens()
    for token, principal in ((NODE, Principal("edge-1", Role.NODE)), (METRICS, Principal("prom", Role.METRICS_READER))):
        token_id, secret = split_token(token)
        out[token_id] = (_digest(secret), principal)
    return out


class Stall:
    """A reader that stops reading after the first chunk (``reached``) until ``release`` is set."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()


class Cloud:
    """The real app over a real SQLite store, called as ASGI so that streams can be cut where a test wants."""

    def __init__(self, store: Store, settings: ServerSettings) -> None:
        self.store = store
        self.app = create_app(Registry(store), Authenticator(store, static_tokens=tokens()), settings)
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )

    async def stream(
        self, kinds: str, count: int, *, token: str = ADMIN, until: Callable[[list[Line]], bool] | None = None
    ) -> tuple[int, list[Line]]:
        """(status, lines) of ``GET /watch?kinds=...``, read until ``count`` lines (or ``until``), then cut."""
        status, lines, _ = await self.open(kinds, token=token, until=until or (lambda got: len(got) >= count))
        return status, lines

    async def open(
        self,
        kinds: str,
        *,
        token: str = ADMIN,
        until: Callable[[list[Line]], bool],
        stall: Stall | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, list[Line], bytes]:
        """Run one request; ``stall``: the reader stops reading after the first chunk until it is set."""
        query = urlencode({"kinds": kinds, **(extra or {})}).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": multiwatch.WATCH_PATH,
            "raw_path": multiwatch.WATCH_PATH.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"test"), (b"authorization", f"Bearer {token}".encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("test", 80),
        }
        status = 0
        body = b""
        lines: list[Line] = []
        done = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
                return
            if stall is not None and body:
                stall.reached.set()
                await stall.release.wait()
            body += message.get("body", b"")
            if status == 200:
                lines[:] = [json.loads(raw) for raw in body.splitlines() if raw]
                if until(lines):
                    done.set()
                    raise OSError("the reader has what it wanted")  # what a closed socket does to a send

        task = asyncio.create_task(self.app(scope, receive, send))
        waiter = asyncio.create_task(done.wait())
        await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return status, lines, body

    async def create(self, plural: str, document: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.api.post(f"{API}/{plural}", json=document)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def gauge(self, name: str) -> float:
        text = (await self.api.get("/metrics")).text
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
        return sum(values)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    store = open_store(f"sqlite:///{tmp_path}/store.db", progress_interval=0.2)
    made = Cloud(store, ServerSettings(max_watches_per_principal=4))
    yield made
    await made.api.aclose()
    await store.close()


def secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": {"k": "v"}}}


def summary(lines: list[Line]) -> list[tuple[str, str, str]]:
    """(resource, type, name or annotated-bookmark marker) of each line, bookmarks of idle watches left out."""
    out = []
    for line in lines:
        meta = line["object"].get("metadata", {})
        if line["type"] == "BOOKMARK":
            if meta.get("annotations", {}).get(multiwatch.INITIAL_EVENTS_END) != "true":
                continue
            out.append((line["resource"], "BOOKMARK", "initial-events-end"))
        elif line["type"] == "ERROR":
            out.append((line["resource"], "ERROR", str(line["object"]["code"])))
        else:
            out.append((line["resource"], line["type"], meta["name"]))
    return out


def synced(*plurals: str) -> Callable[[list[Line]], bool]:
    return lambda lines: {r for r, t, _ in summary(lines) if t == "BOOKMARK"} >= set(plurals)


# -- parsing (pure) ---------------------------------------------------------------------------


def test_kinds_are_plurals_each_listed_or_resumed() -> None:
    starts = multiwatch.parse_kinds("sites, nodes:42,certificates:0007", BY_PLURAL)
    assert [(s.info.kind, s.after) for s in starts] == [("Site", 0), ("Node", 42), ("Certificate", 7)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sites,pods", "unknown kind 'pods'; name kinds by plural, one of: admissionwebhooks,"),
        ("Site", "unknown kind 'Site'"),
        ("sites,,nodes", "an empty entry"),
        ("", "an empty entry"),
        ("sites,nodes,sites:3", "'sites' is named twice"),
        ("sites:", "sites:'': the resourceVersion must be a decimal store revision"),
        ("sites:-1", "must be a decimal store revision"),
        ("sites:\u00b9", "must be a decimal store revision"),
        (",".join(["sites"] * 17), "17 kinds named, at most 16 per watch"),
        ("x" * 200, "unknown kind 'xxxxxxxx"),
    ],
)
def test_bad_kinds_are_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=None) as caught:
        multiwatch.parse_kinds(text, BY_PLURAL)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 600  # a long input is not echoed whole


# -- merging (pure) ---------------------------------------------------------------------------


async def endless(tag: bytes, produced: list[int]) -> AsyncGenerator[bytes, None]:
    n = 0
    while True:
        produced[0] += 1
        yield tag + str(n).encode()
        n += 1


async def test_a_reader_that_stops_reading_holds_a_bounded_number_of_lines() -> None:
    produced = [0]
    lines = multiwatch.merged([endless(b"a", produced), endless(b"b", produced)], queue_lines=8)
    first = await anext(lines)
    for _ in range(50):
        await asyncio.sleep(0)  # the pumps run as far as the queue lets them
    assert first in (b"a0", b"b0")
    assert produced[0] <= 8 + 1 + 2  # the queue, the line read, one line blocked in each pump
    got = [await anext(lines) for _ in range(40)]
    for tag in (b"a", b"b"):  # each kind's order is kept
        numbers = [int(line[1:]) for line in [first, *got] if line.startswith(tag)]
        assert numbers == sorted(numbers)
    await lines.aclose()


async def test_a_kind_whose_store_watch_was_dropped_ends_the_stream() -> None:
    async def dropped() -> AsyncGenerator[bytes, None]:
        yield b"x1"
        raise WatchTooSlow(1)

    produced = [0]
    lines = multiwatch.merged([dropped(), endless(b"a", produced)], queue_lines=4)
    got = [line async for line in lines]  # ends: the client resumes from its revisions
    assert b"x1" in got and len(got) < 10


# -- the endpoint ----------------------------------------------------------------------------


async def test_several_kinds_stream_on_one_connection_and_resume_each_from_its_revision(cloud: Cloud) -> None:
    await cloud.create("sites", site("paris"))
    await cloud.create("secrets", secret("api-key"))
    status, lines = await cloud.stream("sites,secrets,nodes", 0, until=synced("sites", "secrets", "nodes"))
    assert status == 200
    assert sorted(summary(lines)) == [
        ("nodes", "BOOKMARK", "initial-events-end"),
        ("secrets", "ADDED", "api-key"),
        ("secrets", "BOOKMARK", "initial-events-end"),
        ("sites", "ADDED", "paris"),
        ("sites", "BOOKMARK", "initial-events-end"),
    ]
    assert all(list(line) == ["type", "resource", "object"] for line in lines)
    marks = {line["resource"]: line["object"] for line in lines if line["type"] == "BOOKMARK"}
    assert marks["sites"]["kind"] == "Site"
    sites_at = marks["sites"]["metadata"]["resourceVersion"]
    secrets_at = marks["secrets"]["metadata"]["resourceVersion"]

    await cloud.create("sites", site("lyon"))
    await cloud.create("secrets", secret("other"))
    status, lines = await cloud.stream(f"sites:{sites_at},secrets:{secrets_at}", 2)
    assert status == 200
    assert sorted(summary(lines)) == [("secrets", "ADDED", "other"), ("sites", "ADDED", "lyon")]
    assert await cloud.gauge("edgefleet_api_multiplexed_watches") == 0  # both streams ended and were counted out
    assert await cloud.gauge("edgefleet_api_watchers{") == 0


async def test_viewers_see_secrets_and_keys_redacted_exactly_as_in_a_single_watch(cloud: Cloud) -> None:
    await cloud.create("secrets", secret("api-key"))
    await cloud.create("certificates", certificate_manifest("demo", issue(["demo.test"])))
    _, lines = await cloud.stream("secrets,certificates", 0, token=VIEWER, until=synced("secrets", "certificates"))
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    for plural, name in (("secrets", "api-key"), ("certificates", "demo")):
        shown = next(line["object"] for line in lines if line["type"] == "ADDED" and line["resource"] == plural)
        assert shown == (await cloud.api.get(f"{API}/{plural}/{name}", headers=viewer)).json()
        assert "PRIVATE KEY" not in json.dumps(shown)
    assert next(line for line in lines if line["resource"] == "secrets")["object"]["spec"]["data"] == {
        "k": "<redacted>"
    }
    _, lines = await cloud.stream("secrets", 0, until=synced("secrets"))
    assert next(line["object"] for line in lines if line["type"] == "ADDED")["spec"]["data"] == {"k": "v"}


async def test_a_compacted_kind_gets_its_410_and_the_other_kinds_go_on(cloud: Cloud) -> None:
    first = (await cloud.create("sites", site("paris")))["metadata"]["resourceVersion"]
    for name in ("a", "b", "c"):
        await cloud.create("sites", site(name))
    revision = await cloud.store.current_revision()
    await cloud.store.compact(revision)
    await cloud.create("secrets", secret("later"))
    status, lines = await cloud.stream(f"sites:{first},secrets:{revision}", 2)
    assert status == 200
    assert summary(lines) == [("sites", "ERROR", "410"), ("secrets", "ADDED", "later")] or summary(lines) == [
        ("secrets", "ADDED", "later"),
        ("sites", "ERROR", "410"),
    ]
    gone = next(line["object"] for line in lines if line["type"] == "ERROR")
    assert gone["reason"] == "Expired" and "list again" in gone["message"]


REFUSED = [
    (NODE, 403, "node 'edge-1' may not GET /apis/edgefleet.io/v1/sites?watch=true"),
    (METRICS, 403, "'prom' may not GET /apis/edgefleet.io/v1/sites?watch=true"),
    ("nobody.eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", 401, "unknown or revoked token"),
]
BAD = [
    ({"kinds": "sites,pods"}, "unknown kind 'pods'"),
    ({"kinds": "sites,sites"}, "named twice"),
    ({"kinds": "sites:x"}, "decimal store revision"),
    ({}, "invalid request parameters"),
    ({"kinds": "sites", "timeoutSeconds": "0"}, "invalid request parameters"),
]


async def test_a_token_that_may_not_read_a_kind_is_refused_naming_it(cloud: Cloud) -> None:
    for token, status, message in REFUSED:  # one app for every case: building one costs more than the cases
        response = await cloud.api.get(
            multiwatch.WATCH_PATH, params={"kinds": "sites,nodes"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == status, token
        assert message in response.json()["message"]


async def test_bad_requests_are_400_and_open_nothing(cloud: Cloud) -> None:
    for params, message in BAD:
        response = await cloud.api.get(multiwatch.WATCH_PATH, params=params)
        assert response.status_code == 400, params
        assert message in response.json()["message"]
    assert await cloud.gauge("edgefleet_api_multiplexed_watches") == 0
    described = (await cloud.api.get("/openapi.json")).json()["paths"][multiwatch.WATCH_PATH]["get"]
    assert [p["name"] for p in described["parameters"]] == ["kinds", "timeoutSeconds", "allowWatchBookmarks"]
    assert "application/x-ndjson" in described["responses"]["200"]["content"]
    assert {"400", "401", "403", "429"} <= set(described["responses"])


async def test_each_kind_holds_a_watch_slot_and_gives_it_back(cloud: Cloud) -> None:
    response = await cloud.api.get(multiwatch.WATCH_PATH, params={"kinds": "sites,nodes,events,domains,secrets"})
    assert response.status_code == 429  # the fixture allows 4 watches per token
    assert "each kind of a watch counts" in response.json()["message"]
    for _ in range(3):  # 4 slots, taken and given back each time
        status, _ = await cloud.stream("sites,nodes,events,domains", 0, until=synced("sites", "nodes"))
        assert status == 200


async def test_a_reader_that_stops_reading_is_dropped_and_holds_nothing(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db", progress_interval=0.2, watch_queue_size=4)
    cloud = Cloud(store, ServerSettings())
    try:
        stall = Stall()
        reading = asyncio.create_task(cloud.open("sites,events", until=lambda _: False, stall=stall))
        await asyncio.wait_for(stall.reached.wait(), 10)  # the reader took the first chunk and stopped
        writes = multiwatch.QUEUE_LINES + 40
        await asyncio.gather(*(cloud.create("sites", site(f"s{n}")) for n in range(writes)))
        stall.release.set()
        status, lines, _ = await reading
        assert status == 200
        added = [line for line in lines if line["type"] == "ADDED"]
        assert len(added) < writes  # the stream ended instead of buffering every change
        assert await cloud.gauge("edgefleet_api_multiplexed_watches") == 0
        assert await cloud.gauge("edgefleet_api_watchers{") == 0
    finally:
        await cloud.api.aclose()
        await store.close()
