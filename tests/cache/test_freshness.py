"""Freshness policy: what a shared cache stores, for how long, and how it may use it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edgefleet.cache.policy.freshness import (
    Decision,
    Policy,
    Timing,
    Use,
    current_age,
    evaluate,
    initial_age,
    may_serve_stale_on_error,
    only_if_cached,
    parse_cache_control,
    timing,
    use,
)
from edgefleet.cache.wire.headers import HOP_BY_HOP, Headers, format_http_date

NOW = 1_700_000_000.0
DATE = format_http_date(NOW)
POLICY = Policy(ttl_override=None, bypass=False, default_ttl=0, heuristic=False, serve_stale_on_error=False)


def respond(*fields: tuple[str, str], date: bool = True) -> Headers:
    return ([("Date", DATE)] if date else []) + list(fields)


def decide(
    *fields: tuple[str, str],
    status: int = 200,
    method: str = "GET",
    request: Headers | None = None,
    policy: Policy = POLICY,
) -> Decision:
    return evaluate(method, status, request or [], respond(*fields), policy)


def with_policy(**changes: Any) -> Policy:
    return dataclasses.replace(POLICY, **changes)


# parse_cache_control


@pytest.mark.parametrize(
    ("value", "directives"),
    [
        (None, {}),
        ("", {}),
        ("Max-Age=60, PUBLIC", {"max-age": "60", "public": None}),
        ('private="Set-Cookie, X-A", no-cache', {"private": "Set-Cookie, X-A", "no-cache": None}),
        ('community="UCI\\"s"', {"community": 'UCI"s'}),
        ("max-age=5, max-age=10", {"max-age": "5"}),
        ("max-age=, max-age=10", {"max-age": "10"}),
        ('a="unterminated, b', {}),
        ('a="x"y", b', {}),
        ("bad name=1, ok", {"ok": None}),
        ("=1, x=a b, y=c", {"y": "c"}),
        ("s-maxage = 7", {"s-maxage": "7"}),
    ],
)
def test_parse_cache_control(value: str | None, directives: dict[str, str | None]) -> None:
    assert parse_cache_control(value) == directives


# storability


def test_fresh_200_with_max_age() -> None:
    decision = decide(("Cache-Control", "max-age=60"))
    assert decision.storable and decision.reason == ""
    assert decision.lifetime == 60
    assert not decision.must_revalidate and not decision.no_cache
    assert decision.strip_fields == HOP_BY_HOP


@pytest.mark.parametrize(
    ("fields", "request_fields", "reason"),
    [
        ([("Cache-Control", "no-store, max-age=60")], [], "no-store"),
        ([("Cache-Control", "private, max-age=60")], [], "private"),
        ([("Cache-Control", "max-age=60")], [("Authorization", "Bearer x")], "authorization"),
        ([("Cache-Control", "max-age=60"), ("Set-Cookie", "session=1")], [], "set-cookie"),
        ([("Cache-Control", "public, max-age=60")], [("Cookie", "session=1")], "cookie"),
        ([("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding, *")], [], "vary *"),
        ([("Cache-Control", "max-age=60"), ("Vary", "accept"), ("vary", "*")], [], "vary *"),
    ],
)
def test_not_storable(fields: list[tuple[str, str]], request_fields: Headers, reason: str) -> None:
    decision = decide(*fields, request=request_fields)
    assert not decision.storable
    assert decision.reason == reason


def test_a_request_with_a_cookie_is_stored_only_when_the_domain_says_so() -> None:
    allowed = with_policy(cookie_requests=True)
    assert decide(("Cache-Control", "max-age=60"), request=[("Cookie", "a=1")], policy=allowed).storable


def test_method_and_bypass_refusals() -> None:
    assert decide(("Cache-Control", "max-age=60"), method="POST").reason == "method POST"
    assert decide(("Cache-Control", "max-age=60"), method="HEAD").reason == "method HEAD"
    assert decide(("Cache-Control", "max-age=60"), policy=with_policy(bypass=True)).reason == "bypass rule"


@pytest.mark.parametrize("status", [100, 101, 103, 199, 304, 600, 999])
def test_statuses_never_stored(status: int) -> None:
    """RFC 9111 §3: only final statuses are stored; a 304 validates a stored response, it is not one."""
    decision = decide(("Cache-Control", "public, max-age=60"), status=status)
    assert not decision.storable
    assert decision.reason == f"status {status} not cacheable"


@pytest.mark.parametrize(
    "status",
    [200, 201, 203, 204, 206, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 451, 500, 501, 503, 599],
)
def test_statuses_stored_with_explicit_freshness(status: int) -> None:
    assert decide(("Cache-Control", "max-age=60"), status=status).storable


@pytest.mark.parametrize("status", [302, 303, 307])
def test_redirects_need_explicit_freshness(status: int) -> None:
    policy = with_policy(default_ttl=300, heuristic=True)
    decision = decide(("Last-Modified", format_http_date(NOW - 1000)), status=status, policy=policy)
    assert not decision.storable
    assert "explicit freshness" in decision.reason
    public = decide(
        ("Cache-Control", "public"), ("Last-Modified", format_http_date(NOW - 1000)), status=status, policy=policy
    )
    assert public.lifetime == 100
    assert decide(("Cache-Control", "public"), status=status, policy=policy).lifetime == 300
    assert decide(status=status, policy=with_policy(ttl_override=30)).lifetime == 30


@pytest.mark.parametrize("status", [200, 301, 404, 410, 501])
def test_default_ttl_applies_to_heuristically_cacheable(status: int) -> None:
    assert decide(status=status, policy=with_policy(default_ttl=300)).lifetime == 300


def test_no_lifetime_and_zero_default_ttl_is_not_stored() -> None:
    decision = decide(("Last-Modified", format_http_date(NOW - 1000)))
    assert not decision.storable
    assert decision.reason == "no freshness lifetime"


def test_authorization_allowed_by_public_s_maxage_or_must_revalidate() -> None:
    auth = [("authorization", "Basic eDp5")]
    assert decide(("Cache-Control", "public, max-age=60"), request=auth).storable
    assert decide(("Cache-Control", "s-maxage=60"), request=auth).storable
    assert decide(("Cache-Control", "must-revalidate, max-age=60"), request=auth).storable
    assert not decide(("Cache-Control", "max-age=60"), request=auth, policy=with_policy(ttl_override=60)).storable


def test_ttl_override_does_not_override_no_store_or_private() -> None:
    policy = with_policy(ttl_override=600)
    assert decide(("Cache-Control", "no-store"), policy=policy).reason == "no-store"
    assert decide(("Cache-Control", "private"), policy=policy).reason == "private"
    assert decide(("Set-Cookie", "a=1"), policy=policy).reason == "set-cookie"


def test_ttl_override_beats_origin_freshness_and_no_cache() -> None:
    decision = decide(("Cache-Control", "max-age=5, no-cache"), policy=with_policy(ttl_override=600))
    assert (decision.storable, decision.lifetime, decision.no_cache) == (True, 600, False)
    assert decide(("Cache-Control", "max-age=5"), policy=with_policy(ttl_override=0)).lifetime == 0


# lifetime precedence


def test_s_maxage_beats_max_age_and_implies_proxy_revalidate() -> None:
    decision = decide(("Cache-Control", "max-age=10, s-maxage=20, stale-while-revalidate=30"))
    assert decision.lifetime == 20
    assert decision.must_revalidate
    assert decision.stale_while_revalidate == 0


def test_max_age_beats_expires() -> None:
    decision = decide(("Cache-Control", "max-age=10"), ("Expires", format_http_date(NOW + 500)))
    assert decision.lifetime == 10


def test_expires_minus_date() -> None:
    assert decide(("Expires", format_http_date(NOW + 500))).lifetime == 500
    assert decide(("Expires", format_http_date(NOW - 500))).lifetime == 0


@pytest.mark.parametrize("expires", ["0", "-1", "never", ""])
def test_invalid_expires_means_already_expired(expires: str) -> None:
    decision = decide(("Expires", expires), policy=with_policy(default_ttl=300))
    assert decision.storable
    assert decision.lifetime == 0


def test_expires_without_date_is_stale() -> None:
    headers = [("Expires", format_http_date(NOW + 500))]
    assert evaluate("GET", 200, [], headers, POLICY).lifetime == 0


@pytest.mark.parametrize("value", ["max-age=abc", "max-age=-5", "max-age", 'max-age="1x"', "max-age=1.5"])
def test_invalid_max_age_means_stale(value: str) -> None:
    decision = decide(("Cache-Control", value), ("Expires", format_http_date(NOW + 500)))
    assert decision.storable
    assert decision.lifetime == 0


def test_quoted_max_age_and_huge_max_age() -> None:
    assert decide(("Cache-Control", 'max-age="60"')).lifetime == 60
    assert decide(("Cache-Control", "max-age=99999999999999999999999")).lifetime == 2**31


def test_targeted_field_beats_cache_control_and_expires() -> None:
    decision = decide(
        ("Cache-Control", "no-store"),
        ("Expires", format_http_date(NOW + 500)),
        ("CDN-Cache-Control", "max-age=120"),
    )
    assert (decision.storable, decision.lifetime) == (True, 120)
    assert decide(("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store")).reason == "no-store"
    assert decide(("CDN-Cache-Control", "s-maxage=30, max-age=120")).lifetime == 30


def test_surrogate_control_max_age_and_targeted_order() -> None:
    assert decide(("Surrogate-Control", "max-age=300+60"), ("Cache-Control", "max-age=5")).lifetime == 300
    both = decide(("Surrogate-Control", "max-age=300"), ("CDN-Cache-Control", "max-age=100"))
    assert both.lifetime == 100
    only_cdn = with_policy(targeted_headers=("cdn-cache-control",))
    assert decide(("Surrogate-Control", "max-age=300"), ("Cache-Control", "max-age=5"), policy=only_cdn).lifetime == 5


def test_unparsable_targeted_field_is_ignored() -> None:
    assert decide(("CDN-Cache-Control", ",,"), ("Cache-Control", "max-age=5")).lifetime == 5


def test_targeted_field_without_lifetime_falls_to_default() -> None:
    decision = decide(
        ("CDN-Cache-Control", "public"),
        ("Cache-Control", "max-age=5"),
        ("Expires", format_http_date(NOW + 500)),
        policy=with_policy(default_ttl=77),
    )
    assert decision.lifetime == 77


def test_heuristic_freshness() -> None:
    policy = with_policy(heuristic=True, default_ttl=300)
    assert decide(("Last-Modified", format_http_date(NOW - 1000)), policy=policy).lifetime == 100
    assert decide(("Last-Modified", format_http_date(NOW - 10**7)), policy=policy).lifetime == 86400
    assert decide(("Last-Modified", format_http_date(NOW + 1000)), policy=policy).lifetime == 300
    assert decide(("Last-Modified", "garbage"), policy=policy).lifetime == 300
    assert decide(("Last-Modified", format_http_date(NOW - 1000)), policy=with_policy(default_ttl=300)).lifetime == 300


def test_explicit_freshness_beats_heuristic() -> None:
    policy = with_policy(heuristic=True, default_ttl=300)
    decision = decide(("Cache-Control", "max-age=7"), ("Last-Modified", format_http_date(NOW - 1000)), policy=policy)
    assert decision.lifetime == 7


# no-cache, private, stripped fields


def test_unqualified_no_cache_is_stored_but_validated() -> None:
    decision = decide(("Cache-Control", "no-cache, max-age=60"))
    assert decision.storable and decision.no_cache


def test_qualified_no_cache_and_private_strip_fields() -> None:
    decision = decide(("Cache-Control", 'max-age=60, no-cache="X-User, X-Debug", private="X-Token"'))
    assert decision.storable
    assert not decision.no_cache
    assert {"x-user", "x-debug", "x-token"} <= decision.strip_fields
    assert "set-cookie" not in decision.strip_fields


def test_connection_listed_fields_are_stripped() -> None:
    decision = decide(("Cache-Control", "max-age=60"), ("Connection", "X-Hop"))
    assert decision.strip_fields == HOP_BY_HOP | {"x-hop"}


# stale windows


def test_stale_directives() -> None:
    decision = decide(("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=600"))
    assert (decision.stale_while_revalidate, decision.stale_if_error) == (30, 600)


def test_stale_directives_from_targeted_field_first() -> None:
    decision = decide(
        ("CDN-Cache-Control", "max-age=60, stale-if-error=5"),
        ("Cache-Control", "stale-while-revalidate=30, stale-if-error=600"),
    )
    assert (decision.stale_while_revalidate, decision.stale_if_error) == (30, 5)


def test_stale_if_error_default() -> None:
    serving = with_policy(serve_stale_on_error=True, stale_if_error_default=1000)
    assert decide(("Cache-Control", "max-age=60"), policy=serving).stale_if_error == 1000
    assert decide(("Cache-Control", "max-age=60, stale-if-error=0"), policy=serving).stale_if_error == 0
    assert decide(("Cache-Control", "max-age=60")).stale_if_error == 0
    assert decide(("Cache-Control", "max-age=60, stale-if-error=9")).stale_if_error == 9


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "s-maxage=60"])
def test_must_revalidate_forbids_stale(directive: str) -> None:
    serving = with_policy(serve_stale_on_error=True)
    decision = decide(
        ("Cache-Control", f"max-age=60, {directive}, stale-while-revalidate=9, stale-if-error=9"), policy=serving
    )
    assert decision.must_revalidate
    assert (decision.stale_while_revalidate, decision.stale_if_error) == (0, 0)


# ages and timing


def test_initial_age_from_date_age_and_delay() -> None:
    headers = [("Date", format_http_date(NOW - 100))]
    assert initial_age(headers, NOW - 2, NOW) == 100
    assert initial_age([*headers, ("Age", "500")], NOW - 2, NOW) == 502
    assert initial_age([("Age", "10")], NOW - 2, NOW) == 12
    assert initial_age([("Date", format_http_date(NOW + 100))], NOW, NOW) == 0


@pytest.mark.parametrize("age", ["bogus", "-5", "1.5", "", ", 20"])
def test_bogus_age_counts_as_zero(age: str) -> None:
    assert initial_age([("Age", age)], NOW - 1, NOW) == 1


def test_huge_age_is_clamped() -> None:
    assert initial_age([("Age", "9" * 5000)], NOW, NOW) == 2**31
    assert initial_age([("Age", "4294967296")], NOW, NOW) == 2**31


def stored(lifetime: float, swr: float = 0, sie: float = 0) -> Decision:
    return Decision(True, "", lifetime, swr, sie, False, False, frozenset())


def test_timing_is_absolute() -> None:
    assert timing(stored(60, 30, 600), 10, NOW) == Timing(NOW + 50, NOW + 80, NOW + 650)


def test_current_age() -> None:
    assert current_age(10, NOW, NOW + 5.9) == 15
    assert current_age(0, NOW, NOW - 5) == 0


def test_use() -> None:
    deadlines = timing(stored(60, 30, 600), 0, NOW)
    assert use(deadlines, NOW + 59.9, no_cache=False, invalidated=False) is Use.FRESH
    assert use(deadlines, NOW + 60, no_cache=False, invalidated=False) is Use.STALE_REVALIDATE_ASYNC
    assert use(deadlines, NOW + 90, no_cache=False, invalidated=False) is Use.MUST_VALIDATE
    assert use(deadlines, NOW, no_cache=True, invalidated=False) is Use.MUST_VALIDATE
    assert use(deadlines, NOW, no_cache=False, invalidated=True) is Use.MUST_VALIDATE


def test_zero_lifetime_must_validate_at_once() -> None:
    assert use(timing(stored(0), 0, NOW), NOW, no_cache=False, invalidated=False) is Use.MUST_VALIDATE


def test_may_serve_stale_on_error() -> None:
    deadlines = timing(stored(60, 0, 600), 0, NOW)
    assert may_serve_stale_on_error(deadlines, NOW + 659)
    assert not may_serve_stale_on_error(deadlines, NOW + 660)
    assert not may_serve_stale_on_error(timing(stored(60), 0, NOW), NOW + 61)


def test_end_to_end_aged_response() -> None:
    headers = respond(("Cache-Control", "max-age=100"), ("Age", "90"))
    decision = evaluate("GET", 200, [], headers, POLICY)
    deadlines = timing(decision, initial_age(headers, NOW, NOW), NOW)
    assert use(deadlines, NOW + 9, no_cache=decision.no_cache, invalidated=False) is Use.FRESH
    assert use(deadlines, NOW + 10, no_cache=decision.no_cache, invalidated=False) is Use.MUST_VALIDATE


# request directives


def test_only_if_cached() -> None:
    assert only_if_cached([("Cache-Control", "max-age=0, Only-If-Cached")])
    assert not only_if_cached([("Cache-Control", "no-cache")])
    assert not only_if_cached([])
