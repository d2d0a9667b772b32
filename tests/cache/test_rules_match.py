"""Each match condition of the edge rules, positive and negated, on the pure engine."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.cache.policy.rules import CompileEnv, RequestInfo
from tests.rulehelpers import program, request

HIT = {"status": 418, "body": "hit"}


def matches(match: dict[str, Any], req: RequestInfo, env: CompileEnv | None = None) -> bool:
    outcome = program({"match": match, "actions": [{"deny": HIT}]}, env=env).on_request(req, 0.0)
    return outcome.respond is not None


def both(match: dict[str, Any], req: RequestInfo, env: CompileEnv | None = None) -> tuple[bool, bool]:
    """(condition holds, its negation holds)."""
    negated = {
        key: [{**item, "negate": True} for item in value] if isinstance(value, list) else {**value, "negate": True}
        for key, value in match.items()
    }
    return matches(match, req, env), matches(negated, req, env)


@pytest.mark.parametrize(
    ("test", "path", "expected"),
    [
        ({"exact": "/a/b"}, "/a/b", True),
        ({"exact": "/a/b"}, "/a/b/", False),
        ({"prefix": "/static/"}, "/static/x.css", True),
        ({"prefix": "/static/"}, "/stat", False),
        ({"suffix": ".jpg"}, "/x/y.jpg", True),
        ({"glob": "/img/*.png"}, "/img/a.png", True),
        ({"glob": "/img/*.png"}, "/img/sub/a.png", False),
        ({"glob": "/img/**.png"}, "/img/sub/a.png", True),
        ({"glob": "/v?/x"}, "/v2/x", True),
        ({"regex": r"^/item/\d+$"}, "/item/42", True),
        ({"regex": r"^/item/\d+$"}, "/item/x", False),
        ({"oneOf": ["/a", "/b"]}, "/b", True),
        ({"prefix": "/ADMIN", "caseInsensitive": True}, "/admin/x", True),
    ],
)
def test_path_tests_and_their_negation(test: dict[str, Any], path: str, expected: bool) -> None:
    assert both({"path": test}, request(path)) == (expected, not expected)


def test_method_host_and_scheme_compare_without_case() -> None:
    assert matches({"method": {"oneOf": ["get", "HEAD"]}}, request(method="GET"))
    assert not matches({"method": {"oneOf": ["POST"]}}, request(method="GET"))
    assert matches({"host": {"suffix": ".EXAMPLE.com"}}, request(host="www.example.com"))
    assert both({"scheme": {"exact": "https"}}, request(scheme="http")) == (False, True)


def test_headers_present_equal_and_regex() -> None:
    req = request(headers=[("User-Agent", "curl/8.0"), ("X-Debug", "1")])
    assert both({"headers": [{"name": "x-debug", "present": True}]}, req) == (True, False)
    assert both({"headers": [{"name": "X-Missing", "present": True}]}, req) == (False, True)
    assert matches({"headers": [{"name": "X-Missing", "present": False}]}, req)
    assert matches({"headers": [{"name": "user-agent", "regex": "^curl/"}]}, req)
    assert both({"headers": [{"name": "X-Debug", "exact": "2"}]}, req) == (False, True)
    # A test on an absent header fails, so its negation holds.
    assert both({"headers": [{"name": "X-None", "exact": "1"}]}, req) == (False, True)


def test_every_condition_of_a_rule_must_hold() -> None:
    match = {"path": {"prefix": "/api/"}, "method": {"oneOf": ["POST"]}}
    assert matches(match, request("/api/x", method="POST"))
    assert not matches(match, request("/api/x", method="GET"))
    assert not matches(match, request("/web", method="POST"))
    assert matches({}, request("/anything"))


def test_query_parameters_are_decoded_and_first_value_wins() -> None:
    req = request("/s", "q=red+shoes&lang=fr&lang=de&flag")
    assert matches({"query": [{"name": "q", "exact": "red shoes"}]}, req)
    assert matches({"query": [{"name": "lang", "exact": "fr"}]}, req)
    assert matches({"query": [{"name": "flag", "present": True}]}, req)
    assert both({"query": [{"name": "page", "present": True}]}, req) == (False, True)


def test_cookies() -> None:
    req = request(headers=[("Cookie", 'session=abc; theme="dark"; a=1')])
    assert matches({"cookies": [{"name": "theme", "exact": "dark"}]}, req)
    assert both({"cookies": [{"name": "session", "present": True}]}, req) == (True, False)
    assert not matches({"cookies": [{"name": "b", "present": True}]}, req)


@pytest.mark.parametrize(
    ("client", "expected"),
    [("10.1.2.3", True), ("192.0.2.1", False), ("2001:db8::5", True), ("::ffff:10.0.0.1", True), ("garbage", False)],
)
def test_client_address_lists(client: str, expected: bool) -> None:
    match = {"clientIp": {"cidrs": ["10.0.0.0/8", "2001:db8::/32"]}}
    assert both(match, request(client=client)) == (expected, not expected)


def test_country_and_region_from_the_geo_input() -> None:
    env = CompileEnv(geo=lambda ip: ("FR", "eu-west") if ip.startswith("192.0.2.") else None)
    assert both({"country": {"oneOf": ["fr", "DE"]}}, request(client="192.0.2.1"), env) == (True, False)
    assert both({"region": {"prefix": "eu-"}}, request(client="192.0.2.1"), env) == (True, False)
    # An address the table does not place matches no country; the negation holds.
    assert both({"country": {"oneOf": ["FR"]}}, request(client="198.51.100.1"), env) == (False, True)
    # Without a geo table no country is known.
    assert not matches({"country": {"oneOf": ["FR"]}}, request(client="192.0.2.1"))


def test_hash_buckets_are_stable_and_split_clients_by_share() -> None:
    match = {"bucket": {"percent": 30, "by": "client", "seed": "exp"}}
    compiled = program({"match": match, "actions": [{"deny": HIT}]})
    clients = [f"10.0.{i // 256}.{i % 256}" for i in range(2000)]
    inside = [compiled.on_request(request(client=c), 0.0).respond is not None for c in clients]
    assert 0.25 < sum(inside) / len(inside) < 0.35
    again = [compiled.on_request(request(client=c), 0.0).respond is not None for c in clients]
    assert inside == again


def test_cookie_and_header_buckets_need_the_value() -> None:
    match = {"bucket": {"percent": 100, "by": "cookie", "name": "uid"}}
    assert matches(match, request(headers=[("Cookie", "uid=7")]))
    assert not matches(match, request())
    assert matches({"bucket": {"percent": 100, "by": "header", "name": "X-User"}}, request(headers=[("x-user", "u")]))
    assert not matches({"bucket": {"percent": 0, "by": "header", "name": "X-User"}}, request(headers=[("x-user", "u")]))


def test_random_buckets_use_the_injected_draw() -> None:
    match = {"bucket": {"percent": 10, "by": "random"}}
    assert matches(match, request(), CompileEnv(random=lambda: 0.05))
    assert not matches(match, request(), CompileEnv(random=lambda: 0.5))


def test_response_conditions_in_response_phases() -> None:
    compiled = program(
        {"phase": "originResponse", "match": {"status": {"oneOf": [404]}}, "actions": [{"cache": {"ttl": 5}}]},
        {
            "phase": "clientResponse",
            "match": {"responseHeaders": [{"name": "content-type", "prefix": "text/html"}]},
            "actions": [{"responseHeaders": {"set": {"X-Frame-Options": "DENY"}}}],
        },
    )
    req = request()
    outcome = compiled.on_request(req, 0.0)
    assert compiled.on_origin_response(req, outcome, 404, []).ttl == 5.0
    assert compiled.on_origin_response(req, outcome, 200, []).ttl is None
    sent = compiled.on_client_response(req, outcome, 200, [("Content-Type", "text/html; charset=utf-8")])
    assert [(op.op, op.name, op.value) for op in sent.headers] == [("set", "X-Frame-Options", "DENY")]
    assert compiled.on_client_response(req, outcome, 200, [("Content-Type", "image/png")]).headers == []


def test_cheap_conditions_run_before_regexes() -> None:
    calls: list[str] = []

    class Spy(str):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            calls.append(name)
            return super().__getattribute__(name)

    compiled = program({"match": {"path": {"regex": "^/x"}, "method": {"oneOf": ["POST"]}}, "actions": [{"deny": HIT}]})
    outcome = compiled.on_request(request(Spy("/x/1"), method="GET"), 0.0, explain=True)
    assert outcome.respond is None
    assert outcome.trace[0].reason.startswith("method in ['post']")
    assert calls == []  # the path (and its regex) was never looked at
