"""Property tests of the edge rules engine: the matcher and the rate limiter (hypothesis)."""

from __future__ import annotations

import fnmatch
import functools
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.cache.policy.rules import CompileEnv, Program
from edgefleet.cache.policy.rules.ratelimit import TokenBuckets
from tests import rulehelpers
from tests.rulehelpers import program, request

ALPHABET = "ab/.-"
texts = st.text(ALPHABET, max_size=8)
paths = texts.map(lambda text: "/" + text)
TESTS = ("exact", "prefix", "suffix", "glob", "regex", "oneOf")


def text_match(kind: str, value: str) -> dict[str, Any]:
    if kind == "regex":
        return {"regex": re.escape(value)}
    if kind == "oneOf":
        return {"oneOf": [value, value + "a"]}
    return {kind: value}


def holds(match: dict[str, Any], path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None) -> bool:
    compiled = program({"match": match, "actions": [{"deny": {"status": 418}}]})
    return compiled.on_request(request(path, method=method, headers=headers), 0.0).respond is not None


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(TESTS), value=texts, path=paths)
def test_negation_is_the_complement(kind: str, value: str, path: str) -> None:
    test = text_match(kind, value)
    assert holds({"path": test}, path) != holds({"path": {**test, "negate": True}}, path)


@settings(max_examples=80, deadline=None)
@given(prefix=texts, path=paths)
def test_prefix_glob_and_regex_agree_on_equivalent_patterns(prefix: str, path: str) -> None:
    prefix = "/" + prefix
    expected = path.startswith(prefix)
    assert holds({"path": {"prefix": prefix}}, path) == expected
    assert holds({"path": {"glob": prefix + "**"}}, path) == expected
    assert holds({"path": {"regex": "^" + re.escape(prefix)}}, path) == expected


@settings(max_examples=80, deadline=None)
@given(pattern=st.text("ab/*?", max_size=6), path=paths)
def test_globs_agree_with_fnmatch_where_star_cannot_cross_a_slash(pattern: str, path: str) -> None:
    pattern = "/" + re.sub(r"\*+", "*", pattern)
    # fnmatch's * crosses '/'; ours does not: compare on each segment-count-preserving case.
    ours = holds({"path": {"glob": pattern}}, path)
    if pattern.count("/") == path.count("/"):
        assert ours == all(
            fnmatch.fnmatchcase(part, glob) for part, glob in zip(path.split("/"), pattern.split("/"), strict=True)
        )
    else:
        assert not ours or "?" in pattern  # '?' may match a '/'


RULE_SHAPES = st.fixed_dictionaries(
    {
        "prefix": st.sampled_from(["/", "/a", "/ab", "/b", "/abab", "/ab/a", "/abab/"]),
        "method": st.sampled_from([None, "GET", "POST"]),
        "header": st.sampled_from([None, "1", "2"]),
        "stop": st.booleans(),
        "negate": st.booleans(),
    }
)


def naive(shapes: list[dict[str, Any]], path: str, method: str, header: str | None) -> list[int]:
    """Which rules match, evaluated the obvious way (no ordering by cost, no compilation)."""
    out: list[int] = []
    for index, shape in enumerate(shapes):
        ok = path.startswith(shape["prefix"]) != shape["negate"]
        ok = ok and (shape["method"] is None or shape["method"] == method)
        ok = ok and (shape["header"] is None or shape["header"] == header)
        if ok:
            out.append(index)
            if shape["stop"]:
                break
    return out


def as_rule(index: int, shape: dict[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = {"path": {"prefix": shape["prefix"], "negate": shape["negate"]}}
    if shape["method"]:
        match["method"] = {"oneOf": [shape["method"]]}
    if shape["header"]:
        match["headers"] = [{"name": "X-H", "exact": shape["header"]}]
    return {"match": match, "actions": [{"responseHeaders": {"add": {"X-Rule": str(index)}}}], "stop": shape["stop"]}


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(RULE_SHAPES, min_size=1, max_size=6),
    path=paths,
    method=st.sampled_from(["GET", "POST"]),
    header=st.sampled_from([None, "1", "2"]),
)
def test_compiled_evaluation_equals_naive_evaluation(
    shapes: list[dict[str, Any]], path: str, method: str, header: str | None
) -> None:
    compiled = program(*[as_rule(index, shape) for index, shape in enumerate(shapes)])
    headers = [("X-H", header)] if header is not None else []
    outcome = compiled.on_request(request(path, method=method, headers=headers), 0.0)
    assert [int(op.value) for op in outcome.response_headers] == naive(shapes, path, method, header)


PATH_TESTS = st.sampled_from(
    [
        {"prefix": "/ab"},
        {"prefix": "/abab/"},
        {"exact": "/ab/a"},
        {"oneOf": ["/a", "/abab/b"]},
        {"glob": "/ab*/**"},
        {"regex": "^/abab/(.*)$"},
        {"regex": "^/a(b+)"},
        {"suffix": "b"},
        {"prefix": "/b", "negate": True},
        {"prefix": "/AB", "caseInsensitive": True},
    ]
)
ACTIONS = st.sampled_from(
    [
        {"responseHeaders": {"add": {"X-Rule": "${path}"}}},
        {"rewrite": {"path": "/abab/${path}"}},
        {"rewrite": {"path": "/b"}},
        {"cache": {"key": {"query": ["q"]}}},
        {"deny": {"status": 418}},
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    tests=st.lists(st.tuples(PATH_TESTS, ACTIONS, st.booleans()), min_size=1, max_size=8),
    path=paths,
)
def test_the_path_index_gives_what_walking_every_rule_gives(
    tests: list[tuple[dict[str, Any], dict[str, Any], bool]], path: str
) -> None:
    """on_request (indexed by literal path tests) equals the explaining walk over every rule, rewrites included."""
    compiled = program(*[{"match": {"path": test}, "actions": [action], "stop": stop} for test, action, stop in tests])
    fast = compiled.on_request(request(path, "q=1"), 0.0)
    walked = compiled.on_request(request(path, "q=1"), 0.0, explain=True)
    walked.trace = []
    walked.static = fast.static  # the walk reads every rule's conditions, so it can be less static
    assert fast == walked


arrivals = rulehelpers.arrivals(["a", "b", "c"])


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50, allow_nan=False),
    burst=st.integers(min_value=1, max_value=20),
    gaps=arrivals,
)
def test_a_key_never_gets_more_than_rate_times_time_plus_burst(
    rate: float, burst: int, gaps: list[tuple[float, str]]
) -> None:
    buckets = TokenBuckets(rate, burst, size=16)
    now = 1000.0
    allowed: dict[str, list[float]] = {}
    for gap, key in gaps:
        now += gap / 10
        if buckets.take(key, now) is None:
            allowed.setdefault(key, []).append(now)
    rulehelpers.assert_within_rate(allowed, rate, burst)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=1, max_value=64), keys=st.lists(st.integers(0, 10_000), min_size=1, max_size=2000))
def test_memory_stays_bounded_under_a_flood_of_distinct_keys(size: int, keys: list[int]) -> None:
    buckets = TokenBuckets(1.0, 1, size=size)
    for step, key in enumerate(keys):
        buckets.take(f"198.51.{key // 256}.{key % 256}", 1000.0 + step / 1000)
        assert len(buckets) <= size


def test_retry_after_says_when_a_token_is_back() -> None:
    buckets = TokenBuckets(0.25, 1, size=4)
    assert buckets.take("k", 0.0) is None
    assert buckets.take("k", 0.0) == 4
    assert buckets.take("k", 3.0) == 1
    assert buckets.take("k", 4.0) is None
    assert buckets.take("k", 2.0) == 4  # a clock that went back refills nothing


EVERYTHING: list[dict[str, Any]] = [
    {
        "match": {"path": {"regex": "^/(?P<a>[^/]*)/(.*)$"}, "method": {"oneOf": ["GET"]}},
        "actions": [
            {"rewrite": {"path": "/x/${a}/${2}", "query": "${query}&h=${header.X-A}"}},
            {"requestHeaders": {"set": {"X-C": "${cookie.c}${query.q}${clientIp}${country}"}}},
        ],
    },
    {
        "match": {
            "headers": [{"name": "X-A", "regex": "a+b"}],
            "cookies": [{"name": "c", "present": True}],
            "query": [{"name": "q", "glob": "*"}],
            "clientIp": {"cidrs": ["10.0.0.0/8", "::/0"]},
        },
        "actions": [{"responseHeaders": {"add": {"X-Echo": "${header.X-A} ${uri}"}}}],
    },
    {
        "match": {"bucket": {"percent": 50, "by": "header", "name": "X-A"}, "country": {"oneOf": ["FR"]}},
        "actions": [{"cache": {"key": {"headers": ["X-A"], "cookies": ["c"], "query": ["q"]}}}],
    },
    {
        "actions": [
            {"split": {"name": "e", "by": "header", "header": "X-A", "variants": [{"name": "a"}, {"name": "b"}]}},
            {"cors": {"allowOrigins": ["*"]}},
            {"rateLimit": {"requestsPerSecond": 1, "burst": 1, "key": "header", "header": "X-A"}},
        ]
    },
    {
        "match": {"path": {"prefix": "/t"}},
        "actions": [
            {"tokenAuth": {"keys": [{"secret": "s", "key": "k"}]}},
            {"redirect": {"location": "https://${host}${uri}#${header.X-A}"}},
        ],
    },
]
junk = st.text(max_size=30)


@functools.cache
def everything() -> Program:
    """One program for all examples (compiling per example would cost most of the test's time)."""
    return program(*EVERYTHING, env=CompileEnv(secrets={"s": {"k": "key"}}, geo=lambda ip: ("FR", "eu")))


@settings(max_examples=150, deadline=None)
@given(
    path=junk.map(lambda text: "/" + text),
    query=junk,
    client=st.one_of(junk, st.ip_addresses().map(str)),
    headers=st.lists(st.tuples(st.sampled_from(["X-A", "Cookie", "Origin", "x-a"]), junk), max_size=6),
    method=st.sampled_from(["GET", "OPTIONS", "POST", "get"]),
)
def test_hostile_requests_never_raise(
    path: str, query: str, client: str, headers: list[tuple[str, str]], method: str
) -> None:
    compiled = everything()
    req = request(path, query, method=method, headers=headers, client=client)
    outcome = compiled.on_request(req, 1000.0)
    compiled.on_request(req, 1000.0, explain=True)
    compiled.on_client_response(req, outcome, 200, headers)
    for op in [*outcome.request_headers, *outcome.response_headers]:
        assert "\r" not in op.value and "\n" not in op.value
    if outcome.path != path:  # rewritten: whatever the request held, the new path is a clean one
        assert outcome.path.startswith("/") and " " not in outcome.path and "#" not in outcome.path


STATIC_OR_NOT = st.sampled_from(
    [
        *EVERYTHING,
        {
            "match": {"path": {"prefix": "/s"}},
            "actions": [{"cache": {"ttl": 5}}, {"redirect": {"location": "/n${uri}"}}],
        },
        {"match": {"query": [{"name": "q", "present": True}]}, "actions": [{"rewrite": {"query": "q=${query.q}"}}]},
        {"phase": "clientResponse", "actions": [{"responseHeaders": {"set": {"X-Frame-Options": "DENY"}}}]},
        {"match": {"bucket": {"percent": 50, "by": "random"}}, "actions": [{"deny": {}}]},
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    chosen=st.lists(STATIC_OR_NOT, min_size=1, max_size=4),
    path=st.sampled_from(["/", "/s/x", "/t/a", "/a/b", "/x"]),
    query=st.sampled_from(["", "q=1", "expires=5&token=ab"]),
    first=st.tuples(junk, st.ip_addresses().map(str)),
    second=st.tuples(junk, st.ip_addresses().map(str)),
)
def test_a_static_outcome_is_the_same_whatever_else_the_request_holds(
    chosen: list[dict[str, Any]], path: str, query: str, first: tuple[str, str], second: tuple[str, str]
) -> None:
    """``static`` promises the outcome depends on method, scheme, host, path and query only: check it."""
    from edgefleet.cache.policy.rules import CompileEnv

    draws = iter([0.1, 0.9] * 50)
    compiled = program(
        *chosen,
        env=CompileEnv(
            secrets={"s": {"k": "key"}}, random=lambda: next(draws), geo=lambda ip: ("FR", "eu") if ip < "5" else None
        ),
    )
    one = compiled.on_request(
        request(path, query, headers=[("X-A", first[0]), ("Cookie", first[0])], client=first[1]), 1000.0
    )
    other = compiled.on_request(
        request(path, query, headers=[("X-A", second[0]), ("Cookie", second[0])], client=second[1]), 5000.0
    )
    if one.static:
        assert one == other
