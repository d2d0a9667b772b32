"""Each action of the edge rules on the pure engine, with a fake clock."""

from __future__ import annotations

from edgefleet.cache.policy.rules import CompileEnv, HeaderOp, apply_header_ops, sign_path
from tests.rulehelpers import program, request

NOW = 1_767_225_600.0


def ops(items: list[HeaderOp]) -> list[tuple[str, str, str]]:
    return [(op.op, op.name, op.value) for op in items]


def test_a_domain_without_rules_compiles_to_nothing() -> None:
    from edgefleet.cache.policy.rules import compile_rules

    assert compile_rules([]) is None


def test_redirect_from_captures_and_request_fields() -> None:
    compiled = program(
        {
            "match": {"path": {"regex": r"^/blog/(?P<year>\d{4})/(.*)$"}},
            "actions": [{"redirect": {"status": 308, "location": "https://${host}/posts/${year}-${2}?${query}"}}],
        }
    )
    answer = compiled.on_request(request("/blog/2024/hello world", "ref=x"), NOW).respond
    assert answer is not None and answer.status == 308 and answer.reason == "redirect"
    assert dict(answer.headers)["Location"] == "https://www.example.com/posts/2024-hello%20world?ref=x"


def test_rewrite_changes_path_and_query_and_later_rules_see_it() -> None:
    compiled = program(
        {"match": {"path": {"regex": "^/v1/(.*)$"}}, "actions": [{"rewrite": {"path": "/api/v2/${1}", "query": ""}}]},
        {"match": {"path": {"prefix": "/api/v2/"}}, "actions": [{"requestHeaders": {"set": {"X-Api": "2"}}}]},
    )
    outcome = compiled.on_request(request("/v1/users", "debug=1"), NOW)
    assert (outcome.path, outcome.query, outcome.rewritten) == ("/api/v2/users", "", True)
    assert ops(outcome.request_headers) == [("set", "X-Api", "2")]
    untouched = compiled.on_request(request("/other", "a=1"), NOW)
    assert (untouched.path, untouched.query, untouched.rewritten) == ("/other", "a=1", False)


def test_header_ops_in_order_remove_set_add() -> None:
    compiled = program(
        {
            "actions": [
                {"requestHeaders": {"remove": ["Cookie"], "set": {"X-Client": "${clientIp}"}, "add": {"Via": "edge"}}},
                {"responseHeaders": {"set": {"Cache-Control": "public, max-age=60"}, "remove": ["Server"]}},
            ]
        }
    )
    outcome = compiled.on_request(request(client="198.51.100.7"), NOW)
    assert ops(outcome.request_headers) == [
        ("remove", "Cookie", ""),
        ("set", "X-Client", "198.51.100.7"),
        ("add", "Via", "edge"),
    ]
    upstream = apply_header_ops([("cookie", "a=1"), ("X-Client", "spoofed"), ("Via", "1.1 x")], outcome.request_headers)
    assert upstream == [("Via", "1.1 x"), ("X-Client", "198.51.100.7"), ("Via", "edge")]
    sent = compiled.on_client_response(request(), outcome, 200, [])
    assert ops(sent.headers) == [("remove", "Server", ""), ("set", "Cache-Control", "public, max-age=60")]
    assert compiled.has_client_phase


def test_header_values_from_the_request_cannot_inject_lines() -> None:
    compiled = program({"actions": [{"responseHeaders": {"set": {"X-Echo": "${header.X-In}"}}}]})
    outcome = compiled.on_request(request(headers=[("X-In", "a\r\nSet-Cookie: x=1")]), NOW)
    assert ops(outcome.response_headers) == [("set", "X-Echo", "aSet-Cookie: x=1")]


def test_deny_and_allow_list_by_address() -> None:
    compiled = program(
        {
            "match": {"path": {"prefix": "/admin/"}, "clientIp": {"cidrs": ["10.0.0.0/8"], "negate": True}},
            "actions": [{"deny": {"status": 403, "body": "internal only\n"}}],
        }
    )
    refused = compiled.on_request(request("/admin/", client="192.0.2.1"), NOW).respond
    assert refused is not None and (refused.status, refused.body, refused.reason) == (403, b"internal only\n", "deny")
    assert compiled.on_request(request("/admin/", client="10.2.3.4"), NOW).respond is None
    assert compiled.on_request(request("/public", client="192.0.2.1"), NOW).respond is None


def test_stop_ends_the_phase_and_a_synthetic_answer_too() -> None:
    compiled = program(
        {
            "name": "first",
            "match": {"path": {"prefix": "/a"}},
            "actions": [{"responseHeaders": {"set": {"X-A": "1"}}}],
            "stop": True,
        },
        {"name": "second", "actions": [{"responseHeaders": {"set": {"X-B": "1"}}}]},
    )
    outcome = compiled.on_request(request("/a"), NOW, explain=True)
    assert ops(outcome.response_headers) == [("set", "X-A", "1")]
    assert [(t.name, t.matched, t.skipped) for t in outcome.trace] == [("first", True, False), ("second", False, True)]
    assert ops(compiled.on_request(request("/b"), NOW).response_headers) == [("set", "X-B", "1")]


def token_program() -> CompileEnv:
    return CompileEnv(secrets={"video-keys": {"current": "k2", "previous": "k1"}})


TOKEN_RULE = {
    "match": {"path": {"prefix": "/video/"}},
    "actions": [
        {
            "tokenAuth": {
                "keys": [{"secret": "video-keys", "key": "current"}, {"secret": "video-keys", "key": "previous"}],
                "skewSeconds": 30,
            }
        }
    ],
}


def test_signed_urls_pass_with_either_key_and_are_stripped_from_the_key() -> None:
    compiled = program(TOKEN_RULE, env=token_program())
    for key in ("k2", "k1"):
        expires = int(NOW) + 60
        query = f"expires={expires}&token={sign_path(key, '/video/a.mp4', expires)}&q=hd"
        outcome = compiled.on_request(request("/video/a.mp4", query), NOW)
        assert outcome.respond is None
        assert (outcome.query, outcome.rewritten) == ("q=hd", True)


def test_bad_expired_or_missing_tokens_get_403() -> None:
    compiled = program(TOKEN_RULE, env=token_program())
    expires = int(NOW) - 60
    good_sig = sign_path("k2", "/video/a.mp4", expires)
    cases = [
        "",
        f"expires={expires}&token={good_sig}",  # expired beyond the 30 s skew
        f"expires={int(NOW) + 60}&token={good_sig}",  # signature for another expiry
        f"expires={int(NOW) + 60}&token={sign_path('k3', '/video/a.mp4', int(NOW) + 60)}",  # unknown key
        f"expires=soon&token={good_sig}",
    ]
    for query in cases:
        answer = compiled.on_request(request("/video/a.mp4", query), NOW).respond
        assert answer is not None and (answer.status, answer.reason) == (403, "token"), query
    within_skew = int(NOW) - 10
    query = f"expires={within_skew}&token={sign_path('k2', '/video/a.mp4', within_skew)}"
    assert compiled.on_request(request("/video/a.mp4", query), NOW).respond is None
    # The token covers the path: the same token on another path fails.
    query = f"expires={int(NOW) + 60}&token={sign_path('k2', '/video/a.mp4', int(NOW) + 60)}"
    assert compiled.on_request(request("/video/b.mp4", query), NOW).respond is not None


def test_a_missing_secret_fails_closed_and_the_cli_can_skip() -> None:
    expires = int(NOW) + 60
    query = f"expires={expires}&token={sign_path('k2', '/video/a.mp4', expires)}"
    answer = program(TOKEN_RULE, env=CompileEnv()).on_request(request("/video/a.mp4", query), NOW).respond
    assert answer is not None and answer.status == 403
    skipped = program(TOKEN_RULE, env=CompileEnv(skip_token_auth=True)).on_request(
        request("/video/a.mp4", ""), NOW, explain=True
    )
    assert skipped.respond is None and "unknown" in skipped.trace[0].actions[0].detail


def test_split_by_cookie_sets_a_sticky_cookie_and_keys_the_variant() -> None:
    draws = iter([0.1, 0.9])
    compiled = program(
        {
            "actions": [
                {
                    "split": {
                        "name": "checkout",
                        "variants": [
                            {"name": "old", "weight": 50},
                            {
                                "name": "new",
                                "weight": 50,
                                "origin": "http://beta.example",
                                "pathPrefix": "/beta",
                                "requestHeader": {"name": "X-Variant", "value": "new"},
                            },
                        ],
                    }
                }
            ]
        },
        env=CompileEnv(random=lambda: next(draws)),
    )
    first = compiled.on_request(request("/cart"), NOW)
    assert first.variant == ["checkout=old"] and first.key_extra == "rules:v.checkout=old" and first.origin is None
    assert ops(first.response_headers) == [
        ("add", "Set-Cookie", "ef-checkout=old; Path=/; Max-Age=2592000; SameSite=Lax")
    ]
    second = compiled.on_request(request("/cart"), NOW)
    assert second.variant == ["checkout=new"]
    assert (second.origin, second.origin_path_prefix) == ("http://beta.example", "/beta")
    assert ops(second.request_headers) == [("set", "X-Variant", "new")]
    returning = compiled.on_request(request("/cart", headers=[("Cookie", "ef-checkout=new")]), NOW)
    assert returning.variant == ["checkout=new"] and returning.response_headers == []


def test_split_by_client_hash_is_stable_and_follows_the_weights() -> None:
    compiled = program(
        {
            "actions": [
                {
                    "split": {
                        "name": "e",
                        "by": "client",
                        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}],
                    }
                }
            ]
        }
    )
    picks = [compiled.on_request(request(client=f"10.1.{i // 256}.{i % 256}"), NOW).variant[0] for i in range(2000)]
    assert 0.70 < picks.count("e=b") / len(picks) < 0.80
    assert picks == [
        compiled.on_request(request(client=f"10.1.{i // 256}.{i % 256}"), NOW).variant[0] for i in range(2000)
    ]


def test_rate_limit_answers_429_with_retry_after_past_the_burst() -> None:
    compiled = program({"actions": [{"rateLimit": {"requestsPerSecond": 2, "burst": 3}}]})
    answers = [compiled.on_request(request(client="192.0.2.1"), NOW).respond for _ in range(4)]
    assert answers[:3] == [None, None, None]
    limited = answers[3]
    assert limited is not None and limited.status == 429 and dict(limited.headers)["Retry-After"] == "1"
    assert compiled.on_request(request(client="192.0.2.2"), NOW).respond is None  # another client
    assert compiled.on_request(request(client="192.0.2.1"), NOW + 0.5).respond is None  # one token back


def test_site_wide_rate_limit_is_divided_over_the_nodes() -> None:
    rule = {"actions": [{"rateLimit": {"requestsPerSecond": 10, "burst": 8, "scope": "site"}}]}
    compiled = program(rule, env=CompileEnv(node_count=4))
    allowed = sum(compiled.on_request(request(), NOW).respond is None for _ in range(10))
    assert allowed == 2


def test_rate_limit_by_header_and_state_kept_across_reloads() -> None:
    rule = {
        "name": "api",
        "actions": [{"rateLimit": {"requestsPerSecond": 1, "burst": 1, "key": "header", "header": "X-Api-Key"}}],
    }
    old = program(rule)
    assert old.on_request(request(headers=[("X-Api-Key", "k1")]), NOW).respond is None
    assert old.on_request(request(headers=[("X-Api-Key", "k1")]), NOW).respond is not None
    assert old.on_request(request(headers=[("X-Api-Key", "k2")]), NOW).respond is None
    new = program(rule)
    new.adopt_state(old)
    assert new.on_request(request(headers=[("X-Api-Key", "k1")]), NOW).respond is not None


def test_cache_overrides_and_key_additions() -> None:
    compiled = program(
        {"match": {"path": {"prefix": "/news/"}}, "actions": [{"cache": {"ttl": 30}}]},
        {"match": {"path": {"prefix": "/account/"}}, "actions": [{"cache": {"bypass": True}}]},
        {"actions": [{"cache": {"key": {"headers": ["X-Device"], "cookies": ["lang"], "query": ["v"]}}}]},
    )
    news = compiled.on_request(
        request("/news/1", "v=a b", headers=[("X-Device", "mobile"), ("Cookie", "lang=fr")]), NOW
    )
    assert (news.ttl, news.bypass) == (30.0, False)
    assert news.key_extra == "rules:h.x-device=mobile&c.lang=fr&q.v=a%20b"
    account = compiled.on_request(request("/account/"), NOW)
    assert (account.ttl, account.bypass, account.key_extra) == (None, True, "rules:h.x-device=&c.lang=&q.v=")


def test_cors_preflight_and_simple_requests() -> None:
    compiled = program(
        {
            "actions": [
                {
                    "cors": {
                        "allowOrigins": ["https://app.example"],
                        "allowMethods": ["GET", "POST"],
                        "allowHeaders": ["Content-Type"],
                        "maxAge": 300,
                    }
                }
            ]
        }
    )
    preflight = request(
        method="OPTIONS", headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")]
    )
    answer = compiled.on_request(preflight, NOW).respond
    assert answer is not None and (answer.status, answer.reason) == (204, "cors-preflight")
    assert dict(answer.headers) == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": "https://app.example",
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Max-Age": "300",
        "Access-Control-Allow-Headers": "Content-Type",
    }
    foreign = request(
        method="OPTIONS", headers=[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")]
    )
    refused = compiled.on_request(foreign, NOW).respond
    assert refused is not None and "Access-Control-Allow-Origin" not in dict(refused.headers)
    simple = compiled.on_request(request(headers=[("Origin", "https://app.example")]), NOW)
    assert simple.respond is None
    assert ops(simple.response_headers) == [
        ("set", "Access-Control-Allow-Origin", "https://app.example"),
        ("add", "Vary", "Origin"),
    ]


def test_response_headers_of_the_request_phase_reach_synthetic_answers() -> None:
    compiled = program(
        {"actions": [{"responseHeaders": {"set": {"X-Edge": "yes"}}}]},
        {"match": {"path": {"prefix": "/gone"}}, "actions": [{"deny": {"status": 410}}]},
    )
    answer = compiled.on_request(request("/gone"), NOW).respond
    assert answer is not None and ("X-Edge", "yes") in answer.headers and answer.status == 410


def test_origin_phase_overrides_ttl_and_headers_of_the_stored_copy() -> None:
    compiled = program(
        {"phase": "originResponse", "match": {"status": {"min": 500}}, "actions": [{"cache": {"bypass": True}}]},
        {"phase": "originResponse", "actions": [{"responseHeaders": {"remove": ["Set-Cookie"]}}]},
    )
    assert compiled.has_origin_phase and not compiled.has_client_phase
    req = request()
    outcome = compiled.on_request(req, NOW)
    stored = compiled.on_origin_response(req, outcome, 503, [("Set-Cookie", "a=1")])
    assert stored.bypass and ops(stored.headers) == [("remove", "Set-Cookie", "")]
    assert not compiled.on_origin_response(req, outcome, 200, []).bypass


def test_a_rewritten_path_is_canonical_so_request_values_cannot_climb_or_double_slash() -> None:
    compiled = program(
        {"match": {"path": {"prefix": "/u/"}}, "actions": [{"rewrite": {"path": "/users/${header.X-User}/profile"}}]},
        {"match": {"path": {"prefix": "/admin"}}, "actions": [{"deny": {}}]},
    )
    climbing = compiled.on_request(request("/u/", headers=[("X-User", "../../admin")]), NOW)
    assert climbing.respond is not None and climbing.respond.reason == "deny"  # /admin/profile: denied
    spaced = compiled.on_request(request("/u/", headers=[("X-User", "a b//c")]), NOW)
    assert spaced.path == "/users/a%20b/c/profile"
    broken = compiled.on_request(request("/u/", headers=[("X-User", "%zz")]), NOW).respond
    assert broken is not None and (broken.status, broken.reason) == (400, "rewrite")


def test_static_says_when_only_the_method_scheme_host_path_and_query_mattered() -> None:
    compiled = program(
        {"match": {"path": {"prefix": "/old/"}}, "actions": [{"redirect": {"location": "/new${uri}"}}]},
        {
            "match": {"path": {"prefix": "/static/"}, "query": [{"name": "v", "present": True}]},
            "actions": [{"cache": {"ttl": 60}}, {"responseHeaders": {"set": {"X-A": "1"}}}],
        },
        {"match": {"path": {"prefix": "/who/"}}, "actions": [{"requestHeaders": {"set": {"X-Ip": "${clientIp}"}}}]},
        {
            "match": {"path": {"prefix": "/ua/"}, "headers": [{"name": "User-Agent", "present": True}]},
            "actions": [{"deny": {}}],
        },
        {"match": {"path": {"prefix": "/limited/"}}, "actions": [{"rateLimit": {"requestsPerSecond": 9}}]},
    )
    assert compiled.on_request(request("/nothing"), NOW).static
    assert compiled.on_request(request("/old/a"), NOW).static
    assert compiled.on_request(request("/static/a", "v=1"), NOW).static
    assert not compiled.on_request(request("/who/"), NOW).static
    assert not compiled.on_request(request("/ua/"), NOW).static  # read a header, even though it did not match
    assert not compiled.on_request(request("/limited/"), NOW).static
    assert compiled.client_constant
