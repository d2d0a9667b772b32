"""The multiplexed watch through a real cloud process: several kinds on one stream, resume, 410 per kind.

One cloud for the module, compacting its history every 0.3 s, so that a
revision goes out of reach within a second. The stream is read line by line
over a real HTTP connection while other requests write.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloudproc import CloudProcess, running_cloud
from tests.fleet import site_doc as site
from tests.waiting import wait_until

API = "/apis/edgefleet.io/v1"
WATCH = f"{API}/watch"
END = "edgefleet.io/initial-events-end"
Line = dict[str, Any]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    data: Path = tmp_path_factory.mktemp("multiwatch")
    with running_cloud(f"sqlite:///{data}/store.db", data, "--compact-interval", "0.3") as proc:
        yield proc


def token(cloud: CloudProcess, role: str) -> str:
    with cloud.client() as api:
        response = api.post("/edge/v1/bootstrap-tokens", json={"role": role})
    assert response.status_code == 201, response.text
    made: str = response.json()["token"]
    return made


def secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": {"k": "v"}}}


def read_until(lines: Iterator[str], done: Callable[[list[Line]], bool]) -> list[Line]:
    """Lines of the stream (bookmarks of idle kinds left out) until ``done`` says so."""
    got: list[Line] = []
    for raw in lines:
        line = json.loads(raw)
        meta = line["object"].get("metadata", {})
        if line["type"] != "BOOKMARK" or meta.get("annotations", {}).get(END) == "true":
            got.append(line)
        if done(got):
            return got
    raise AssertionError(f"the stream ended first: {got}")


def names(got: list[Line]) -> list[tuple[str, str, str]]:
    return [(g["resource"], g["type"], g["object"].get("metadata", {}).get("name", "")) for g in got]


def multiplexed_watches(cloud: CloudProcess) -> float:
    with cloud.client() as api:
        text = api.get("/metrics").text
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("edgefleet_api_multiplexed_watches "))


def test_several_kinds_stream_on_one_connection_and_a_compacted_kind_alone_gets_410(cloud: CloudProcess) -> None:
    viewer = token(cloud, "viewer")
    with cloud.client() as api:
        first = api.post(f"{API}/sites", json=site("mw-a")).json()["metadata"]["resourceVersion"]
        assert api.post(f"{API}/secrets", json=secret("mw-key")).status_code == 201
        with cloud.client(viewer) as reader, reader.stream("GET", WATCH, params={"kinds": "sites,secrets,events"}) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
            lines = r.iter_lines()
            got = read_until(lines, lambda g: sum(x["type"] == "BOOKMARK" for x in g) == 3)
            assert ("sites", "ADDED", "mw-a") in names(got) and ("secrets", "ADDED", "mw-key") in names(got)
            shown = next(g["object"] for g in got if g["object"].get("metadata", {}).get("name") == "mw-key")
            assert shown["spec"]["data"] == {"k": "<redacted>"}  # a viewer, as in GET /secrets?watch=true
            assert multiplexed_watches(cloud) == 1
            api.post(f"{API}/sites", json=site("mw-b"))
            api.post(f"{API}/secrets", json=secret("mw-other"))
            live = read_until(lines, lambda g: len(g) == 2)
            assert sorted(names(live)) == [("secrets", "ADDED", "mw-other"), ("sites", "ADDED", "mw-b")]
        wait_until(lambda: multiplexed_watches(cloud) == 0, 10, what="the closed stream counted out")

        for n in range(3):  # history moves on, and the cloud compacts it every 0.3 s
            api.post(f"{API}/sites", json=site(f"mw-{n}"))
        with contextlib.suppress(AssertionError):  # the 410 below says whether it was
            wait_until(lambda: compacted(api) > int(first) + 1, 10, interval=0.2, what="history compacted")
        with api.stream("GET", WATCH, params={"kinds": f"sites:{first},secrets"}) as r:  # secrets: list first
            lines = r.iter_lines()
            got = read_until(lines, lambda g: any(x["type"] == "BOOKMARK" for x in g) and len(g) >= 4)
            assert ("sites", "ERROR", "") in names(got)  # sites alone is gone: its client lists it again
            assert {("secrets", "ADDED", "mw-key"), ("secrets", "ADDED", "mw-other")} <= set(names(got))
            gone = next(g["object"] for g in got if g["type"] == "ERROR")
            assert (gone["code"], gone["reason"]) == (410, "Expired")
            api.post(f"{API}/secrets", json=secret("mw-late"))  # secrets goes on after sites is gone
            assert names(read_until(lines, lambda g: len(g) == 1)) == [("secrets", "ADDED", "mw-late")]


def compacted(api: httpx.Client) -> int:
    text = api.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("edgefleet_store_compacted_revision "))
    return int(float(line.split()[-1]))


def test_refusals_name_the_kind_and_bad_input_is_400(cloud: CloudProcess) -> None:
    metrics = token(cloud, "metrics-reader")
    with cloud.client(metrics) as prometheus:
        refused = prometheus.get(WATCH, params={"kinds": "sites"})
    assert refused.status_code == 403
    assert "may not GET /apis/edgefleet.io/v1/sites?watch=true" in refused.json()["message"]
    with cloud.client() as api:
        for kinds, message in (("sites,pods", "unknown kind 'pods'"), ("nodes,nodes", "named twice")):
            response = api.get(WATCH, params={"kinds": kinds})
            assert response.status_code == 400 and message in response.json()["message"]
