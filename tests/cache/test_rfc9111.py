"""RFC 9111 (HTTP Caching) and the caching parts of RFC 9110, one test per rule, the section in its name.

How: most rules are decisions of the pure policy modules (freshness, conditionals, keys, invalidation)
and the storage tiers, tested by calling them. Where the wire matters (interim 1xx heads, what a 304 or
an unsafe method does to stored objects, which statuses are stored), the worker's own request path
serves a loopback port from this event loop (``tests/cache/inprocess.py``) in front of a real origin
process, with a fake clock; the client is a raw asyncio stream when the bytes on the wire are the point.
docs/cache.md, "RFC 9111 conformance", is the table of these rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from edgefleet.cache.config import parse_config
from edgefleet.cache.front.proxy import Proxy
from edgefleet.cache.front.worker import build_storage
from edgefleet.cache.policy import decisions, invalidation, keys, ranges
from edgefleet.cache.policy.conditionals import freshens, freshens_as_well, merge_304
from edgefleet.cache.policy.freshness import Policy, evaluate, initial_age
from edgefleet.cache.policy.keys import MAX_VARIANTS, parse_vary, variant_key
from edgefleet.cache.stats import Stats
from edgefleet.cache.storage.disk import DiskTier
from edgefleet.cache.storage.memory import MemoryEntry, MemoryTier
from edgefleet.cache.upstream.client import MAX_INTERIM_RESPONSES
from edgefleet.cache.upstream.fetches import Answer, _freshened, _with_date
from edgefleet.cache.wire.headers import Headers, format_http_date, get, parse_http_date
from tests.cache.inprocess import serving
from tests.cache.test_caching import HOSTS, domains
from tests.cache.test_decisions import FakeClock
from tests.cache.test_memory import meta_for
from tests.cacheproc import CacheProcess, OriginProcess, cache_config, http_request
from tests.waiting import eventually

NOW = 1_700_000_000.0
DATE = format_http_date(NOW)
POLICY = Policy(ttl_override=None, bypass=False, default_ttl=0, heuristic=False, serve_stale_on_error=False)
GENEROUS = Policy(ttl_override=600, bypass=False, default_ttl=3600, heuristic=True, serve_stale_on_error=False)


def decide(*fields: tuple[str, str], status: int = 200, policy: Policy = POLICY) -> tuple[bool, float, str]:
    decision = evaluate("GET", status, [], [("Date", DATE), *fields], policy)
    return decision.storable, decision.lifetime, decision.reason


# --- §5.1 Age, §5.3 Expires, §4.2.1, RFC 9110 §6.6.1 Date ------------------------------


def test_9111_5_1_age_list_uses_its_first_member() -> None:
    assert initial_age([("Age", "10, 20")], NOW - 1, NOW) == 11
    assert initial_age([("Age", "10"), ("Age", "20")], NOW - 1, NOW) == 11


@pytest.mark.parametrize("age", ["-5", "1.5", "abc", "", "0x10", "10 20"])
def test_9111_5_1_invalid_age_is_ignored(age: str) -> None:
    assert initial_age([("Age", age)], NOW - 1, NOW) == 1


def test_9111_1_2_2_huge_age_is_clamped_not_an_overflow() -> None:
    assert initial_age([("Age", "9" * 40)], NOW, NOW) == 2**31


@pytest.mark.parametrize("expires", ["0", "-1", "tomorrow", "Thu, 01 Jan 10000 00:00:00 GMT", "Mon, 32 Jan 2024 x"])
def test_9111_5_3_invalid_expires_means_already_stale(expires: str) -> None:
    assert decide(("Expires", expires)) == (True, 0.0, "")


def test_9111_4_2_1_several_expires_lines_mean_stale() -> None:
    later = format_http_date(NOW + 600)
    assert decide(("Expires", later), ("Expires", later)) == (True, 0.0, "")
    assert decide(("Expires", later)) == (True, 600.0, "")


def test_9111_5_3_expires_counts_from_date_even_when_date_is_ahead_of_our_clock() -> None:
    ahead = NOW + 3600  # the origin's clock runs an hour ahead: lifetime is Expires - Date, the age 0
    fields = [("Date", format_http_date(ahead)), ("Expires", format_http_date(ahead + 60))]
    assert evaluate("GET", 200, [], fields, POLICY).lifetime == 60
    assert initial_age(fields, NOW, NOW) == 0


def test_9111_5_3_max_age_beats_expires_and_far_expires_is_kept() -> None:
    assert decide(("Cache-Control", "max-age=5"), ("Expires", "0"))[1] == 5
    far = parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT")
    assert far is not None
    assert decide(("Expires", "Fri, 31 Dec 9999 23:59:59 GMT"))[1] == far - NOW


@pytest.mark.parametrize("dates", [[], ["garbage"], [DATE, DATE]])
def test_9110_6_6_1_missing_invalid_or_repeated_date_is_replaced_by_the_time_received(dates: list[str]) -> None:
    received = NOW + 5
    fixed = _with_date([("Date", date) for date in dates] + [("ETag", '"a"')], received)
    assert [value for name, value in fixed if name == "Date"] == [format_http_date(received)]
    assert ("ETag", '"a"') in fixed
    valid = [("Date", DATE)]
    assert _with_date(valid, received) is valid


# --- §3 and §4.2.2: which statuses are stored -----------------------------------------------


@pytest.mark.parametrize("status", [201, 400, 403, 500, 502, 503, 504, 599])
def test_9111_3_any_final_status_is_stored_when_explicitly_fresh(status: int) -> None:
    assert decide(("Cache-Control", "max-age=60"), status=status) == (True, 60.0, "")
    assert decide(("Cache-Control", "s-maxage=30"), status=status)[:2] == (True, 30.0)
    assert decide(("Expires", format_http_date(NOW + 90)), status=status) == (True, 90.0, "")


@pytest.mark.parametrize("status", [403, 500, 503])
def test_9111_4_2_2_errors_get_no_rule_ttl_default_ttl_or_heuristic_without_public(status: int) -> None:
    fields = ("Last-Modified", format_http_date(NOW - 1000))
    storable, _, reason = decide(fields, status=status, policy=GENEROUS)
    assert not storable and "explicit freshness" in reason
    # public allows the Last-Modified heuristic, never the Domain's defaultTtl
    assert decide(("Cache-Control", "public"), fields, status=status, policy=GENEROUS)[:2] == (True, 100.0)
    public_only = Policy(None, False, 3600, False, False)
    assert not decide(("Cache-Control", "public"), status=status, policy=public_only)[0]


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_9111_4_2_2_heuristically_cacheable_statuses_take_the_domain_defaults(status: int) -> None:
    assert decide(status=status, policy=Policy(None, False, 300, False, False)) == (True, 300.0, "")
    assert decide(status=status, policy=GENEROUS)[1] == 600


@pytest.mark.parametrize("status", [100, 103, 199, 304, 600])
def test_9111_3_interim_responses_and_304_are_never_stored(status: int) -> None:
    assert not decide(("Cache-Control", "max-age=60"), status=status)[0]


# --- §5.2.2.3 must-understand ---------------------------------------------------------------


def test_9111_5_2_2_3_must_understand_ignores_no_store_for_an_understood_status() -> None:
    assert decide(("Cache-Control", "must-understand, no-store, max-age=60")) == (True, 60.0, "")
    assert decide(("Cache-Control", "must-understand, no-store, max-age=60"), status=404)[0]
    assert decide(("Cache-Control", "must-understand, no-store, private, max-age=60"))[2] == "private"
    assert decide(("Cache-Control", "no-store, max-age=60"))[2] == "no-store"


@pytest.mark.parametrize("cache_control", ["must-understand, no-store, max-age=60", "must-understand, max-age=60"])
def test_9111_5_2_2_3_must_understand_refuses_a_status_not_understood(cache_control: str) -> None:
    storable, _, reason = decide(("Cache-Control", cache_control), status=299)
    assert not storable and reason == "must-understand: status 299 not understood"
    assert decide(("Cache-Control", "max-age=60"), status=299)[0], "without it, explicit freshness suffices"


# --- §3.2, §4.3.4: what a 304 updates, and which stored response ------------------------------

STORED: Headers = [
    ("Content-Type", "text/plain"),
    ("Content-Length", "100"),
    ("Content-Encoding", "gzip"),
    ("ETag", '"v1"'),
    ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("Cache-Control", "max-age=10"),
    ("X-Stored", "old"),
]


def test_9111_3_2_304_replaces_fields_but_never_the_framing_or_coding_of_the_stored_body() -> None:
    update: Headers = [
        ("Content-Type", "text/html"),
        ("Content-Length", "0"),
        ("Content-Encoding", "br"),
        ("Cache-Control", "max-age=60"),
        ("X-Stored", "new"),
        ("Proxy-Authentication-Info", "nextnonce=1"),
        ("Connection", "X-Hop"),
        ("X-Hop", "1"),
    ]
    merged = merge_304(STORED, update)
    assert get(merged, "content-length") == "100" and get(merged, "content-encoding") == "gzip"
    assert get(merged, "content-type") == "text/html" and get(merged, "cache-control") == "max-age=60"
    assert get(merged, "x-stored") == "new"
    assert get(merged, "proxy-authentication-info") is None and get(merged, "x-hop") is None


@pytest.mark.parametrize(
    ("validators", "selected"),
    [
        ([("ETag", '"v1"')], True),
        ([("ETag", '"v2"')], False),
        ([("ETag", 'W/"v1"')], True),
        ([("ETag", 'W/"v2"')], False),
        ([("ETag", '"v1"'), ("Last-Modified", "Tue, 02 Jan 2024 00:00:00 GMT")], True),  # strong ETag decides
        ([("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")], True),
        ([("Last-Modified", "Tue, 02 Jan 2024 00:00:00 GMT")], False),
        ([], True),  # the conditional request named this stored response only
    ],
)
def test_9111_4_3_4_a_304_freshens_only_the_stored_response_it_names(validators: Headers, selected: bool) -> None:
    assert freshens(STORED, [("Cache-Control", "max-age=60"), *validators]) is selected


@pytest.mark.parametrize(
    ("validators", "also"),
    [
        ([("ETag", '"v1"')], True),
        ([("ETag", 'W/"v1"')], False),  # weak: only the most recent match, the one asked about
        ([("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")], False),
        ([("ETag", '"v2"')], False),
        ([], False),
    ],
)
def test_9111_4_3_4_only_a_strong_etag_identifies_other_stored_responses_for_update(
    validators: Headers, also: bool
) -> None:
    assert freshens_as_well(STORED, [("Cache-Control", "max-age=60"), *validators]) is also


def test_9111_3_2_a_304_never_adds_a_cookie_to_a_shared_stored_response() -> None:
    merged = merge_304(STORED, [("Set-Cookie", "session=alice"), ("Set-Cookie2", "x=1"), ("X-Stored", "new")])
    assert get(merged, "set-cookie") is None and get(merged, "set-cookie2") is None
    assert get(merged, "x-stored") == "new"


def test_9111_3_1_fields_a_304_names_in_no_cache_or_private_are_not_kept() -> None:
    update = [("Cache-Control", 'max-age=60, no-cache="X-Secret", private="X-Other"'), ("X-Secret", "s")]
    update += [("X-Other", "o"), ("X-Stored", "new")]
    response = cast(Any, SimpleNamespace(headers=update))
    wanted = cast(Any, SimpleNamespace(request=SimpleNamespace(headers=[]), policy=POLICY))
    now = time.time()
    meta = _freshened(meta_for("http://demo.test/a", headers=STORED), wanted, Answer(response, now, now, 1.0))
    assert get(meta.headers, "x-secret") is None and get(meta.headers, "x-other") is None
    assert get(meta.headers, "x-stored") == "new"


def test_9111_4_3_4_a_strong_etag_never_matches_a_stored_response_without_one() -> None:
    assert not freshens([("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")], [("ETag", '"v1"')])


# --- §4.1 Vary ---------------------------------------------------------------------------------


def test_9111_4_1_vary_star_never_matches() -> None:
    assert parse_vary([("Vary", "Accept, *")]) is None
    assert not decide(("Cache-Control", "max-age=60"), ("Vary", "*"))[0]


def test_9111_4_1_values_are_normalised_where_the_field_allows() -> None:
    def key(name: str, *values: str) -> str:
        return variant_key((name.lower(),), [(name, value) for value in values])

    gzip_br = key("Accept-Encoding", "gzip, br")
    assert gzip_br == key("Accept-Encoding", "BR,gzip") == key("Accept-Encoding", "br", "gzip")
    assert key("Accept-Language", "en-US, fr") == key("Accept-Language", "EN-us,fr")
    assert key("Accept-Language", "en-US, fr") != key("Accept-Language", "fr, en-US"), "order ranks languages"
    assert key("X-Flavour", "Mint") != key("X-Flavour", "mint"), "an unknown field is compared as sent"
    assert key("X-Flavour", "a ,b") == key("X-Flavour", "a,b")
    assert variant_key(("accept-language",), []) != key("Accept-Language", ""), "absent is not empty"


def test_9111_4_1_variants_per_url_are_bounded_in_memory() -> None:
    tier = MemoryTier(1 << 24, 1 << 20)
    for index in range(MAX_VARIANTS + 8):
        meta = meta_for("k", f"lang={index}", vary=("accept-language",), response_time=1000.0 + index)
        tier.put(MemoryEntry(meta, b"x"))
    kept = sorted(int(entry.meta.variant.partition("=")[2]) for entry in tier.variants("k"))
    assert kept == list(range(8, MAX_VARIANTS + 8)), "the oldest variants went"


def test_9111_4_1_variants_per_url_are_bounded_on_disk(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    with DiskTier(tmp_path, 1 << 24, clock=clock) as disk:
        for index in range(MAX_VARIANTS + 3):
            clock.advance(1)
            meta = meta_for("k", f"lang={index}", vary=("accept-language",), response_time=clock())
            writer = disk.writer(meta)
            assert writer.write(b"body") and writer.commit(meta)
        kept = sorted(int(meta.variant.partition("=")[2]) for meta in disk.variants("k"))
    assert kept == list(range(3, MAX_VARIANTS + 3))


# --- §4.4 invalidation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        *[("POST", 200, True), ("PUT", 204, True), ("DELETE", 301, True), ("PATCH", 200, True), ("PURGE", 200, True)],
        *[("POST", 404, False), ("POST", 500, False), ("POST", 100, False), ("OPTIONS", 200, False)],
        ("GET", 200, False),
    ],
)
def test_9111_4_4_non_error_answers_to_unsafe_methods_invalidate(method: str, status: int, expected: bool) -> None:
    assert invalidation.invalidates(method, status) is expected


def test_9111_4_4_location_and_content_location_only_on_the_same_host() -> None:
    headers: Headers = [
        ("Location", "../other?x=1"),
        ("Content-Location", "http://Demo.Test:8080/c"),
        ("Location", "https://evil.test/a"),
        ("Content-Location", "//evil.test/b"),
        ("Location", "mailto:a@demo.test"),
        ("Location", "/a/b"),  # the target itself: invalidated anyway
    ]
    assert invalidation.related_targets("demo.test", "/a/b", headers) == ["/other?x=1", "/c"]
    flood = [("Location", f"/x{index}") for index in range(50)]
    assert len(invalidation.related_targets("demo.test", "/", flood)) == invalidation.MAX_RELATED


# --- the request path, in front of a real origin -------------------------------------------


@dataclass
class Served:
    """The worker's request path on a loopback port, its fake clock and an HTTP client."""

    proxy: Proxy
    clock: FakeClock
    client: httpx.AsyncClient
    port: int

    async def get(self, target: str, domain: str = "demo", method: str = "GET", **headers: str) -> httpx.Response:
        fields = {"Host": HOSTS[domain], **{name.replace("_", "-"): value for name, value in headers.items()}}
        return await self.client.request(method, target, headers=fields)

    async def raw(self, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(request)
        return reader, writer


@pytest.fixture
async def served(origin: OriginProcess, tmp_path: Path) -> AsyncIterator[Served]:
    config = parse_config(cache_config(origin.url, tmp_path, domains=domains(origin.url)))
    clock = FakeClock(time.time() - 86400)  # see test_clocked.py: ages count from the fake clock alone
    proxy = Proxy(config, build_storage(config), Stats(), None, clock=clock)
    async with serving(proxy, config) as client:
        port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
        yield Served(proxy, clock, client, port)
    origin.mode("ok")


def cache_status(response: httpx.Response) -> str:
    return response.headers["x-cache"].split()[0]


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """One response head from a raw stream: the status and the fields (lowercase names)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields


def get_request(target: str, version: str = "1.1") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: demo.test\r\nConnection: close\r\n\r\n".encode()


async def test_9110_15_2_early_hints_reach_the_client_before_the_answer_and_are_never_stored(
    served: Served, origin: OriginProcess
) -> None:
    target = "/bytes/64/rfc-hints?interim=103,100,103&cc=max-age=60"
    origin.mode("hold")  # the origin sends its 1xx heads, then holds the final one until told
    reader, writer = await served.raw(get_request(target))
    try:
        first = await read_head(reader)
        second = await read_head(reader)
        assert first == (103, {"link": "</hint-0.css>; rel=preload; as=style"})
        assert second == (103, {"link": "</hint-2.css>; rel=preload; as=style"}), "the 100 is not relayed"
        origin.mode("ok")
        status, fields = await read_head(reader)
        assert status == 200 and "link" not in fields and fields["x-cache"].startswith("MISS")
        assert len(await reader.read()) == 64
    finally:
        writer.close()
    hit = await served.get(target)
    assert cache_status(hit) == "HIT" and "link" not in hit.headers, "1xx fields are not part of the response"


async def test_8297_requests_joining_a_fill_get_its_early_hints_too(served: Served, origin: OriginProcess) -> None:
    """RFC 8297 §2 / RFC 9110 §15.2: a 103 may go to any HTTP/1.1 client, so a joiner gets what the leader got."""
    target = "/bytes/64/rfc-hints-joined?interim=103*2&cc=max-age=60"
    hints = [(103, {"link": f"</hint-{index}.css>; rel=preload; as=style"}) for index in range(2)]
    origin.mode("hold")
    leader, leader_writer = await served.raw(get_request(target))
    joiner, joiner_writer = await served.raw(get_request(target))
    old, old_writer = await served.raw(get_request(target, "1.0"))
    try:
        assert [await read_head(leader), await read_head(leader)] == hints
        assert [await read_head(joiner), await read_head(joiner)] == hints, "replayed to the joiner"
        await eventually(lambda: served.proxy.stats.collapsed == 2, what="both others joined the fill")
        origin.mode("ok")
        for reader in (leader, joiner, old):
            status, fields = await read_head(reader)
            assert status == 200 and "link" not in fields, "no 103 to the HTTP/1.0 joiner either"
            assert len(await reader.read()) == 64
    finally:
        for writer in (leader_writer, joiner_writer, old_writer):
            writer.close()
    assert origin.count(target) == 1


async def test_9110_15_2_no_1xx_to_an_http_1_0_client(served: Served) -> None:
    reader, writer = await served.raw(get_request("/bytes/64/rfc-hints-10?interim=103&cc=max-age=60", "1.0"))
    try:
        status, _ = await read_head(reader)
    finally:
        writer.close()
    assert status == 200


async def test_9110_15_2_early_hints_pass_through_uncached_requests_too(served: Served) -> None:
    request = b"POST /echo?interim=103 HTTP/1.1\r\nHost: demo.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    reader, writer = await served.raw(request)
    try:
        assert (await read_head(reader))[0] == 103
        status, fields = await read_head(reader)
    finally:
        writer.close()
    assert status == 200 and fields["x-cache"].startswith("PASS")


@pytest.mark.parametrize("interim", [f"103*{MAX_INTERIM_RESPONSES + 1}", "101"])
async def test_9110_15_2_a_1xx_flood_or_a_101_is_a_bad_gateway(served: Served, interim: str) -> None:
    response = await served.get(f"/bytes/64/rfc-flood-{interim[:3]}?interim={interim}")
    assert response.status_code == 502 and cache_status(response) == "ERROR"
    uncached = await served.get(f"/echo?interim={interim}", method="POST")
    assert uncached.status_code == 502, "what followed a 101 must never answer the next request"


async def test_9111_3_explicitly_fresh_errors_are_stored_and_served_with_their_status(
    served: Served, origin: OriginProcess
) -> None:
    fresh = "/bytes/32/rfc-503?status=503&cc=max-age=60"
    first, second = await served.get(fresh), await served.get(fresh)
    assert (first.status_code, cache_status(first)) == (503, "MISS")
    assert (second.status_code, cache_status(second)) == (503, "HIT")
    plain = "/bytes/32/rfc-500?status=500&cc="  # no freshness: the Domain's defaultTtl does not apply
    assert [cache_status(await served.get(plain)) for _ in range(2)] == ["MISS", "MISS"]
    assert origin.count(fresh) == 1 and origin.count(plain) == 2


async def test_9111_3_3_a_partial_answer_to_a_whole_request_is_relayed_not_stored(
    served: Served, origin: OriginProcess
) -> None:
    target = "/bytes/32/rfc-206?status=206&cc=max-age=60"  # no Content-Range: not the whole object
    assert [cache_status(await served.get(target)) for _ in range(2)] == ["MISS", "MISS"]
    assert origin.count(target) == 2


async def test_9111_4_4_a_post_invalidates_its_location_on_the_same_host_only(served: Served) -> None:
    same, other = "/bytes/16/rfc-inv-same", "/bytes/16/rfc-inv-other"
    for target, domain in ((same, "demo"), (other, "ignore")):
        assert cache_status(await served.get(target, domain)) == "MISS"
        assert cache_status(await served.get(target, domain)) == "HIT"
    post = f"/echo?location={same}&contentlocation=http://{HOSTS['ignore']}{other}"
    assert (await served.get(post, method="POST")).status_code == 200
    assert cache_status(await served.get(same)) == "REVALIDATED", "marked stale, validated before use"
    assert cache_status(await served.get(other, "ignore")) == "HIT", "another host's object is untouched"


async def test_9111_4_4_an_error_answer_to_a_post_invalidates_nothing(served: Served) -> None:
    target = "/bytes/16/rfc-inv-error"
    await served.get(target)
    assert (await served.get(f"/echo?status=500&location={target}", method="POST")).status_code == 500
    assert cache_status(await served.get(target)) == "HIT"


@pytest.mark.parametrize(
    ("validators", "other_freshened"),
    [("etag=url", True), ("", False), ("etag=0", False)],  # one strong ETag; one ETag each; Last-Modified only
)
async def test_9111_4_3_4_a_304_with_a_strong_etag_freshens_every_variant_with_it(
    served: Served, origin: OriginProcess, validators: str, other_freshened: bool
) -> None:
    target = f"/bytes/16/rfc-304-variants-{validators or 'each'}?vary=Accept-Language&cc=max-age=10&{validators}"
    assert cache_status(await served.get(target, accept_language="en")) == "MISS"
    assert cache_status(await served.get(target, accept_language="fr")) == "MISS"
    served.clock.advance(60)  # both stale
    assert cache_status(await served.get(target, accept_language="en")) == "REVALIDATED"
    other = await served.get(target, accept_language="fr")
    assert cache_status(other) == ("HIT" if other_freshened else "REVALIDATED")
    assert origin.count(target) == (3 if other_freshened else 4), "the freshened variant asked nothing"
    disk = served.proxy.storage.disk
    assert disk is not None
    stored = disk.variants(keys.cache_key("http", "demo.test", target, "keep", ()))
    assert [decisions.is_fresh(meta, served.clock()) for meta in stored] == [True, True], "on disk too"


async def test_9111_4_1_normalised_vary_values_share_one_variant(served: Served, origin: OriginProcess) -> None:
    target = "/bytes/16/rfc-vary?vary=Accept-Language,Accept-Encoding"
    first = await served.get(target, accept_language="en-US, fr", accept_encoding="gzip, br")
    again = await served.get(target, accept_language="EN-us,fr", accept_encoding="br,GZIP")
    other = await served.get(target, accept_language="fr, en-US", accept_encoding="gzip, br")
    assert [cache_status(r) for r in (first, again, other)] == ["MISS", "HIT", "MISS"]
    assert origin.count(target) == 2


def test_9110_15_2_early_hints_through_a_cache_process(cache: CacheProcess, origin: OriginProcess) -> None:
    """The same rule through ``edgefleet cache`` itself (uvloop transports, the worker process)."""
    target = "/bytes/32/rfc-hints-process?interim=103*2&cc=max-age=60"
    with cache.connect() as conn:
        conn.send(http_request("GET", target))
        hints = [conn.read_response(), conn.read_response()]
        final = conn.read_response()
        conn.send(http_request("GET", target))
        hit = conn.read_response()
    assert [(hint.status, hint.header("link")) for hint in hints] == [
        (103, "</hint-0.css>; rel=preload; as=style"),
        (103, "</hint-1.css>; rel=preload; as=style"),
    ]
    assert final.status == 200 and final.header("link") is None and len(final.body) == 32
    assert hit.status == 200 and (hit.header("x-cache") or "").startswith("HIT") and hit.header("link") is None


# --- §3.4 combining partial responses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "combinable"),
    [
        ([("ETag", '"v1"'), ("Last-Modified", "Tue, 02 Jan 2024 00:00:00 GMT")], True),  # a strong ETag decides
        ([("ETag", '"v2"'), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")], False),
    ],
)
def test_9111_3_4_parts_with_the_same_strong_validator_combine(second: Headers, combinable: bool) -> None:
    first: Headers = [("ETag", '"v1"'), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")]
    assert ranges.same_representation(first, 1000, second, 1000) is combinable
    assert not ranges.same_representation(first, 1000, first, 999), "another length: another version"


def test_9111_3_4_parts_without_a_strong_etag_must_agree_on_last_modified() -> None:
    monday, tuesday = "Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"
    assert ranges.same_representation([("Last-Modified", monday)], 10, [("Last-Modified", monday)], 10)
    assert not ranges.same_representation([("Last-Modified", monday)], 10, [("Last-Modified", tuesday)], 10)
    weak = ("ETag", 'W/"v1"')
    assert not ranges.same_representation([weak, ("Last-Modified", monday)], 10, [weak, ("Last-Modified", tuesday)], 10)
    assert ranges.same_representation([], 10, [], 10), "nothing to tell them apart but the length (as nginx)"


async def test_9111_4_3_4_a_304_about_another_representation_is_not_used(served: Served, origin: OriginProcess) -> None:
    """The origin's 304 carries a Last-Modified other than the stored one: fetched again, unconditionally."""
    stored, other = "Mon,%2001%20Jan%202024%2000:00:00%20GMT", "Sun,%2031%20Dec%202023%2000:00:00%20GMT"
    path = "/bytes/64/rfc-304-other"
    same = "/bytes/64/rfc-304-same"
    for target in (path, same):  # ignore.test: one entry per path whatever the query
        assert cache_status(await served.get(f"{target}?etag=0&lm={stored}&cc=max-age=1", "ignore")) == "MISS"
    served.clock.advance(2)
    confirmed = await served.get(f"{same}?etag=0&lm={stored}&cc=max-age=60", "ignore")
    assert cache_status(confirmed) == "REVALIDATED"
    conditional_before = origin.stats()["conditional"]
    refetched = await served.get(f"{path}?etag=0&lm={other}&cc=max-age=60", "ignore")
    assert cache_status(refetched) == "MISS" and refetched.headers["last-modified"] == other.replace("%20", " ")
    assert origin.stats()["conditional"] - conditional_before == 1, "one conditional GET, then a plain one"
    again = await served.get(path, "ignore")
    assert cache_status(again) == "HIT" and again.headers["last-modified"] == other.replace("%20", " ")
