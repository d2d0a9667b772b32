"""Edge rules end to end: from the cloud to every cache's request path, with real processes only.

One cloud; site ``lab`` with two nodes (r1, r2), each agent running the built-in cache Workload on its
own loopback address; the demo origin behind them. Domain ``shop`` has edge rules and a token-auth
Secret ``sign``, projected to the serving nodes only (``sync/views.py``) and rendered into each cache's
config by its agent. One fleet for the module:

- a rule change made in the cloud takes effect on every node, seen through connections kept alive
  across the change (the same socket answers before and after: no connection is dropped); the time it
  took is printed (the issue's target is 2 s; the test waits longer so that it never fails on speed);
- a signed URL is served, an expired or forged one gets 403 from the rule;
- an A/B split (sticky cookie, weights 3:1, each variant a path prefix at the origin) gives 1,000 new
  clients about 75% / 25%, every client keeps its variant on a second request (on either node: the
  variant is in the cache key all tiers compute), and each variant's object is fetched from the origin
  once for the whole site;
- a rate limit answers 429 with ``Retry-After`` past its burst;
- the GSLB's geo table reaches every node: the cloud runs with ``--geo custom.csv``, where 127.0.77.0/24 is
  in Antarctica (AQ, which the packaged table never gives a loopback address), and a rule denies AQ
  clients with 451; a request from 127.0.77.1 gets that answer on both nodes only if the table travelled
  (blob store, Artifact ``gslb-geo-table-...``, each agent's verified fetch). The table then changes on
  the cloud's disk and a SIGHUP reloads it: the nodes follow, and only the new table's Artifact is left.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cache.policy.rules import sign_path
from tests.cacheproc import OriginProcess, RawConnection, RawResponse, http_request
from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, replace_object, site_doc
from tests.waiting import wait_until

CLOUD_FLAGS = ["--heartbeat", "1", "--node-monitor-period", "0.5"]
ADDRESSES = {"r1": "127.0.0.51", "r2": "127.0.0.52"}
HOST = "www.rules.test"
KEY = "e2e-signing-key-0123456789"
CLIENTS = 1000
SHARE_A = 0.75
GEO_FIRST = "127.0.0.0/8,FR,eu-west,48.8566,2.3522\n127.0.77.0/24,AQ,antarctica,-75.0,0.0\n"
GEO_SECOND = GEO_FIRST.replace("127.0.77.0/24", "127.0.78.0/24")


@dataclass
class World:
    fleet: Fleet
    origin: OriginProcess
    http_port: int
    geo_table: Path


def rules() -> list[dict[str, Any]]:
    return [
        {
            "name": "signed",
            "match": {"path": {"prefix": "/bytes/256/"}},
            "actions": [{"tokenAuth": {"keys": [{"secret": "sign", "key": "current"}]}}],
        },
        {
            "name": "ab",
            "match": {"path": {"prefix": "/ab/"}},
            "actions": [
                {
                    "split": {
                        "name": "exp",
                        "variants": [
                            {"name": "a", "weight": 3, "pathPrefix": "/bytes/100"},
                            {"name": "b", "weight": 1, "pathPrefix": "/bytes/200"},
                        ],
                    }
                }
            ],
        },
        {
            "name": "limit",
            "match": {"path": {"prefix": "/limited/"}},
            "actions": [{"rateLimit": {"requestsPerSecond": 0.01, "burst": 5}}],
        },
        {
            "name": "no-antarctica",
            "match": {"path": {"prefix": "/geo/"}, "country": {"oneOf": ["AQ"]}},
            "actions": [{"deny": {"status": 451}}],
        },
    ]


def domain_doc(origin: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {"hostnames": [HOST], "origins": [{"url": origin}], "rules": rules()},
    }


SECRET = {
    "apiVersion": "edgefleet.io/v1",
    "kind": "Secret",
    "metadata": {"name": "sign"},
    "spec": {"data": {"current": KEY}},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("rules")
    geo_table = root / "custom-geo.csv"
    geo_table.write_text(GEO_FIRST)
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=[*CLOUD_FLAGS, "--geo", str(geo_table)]).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    origin = OriginProcess(root).start()
    http_port, admin_port = free_port(), free_port()  # free on 127.0.0.1, so almost surely on .51 and .52
    try:
        with fleet.api() as api:
            assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
            assert api.post(f"{API}/secrets", json=SECRET).status_code == 201
            created = api.post(f"{API}/domains", json=domain_doc(origin.url))
            assert created.status_code == 201, created.text
            assert api.post(f"{API}/workloads", json=cache_workload(http_port, admin_port)).status_code == 201
        with ThreadPoolExecutor(len(ADDRESSES)) as pool:  # joins (two CLI runs each) and starts side by side
            list(pool.map(lambda item: fleet.join(item[0], "lab", address=item[1]).start(), ADDRESSES.items()))
        fleet.wait_ready(list(ADDRESSES))
        yield World(fleet, origin, http_port, geo_table)
    finally:
        fleet.close()
        origin.stop()


def connect(world: World, node: str) -> RawConnection:
    return RawConnection((ADDRESSES[node], world.http_port))


def ask(conn: RawConnection, target: str, *headers: tuple[str, str]) -> RawResponse:
    conn.send(http_request("GET", target, HOST, *headers))
    return conn.read_response()


def labelled(conn: RawConnection) -> bool:
    return ask(conn, "/bytes/64/label").header("x-rules-version") == "2"


def test_a_signed_url_is_served_and_an_expired_one_gets_403(world: World) -> None:
    now = int(time.time())
    with connect(world, "r1") as conn:
        wait_until(lambda: ask(conn, "/bytes/256/x").status == 403, 30, what="the rules on r1")
        good = ask(conn, f"/bytes/256/x?expires={now + 300}&token={sign_path(KEY, '/bytes/256/x', now + 300)}")
        assert good.status == 200 and len(good.body) == 256, good.headers
        expired = ask(conn, f"/bytes/256/x?expires={now - 600}&token={sign_path(KEY, '/bytes/256/x', now - 600)}")
        assert expired.status == 403 and (expired.header("x-cache") or "").startswith("RULE")
        forged = ask(conn, f"/bytes/256/x?expires={now + 300}&token={sign_path('guess', '/bytes/256/x', now + 300)}")
        assert forged.status == 403


def test_an_ab_split_is_sticky_and_shares_as_configured(world: World) -> None:
    variants: list[str] = []
    with connect(world, "r1") as first, connect(world, "r2") as second:
        wait_until(lambda: ask(second, "/ab/page").header("set-cookie") is not None, 30, what="the rules on r2")
        for _ in range(CLIENTS):  # a new client each time: no cookie
            answer = ask(first, "/ab/page")
            cookie = (answer.header("set-cookie") or "").split(";")[0]
            assert cookie.startswith("ef-exp="), answer.headers
            variants.append(cookie)
            assert len(answer.body) == {"ef-exp=a": 100, "ef-exp=b": 200}[cookie]
        for cookie in variants[:: CLIENTS // 50]:  # clients coming back, to either node
            for conn in (first, second):
                again = ask(conn, "/ab/page", ("Cookie", cookie))
                assert again.header("set-cookie") is None, "a client with its cookie keeps its variant"
                assert len(again.body) == {"ef-exp=a": 100, "ef-exp=b": 200}[cookie]
    share = variants.count("ef-exp=a") / CLIENTS
    print(f"variant a for {share:.1%} of {CLIENTS} clients (configured {SHARE_A:.0%})")
    assert abs(share - SHARE_A) < 0.07, f"variant a for {share:.1%} of {CLIENTS} clients, configured {SHARE_A:.0%}"
    # The variant is in the cache key that every node computes: one origin fetch per variant for the site.
    assert world.origin.count("/bytes/100/ab/page") == 1 and world.origin.count("/bytes/200/ab/page") == 1


def test_a_rate_limit_answers_429_past_the_burst(world: World) -> None:
    with connect(world, "r2") as conn:
        wait_until(lambda: ask(conn, "/limited/warm").status != 421, 30, what="the domain on r2")
        statuses = [ask(conn, f"/limited/{n}").status for n in range(6)]
        assert 429 in statuses, statuses
        limited = ask(conn, "/limited/more")
        assert limited.status == 429 and int(limited.header("retry-after") or "0") >= 1


def test_a_rule_change_reaches_every_node_without_dropping_connections(world: World) -> None:
    connections = {node: connect(world, node) for node in ADDRESSES}
    try:
        for conn in connections.values():
            assert ask(conn, "/bytes/64/label").header("x-rules-version") is None
        with world.fleet.api() as api:

            def add_rule(document: dict[str, Any]) -> None:
                document["spec"]["rules"].append(
                    {"name": "label", "actions": [{"responseHeaders": {"set": {"X-Rules-Version": "2"}}}]}
                )

            changed = time.monotonic()
            replace_object(api, f"{API}/domains/shop", add_rule)
        took = {}
        for node, conn in connections.items():
            wait_until(partial(labelled, conn), 30, what=f"the new rule on {node}")
            took[node] = time.monotonic() - changed
        print(f"rule change in effect after {', '.join(f'{n} {s:.2f} s' for n, s in took.items())}")
        for conn in connections.values():  # the same sockets, still answering: nothing was dropped
            assert not conn.eof and ask(conn, "/bytes/64/label").status == 200
    finally:
        for conn in connections.values():
            conn.close()


def denied(world: World, node: str, client: str) -> bool:
    """Whether GET /geo/x sent to ``node`` from the local address ``client`` gets the AQ rule's 451."""
    conn = http.client.HTTPConnection(ADDRESSES[node], world.http_port, timeout=5, source_address=(client, 0))
    try:
        conn.request("GET", "/geo/x", headers={"Host": HOST})
        return conn.getresponse().status == 451
    finally:
        conn.close()


def geo_tables(world: World) -> list[dict[str, Any]]:
    with world.fleet.api() as api:
        params = {"labelSelector": "edgefleet.io/system=gslb-geo-table"}
        items: list[dict[str, Any]] = api.get(f"{API}/artifacts", params=params).json()["items"]
        return items


def test_the_clouds_geo_table_places_clients_on_every_node(world: World) -> None:
    [artifact] = geo_tables(world)
    for node in ADDRESSES:
        wait_until(partial(denied, world, node, "127.0.77.1"), 30, what=f"AQ on {node}")
        assert not denied(world, node, "127.0.0.1"), "FR in the table: not denied"
        geo = world.fleet.agents[node].status()["geoTable"]
        assert geo["state"] == "current" and geo["published"] == artifact["metadata"]["name"]
        assert Path(geo["inUse"]).name == artifact["spec"]["sha256"] + ".csv"
        assert Path(geo["inUse"]).read_text() == GEO_FIRST


def test_rules_test_uses_the_table_the_nodes_use(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgefleet rules test` without --geo downloads the published table (admin token), as the caches use it."""
    [artifact] = geo_tables(world)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    url = f"http://{HOST}/geo/x"
    result = world.fleet.cli("rules", "test", "shop", "--url", url, "--client", "127.0.77.1", "-o", "json")
    document = json.loads(result.stdout)
    assert document["outcome"]["status"] == 451, document
    assert any(artifact["metadata"]["name"] in note for note in document["notes"]), document["notes"]
    kept = tmp_path / "edgefleet" / "geo" / (artifact["spec"]["sha256"] + ".csv")
    assert kept.read_text() == GEO_FIRST
    other = world.fleet.cli("rules", "test", "shop", "--url", url, "--client", "127.0.0.1", "-o", "json")
    assert json.loads(other.stdout)["outcome"]["action"] == "serve"


def test_route_places_clients_with_the_table_the_gslb_uses(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edgefleet route` without --geo places the client with the published table too (shared download)."""
    [artifact] = geo_tables(world)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    document = json.loads(world.fleet.cli("route", "shop", "--client", "127.0.77.1", "-o", "json").stdout)
    assert document["client"]["location"]["country"] == "AQ", document["client"]
    assert Path(document["geoTable"]).name == artifact["spec"]["sha256"] + ".csv"
    assert document["notes"] == [f"geo table: {artifact['metadata']['name']}, the one the cloud publishes to the nodes"]


def test_a_reloaded_geo_table_reaches_every_node(world: World) -> None:
    for node in ADDRESSES:
        wait_until(partial(denied, world, node, "127.0.77.1"), 30, what=f"AQ on {node}")
    world.geo_table.write_text(GEO_SECOND)
    assert world.fleet.cloud.proc is not None
    world.fleet.cloud.proc.send_signal(signal.SIGHUP)
    for node in ADDRESSES:
        wait_until(partial(denied, world, node, "127.0.78.1"), 30, what=f"the new table on {node}")
        assert not denied(world, node, "127.0.77.1")
    wait_until(lambda: len(geo_tables(world)) == 1, 10, what="the older table's Artifact removed")
    assert geo_tables(world)[0]["spec"]["size"] == len(GEO_SECOND)
