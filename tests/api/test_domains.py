"""Domain: hostnames, origins, cache policy, sites selector and routing."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.domains import Domain, check_host_header, check_hostname, check_origin_url

from .helpers import DELETE, Doc, changed, errors_of, row


def _domain(document: Doc) -> Domain:
    obj = parse(document)
    assert isinstance(obj, Domain)
    return obj


def test_valid_domain_and_defaults(domain_doc: Doc) -> None:
    domain = _domain(domain_doc)
    policy = domain.spec.cache_policy
    assert (policy.default_ttl, policy.rules, policy.query_string.mode) == (3600, [], "keep")
    assert (policy.serve_stale_on_error, policy.heuristic_freshness) == (True, True)
    routing = domain.spec.routing
    assert (routing.policy, routing.answers, routing.ttl) == ("geo", 2, 30)
    assert domain.spec.origins[0].weight == 1
    assert domain.spec.site_selector().matches({"tier": "edge"})
    assert not domain.spec.site_selector().matches({"tier": "parent"})


def test_full_domain(domain_doc: Doc) -> None:
    domain_doc["spec"].update(
        hostnames=["WWW.Shop.Example", "shop.example"],
        origins=[
            {"url": "https://origin-a.shop.example:8443/base", "weight": 3},
            {"url": "http://198.51.100.7", "hostHeader": "origin.shop.example", "backup": True},
            {"url": "http://[2001:db8::7]:8080/"},
        ],
        cachePolicy={
            "defaultTtl": 0,
            "rules": [
                {"pathPrefix": "/static/", "ttl": 86400},
                {"pathRegex": r"^/video/.*\.ts$", "ttl": 600},
                {"pathPrefix": "/cart", "bypass": True},
            ],
            "queryString": "sort",
            "serveStaleOnError": False,
            "heuristicFreshness": False,
        },
        sites="",
        routing={"policy": "weighted", "weights": {"par-edge": 3, "ams-edge": 1}, "answers": 8},
    )
    domain = _domain(domain_doc)
    assert domain.spec.hostnames == ["www.shop.example", "shop.example"]
    assert domain.spec.cache_policy.query_string.mode == "sort"
    assert domain.spec.site_selector().is_everything
    assert parse(domain.to_dict()) == domain


def test_failover_and_allow_list(domain_doc: Doc) -> None:
    domain_doc["spec"]["routing"] = {"policy": "failover", "failoverOrder": ["par-edge", "ams"]}
    domain_doc["spec"]["cachePolicy"] = {"queryString": {"mode": "allowList", "allowList": ["v"]}}
    domain = _domain(domain_doc)
    assert domain.spec.routing.failover_order == ["par-edge", "ams"]
    assert domain.spec.cache_policy.query_string.allow_list == ["v"]


NOT_URL = "not an absolute http(s) URL"


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("spec.origins.0.url", "ftp://origin.example", f"spec.origins[0].url: {NOT_URL}"),
        ("spec.origins.0.url", "origin.example/path", f"spec.origins[0].url: {NOT_URL}"),
        ("spec.origins.0.url", "/relative", f"spec.origins[0].url: {NOT_URL}"),
        ("spec.origins.0.url", "https://", f"spec.origins[0].url: {NOT_URL}"),
        (
            "spec.origins.0.url",
            "http://[::1",
            "spec.origins[0].url: invalid host or port in 'http://[::1'",
        ),
        (
            "spec.origins.0.url",
            "http://o.example:99999",
            "spec.origins[0].url: invalid host or port in 'http://o.example:99999'",
        ),
        (
            "spec.origins.0.url",
            "https://user:pw@o.example",
            "spec.origins[0].url: must not contain user:password@ credentials",
        ),
        (
            "spec.origins.0.url",
            "https://o.example/?a=1",
            "spec.origins[0].url: must not contain a query or fragment",
        ),
        (
            "spec.origins.0.url",
            "https://o.example/a b",
            "spec.origins[0].url: must not contain spaces or control characters",
        ),
        (
            "spec.origins.0.url",
            "https://bad host!/",
            "spec.origins[0].url: must not contain spaces or control characters",
        ),
        (
            "spec.origins.0.url",
            "https://bad!host/",
            "spec.origins[0].url: invalid host or port in 'https://bad!host/'",
        ),
        (
            "spec.origins.0.hostHeader",
            "bad host",
            "spec.origins[0].hostHeader: 'bad host' is not a valid host name (host or host:port)",
        ),
        (
            "spec.origins.0.hostHeader",
            "o.example:0",
            "spec.origins[0].hostHeader: 'o.example:0': invalid port",
        ),
        (
            "spec.origins.0.weight",
            0,
            "spec.origins[0].weight: Input should be greater than or equal to 1",
        ),
        ("spec.origins.0.backup", True, "spec.origins: at least one origin must not be a backup"),
        (
            "spec.origins",
            [],
            "spec.origins: List should have at least 1 item after validation, not 0",
        ),
        (
            "spec.origins",
            [{"url": "http://a.example"}, {"url": "http://a.example"}],
            "spec.origins[1].url: duplicate origin 'http://a.example'",
        ),
        ("spec.origins", DELETE, "spec.origins: Field required"),
        (
            "spec.hostnames",
            [],
            "spec.hostnames: List should have at least 1 item after validation, not 0",
        ),
        (
            "spec.hostnames",
            ["a.example", "A.example"],
            "spec.hostnames[1]: duplicate hostname 'a.example'",
        ),
        (
            "spec.sites",
            "tier in edge",
            "spec.sites: invalid label selector: position 8: expected '(', found 'edge'",
        ),
        ("spec.sites", ["par-edge"], "spec.sites: Input should be a valid string"),
    ],
)
def test_invalid_domain(domain_doc: Doc, path: str, value: Any, error: str) -> None:
    assert errors_of(changed(domain_doc, path, value)) == [error]


@pytest.mark.parametrize(
    ("hostname", "reason"),
    [
        ("www.*.example.com", "'*' is only allowed as the whole leftmost label"),
        ("*", "'*' is only allowed as the whole leftmost label"),
        ("*foo.example.com", "'*' is only allowed as the whole leftmost label"),
        ("*.*.example.com", "'*' is only allowed as the whole leftmost label"),
        ("example.com.", "without a trailing dot"),
        ("-bad.example.com", "is not a valid DNS name"),
        ("bad-.example.com", "is not a valid DNS name"),
        ("under_score.example.com", "is not a valid DNS name"),
        ("a..example.com", "is not a valid DNS name"),
        ("bücher.example", "is not a valid DNS name"),
        ("a" * 64 + ".example.com", "is not a valid DNS name"),
        (("a" * 63 + ".") * 4 + "com", "at most 253 characters"),
        ("192.0.2.1", "numeric top-level label"),
    ],
)
def test_invalid_hostnames(domain_doc: Doc, hostname: str, reason: str) -> None:
    [error] = errors_of(changed(domain_doc, "spec.hostnames", ["ok.example", hostname]))
    assert error.startswith("spec.hostnames[1]: ")
    assert reason in error


@pytest.mark.parametrize(
    "hostname",
    ["*.example.com", "xn--bcher-kva.example", "localhost", "a-b.c-d.example", "A.EXAMPLE"],
)
def test_valid_hostnames(hostname: str) -> None:
    assert check_hostname(hostname) == hostname.lower()


@pytest.mark.parametrize(
    "url",
    [
        "https://Origin.example:8443/base/path",
        "HTTP://origin.example",
        "http://origin.example/",
        "http://[2001:db8::7]:8080/x",
        "http://[::1]",
        "http://10.0.0.1:80",
        "http://origin_internal",
    ],
)
def test_valid_origin_urls_are_kept(url: str) -> None:
    assert check_origin_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://o.example:",
        "http://o.example:0",
        "http://o.example:8o",
        "http://a:1:2",
        "http://[::1]x",
        "http://[1.2.3.4]",
        "http://[::1]:",
        "http://a..b",
        "http://-",
    ],
)
def test_malformed_origin_authority(url: str) -> None:
    with pytest.raises(ValueError, match="invalid host or port"):
        check_origin_url(url)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("origin.example", True),
        ("origin.example:8080", True),
        ("[2001:db8::1]:8443", True),
        ("[2001:db8::1]", True),
        ("origin.example:", False),
        ("origin.example:70000", False),
        ("a b", False),
        ("[zz]:80", False),
    ],
)
def test_host_header(value: str, valid: bool) -> None:
    if valid:
        assert check_host_header(value) == value
    else:
        with pytest.raises(ValueError):
            check_host_header(value)


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"ttl": 10}, "spec.cachePolicy.rules[0]: set exactly one of pathPrefix or pathRegex"),
        (
            {"pathPrefix": "/a", "pathRegex": "^/a", "ttl": 1},
            "spec.cachePolicy.rules[0]: set exactly one of pathPrefix or pathRegex",
        ),
        ({"pathPrefix": "/a"}, "spec.cachePolicy.rules[0]: set ttl or bypass: true"),
        (
            {"pathPrefix": "/a", "ttl": 5, "bypass": True},
            "spec.cachePolicy.rules[0].ttl: not allowed with bypass: true",
        ),
        (
            {"pathPrefix": "static/", "ttl": 5},
            "spec.cachePolicy.rules[0].pathPrefix: must start with '/' and contain no spaces or control characters",
        ),
        (
            {"pathRegex": "^/(unclosed", "ttl": 5},
            "spec.cachePolicy.rules[0].pathRegex: does not compile: missing ), unterminated subpattern at position 2",
        ),
        (
            {"pathRegex": "x" * 1025, "ttl": 5},
            "spec.cachePolicy.rules[0].pathRegex: at most 1024 characters (got 1025)",
        ),
        (
            {"pathPrefix": "/a", "ttl": -1},
            "spec.cachePolicy.rules[0].ttl: Input should be greater than or equal to 0",
        ),
        (
            {"pathPrefix": "/a", "ttl": 400 * 86400},
            "spec.cachePolicy.rules[0].ttl: Input should be less than or equal to 31536000",
        ),
        ({"path": "/a", "ttl": 1}, "spec.cachePolicy.rules[0].path: unknown field"),
    ],
)
def test_invalid_cache_rules(domain_doc: Doc, rule: dict[str, Any], error: str) -> None:
    domain_doc["spec"]["cachePolicy"] = {"rules": [rule]}
    assert errors_of(domain_doc) == [error]


@pytest.mark.parametrize(
    ("query_string", "error"),
    [
        (
            "everything",
            "spec.cachePolicy.queryString.mode: Input should be 'keep', 'ignore', 'sort' or 'allowList'",
        ),
        (
            {"mode": "allowList"},
            "spec.cachePolicy.queryString.allowList: required when mode is allowList",
        ),
        (
            {"mode": "sort", "allowList": ["v"]},
            "spec.cachePolicy.queryString.allowList: only used when mode is allowList",
        ),
        (
            {"mode": "allowList", "allowList": ["v", "v"]},
            "spec.cachePolicy.queryString.allowList[1]: duplicate parameter 'v'",
        ),
        (
            {"mode": "allowList", "allowList": [""]},
            "spec.cachePolicy.queryString.allowList[0]: String should have at least 1 character",
        ),
    ],
)
def test_invalid_query_string(domain_doc: Doc, query_string: Any, error: str) -> None:
    domain_doc["spec"]["cachePolicy"] = {"queryString": query_string}
    assert errors_of(domain_doc) == [error]


@pytest.mark.parametrize(
    ("routing", "error"),
    [
        (
            {"policy": "random"},
            "spec.routing.policy: Input should be 'geo', 'latency', 'weighted' or 'failover'",
        ),
        (
            {"policy": "weighted"},
            "spec.routing.weights: policy weighted needs a site with weight > 0",
        ),
        (
            {"policy": "weighted", "weights": {"a": 0}},
            "spec.routing.weights: policy weighted needs a site with weight > 0",
        ),
        (
            {"policy": "geo", "weights": {"a": 1}},
            "spec.routing.weights: only used with policy weighted",
        ),
        ({"policy": "failover"}, "spec.routing.failoverOrder: required for policy failover"),
        (
            {"policy": "latency", "failoverOrder": ["a"]},
            "spec.routing.failoverOrder: only used with policy failover",
        ),
        (
            {"policy": "failover", "failoverOrder": ["a", "b", "a"]},
            "spec.routing.failoverOrder[2]: duplicate site 'a'",
        ),
        (
            {"policy": "weighted", "weights": {"a": -1}},
            "spec.routing.weights.a: Input should be greater than or equal to 0",
        ),
        (
            {"policy": "weighted", "weights": {"Bad": 1}},
            "spec.routing.weights.Bad[key]: 'Bad' is not a DNS-1123 name: use lowercase letters, "
            "digits, '-' and '.', starting and ending with a letter or digit",
        ),
        ({"answers": 0}, "spec.routing.answers: Input should be greater than or equal to 1"),
        ({"answers": 9}, "spec.routing.answers: Input should be less than or equal to 8"),
        ({"ttl": 86401}, "spec.routing.ttl: Input should be less than or equal to 86400"),
    ],
)
def test_invalid_routing(domain_doc: Doc, routing: dict[str, Any], error: str) -> None:
    domain_doc["spec"]["routing"] = routing
    assert errors_of(domain_doc) == [error]


def test_status_and_columns(domain_doc: Doc) -> None:
    domain_doc["spec"]["hostnames"] = ["a.shop.example", "b.shop.example", "c.shop.example"]
    domain_doc["status"] = {
        "servingSites": ["par-edge", "ams-edge"],
        "requests": 800,
        "originRequests": 100,
        "offload": 0.875,
        "byteOffload": 0.5,
    }
    assert row(_domain(domain_doc)) == {
        "HOSTNAMES": "a.shop.example,b.shop.example,+1",
        "ORIGINS": "https://origin.shop.example",
        "ROUTING": "geo",
        "SITES": "tier=edge",
        "REQUESTS": "800",
        "OFFLOAD": "87.5%",
        "BYTE-OFFLOAD": "50.0%",
        "SERVING": "par-edge,ams-edge",
        "DEFAULT-TTL": "3600s",
    }
    domain_doc["spec"]["sites"] = ""
    assert row(_domain(domain_doc))["SITES"] == "<all>"
    domain_doc["status"] = {"servingSites": ["par-edge"], "requests": 0, "originRequests": 0}  # idle
    idle = row(_domain(domain_doc))
    assert (idle["REQUESTS"], idle["OFFLOAD"], idle["BYTE-OFFLOAD"]) == ("0", "-", "-")
