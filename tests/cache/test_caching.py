"""RFC 9111 caching semantics of the cache server, end to end: a real origin and a real cache process.

One origin and one cache serve the whole module (starting them costs
seconds); every test uses its own URL paths, so tests do not share entries.
The cache serves several Domains, one per cache policy under test, told
apart by the Host header. Expected bodies are computed with the origin's
own content functions, and the origin's request counters (``by_path``,
``conditional``, ``ranges``) show what reached it. Time-based behaviour
(expiry, revalidation, stale serving, Age) is in ``test_clocked.py``, where
the cache's clock is fake, rather than here behind real sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.demo.origin import Body
from tests.cache.figures import fresh_metric
from tests.cacheproc import CacheProcess, OriginProcess, cache_config, keepalive_client, started
from tests.waiting import wait_until

OLD_DATE = "Mon,%2001%20Jan%202024%2000:00:00%20GMT"  # a Last-Modified long ago, URL-encoded
HOSTS = {
    "demo": "demo.test",
    "ignore": "ignore.test",
    "sort": "sort.test",
    "allow": "allow.test",
    "heuristic": "heuristic.test",
    "noheuristic": "noheuristic.test",
    "rules": "rules.test",
    "strict": "strict.test",
}


def domains(origin_url: str) -> list[dict[str, Any]]:
    def domain(name: str, **policy: Any) -> dict[str, Any]:
        return {"name": name, "hostnames": [HOSTS[name]], "origins": [{"url": origin_url}], "cachePolicy": policy}

    return [
        domain("demo"),
        domain("ignore", queryString="ignore"),
        domain("sort", queryString="sort"),
        domain("allow", queryString={"mode": "allowList", "allowList": ["a", "b"]}),
        domain("heuristic", heuristicFreshness=True, defaultTtl=0),
        domain("noheuristic", heuristicFreshness=False, defaultTtl=0),
        domain("rules", rules=[{"pathRegex": "/rule-ttl", "ttl": 60}, {"pathRegex": "/rule-bypass", "bypass": True}]),
        domain("strict", serveStaleOnError=False),
    ]


@pytest.fixture(scope="module")
def cache(origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheProcess]:
    data_dir: Path = tmp_path_factory.mktemp("cache")
    with started(CacheProcess(cache_config(origin.url, data_dir, domains=domains(origin.url)), data_dir)) as proc:
        yield proc


@pytest.fixture(autouse=True)
def origin_ok(origin: OriginProcess) -> Iterator[None]:
    """Whatever a test does to the origin's mode, the next test finds it answering."""
    yield
    origin.mode("ok")


def fetch(
    cache: CacheProcess, target: str, domain: str = "demo", method: str = "GET", **headers: str
) -> httpx.Response:
    """One request to the cache, with exactly the given header fields (no default Accept-Encoding)."""
    client = keepalive_client(cache.url)
    request = client.build_request(method, target, headers={"Host": HOSTS[domain], **_fields(headers)})
    return client.send(request)


def _fields(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in headers.items()}


def status(response: httpx.Response) -> str:
    """The cache status word of X-Cache: HIT, MISS, STALE, REVALIDATED, PASS, ERROR."""
    return response.headers["x-cache"].split()[0]


def expected(path: str, size: int, version: int = 0) -> bytes:
    """The origin's body for ``/bytes/<size>/...`` at ``path`` (the query does not change it)."""
    return Body(size=size, seed=f"{path}|{version}").read(0, size)


def origin_total(origin: OriginProcess, path: str) -> int:
    """Origin requests for ``path`` with any query string."""
    return sum(count for sent, count in origin.stats()["by_path"].items() if sent.partition("?")[0] == path)


def http_date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True).replace(" ", "%20")


# --- the cache key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "same", "different"),
    [
        ("demo", ["?a=1&b=2"], ["?b=2&a=1", "?a=1"]),
        ("ignore", ["?a=1", "?a=2&z=9", ""], []),
        ("sort", ["?a=1&b=2", "?b=2&a=1", "?b=2&&a=1"], ["?a=2&b=2"]),
        ("allow", ["?a=1&utm=x", "?utm=y&a=1", "?a=1"], ["?a=1&b=3", "?b=3&a=2"]),
    ],
)
def test_query_string_modes_decide_which_requests_share_an_entry(
    cache: CacheProcess, origin: OriginProcess, domain: str, same: list[str], different: list[str]
) -> None:
    path = f"/bytes/300/query-{domain}"
    for query in same:
        response = fetch(cache, path + query, domain)
        assert response.status_code == 200 and response.content == expected(path, 300)
    assert origin_total(origin, path) == 1, f"{domain}: {same} must share one entry"
    for query in different:
        assert status(fetch(cache, path + query, domain)) == "MISS", f"{domain}: {query} has its own entry"
        assert status(fetch(cache, path + query, domain)) == "HIT"
    assert origin_total(origin, path) == 1 + len(different)


def test_vary_keeps_one_entry_per_accept_encoding(cache: CacheProcess, origin: OriginProcess) -> None:
    target = "/bytes/200/vary?vary=Accept-Encoding"
    variants: dict[str, dict[str, str]] = {
        "gzip": {"accept_encoding": "gzip"},
        "br": {"accept_encoding": "br"},
        "none": {},
    }
    for headers in variants.values():
        assert status(fetch(cache, target, **headers)) == "MISS"
    for name, headers in [*variants.items(), *reversed(variants.items())]:
        response = fetch(cache, target, **headers)
        assert status(response) == "HIT", name
        coding = headers.get("accept_encoding", "")
        assert response.content.startswith(f"accept-encoding={coding}\n".encode()), name
        assert len(response.content) == 200
    assert status(fetch(cache, target, accept_encoding="BR")) == "HIT"  # the same coding, spelled otherwise
    assert origin.count(target) == 3


# --- freshness --------------------------------------------------------------------


FRESHNESS_CASES = [
    ("s-maxage beats max-age", "cc=max-age=0,%20s-maxage=60", ["MISS", "HIT", "HIT"]),
    ("max-age", "cc=max-age=60", ["MISS", "HIT"]),
    ("expires in the future", f"cc=&expires={http_date(30 * 86400)}", ["MISS", "HIT"]),  # collected long before it runs
    ("expires now: stored, stale", f"cc=&expires={http_date(-600)}", ["MISS", "REVALIDATED", "REVALIDATED"]),
    ("no-store", "cc=no-store", ["MISS", "MISS", "MISS"]),
    ("private", "cc=private,%20max-age=60", ["MISS", "MISS"]),
    ("no-cache", "cc=no-cache,%20max-age=60", ["MISS", "REVALIDATED", "REVALIDATED"]),
    ("CDN-Cache-Control overrides no-store", "cc=no-store&cdncc=max-age=60", ["MISS", "HIT"]),
    ("Surrogate-Control overrides no-store", "cc=no-store&sc=max-age=60", ["MISS", "HIT"]),
    ("CDN-Cache-Control no-store wins", "cc=max-age=60&cdncc=no-store", ["MISS", "MISS"]),
    ("Set-Cookie is never stored", "setcookie=1", ["MISS", "MISS"]),
]


# ids by name only: the Expires cases' queries hold the time, and parallel workers must collect the same ids
@pytest.mark.parametrize(("name", "query", "statuses"), FRESHNESS_CASES, ids=[case[0] for case in FRESHNESS_CASES])
def test_response_directives_decide_storage_and_reuse(
    cache: CacheProcess, origin: OriginProcess, name: str, query: str, statuses: list[str]
) -> None:
    path = f"/bytes/500/fresh-{name.replace(' ', '-')}"
    conditional_before = origin.stats()["conditional"]
    seen = []
    for _ in statuses:
        response = fetch(cache, f"{path}?{query}")
        assert response.status_code == 200 and response.content == expected(path, 500), name
        seen.append(status(response))
    assert seen == statuses, name
    asked = sum(1 for cache_status in statuses if cache_status != "HIT")
    assert origin_total(origin, path) == asked, name
    conditional = origin.stats()["conditional"] - conditional_before
    assert conditional == statuses.count("REVALIDATED"), f"{name}: conditional requests upstream"


def test_set_cookie_goes_only_to_the_client_it_was_sent_to(cache: CacheProcess, origin: OriginProcess) -> None:
    target = "/bytes/100/cookie?setcookie=1"
    cookies = [fetch(cache, target).headers["set-cookie"] for _ in range(3)]
    assert len(set(cookies)) == 3
    assert origin.count(target) == 3


@pytest.mark.parametrize(
    ("domain", "query", "stored"),
    [
        ("heuristic", f"cc=&lm={OLD_DATE}", True),
        ("heuristic", "cc=&lm=", False),  # no Last-Modified, defaultTtl 0: nothing to go by
        ("noheuristic", f"cc=&lm={OLD_DATE}", False),
        ("demo", "cc=&lm=&etag=0", True),  # the default defaultTtl (3600)
    ],
)
def test_heuristic_freshness_only_when_enabled(
    cache: CacheProcess, origin: OriginProcess, domain: str, query: str, stored: bool
) -> None:
    target = f"/bytes/100/heuristic-{domain}-{stored}?{query}"
    statuses = [status(fetch(cache, target, domain)) for _ in range(2)]
    assert statuses == (["MISS", "HIT"] if stored else ["MISS", "MISS"])
    assert origin.count(target) == (1 if stored else 2)


def test_domain_rules_set_ttl_and_bypass(cache: CacheProcess, origin: OriginProcess) -> None:
    ttl = "/bytes/100/rule-ttl?cc=max-age=0"  # the rule's ttl overrides the origin's max-age=0
    assert [status(fetch(cache, ttl, "rules")) for _ in range(3)] == ["MISS", "HIT", "HIT"]
    bypass = "/bytes/100/rule-bypass"
    responses = [fetch(cache, bypass, "rules") for _ in range(2)]
    assert [status(response) for response in responses] == ["PASS", "PASS"]
    assert all(response.content == expected("/bytes/100/rule-bypass", 100) for response in responses)
    assert origin.count(ttl) == 1 and origin.count(bypass) == 2


# Expiry, revalidation, stale-while-revalidate, stale-if-error and Age are tested on a fake clock
# in test_clocked.py (the same proxy, in this process), not by sleeping past a max-age here.


# --- methods --------------------------------------------------------------------


def test_head_and_get_share_one_entry(cache: CacheProcess, origin: OriginProcess) -> None:
    path = "/bytes/700/head-after-get"
    assert status(fetch(cache, path)) == "MISS"
    head = fetch(cache, path, method="HEAD")
    assert status(head) == "HIT" and head.content == b"" and head.headers["content-length"] == "700"
    heads_before = origin.stats()["methods"].get("HEAD", 0)
    other = "/bytes/700/head-first"
    head = fetch(cache, other, method="HEAD")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "700"

    def hit() -> httpx.Response | None:
        response = fetch(cache, other)
        return response if status(response) == "HIT" else None

    get = wait_until(hit, timeout=5, what="the HEAD miss to store the GET response")
    assert get.content == expected(other, 700)
    assert origin.count(path) == origin.count(other) == 1
    assert origin.stats()["methods"].get("HEAD", 0) == heads_before, "a HEAD miss is fetched upstream as a GET"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_unsafe_methods_invalidate_the_url(cache: CacheProcess, origin: OriginProcess, method: str) -> None:
    target = f"/echo?cc=public,%20max-age=600&unsafe={method}"  # /echo accepts every method
    assert [status(fetch(cache, target)) for _ in range(2)] == ["MISS", "HIT"]
    unsafe = fetch(cache, target, method=method)
    assert unsafe.status_code == 200 and status(unsafe) == "PASS" and unsafe.json()["method"] == method
    assert [status(fetch(cache, target)) for _ in range(2)] == ["MISS", "HIT"]
    assert origin.count(target) == 3


def test_failed_unsafe_method_does_not_invalidate(cache: CacheProcess, origin: OriginProcess) -> None:
    target = "/bytes/100/unsafe-failed"
    assert status(fetch(cache, target)) == "MISS"
    assert fetch(cache, target, method="POST").status_code == 405  # /bytes takes GET and HEAD only
    assert status(fetch(cache, target)) == "HIT"


@pytest.mark.parametrize(
    ("cache_control", "stored"),
    [("max-age=60", False), ("public,%20max-age=60", True), ("s-maxage=60", True)],
)
def test_authorization_requests_are_stored_only_when_the_response_allows(
    cache: CacheProcess, origin: OriginProcess, cache_control: str, stored: bool
) -> None:
    target = f"/bytes/100/authorization-{stored}-{cache_control.count('=')}?cc={cache_control}"
    assert status(fetch(cache, target, authorization="Bearer secret")) == "MISS"
    assert status(fetch(cache, target)) == ("HIT" if stored else "MISS")
    assert origin.count(target) == (1 if stored else 2)


# --- conditionals and ranges from the cache --------------------------------------------


def test_client_conditionals_are_answered_from_the_cache(cache: CacheProcess, origin: OriginProcess) -> None:
    path = "/bytes/100/conditionals"
    full = fetch(cache, path)
    etag, last_modified = full.headers["etag"], full.headers["last-modified"]
    match = fetch(cache, path, if_none_match=etag)
    assert (match.status_code, status(match), match.content) == (304, "HIT", b"")
    assert match.headers["etag"] == etag
    assert fetch(cache, path, if_none_match='"other", ' + etag).status_code == 304
    assert fetch(cache, path, if_none_match='"other"').status_code == 200
    assert fetch(cache, path, if_modified_since=last_modified).status_code == 304
    assert fetch(cache, path, if_modified_since=formatdate(time.time() + 60, usegmt=True)).status_code == 304
    older = fetch(cache, path, if_modified_since="Mon, 01 Jan 2024 00:00:00 GMT")
    assert older.status_code == 200 and older.content == expected(path, 100)
    assert origin.count(path) == 1


def test_ranges_from_a_stored_entry(cache: CacheProcess, origin: OriginProcess) -> None:
    path = "/bytes/1000/ranges"
    body = expected(path, 1000)
    etag = fetch(cache, path).headers["etag"]
    single = fetch(cache, path, range="bytes=100-199")
    assert (single.status_code, status(single)) == (206, "HIT")
    assert single.headers["content-range"] == "bytes 100-199/1000" and single.content == body[100:200]
    suffix = fetch(cache, path, range="bytes=-10")
    assert suffix.headers["content-range"] == "bytes 990-999/1000" and suffix.content == body[-10:]

    several = fetch(cache, path, range="bytes=0-9,500-509,990-")
    assert several.status_code == 206
    parts = multipart_parts(several)
    assert parts == [
        ("bytes 0-9/1000", body[0:10]),
        ("bytes 500-509/1000", body[500:510]),
        ("bytes 990-999/1000", body[990:]),
    ]

    unsatisfiable = fetch(cache, path, range="bytes=5000-6000")
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == "bytes */1000"
    assert fetch(cache, path, range="bytes=0-9", if_range='"other"').content == body  # If-Range mismatch: 200
    matching = fetch(cache, path, range="bytes=0-9", if_range=etag)
    assert matching.status_code == 206 and matching.content == body[:10]
    assert origin.count(path) == 1


def multipart_parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """``(Content-Range, bytes)`` of each part of a multipart/byteranges response."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.partition("boundary=")[2].encode()
    assert response.content.endswith(b"\r\n--" + boundary + b"--\r\n")
    parts = []
    for raw in response.content.split(b"--" + boundary)[1:-1]:
        head, _, data = raw.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().strip().splitlines())
        parts.append((fields["Content-Range"], data.removesuffix(b"\r\n")))
    return parts


def test_range_request_that_misses(cache: CacheProcess, origin: OriginProcess) -> None:
    path = "/bytes/5000/range-miss"
    body = expected(path, 5000)
    response = fetch(cache, path, range="bytes=1000-1099")
    assert response.status_code == 206 and response.headers["content-range"] == "bytes 1000-1099/5000"
    assert response.content == body[1000:1100]
    full = fetch(cache, path)
    assert (status(full), full.content) == ("HIT", body), "a small object is stored whole"
    assert origin.count(path) == 1


def bytes_upstream(cache: CacheProcess) -> float:
    return fresh_metric(cache, "edgefleet_cache_bytes_upstream_total")  # not the master's 0.2 s snapshot


def test_range_miss_on_a_large_object_fetches_one_slice(cache: CacheProcess, origin: OriginProcess) -> None:
    size, slice_bytes = 32 * 2**20, 4 * 2**20  # sliceBytes: the default
    path = f"/bytes/{size}/sliced"
    body = Body(size=size, seed=f"{path}|0")
    upstream_before, ranges_before = bytes_upstream(cache), origin.stats()["ranges"]
    response = fetch(cache, path, range="bytes=20000000-20000099")
    assert response.status_code == 206 and response.headers["content-range"] == f"bytes 20000000-20000099/{size}"
    assert response.content == body.read(20000000, 20000100)
    assert origin.count(path) == 1 and origin.stats()["ranges"] - ranges_before == 1
    assert bytes_upstream(cache) - upstream_before == slice_bytes

    again = fetch(cache, path, range="bytes=20000100-20000199")
    assert (again.status_code, status(again)) == (206, "HIT") and again.content == body.read(20000100, 20000200)
    across = fetch(cache, path, range=f"bytes={5 * slice_bytes - 10}-{5 * slice_bytes + 9}")  # slices 4 and 5
    assert across.status_code == 206 and across.content == body.read(5 * slice_bytes - 10, 5 * slice_bytes + 10)
    tail = fetch(cache, path, range=f"bytes={size - 5}-")
    assert tail.headers["content-range"] == f"bytes {size - 5}-{size - 1}/{size}"
    assert tail.content == body.read(size - 5, size)
    assert origin.count(path) == 3, "slices 4, 5 and 7, once each"
    assert bytes_upstream(cache) - upstream_before == 3 * slice_bytes


def test_sliced_objects_answer_every_range_form_and_purge_as_one(cache: CacheProcess, origin: OriginProcess) -> None:
    size, slice_bytes = 9 * 2**20, 4 * 2**20  # slices 0, 1 and a short slice 2
    path = f"/bytes/{size}/sliced-forms"
    body = Body(size=size, seed=f"{path}|0")
    suffix = fetch(cache, path, range="bytes=-100")  # the size is unknown: slice 0 tells it, then slice 2
    assert suffix.status_code == 206 and suffix.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert suffix.content == body.read(size - 100, size)
    assert origin.count(path) == 2
    several = fetch(cache, path, range=f"bytes=10-19,{slice_bytes - 5}-{slice_bytes + 4},{size - 3}-")
    assert multipart_parts(several) == [
        (f"bytes 10-19/{size}", body.read(10, 20)),
        (f"bytes {slice_bytes - 5}-{slice_bytes + 4}/{size}", body.read(slice_bytes - 5, slice_bytes + 5)),
        (f"bytes {size - 3}-{size - 1}/{size}", body.read(size - 3, size)),
    ]
    assert origin.count(path) == 3, "slice 1 was fetched; 0 and 2 were stored"
    unsatisfiable = fetch(cache, path, range=f"bytes={size}-")
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == f"bytes */{size}"
    etag = suffix.headers["etag"]
    assert fetch(cache, path, range="bytes=0-0", if_none_match=etag).status_code == 304
    assert origin.count(path) == 3

    purged = cache.admin("POST", "/purge", json={"urls": [path]})
    assert purged.status_code == 200 and purged.json()["purged"] >= 1
    assert status(fetch(cache, path, range="bytes=0-9")) == "MISS", "a purge of the URL removes its slices"
    assert origin.count(path) == 4
    mismatch = fetch(cache, path, range="bytes=0-9", if_range='"another-version"')
    assert mismatch.status_code == 200 and len(mismatch.content) == size, "If-Range mismatch: the whole object"
    assert mismatch.content[:1000] == body.read(0, 1000)
