"""The edge rules' decision carried between tiers (``X-Edgefleet-Rules``) and the cache key suffix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgefleet.cache.config import DomainConfig, parse_config
from edgefleet.cache.front.edgerules import HEAD_MEMO_SIZE, GeoCache, HitHeads, attach, evaluate
from edgefleet.cache.policy.domains import DomainTable, ServedDomain
from edgefleet.cache.policy.rules import HeaderOp
from edgefleet.cache.upstream.ruled import RULES_HEADER, Applied, carried, key_suffix, tier_fields
from edgefleet.cache.wire.http1 import Request

SPLIT = {
    "name": "ab",
    "match": {"path": {"prefix": "/ab/"}},
    "actions": [
        {
            "split": {
                "name": "exp",
                "by": "header",
                "header": "X-Client",
                "variants": [
                    {"name": "a", "origin": "http://a.origin.test:8080", "pathPrefix": "/va"},
                    {"name": "b", "pathPrefix": "/vb"},
                ],
            }
        },
        {"cache": {"ttl": 60}},
    ],
}


def domain_with_rules(*rules: dict[str, Any]) -> tuple[DomainTable, ServedDomain]:
    config = parse_config(
        {
            "domains": [
                {"name": "d", "hostnames": ["d.test"], "origins": [{"url": "http://o.test"}], "rules": list(rules)}
            ]
        }
    )
    table = DomainTable(config.domains)
    attach(table, config, None, GeoCache())
    return table, table.by_name["d"]


class Client:
    peer_ip = "192.0.2.1"
    tls_version: str | None = None
    transport = None

    def write(self, data: bytes) -> None: ...
    def writelines(self, data: list[bytes]) -> None: ...
    async def drain(self) -> None: ...


def request(target: str, *headers: tuple[str, str]) -> Request:
    return Request("GET", target, [("Host", "d.test"), *headers], "d.test", True, "1.1")


def test_a_domain_without_rules_has_no_program() -> None:
    table = DomainTable(
        [DomainConfig.model_validate({"name": "d", "hostnames": ["d.test"], "origins": [{"url": "http://o.test"}]})]
    )
    assert table.by_name["d"].program is None


def test_the_decision_travels_to_the_next_tier_and_gives_it_the_same_key() -> None:
    _, domain = domain_with_rules(SPLIT)
    edge = request("/ab/page", ("X-Client", "c1"))
    applied = evaluate(domain, edge, Client(), 1000.0)
    assert applied.key_extra and edge.target in ("/va/ab/page", "/vb/ab/page")
    fields = tier_fields(edge)
    assert [name for name, _ in fields] == [RULES_HEADER]
    peer = request(edge.target, *fields)
    got = carried(domain, peer)
    assert (got.key_extra, got.origin, got.ttl, got.bypass) == (applied.key_extra, applied.origin, 60.0, False)
    assert got.program is None, "no response phase for the client runs on the peer"


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[1, 2]",
        json.dumps({"k": 3}),
        json.dumps({"b": "yes"}),
        json.dumps({"t": -1}),
        json.dumps({"t": True}),
        json.dumps({"o": "http://evil.test"}),  # not one of the Domain's variants: never fetched from
        json.dumps({"k": "x" * 9000}),
    ],
)
def test_a_bad_carried_decision_is_ignored(value: str) -> None:
    _, domain = domain_with_rules(SPLIT)
    got = carried(domain, request("/ab/page", (RULES_HEADER, value)))
    assert got == Applied(None, None, None)


def test_a_carried_variant_origin_is_accepted() -> None:
    _, domain = domain_with_rules(SPLIT)
    got = carried(domain, request("/va/ab/page", (RULES_HEADER, json.dumps({"o": "http://a.origin.test:8080/"}))))
    assert got.origin == "http://a.origin.test:8080/"


def test_key_suffix_cannot_name_a_slice() -> None:
    assert key_suffix("") == ""
    assert key_suffix("v.exp=a") == "#rules=v.exp=a"
    assert "#slice=" not in key_suffix("h.x=#slice=3") and key_suffix("%23") == "#rules=%2523"


def test_a_rewrite_to_a_bad_target_is_a_400_from_the_rule() -> None:
    rewrite = {"match": {"path": {"regex": "^/x/(.*)$"}}, "actions": [{"rewrite": {"path": "/${1}"}}]}
    _, domain = domain_with_rules(rewrite)
    applied = evaluate(domain, request("/x/a%2F..%2F..%2Fetc"), Client(), 0.0)
    assert applied.outcome is not None
    answer = applied.outcome.respond
    assert answer is not None and answer.status == 400 and answer.reason == "rewrite"


def test_hit_heads_apply_the_ops_and_stay_bounded() -> None:
    heads = HitHeads("n1")
    stored = [("Content-Type", "text/plain"), ("X-Frame-Options", "SAMEORIGIN")]
    ops = [HeaderOp("set", "X-Frame-Options", "DENY"), HeaderOp("add", "X-Extra", "1")]
    head = heads.head(b"plain-1", 200, stored, 5, ops)
    assert b"X-Frame-Options: DENY\r\n" in head and b"SAMEORIGIN" not in head and b"X-Extra: 1\r\n" in head
    assert b"Content-Length: 5\r\n" in head and b"X-Cache: HIT from n1\r\n" in head
    assert heads.head(b"plain-1", 200, stored, 5, ops) is head, "the same op objects: the same head"
    equal = [HeaderOp("set", "X-Frame-Options", "DENY"), HeaderOp("add", "X-Extra", "1")]
    assert heads.head(b"plain-1", 200, stored, 5, equal) == head, "equal ops by value: the same head"
    other = heads.head(b"plain-1", 200, stored, 5, [HeaderOp("remove", "X-Frame-Options")])
    assert b"X-Frame-Options" not in other
    for n in range(HEAD_MEMO_SIZE + 10):
        heads.head(b"plain-%d" % n, 200, stored, 5, ops)
    assert len(heads._memo) <= HEAD_MEMO_SIZE and len(heads._last) <= HEAD_MEMO_SIZE


STATIC: list[dict[str, Any]] = [
    {"name": "move", "match": {"path": {"prefix": "/old/"}}, "actions": [{"rewrite": {"path": "/new/x"}}]},
    {"name": "ttl", "match": {"path": {"prefix": "/new/"}}, "actions": [{"cache": {"ttl": 60}}]},
    {"name": "sec", "phase": "clientResponse", "actions": [{"responseHeaders": {"set": {"X-Frame-Options": "DENY"}}}]},
]


def test_static_decisions_are_memoised_per_request_line_and_applied_to_each_request() -> None:
    _, domain = domain_with_rules(*STATIC)
    first, second = request("/old/a", ("X-A", "1")), request("/old/a", ("X-A", "2"))
    applied = evaluate(domain, first, Client(), 0.0)
    assert applied.outcome is not None and applied.outcome.static and applied.ttl == 60
    assert evaluate(domain, second, Client(), 1.0) is applied, "the same request line: the memoised decision"
    assert first.target == second.target == "/new/x" and second.rules is applied
    assert applied.client_ops is not None and [op.name for op in applied.client_ops] == ["X-Frame-Options"]
    assert evaluate(domain, request("/old/b"), Client(), 0.0) is not applied


def test_decisions_that_read_more_than_the_request_line_are_not_memoised() -> None:
    reads_header = {"match": {"headers": [{"name": "X-A", "present": True}]}, "actions": [{"deny": {}}]}
    limited = {"match": {"path": {"prefix": "/"}}, "actions": [{"rateLimit": {"requestsPerSecond": 1, "burst": 1}}]}
    for rule in (reads_header, limited):
        _, domain = domain_with_rules(rule)
        first = evaluate(domain, request("/p"), Client(), 0.0)
        second = evaluate(domain, request("/p", ("X-A", "1")), Client(), 0.0)
        assert first is not second and not domain.rule_memo
        assert second.outcome is not None and second.outcome.respond is not None, "denied / limited: not stale"
