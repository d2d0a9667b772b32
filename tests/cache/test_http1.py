"""The cache server's HTTP/1.1 request parser, without I/O: limits, smuggling vectors, pipelining, bodies."""

from __future__ import annotations

import asyncio

import pytest

from edgefleet.cache.errors import BadRequest
from edgefleet.cache.wire.http1 import LAST_CHUNK, Limits, Request, RequestParser, chunk, error_body, response_head

SMALL = Limits(max_url_bytes=256, max_header_bytes=1024, max_headers=8, max_body_bytes=100)


def parse(data: bytes, limits: Limits = SMALL) -> list[Request]:
    return RequestParser(limits).feed(data)


def refused(data: bytes, limits: Limits = SMALL) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse(data, limits)
    return caught.value


def get(target: str = "/", *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {target} HTTP/{version}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- limits -------------------------------------------------------------------


def test_url_at_the_limit_is_accepted_one_byte_more_is_414() -> None:
    at_limit = "/" + "a" * 255
    assert parse(get(at_limit, "Host: a"))[0].target == at_limit
    assert refused(get(at_limit + "a", "Host: a")).status == 414


def test_url_limit_holds_when_the_url_arrives_in_pieces() -> None:
    parser = RequestParser(SMALL)
    parser.feed(b"GET /")
    with pytest.raises(BadRequest) as caught:
        for _ in range(10):
            parser.feed(b"a" * 50)
    assert caught.value.status == 414


def test_header_block_larger_than_the_limit_is_431() -> None:
    fits = parse(get("/", "Host: a", "X-Big: " + "v" * 900))
    assert fits[0].headers[1] == ("X-Big", "v" * 900)
    error = refused(get("/", "Host: a", "X-Big: " + "v" * 1100))
    assert error.status == 431
    assert "larger than 1024 bytes" in error.message


def test_more_header_fields_than_the_limit_is_431() -> None:
    eight = [f"X-{i}: v" for i in range(7)]
    assert len(parse(get("/", "Host: a", *eight))[0].headers) == 8
    error = refused(get("/", "Host: a", *eight, "X-Last: v"))
    assert error.status == 431
    assert "more than 8" in error.message


def test_an_endless_header_line_fed_in_pieces_is_431_before_it_is_buffered() -> None:
    parser = RequestParser(SMALL)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
    fed = 0
    with pytest.raises(BadRequest) as caught:
        while fed < 10 * 2**20:
            parser.feed(b"v" * 4096)
            fed += 4096
    assert caught.value.status == 431
    assert fed < 8 * 1024  # refused near the limit, not after megabytes


def test_an_endless_header_name_is_431_too() -> None:
    parser = RequestParser(SMALL)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    with pytest.raises(BadRequest) as caught:
        for _ in range(100):
            parser.feed(b"X" * 1000)
    assert caught.value.status == 431


def test_body_larger_than_the_limit_is_413_for_get_and_streamed_for_post() -> None:
    ok = parse(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"b" * 100)
    assert ok[0].body == b"b" * 100 and ok[0].stream is None
    assert refused(b"GET /p HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"b" * 101).status == 413
    body = chunk(b"c" * 60) + chunk(b"c" * 60) + LAST_CHUNK
    assert refused(b"GET /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body).status == 413
    (large,) = parse(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"b" * 101)
    assert large.body == b"" and large.stream is not None and large.stream.done and large.stream.received == 101
    (chunked,) = parse(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert chunked.stream is not None and chunked.stream.done and chunked.stream.received == 120
    assert chunked.stream.length is None


def drain(request: Request) -> bytes:
    assert request.stream is not None

    async def read() -> bytes:
        assert request.stream is not None
        return b"".join([data async for data in request.stream.chunks()])

    return asyncio.run(read())


def test_a_streamed_body_is_handed_out_with_its_head_and_filled_as_it_arrives() -> None:
    limits = Limits(
        max_url_bytes=256, max_header_bytes=1024, max_headers=8, max_body_bytes=100, max_upload_bytes=10_000
    )
    parser = RequestParser(limits)
    (request,) = parser.feed(b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
    assert request.stream is not None and request.has_body and not request.stream.done
    for _ in range(4):  # pieces after the head: no request, and never taken for an endless head
        assert parser.feed(b"y" * 1000) == []
    done = parser.feed(b"y" * 1000 + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [r.target for r in done] == ["/next"] and request.stream.done
    assert drain(request) == b"y" * 5000 and request.stream.consumed


def test_a_chunked_body_is_buffered_until_it_outgrows_the_limit_then_streamed() -> None:
    limits = Limits(max_url_bytes=256, max_header_bytes=1024, max_headers=8, max_body_bytes=100, max_upload_bytes=300)
    parser = RequestParser(limits)
    assert parser.feed(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a" * 80)) == []
    (request,) = parser.feed(chunk(b"b" * 80))  # over 100: handed out, what came so far in its stream
    assert request.stream is not None and request.stream.received == 160
    assert parser.feed(chunk(b"c" * 10) + LAST_CHUNK) == [] and request.stream.done
    assert drain(request) == b"a" * 80 + b"b" * 80 + b"c" * 10
    parser = RequestParser(limits)
    parser.feed(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a" * 200))
    with pytest.raises(BadRequest) as caught:
        parser.feed(chunk(b"b" * 200))
    assert caught.value.status == 413  # over max_upload_bytes


def test_a_large_body_arriving_in_pieces_is_not_mistaken_for_a_large_head() -> None:
    limits = Limits(max_url_bytes=256, max_header_bytes=1024, max_headers=8, max_body_bytes=2**20)
    parser = RequestParser(limits)
    assert parser.feed(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n") == []
    assert parser.head_pending()
    for _ in range(255):
        assert parser.feed(b"z" * 4096) == []
        assert not parser.head_pending()
    done = parser.feed(b"z" * 4096)
    assert len(done[0].body) == 2**20 and done[0].has_body


# --- request smuggling vectors ----------------------------------------------------


def test_content_length_with_transfer_encoding_is_400() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert refused(data).status == 400
    flipped = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    assert refused(flipped).status == 400


@pytest.mark.parametrize("second", ["3", "4"])
def test_duplicate_content_length_is_400(second: str) -> None:
    data = f"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: {second}\r\n\r\nabcd".encode()
    assert refused(data).status == 400


@pytest.mark.parametrize("value", ["-1", "+3", "3 3", "0x3", "3,3"])
def test_malformed_content_length_is_400(value: str) -> None:
    assert refused(f"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\nabc".encode()).status == 400


@pytest.mark.parametrize("size_line", [b"zz", b"-3", b"ffffffffffffffffffff", b"3\n", b" 3"])
def test_invalid_chunk_size_is_400(size_line: bytes) -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nabc\r\n0\r\n\r\n"
    assert refused(data).status == 400


@pytest.mark.parametrize("coding", ["gzip", "gzip, chunked", "identity", "compress"])
def test_transfer_encoding_other_than_chunked_is_501(coding: str) -> None:
    data = f"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n".encode()
    error = refused(data)
    assert error.status == 501
    assert "only chunked" in error.message


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\n\r\n",
    ],
    ids=["everywhere", "after-header", "before-blank-line"],
)
def test_bare_lf_line_ends_are_400(data: bytes) -> None:
    assert refused(data).status == 400


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # whitespace before the colon
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",  # obsolete line folding
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",  # NUL in a value
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",  # space in the target
        b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n",  # NUL in the method
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts: which one picks the domain?
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ],
    ids=["space-before-colon", "obs-fold", "nul-value", "space-in-target", "nul-method", "two-hosts", "upgrade"],
)
def test_other_ambiguous_heads_are_400(data: bytes) -> None:
    assert refused(data).status == 400


@pytest.mark.parametrize("version", ["0.9", "2.0"])
def test_http_versions_other_than_1_0_and_1_1_are_505(version: str) -> None:
    assert refused(get("/", "Host: a", version=version)).status == 505


def test_http_0_9_simple_request_is_refused() -> None:
    assert refused(b"GET /\r\n\r\n").status == 505


# --- Host -----------------------------------------------------------------------------


def test_http_1_1_without_host_is_400_and_empty_host_too() -> None:
    assert refused(get("/")).status == 400
    assert "without a Host" in refused(get("/", "Host:")).message


def test_http_1_0_without_host_is_parsed_with_an_empty_host() -> None:
    request = parse(get("/x", version="1.0"))[0]
    assert (request.host, request.version, request.keep_alive) == ("", "1.0", False)


def test_keep_alive_for_http_1_1_unless_connection_close() -> None:
    assert parse(get("/", "Host: a"))[0].keep_alive
    assert not parse(get("/", "Host: a", "Connection: close"))[0].keep_alive


def test_http_1_0_is_never_kept_alive_even_when_asked() -> None:
    """Our responses do not carry ``Connection: keep-alive``, so a 1.0 client would wait for the close."""
    assert not parse(get("/", "Host: a", version="1.0"))[0].keep_alive
    assert not parse(get("/", "Host: a", "Connection: keep-alive", version="1.0"))[0].keep_alive


# --- pipelining and bodies ------------------------------------------------------------


def test_pipelined_requests_are_returned_in_order() -> None:
    data = get("/1", "Host: a") + b"POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nxyz" + get("/3", "Host: c")
    requests = parse(data)
    assert [(r.method, r.target, r.host, r.body) for r in requests] == [
        ("GET", "/1", "a", b""),
        ("POST", "/2", "b", b"xyz"),
        ("GET", "/3", "c", b""),
    ]
    assert [r.has_body for r in requests] == [False, True, False]


def test_pipelined_requests_split_at_every_byte_come_out_the_same() -> None:
    post = b"POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nxyz"
    data = get("/1", "Host: a", "X-A: 1") + post + get("/3?q=1", "Host: c")
    whole = [(r.method, r.target, r.headers, r.body) for r in parse(data)]
    for cut in range(1, len(data)):
        parser = RequestParser(SMALL)
        requests = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert [(r.method, r.target, r.headers, r.body) for r in requests] == whole, cut
        assert not parser.pending()


def test_requests_before_a_bad_one_in_the_same_feed_are_kept() -> None:
    parser = RequestParser(SMALL)
    bad = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    data = get("/1", "Host: a") + get("/2", "Host: a") + bad
    with pytest.raises(BadRequest):
        parser.feed(data)
    assert [r.target for r in parser.take_completed()] == ["/1", "/2"]
    assert parser.take_completed() == []


def test_chunked_body_is_decoded_with_extensions_and_trailers() -> None:
    body = b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    data = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    request = parse(data)[0]
    assert request.body == b"hello world"
    assert request.has_body
    assert ("Transfer-Encoding", "chunked") in request.headers


def test_trailer_fields_are_not_merged_into_the_headers() -> None:
    body = b"3\r\nabc\r\n0\r\nX-Trailer: t\r\nRange: bytes=0-0\r\n\r\n"
    request = parse(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)[0]
    assert request.headers == [("Host", "a"), ("Transfer-Encoding", "chunked")]
    assert request.plain


def test_a_trailer_host_does_not_pick_the_domain() -> None:
    data = b"POST /up HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: victim.test\r\n\r\n"
    request = parse(data)[0]
    assert request.host == ""
    assert all(name.lower() != "host" for name, _ in request.headers)


def test_empty_chunked_body_still_declares_a_body() -> None:
    request = parse(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0]
    assert (request.body, request.has_body) == (b"", True)


def test_head_pending_until_the_blank_line() -> None:
    parser = RequestParser(SMALL)
    assert not parser.head_pending()
    assert parser.feed(b"GET /slow HTTP/1.1\r\nHo") == []
    assert parser.head_pending() and parser.pending()
    assert len(parser.feed(b"st: a\r\n\r\n")) == 1
    assert not parser.head_pending() and not parser.pending()


# --- response framing --------------------------------------------------------------------


def test_response_head_and_chunks() -> None:
    assert response_head(200, [("A", "1")]) == b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"
    assert response_head(599, []) == b"HTTP/1.1 599 Unknown\r\n\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    headers, body = error_body(431, "too big", "n1")
    assert body.startswith(b"431 Request Header Fields Too Large: too big") and b"n1" in body
    assert ("Content-Length", str(len(body))) in headers


def test_absolute_form_target_replaces_host() -> None:
    parser = RequestParser(Limits())
    (request,) = parser.feed(b"GET http://Demo.test:8080/a?b=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert (request.host, request.target) == ("demo.test", "/a?b=1")  # canonical: lowercase, no port


@pytest.mark.parametrize("target", [b"*", b"ftp://x/y", b"http:///nohost", b"http://user@host/"])
def test_other_request_targets_are_refused(target: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        RequestParser(Limits()).feed(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert info.value.status == 400


def test_expect_100_continue_is_flagged_and_other_expectations_refused() -> None:
    parser = RequestParser(Limits())
    assert parser.feed(b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n") == []
    assert parser.continue_wanted, "a GET's body is buffered: the cache says 100 itself"
    (request,) = parser.feed(b"abc")
    assert request.body == b"abc"
    with pytest.raises(BadRequest) as info:
        RequestParser(Limits()).feed(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n")
    assert info.value.status == 417


def test_9110_10_1_1_an_expected_body_of_a_forwarding_method_is_streamed_at_once_whatever_its_size() -> None:
    parser = RequestParser(Limits())
    (request,) = parser.feed(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert request.stream is not None and request.stream.awaiting_continue and not parser.continue_wanted
    assert parser.feed(b"abc") == [] and request.stream.done and not request.stream.awaiting_continue


def test_9110_10_1_1_an_http_1_0_expectation_is_ignored_by_the_parser() -> None:
    parser = RequestParser(Limits())
    assert parser.feed(b"GET /a HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n") == []
    assert not parser.continue_wanted
