"""Time-based caching end to end, in one process, on a fake clock: no sleeping past a max-age.

How: the worker's own pieces (storage tiers, :class:`Proxy`, the connection
set) serve a loopback port in the test's event loop, in front of a real
origin process; only the clock the proxy reads is fake. The test moves it
past ``max-age``, ``stale-while-revalidate`` or ``stale-if-error`` and asks
again over HTTP. What used to be "sleep 1.3 s and hope the machine kept up"
is now exact. The pure decisions themselves are tested in
``test_decisions.py``; this module checks the proxy acts on them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edgefleet.cache.config import parse_config
from edgefleet.cache.front.proxy import Proxy
from edgefleet.cache.front.worker import build_storage
from edgefleet.cache.stats import Stats
from edgefleet.cache.upstream.fetches import fill_done
from tests.cache.inprocess import serving
from tests.cache.test_caching import HOSTS, domains, expected, origin_total
from tests.cache.test_decisions import FakeClock
from tests.cacheproc import OriginProcess, cache_config


@dataclass
class Clocked:
    """A cache served from this event loop, its fake clock and an HTTP client to it."""

    proxy: Proxy
    clock: FakeClock
    client: httpx.AsyncClient

    async def fetch(self, target: str, domain: str = "demo") -> httpx.Response:
        return await self.client.get(target, headers={"Host": HOSTS[domain]})


@pytest.fixture
async def cache(origin: OriginProcess, tmp_path: Path) -> AsyncIterator[Clocked]:
    config = parse_config(cache_config(origin.url, tmp_path, domains=domains(origin.url)))
    # A day behind the origin's Date (real time), so that no response looks older than its Age says
    # (apparent age = max(0, now - Date) stays 0) and every lifetime counts from the fake clock alone.
    clock = FakeClock(time.time() - 86400)
    proxy = Proxy(config, build_storage(config), Stats(), None, clock=clock)
    async with serving(proxy, config) as client:
        yield Clocked(proxy, clock, client)


def status(response: httpx.Response) -> str:
    return response.headers["x-cache"].split()[0]


async def test_expired_entries_are_validated_upstream(cache: Clocked, origin: OriginProcess) -> None:
    revalidated = {
        "max-age": "/bytes/400/clocked-max-age?cc=max-age=1",
        "s-maxage": "/bytes/400/clocked-s-maxage?cc=max-age=60,%20s-maxage=1",
        "CDN-Cache-Control": "/bytes/400/clocked-cdn?cc=max-age=60&cdncc=max-age=1",
        "Surrogate-Control": "/bytes/400/clocked-surrogate?cc=max-age=60&sc=max-age=1",
        "If-Modified-Since only": "/bytes/400/clocked-ims?cc=max-age=1&etag=0",
        "If-None-Match only": "/bytes/400/clocked-inm?cc=max-age=1&lm=",
    }
    fresh = "/bytes/400/clocked-control?cc=max-age=60"
    changed = "/bytes/400/clocked-changed"
    for target in [*revalidated.values(), fresh, changed + "?cc=max-age=1"]:
        assert status(await cache.fetch(target)) == "MISS"
    # The 304 to come carries new fields: they must replace the stored ones (ignore.test drops the query).
    updated = "/bytes/400/clocked-updated"
    assert status(await cache.fetch(updated + "?cc=max-age=1", "ignore")) == "MISS"
    origin.bump(changed)
    conditional_before = origin.stats()["conditional"]
    cache.clock.advance(0.999)
    assert status(await cache.fetch(revalidated["max-age"])) == "HIT", "not expired yet"
    cache.clock.advance(0.001)  # max-age=1 is over to the millisecond: no margin for a slow machine needed

    for name, target in revalidated.items():
        response = await cache.fetch(target)
        assert status(response) == "REVALIDATED", name
        assert response.content == expected(target.partition("?")[0], 400), name
        assert origin.count(target) == 2, name
    assert status(await cache.fetch(fresh)) == "HIT"

    response = await cache.fetch(updated + "?cc=max-age=60&tags=fresh-tag", "ignore")
    assert status(response) == "REVALIDATED" and response.headers["cache-tag"] == "fresh-tag"
    cache.clock.advance(30)
    later = await cache.fetch(updated + "?cc=max-age=1", "ignore")
    assert status(later) == "HIT", "the 304's max-age=60 replaced the stored max-age=1"
    assert later.headers["cache-control"] == "max-age=60" and later.headers["cache-tag"] == "fresh-tag"

    response = await cache.fetch(changed + "?cc=max-age=1")
    assert response.content == expected(changed, 400, version=1), "a changed object is fetched anew"
    again = await cache.fetch(changed + "?cc=max-age=1")
    assert status(again) == "HIT" and again.content == expected(changed, 400, version=1)
    assert origin.stats()["conditional"] - conditional_before == len(revalidated) + 2


async def test_stale_while_revalidate_answers_at_once_and_refreshes_in_the_background(
    cache: Clocked, origin: OriginProcess
) -> None:
    path = "/bytes/300/clocked-swr"
    assert status(await cache.fetch(path + "?cc=max-age=1,%20stale-while-revalidate=30", "ignore")) == "MISS"
    cache.clock.advance(1.3)
    slow = path + "?cc=max-age=60"  # ignore.test: the same entry, whatever the query
    origin.mode("hang")  # the revalidation hangs at the origin until we let it go: no race with the clock
    try:
        stale = [await cache.fetch(slow, "ignore") for _ in range(3)]
        fill = cache.proxy.fills.get(cache.proxy.key_of_url(cache.proxy.domains.by_name["ignore"], path))
        assert fill is not None and not fill.done, "stale answers must not wait for the revalidation"
    finally:
        origin.mode("ok")
    assert [status(response) for response in stale] == ["STALE"] * 3
    assert all(response.content == expected(path, 300) for response in stale)
    await fill_done(fill)
    response = await cache.fetch(path, "ignore")
    assert status(response) == "HIT" and response.headers["cache-control"] == "max-age=60"
    assert origin.count(slow) == 1, "one background revalidation, however many stale answers"
    assert origin_total(origin, path) == 2
    cache.clock.advance(59.0)
    assert status(await cache.fetch(path, "ignore")) == "HIT"


STALE_OK = [
    ("demo", "/bytes/200/clocked-sie-window?cc=max-age=1,%20stale-if-error=60"),
    ("demo", "/bytes/200/clocked-sie-domain-default?cc=max-age=1"),  # serveStaleOnError: true (the default)
]
NO_STALE = [
    ("demo", "/bytes/200/clocked-sie-must-revalidate?cc=max-age=1,%20must-revalidate,%20stale-if-error=60"),
    ("demo", "/bytes/200/clocked-sie-proxy-revalidate?cc=max-age=1,%20proxy-revalidate,%20stale-if-error=60"),
    ("demo", "/bytes/200/clocked-sie-s-maxage?cc=s-maxage=1,%20stale-if-error=60"),
    ("demo", "/bytes/200/clocked-sie-window-over?cc=max-age=1,%20stale-if-error=1"),
    ("strict", "/bytes/200/clocked-sie-strict?cc=max-age=1"),  # serveStaleOnError: false
]


async def test_stale_if_error_and_must_revalidate_when_the_origin_fails(cache: Clocked, origin: OriginProcess) -> None:
    for domain, target in STALE_OK + NO_STALE:
        assert status(await cache.fetch(target, domain)) == "MISS"
    cache.clock.advance(2.3)  # all stale; the stale-if-error=1 window is over too
    try:
        for mode in ("error", "close"):
            origin.mode(mode)
            for domain, target in STALE_OK:
                response = await cache.fetch(target, domain)
                assert (response.status_code, status(response)) == (200, "STALE"), (mode, target)
                assert response.content == expected(target.partition("?")[0], 200)
            for domain, target in NO_STALE:
                response = await cache.fetch(target, domain)
                assert status(response) != "STALE" and response.status_code >= 500, (mode, target)
                if mode == "close":
                    assert response.status_code == 502, target
    finally:
        origin.mode("ok")
    for domain, target in STALE_OK + NO_STALE:
        assert status(await cache.fetch(target, domain)) == "REVALIDATED", target


async def test_age_counts_from_the_origins_age(cache: Clocked) -> None:
    target = "/bytes/100/clocked-age?age=100&cc=max-age=3600"
    first = await cache.fetch(target)
    assert status(first) == "MISS" and int(first.headers["age"]) >= 100
    age = int((await cache.fetch(target)).headers["age"])
    assert age == 100, "no time passed on the cache's clock"
    cache.clock.advance(1.0)
    later = await cache.fetch(target)
    assert status(later) == "HIT" and int(later.headers["age"]) == age + 1
    cache.clock.advance(3600)
    expired = status(await cache.fetch(target))
    assert expired in ("REVALIDATED", "MISS"), "the Age counts against max-age: 100 + 3601 s > 3600 s"
