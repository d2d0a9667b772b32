"""Conditional requests: 304 from cache, validation upstream and 304 merging."""

from __future__ import annotations

import pytest

from edgefleet.cache.policy.conditionals import (
    entity_tags,
    headers_for_304,
    merge_304,
    not_modified,
    strong_etag_match,
    validation_headers,
    weak_etag_match,
)
from edgefleet.cache.wire.headers import Headers

LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"
STORED: Headers = [
    ("Date", "Mon, 07 Nov 1994 00:00:00 GMT"),
    ("Content-Type", "text/html"),
    ("Content-Length", "42"),
    ("ETag", '"v1"'),
    ("Last-Modified", LAST_MODIFIED),
    ("Cache-Control", "max-age=60"),
    ("Vary", "Accept-Encoding"),
    ("Set-Cookie-Free", "x"),
]


def test_etag_comparisons() -> None:
    assert strong_etag_match('"a"', '"a"')
    assert not strong_etag_match('W/"a"', 'W/"a"')
    assert not strong_etag_match('"a"', '"b"')
    assert weak_etag_match('W/"a"', '"a"')
    assert weak_etag_match('W/"a"', 'W/"a"')
    assert not weak_etag_match('"a"', '"b"')


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ('"a", W/"b" ,"c"', ['"a"', 'W/"b"', '"c"']),
        ('"a,b", "c\\"', ['"a,b"', '"c\\"']),
        ('"a", junk, "b"', ['"a"']),
        ('"unterminated', []),
        ("", []),
    ],
)
def test_entity_tags(value: str, tags: list[str]) -> None:
    assert entity_tags(value) == tags


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ([("If-None-Match", '"v1"')], True),
        ([("If-None-Match", 'W/"v1"')], True),
        ([("If-None-Match", '"v0", "v1"')], True),
        ([("If-None-Match", '"v0"'), ("if-none-match", '"v1"')], True),
        ([("If-None-Match", "*")], True),
        ([("If-None-Match", '"v2"')], False),
        ([("If-None-Match", '"v2"'), ("If-Modified-Since", LATER)], False),
        ([("If-Modified-Since", LAST_MODIFIED)], True),
        ([("If-Modified-Since", LATER)], True),
        ([("If-Modified-Since", EARLIER)], False),
        ([("If-Modified-Since", "yesterday")], False),
        ([], False),
    ],
)
def test_not_modified(request_fields: Headers, expected: bool) -> None:
    assert not_modified(request_fields, STORED) is expected


def test_if_none_match_without_stored_etag() -> None:
    stored = [("Last-Modified", LAST_MODIFIED)]
    assert not not_modified([("If-None-Match", '"v1"'), ("If-Modified-Since", LATER)], stored)
    assert not_modified([("If-None-Match", "*")], stored)


def test_if_modified_since_falls_back_to_date() -> None:
    stored = [("Date", LAST_MODIFIED)]
    assert not_modified([("If-Modified-Since", LAST_MODIFIED)], stored)
    assert not not_modified([("If-Modified-Since", EARLIER)], stored)
    assert not not_modified([("If-Modified-Since", LATER)], [("Date", "bogus")])


def test_headers_for_304() -> None:
    assert headers_for_304([*STORED, ("Expires", "0"), ("Content-Location", "/x")]) == [
        ("Date", "Mon, 07 Nov 1994 00:00:00 GMT"),
        ("ETag", '"v1"'),
        ("Last-Modified", LAST_MODIFIED),
        ("Cache-Control", "max-age=60"),
        ("Vary", "Accept-Encoding"),
        ("Expires", "0"),
        ("Content-Location", "/x"),
    ]


def test_validation_headers() -> None:
    assert validation_headers(STORED) == [("If-None-Match", '"v1"'), ("If-Modified-Since", LAST_MODIFIED)]
    assert validation_headers([("ETag", 'W/"w"')]) == [("If-None-Match", 'W/"w"')]
    assert validation_headers([("Last-Modified", LAST_MODIFIED)]) == [("If-Modified-Since", LAST_MODIFIED)]
    assert validation_headers([("Content-Type", "text/plain")]) == []


def test_merge_304_replaces_fields_of_the_same_name() -> None:
    update = [("date", "Tue, 08 Nov 1994 00:00:00 GMT"), ("Cache-Control", "max-age=120"), ("X-New", "1")]
    merged = merge_304(STORED, update)
    assert merged == [
        ("Content-Type", "text/html"),
        ("Content-Length", "42"),
        ("ETag", '"v1"'),
        ("Last-Modified", LAST_MODIFIED),
        ("Vary", "Accept-Encoding"),
        ("Set-Cookie-Free", "x"),
        *update,
    ]


def test_merge_304_keeps_framing_and_drops_hop_by_hop() -> None:
    update = [
        ("Content-Length", "0"),
        ("Content-Encoding", "gzip"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Range", "bytes 0-1/2"),
        ("Connection", "X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
    ]
    assert merge_304(STORED, update) == STORED


def test_merge_304_replaces_every_repeat() -> None:
    stored = [("Warning", "a"), ("X", "1"), ("warning", "b")]
    assert merge_304(stored, [("Warning", "c")]) == [("X", "1"), ("Warning", "c")]
