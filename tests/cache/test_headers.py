"""Header lists: lookups, hop-by-hop fields, list splitting and HTTP-dates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.cache.wire.headers import (
    HOP_BY_HOP,
    Headers,
    connection_listed,
    format_http_date,
    get,
    get_all,
    parse_http_date,
    split_list,
    without,
)

SAMPLE: Headers = [
    ("Content-Type", "text/html"),
    ("Vary", "Accept-Encoding"),
    ("set-cookie", "a=1"),
    ("VARY", "Accept-Language"),
    ("Set-Cookie", "b=2"),
]
NOV_6_1994 = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp()


def test_get_is_case_insensitive_and_joins_repeats() -> None:
    assert get(SAMPLE, "content-type") == "text/html"
    assert get(SAMPLE, "CONTENT-TYPE") == "text/html"
    assert get(SAMPLE, "vary") == "Accept-Encoding, Accept-Language"
    assert get(SAMPLE, "etag") is None
    assert get([("Empty", "")], "empty") == ""


def test_get_all_keeps_order() -> None:
    assert get_all(SAMPLE, "Set-Cookie") == ["a=1", "b=2"]
    assert get_all(SAMPLE, "age") == []


def test_without_drops_fields_in_any_case() -> None:
    assert without(SAMPLE, {"vary", "set-cookie"}) == [("Content-Type", "text/html")]
    assert without(SAMPLE, ()) == SAMPLE


def test_hop_by_hop_fields() -> None:
    assert {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"} <= HOP_BY_HOP
    assert {"proxy-connection", "proxy-authenticate", "proxy-authorization"} <= HOP_BY_HOP
    assert "content-length" not in HOP_BY_HOP


def test_connection_listed_names_are_lowercased() -> None:
    headers = [("Connection", "close, X-Trace"), ("connection", " Keep-Alive ,,")]
    assert connection_listed(headers) == {"close", "x-trace", "keep-alive"}
    assert connection_listed([]) == set()


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        (" , a,,\tb , ", ["a", "b"]),
        ("", []),
        ('private="a, b", max-age=5', ['private="a, b"', "max-age=5"]),
        ('x="q\\"uote, y", z', ['x="q\\"uote, y"', "z"]),
        ('W/"a,b", "c"', ['W/"a,b"', '"c"']),
    ],
)
def test_split_list(value: str, items: list[str]) -> None:
    assert split_list(value) == items


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ],
)
def test_parse_http_date_accepts_the_three_forms(value: str) -> None:
    assert parse_http_date(value) == NOV_6_1994


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "0",
        "-1",
        "tomorrow",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 0x Nov 1994 08:49:37 GMT",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # Arabic-Indic digits are not HTTP digits
    ],
)
def test_parse_http_date_rejects_invalid(value: str | None) -> None:
    assert parse_http_date(value) is None


def test_rfc850_two_digit_years() -> None:
    assert parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT") == 0.0
    assert parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT") == datetime(2000, 1, 1, tzinfo=UTC).timestamp()


def test_leap_second_is_accepted() -> None:
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == datetime(2017, 1, 1, tzinfo=UTC).timestamp()


def test_format_http_date() -> None:
    assert format_http_date(NOV_6_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(NOV_6_1994 + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@given(st.integers(min_value=0, max_value=253402300799))
def test_format_then_parse_round_trips(second: int) -> None:
    assert parse_http_date(format_http_date(second)) == second
