"""The rule schema refuses what the cloud must refuse, naming the field path."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api.errors import ValidationFailed
from edgefleet.api.meta import parse
from edgefleet.api.rules import MAX_RULES, check_safe_regex, parse_template, secret_refs
from tests.rulehelpers import rules


def domain(*rule_list: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {"hostnames": ["www.example.com"], "origins": [{"url": "http://o.example"}], "rules": list(rule_list)},
    }


def errors_of(*rule_list: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        parse(domain(*rule_list))
    return [str(error) for error in caught.value.errors]


def test_a_domain_with_rules_parses_and_one_without_has_none() -> None:
    parsed = parse(domain({"match": {"path": {"prefix": "/a/"}}, "actions": [{"deny": {}}]}))
    assert parsed.spec.rules[0].actions[0].deny is not None
    plain = domain()
    del plain["spec"]["rules"]
    assert parse(plain).spec.rules == []


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a+)+$", "nested quantifiers"),
        ("(a*)*", "nested quantifiers"),
        ("(x|y+){2,}", "nested quantifiers"),
        (r"(a)\1", "backreferences"),
        ("(?=a)b", "lookahead/lookbehind"),
        ("(?<!a)b", "lookahead/lookbehind"),
        ("(?P<x>a)(?(x)b|c)", "conditional groups"),
        ("a{2000}", "repeat counts above"),
        ("a" * 600, "at most 512 characters"),
        ("(", "does not compile"),
    ],
)
def test_unsafe_or_bad_regexes_are_refused_with_the_field_path(pattern: str, message: str) -> None:
    found = errors_of({"match": {"path": {"regex": pattern}}, "actions": [{"deny": {}}]})
    assert len(found) == 1
    assert found[0].startswith("spec.rules[0].match.path.regex: ")
    assert message in found[0]


@pytest.mark.parametrize("pattern", [r"^/a/(\d+)/(?P<slug>[a-z-]+)$", "^/(en|fr)/.*", r"\.(jpg|png)$", "a{1,100}b*"])
def test_ordinary_regexes_pass(pattern: str) -> None:
    check_safe_regex(pattern)


def test_unknown_fields_are_refused_where_they_are() -> None:
    found = errors_of({"match": {"path": {"prefix": "/"}, "colour": "red"}, "actions": [{"deny": {"bogus": 1}}]})
    assert sorted(found) == [
        "spec.rules[0].actions[0].deny.bogus: unknown field",
        "spec.rules[0].match.colour: unknown field",
    ]


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        (
            {"match": {"path": {"regex": "^/a/(.*)$"}}, "actions": [{"redirect": {"location": "/b/${2}"}}]},
            "spec.rules[0].actions[0].redirect.location",
            "the path regex has 1 group(s)",
        ),
        (
            {"match": {"path": {"prefix": "/a/"}}, "actions": [{"rewrite": {"path": "/b/${1}"}}]},
            "spec.rules[0].actions[0].rewrite.path",
            "no match.path.regex",
        ),
        (
            {"match": {"path": {"regex": "^/(?P<x>.*)"}}, "actions": [{"redirect": {"location": "/${y}"}}]},
            "spec.rules[0].actions[0].redirect.location",
            "does not define",
        ),
        (
            {"actions": [{"requestHeaders": {"set": {"X-A": "${nope.x}"}}}]},
            "spec.rules[0].actions[0].requestHeaders.set.X-A",
            "is not a request field",
        ),
        ({"actions": [{"redirect": {"location": "/a$b"}}]}, "spec.rules[0].actions[0].redirect.location", "$$"),
    ],
)
def test_templates_must_name_known_fields_and_existing_groups(rule: dict[str, Any], path: str, message: str) -> None:
    found = errors_of(rule)
    assert len(found) == 1 and found[0].startswith(path + ": "), found
    assert message in found[0]


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        (
            {"match": {"clientIp": {"cidrs": ["10.0.0.0/8", "300.1.1.1"]}}, "actions": [{"deny": {}}]},
            "spec.rules[0].match.clientIp.cidrs[1]",
        ),
        ({"match": {"bucket": {"percent": 101}}, "actions": [{"deny": {}}]}, "spec.rules[0].match.bucket.percent"),
        ({"match": {"bucket": {"percent": -1}}, "actions": [{"deny": {}}]}, "spec.rules[0].match.bucket.percent"),
        (
            {"match": {"country": {"oneOf": ["FR", "ZZ"]}}, "actions": [{"deny": {}}]},
            "spec.rules[0].match.country.oneOf[1]",
        ),
        (
            {"actions": [{"tokenAuth": {"keys": [{"secret": "Bad_Name", "key": "k"}]}}]},
            "spec.rules[0].actions[0].tokenAuth.keys[0].secret",
        ),
        (
            {"actions": [{"tokenAuth": {"keys": [{"secret": "ok", "key": "a b"}]}}]},
            "spec.rules[0].actions[0].tokenAuth.keys[0].key",
        ),
        (
            {"actions": [{"tokenAuth": {"keys": [{"secret": "a", "key": "k"}] * 3}}]},
            "spec.rules[0].actions[0].tokenAuth.keys",
        ),
        ({"actions": [{"deny": {}, "redirect": {"location": "/"}}]}, "spec.rules[0].actions[0]"),
        ({"actions": [{}]}, "spec.rules[0].actions[0]"),
        ({"match": {"path": {"prefix": "/", "exact": "/"}}}, "spec.rules[0].match.path"),
        ({"phase": "clientResponse", "actions": [{"deny": {}}]}, "spec.rules[0].actions[0].deny"),
        ({"match": {"status": {"oneOf": [404]}}, "actions": [{"deny": {}}]}, "spec.rules[0].match.status"),
        (
            {"actions": [{"responseHeaders": {"set": {"Content-Length": "1"}}}]},
            "spec.rules[0].actions[0].responseHeaders.set.Content-Length",
        ),
        (
            {"actions": [{"rateLimit": {"requestsPerSecond": 0}}]},
            "spec.rules[0].actions[0].rateLimit.requestsPerSecond",
        ),
        (
            {"actions": [{"responseHeaders": {"set": {"X-Price": "5 \u20ac"}}}]},
            "spec.rules[0].actions[0].responseHeaders.set.X-Price",
        ),
        (
            {"actions": [{"rateLimit": {"requestsPerSecond": 1, "key": "header"}}]},
            "spec.rules[0].actions[0].rateLimit.header",
        ),
        (
            {"actions": [{"split": {"name": "e", "variants": [{"name": "a"}, {"name": "a"}]}}]},
            "spec.rules[0].actions[0].split.variants",
        ),
        (
            {"actions": [{"split": {"name": "e", "variants": [{"name": "a", "origin": "ftp://x"}, {"name": "b"}]}}]},
            "spec.rules[0].actions[0].split.variants[0].origin",
        ),
        (
            {"actions": [{"cors": {"allowOrigins": ["*"], "allowCredentials": True}}]},
            "spec.rules[0].actions[0].cors.allowOrigins",
        ),
        ({"actions": [{"cache": {"ttl": 5, "bypass": True}}]}, "spec.rules[0].actions[0].cache.ttl"),
    ],
)
def test_bad_values_are_refused_with_the_field_path(rule: dict[str, Any], path: str) -> None:
    found = errors_of(rule)
    assert any(error.startswith(path + ":") for error in found), found


def test_rule_set_limits() -> None:
    found = errors_of(*[{"actions": [{"deny": {}}]}] * (MAX_RULES + 1))
    assert found and found[0].startswith("spec.rules:") and str(MAX_RULES) in found[0]
    big = {"actions": [{"deny": {"body": "x" * 60000}}]}
    found = errors_of(*[big] * 5)
    assert found[0].startswith("spec.rules: ") and "bytes as JSON" in found[0]
    found = errors_of({"name": "a", "actions": [{"deny": {}}]}, {"name": "a", "actions": [{"deny": {}}]})
    assert found == ["spec.rules[1].name: duplicate rule name 'a'"]


def test_templates_parse_into_literals_and_references() -> None:
    parsed = parse_template("https://x${path}?a=$$${query.a}")
    assert [part if isinstance(part, str) else f"<{part.name}>" for part in parsed] == [
        "https://x",
        "<path>",
        "?a=",
        "$",
        "<query.a>",
    ]


def test_secret_refs_lists_what_token_rules_read() -> None:
    parsed = rules(
        {"actions": [{"tokenAuth": {"keys": [{"secret": "keys", "key": "new"}, {"secret": "keys", "key": "old"}]}}]},
        {"actions": [{"deny": {}}]},
    )
    assert secret_refs(parsed) == {("keys", "new"), ("keys", "old")}
