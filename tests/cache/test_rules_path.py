"""Edge rules on a real cache's request path: one cache process, one origin, one config per module.

Each rule kind is checked from the outside (status, fields, X-Cache, what the origin received), on a
miss and on a hit (the hit fast path applies the rules too), and a reload swaps the rules under a
kept-alive connection. The engine's own decisions are unit-tested in tests/cache/test_rules_*.py; this
module checks that the cache carries them out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cache.policy.rules import sign_path
from tests.cacheproc import CacheProcess, OriginProcess, cache_config, no_cookies, started
from tests.waiting import wait_until

HOST = "demo.test"
KEY = "k3y-0123456789"


def rules() -> list[dict[str, Any]]:
    return [
        {
            "name": "old",
            "match": {"path": {"prefix": "/old/"}},
            "stop": True,
            "actions": [{"redirect": {"status": 301, "location": "https://new.test${path}"}}],
        },
        {
            "name": "admin",
            "match": {"path": {"prefix": "/admin"}},
            "actions": [{"deny": {"status": 403, "body": "no\n"}}],
        },
        {
            "name": "echo",
            "match": {"path": {"regex": "^/r/(.*)$"}},
            "actions": [{"rewrite": {"path": "/${1}"}}, {"requestHeaders": {"set": {"X-From-Rule": "yes"}}}],
        },
        {
            "name": "signed",
            "match": {"path": {"prefix": "/signed/"}},
            "actions": [{"tokenAuth": {"keys": [{"secret": "sign", "key": "k"}]}}],
        },
        {
            "name": "lost",
            "match": {"path": {"prefix": "/lost/"}},
            "actions": [{"tokenAuth": {"keys": [{"secret": "missing", "key": "k"}]}}],
        },
        {
            "name": "limit",
            "match": {"path": {"prefix": "/limited/"}},
            "actions": [{"rateLimit": {"requestsPerSecond": 0.01, "burst": 3}}],
        },
        {
            "name": "tenant",
            "match": {"path": {"prefix": "/bytes/32/t"}},
            "actions": [{"cache": {"key": {"headers": ["X-Tenant"]}}}],
        },
        {"name": "nocache", "match": {"path": {"prefix": "/bytes/48/"}}, "actions": [{"cache": {"bypass": True}}]},
        {
            "name": "ab",
            "match": {"path": {"prefix": "/bytes/64/ab"}},
            "actions": [
                {
                    "split": {
                        "name": "exp",
                        "variants": [
                            {"name": "a", "requestHeader": {"name": "X-Variant", "value": "a"}},
                            {"name": "b", "requestHeader": {"name": "X-Variant", "value": "b"}},
                        ],
                    }
                }
            ],
        },
        {
            "name": "cors",
            "match": {"path": {"prefix": "/api/"}},
            "actions": [{"cors": {"allowOrigins": ["https://app.test"], "allowMethods": ["GET", "POST"]}}],
        },
        {
            "name": "geo-fr",
            "match": {"path": {"prefix": "/bytes/20/geo"}, "country": {"oneOf": ["FR"]}},
            "actions": [{"deny": {"status": 451}}],
        },
        {
            "name": "geo-nl",
            "match": {"path": {"prefix": "/bytes/24/geo"}, "country": {"oneOf": ["NL"]}},
            "actions": [{"deny": {"status": 451}}],
        },
        {
            "name": "stored",
            "phase": "originResponse",
            "match": {"path": {"prefix": "/bytes/90/"}},
            "actions": [{"responseHeaders": {"set": {"X-Stored": "yes"}, "remove": ["ETag"]}}],
        },
        {
            "name": "not-found",
            "phase": "clientResponse",
            "match": {"status": {"oneOf": [404]}},
            "actions": [{"responseHeaders": {"set": {"X-Missing": "1"}}}],
        },
        {"name": "label", "actions": [{"responseHeaders": {"set": {"X-Rule": "on"}}}]},
    ]


@dataclass
class World:
    cache: CacheProcess
    origin: OriginProcess


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("rules-path")
    with started(OriginProcess(root)) as origin:
        config = cache_config(origin.url, root, disk=False)
        config["domains"][0]["rules"] = rules()
        config["secrets"] = {"sign": {"k": KEY}}
        with started(CacheProcess(config, root)) as cache:
            yield World(cache, origin)


@pytest.fixture(scope="module")
def cache(world: World) -> CacheProcess:
    return world.cache


@pytest.fixture
def client(cache: CacheProcess) -> Iterator[httpx.Client]:
    with cache.client(HOST) as c:
        yield c


def test_redirect_and_deny_are_answered_by_the_rule(client: httpx.Client) -> None:
    moved = client.get("/old/page?x=1")
    assert moved.status_code == 301 and moved.headers["location"] == "https://new.test/old/page"
    assert moved.headers["x-cache"].startswith("RULE from")
    denied = client.get("/admin/users")
    assert denied.status_code == 403 and denied.text == "no\n"


def test_rewrite_and_request_headers_reach_the_origin(client: httpx.Client) -> None:
    answer = client.get("/r/echo")
    assert answer.status_code == 200
    seen = json.loads(answer.text)
    assert seen["path"] == "/echo" and seen["headers"]["x-from-rule"] == "yes"


def test_response_headers_on_a_miss_and_on_a_fast_path_hit(client: httpx.Client) -> None:
    first, second = client.get("/bytes/100/label"), client.get("/bytes/100/label")
    assert first.headers["x-cache"].startswith("MISS") and second.headers["x-cache"].startswith("HIT")
    assert first.headers["x-rule"] == "on" and second.headers["x-rule"] == "on"
    assert first.content == second.content


def test_signed_urls(client: httpx.Client) -> None:
    expires = int(time.time()) + 60
    token = sign_path(KEY, "/signed/a", expires)
    good = client.get(f"/signed/a?expires={expires}&token={token}")
    assert good.status_code == 404 or good.status_code == 200  # whatever the origin has: the rule let it through
    assert not good.headers["x-cache"].startswith("RULE")
    old = int(time.time()) - 3600
    expired = client.get(f"/signed/a?expires={old}&token={sign_path(KEY, '/signed/a', old)}")
    assert expired.status_code == 403 and expired.headers["x-cache"].startswith("RULE")
    assert client.get("/signed/a").status_code == 403
    assert client.get(f"/signed/b?expires={expires}&token={token}").status_code == 403, "signed for another path"
    # A Secret the node lacks: fail closed.
    assert client.get(f"/lost/a?expires={expires}&token={sign_path(KEY, '/lost/a', expires)}").status_code == 403


def test_rate_limit_answers_429_past_the_burst(client: httpx.Client) -> None:
    statuses = [client.get(f"/limited/{n}").status_code for n in range(5)]
    assert statuses[:3] != [429] * 3 and 429 not in statuses[:3]
    assert statuses[3:] == [429, 429]
    limited = client.get("/limited/x")
    assert int(limited.headers["retry-after"]) >= 1


def test_cache_key_additions_and_bypass(world: World, client: httpx.Client) -> None:
    origin = world.origin
    for tenant in ("t1", "t2"):
        assert client.get("/bytes/32/tk", headers={"X-Tenant": tenant}).headers["x-cache"].startswith("MISS")
        assert client.get("/bytes/32/tk", headers={"X-Tenant": tenant}).headers["x-cache"].startswith("HIT")
    assert origin.count("/bytes/32/tk") == 2
    for _ in range(2):
        assert client.get("/bytes/48/p").headers["x-cache"].startswith("PASS")
    assert origin.count("/bytes/48/p") == 2


def test_ab_split_sticks_and_keys_by_variant(cache: CacheProcess) -> None:
    seen: dict[str, str] = {}
    for _ in range(40):  # fresh clients until both variants were drawn
        with httpx.Client(base_url=cache.url, headers={"Host": HOST}, cookies=no_cookies()) as fresh:
            answer = fresh.get("/bytes/64/ab")
            cookie = answer.headers["set-cookie"]
            variant = cookie.split(";")[0].split("=")[1]
            seen.setdefault(variant, cookie.split(";")[0])
        if len(seen) == 2:
            break
    assert set(seen) == {"a", "b"}
    for variant, pair in seen.items():
        with httpx.Client(base_url=cache.url, headers={"Host": HOST, "Cookie": pair}, cookies=no_cookies()) as sticky:
            again = sticky.get("/bytes/64/ab")
            assert "set-cookie" not in again.headers, "a client with its cookie keeps its variant"
            assert again.headers["x-cache"].startswith("HIT"), variant


def test_cors_preflight(client: httpx.Client) -> None:
    preflight = client.options(
        "/api/x", headers={"Origin": "https://app.test", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.test"
    other = client.options("/api/x", headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_a_reload_changes_the_rules_under_a_kept_alive_connection(cache: CacheProcess, client: httpx.Client) -> None:
    assert client.get("/bytes/80/swap").headers.get("x-swapped") is None
    config = json.loads(json.dumps(cache.config))
    config["domains"][0]["rules"].insert(
        0, {"name": "swap", "actions": [{"responseHeaders": {"set": {"X-Swapped": "1"}}}]}
    )
    cache.reload(config)
    wait_until(lambda: client.get("/bytes/80/swap").headers.get("x-swapped") == "1", timeout=10)
    assert client.get("/old/x").status_code == 301, "the other rules still apply"


def test_country_conditions_use_the_packaged_geo_table(client: httpx.Client) -> None:
    # The package's table places 127.0.0.0/8 in FR (src/edgefleet/data/geo.csv).
    assert client.get("/bytes/20/geo").status_code == 451
    assert client.get("/bytes/24/geo").status_code == 200


def test_origin_phase_changes_what_is_stored_and_client_phase_what_is_sent(client: httpx.Client) -> None:
    first, second = client.get("/bytes/90/o"), client.get("/bytes/90/o")
    assert second.headers["x-cache"].startswith("HIT")
    for answer in (first, second):
        assert answer.headers["x-stored"] == "yes" and "etag" not in answer.headers
    assert "x-missing" not in first.headers
    assert client.get("/nothing-here").headers.get("x-missing") == "1"


def test_errors_the_cache_makes_get_the_response_headers_too(client: httpx.Client) -> None:
    answer = client.get("/bytes/12/never-stored", headers={"Cache-Control": "only-if-cached"})
    assert answer.status_code == 504 and answer.headers["x-cache"].startswith("ERROR")
    assert answer.headers["x-rule"] == "on"
