"""Canonical Host and request-target (edgefleet.cache.wire.targets): one spelling per resource, or 400."""

from __future__ import annotations

import pytest

from edgefleet.cache.errors import BadRequest
from edgefleet.cache.wire.http1 import Limits, RequestParser
from edgefleet.cache.wire.targets import canonical_host, canonical_target


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("demo.x", "demo.x"),
        ("Demo.X", "demo.x"),
        ("demo.x.", "demo.x"),
        ("demo.x:8080", "demo.x"),
        ("demo.x:", "demo.x"),
        ("DEMO.x.:80", "demo.x"),
        ("[::1]:8081", "[::1]"),
        ("[0:0::1]", "[::1]"),
        ("_srv.demo-1.x", "_srv.demo-1.x"),
    ],
)
def test_host_spellings_have_one_canonical_form(value: str, host: str) -> None:
    assert canonical_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        "[demo.x]",
        "demo.x:1:2",
        "demo.x:http",
        "demo.x:99999",
        "demo..x",
        ".demo.x",
        "demo x",
        "demo.x/a",
        "",
        "[::1",
        "[::1]x",
        "-demo.x",
        "a" * 64 + ".x",
        "demo.x" + ".a" * 130,
        "démo.x",
    ],
)
def test_malformed_hosts_are_refused(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        canonical_host(value)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("/a/b?c=//d/../e", "/a/b?c=//d/../e"),  # the query is left as sent
        ("//api/", "/api/"),
        ("/a//b///c", "/a/b/c"),
        ("/static/../api/me", "/api/me"),
        ("/static/%2e%2e/api/me", "/api/me"),
        ("/a/./b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/../../x", "/x"),
        ("/%41%7e%2D", "/A~-"),
        ("/a%2fb", "/a%2Fb"),  # an encoded slash stays encoded: /a%2Fb and /a/b are two resources
        ("/a%20b%3f", "/a%20b%3F"),
        ("/a#slice=0", "/a"),  # a fragment is dropped: no request names a slice key
        ("/a/.#frag", "/a/"),
    ],
)
def test_targets_are_normalised(target: str, canonical: str) -> None:
    assert canonical_target(target) == canonical


@pytest.mark.parametrize(
    "target",
    [
        "/static/..%2fapi/me",
        "/static/..%2Fapi",
        "/x/%2e%2e%2fapi",
        "/x/..%5capi",
        "/x\\..\\api",
        "/a%zz",
        "/a%4",
        "/a%",
    ],
)
def test_paths_that_cannot_be_normalised_safely_are_refused(target: str) -> None:
    with pytest.raises(BadRequest) as caught:
        canonical_target(target)
    assert caught.value.status == 400


def test_the_parser_hands_out_canonical_host_and_target() -> None:
    (request,) = RequestParser(Limits()).feed(b"GET //a/./b/../%63 HTTP/1.1\r\nHost: Demo.X.:81\r\n\r\n")
    assert (request.host, request.target) == ("demo.x", "/a/c")


def test_a_body_is_refused_before_it_is_read_when_the_head_check_fails() -> None:
    def check(method: str, host: str) -> None:
        raise BadRequest(421, f"{method} {host}")

    parser = RequestParser(Limits(), check)
    with pytest.raises(BadRequest) as caught:
        parser.feed(b"POST /x HTTP/1.1\r\nHost: Other.X:1\r\nContent-Length: 10\r\n\r\nabc")
    assert (caught.value.status, caught.value.message) == (421, "POST other.x")
    with pytest.raises(BadRequest) as caught:  # before "100 Continue" asks for the body
        RequestParser(Limits(), check).feed(
            b"PUT /x HTTP/1.1\r\nHost: o.x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
        )
    assert (caught.value.status, caught.value.message) == (421, "PUT o.x")
    (request,) = RequestParser(Limits(), check).feed(b"GET /x HTTP/1.1\r\nHost: other.x\r\n\r\n")  # no body
    assert request.host == "other.x"


def test_a_declared_length_over_the_limit_is_refused_at_once() -> None:
    with pytest.raises(BadRequest) as caught:  # over the streamed limit, as soon as the field is in
        RequestParser(Limits(max_body_bytes=100, max_upload_bytes=1000)).feed(
            b"POST /x HTTP/1.1\r\nHost: a.x\r\nContent-Length: 1001\r\nX-Next: 1"
        )
    assert caught.value.status == 413
    with pytest.raises(BadRequest) as caught:  # a GET's body is never streamed: over the buffered limit
        RequestParser(Limits(max_body_bytes=100)).feed(b"GET /x HTTP/1.1\r\nHost: a.x\r\nContent-Length: 101\r\n\r\n")
    assert caught.value.status == 413


def test_100_continue_is_wanted_only_once_the_whole_head_is_in_and_checked() -> None:
    """A GET's body is buffered, so the cache itself asks for it; a PUT's is streamed to the upstream at once
    (its 100 comes from the upstream, RFC 9110 §10.1.1); either way the head is checked once, when whole."""
    seen: list[tuple[str, str]] = []
    parser = RequestParser(Limits(), lambda method, host: seen.append((method, host)))
    head = b"GET /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\nHost: a.x\r\n\r\n"
    for piece in (head[:40], head[40:-1]):
        assert parser.feed(piece) == [] and not parser.continue_wanted and not seen
    assert parser.feed(head[-1:]) == [] and parser.continue_wanted and seen == [("GET", "a.x")]
    (request,) = parser.feed(b"abc")
    assert request.body == b"abc" and seen == [("GET", "a.x")]  # checked once

    seen.clear()
    parser = RequestParser(Limits(), lambda method, host: seen.append((method, host)))
    head = head.replace(b"GET", b"PUT")
    for piece in (head[:40], head[40:-1]):
        assert parser.feed(piece) == [] and not seen
    (streamed,) = parser.feed(head[-1:])
    assert streamed.method == "PUT" and not parser.continue_wanted and seen == [("PUT", "a.x")]
    assert parser.feed(b"abc") == [] and seen == [("PUT", "a.x")]  # checked once; the body goes to its stream
