"""Range requests: parsing, If-Range, Content-Range, multipart planning and slicing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.cache.errors import CacheError
from edgefleet.cache.policy.ranges import (
    Unsatisfiable,
    content_range,
    if_range_matches,
    multipart_byteranges,
    multipart_content_type,
    parse_range,
    slices_for,
    unsatisfied_range,
)
from edgefleet.cache.wire.headers import format_http_date


@pytest.mark.parametrize(
    ("value", "size", "ranges"),
    [
        ("bytes=0-499", 10000, [(0, 499)]),
        ("bytes=500-999", 10000, [(500, 999)]),
        ("bytes=-500", 10000, [(9500, 9999)]),
        ("bytes=9500-", 10000, [(9500, 9999)]),
        ("bytes=0-0,-1", 10000, [(0, 0), (9999, 9999)]),
        ("bytes=0-0,-1", 1, [(0, 0)]),
        ("bytes=-500", 100, [(0, 99)]),
        ("bytes=0-999999", 100, [(0, 99)]),
        ("bytes=500-600,601-999", 10000, [(500, 999)]),
        ("bytes=500-700,601-999", 10000, [(500, 999)]),
        ("bytes=900-999, 0-9", 10000, [(0, 9), (900, 999)]),
        ("Bytes = 1-2", 10, [(1, 2)]),
        ("bytes=5-5, 200-300", 10, [(5, 5)]),
        ("bytes=,0-1,", 10, [(0, 1)]),
        ("bytes=0-99999999999999999999999999", 10, [(0, 9)]),
        ("bytes=-99999999999999999999999999", 10, [(0, 9)]),
    ],
)
def test_parse_range(value: str, size: int, ranges: list[tuple[int, int]]) -> None:
    assert parse_range(value, size) == ranges


@pytest.mark.parametrize(
    "value",
    [
        "items=0-1",
        "bytes 0-1",
        "bytes=",
        "bytes=,",
        "bytes=1",
        "bytes=a-b",
        "bytes=5-1",
        "bytes=-",
        "bytes=0-1,x",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=0x1-2",
        "bytes=\u0661-2",
    ],
)
def test_invalid_range_is_ignored(value: str) -> None:
    assert parse_range(value, 100) is None


def test_too_many_ranges_is_ignored() -> None:
    seventeen = "bytes=" + ",".join(f"{index}-{index}" for index in range(17))
    assert parse_range(seventeen, 100) is None
    sixteen = "bytes=" + ",".join(f"{index}-{index}" for index in range(16))
    assert parse_range(sixteen, 100) == [(0, 15)]
    assert parse_range("bytes=0-1,5-6", 100, max_ranges=1) is None


@pytest.mark.parametrize(("value", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-0", 0), ("bytes=-5", 0)])
def test_unsatisfiable(value: str, size: int) -> None:
    with pytest.raises(Unsatisfiable) as caught:
        parse_range(value, size)
    assert isinstance(caught.value, CacheError)
    assert caught.value.size == size


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 300)), st.one_of(st.none(), st.integers(0, 300))),
        min_size=1,
        max_size=16,
    ),
    st.integers(0, 200),
)
def test_ranges_are_within_size_sorted_and_disjoint(specs: list[tuple[int | None, int | None]], size: int) -> None:
    texts = []
    for first, last in specs:
        if first is None and last is None:
            continue
        texts.append(f"{'' if first is None else first}-{'' if last is None else last}")
    try:
        ranges = parse_range("bytes=" + ",".join(texts), size)
    except Unsatisfiable:
        return
    if ranges is None:
        return
    assert ranges
    for first, last in ranges:
        assert 0 <= first <= last < size
    for (_, previous_last), (next_first, _) in itertools.pairwise(ranges):
        assert previous_last + 1 < next_first


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "matches"),
    [
        (None, None, None, True),
        ('"v1"', '"v1"', None, True),
        ('"v1"', '"v2"', None, False),
        ('"v1"', 'W/"v1"', None, False),
        ('W/"v1"', 'W/"v1"', None, False),
        ('W/"v1"', '"v1"', None, False),
        ('"v1"', None, "Sun, 06 Nov 1994 08:49:37 GMT", False),
        ("Sun, 06 Nov 1994 08:49:37 GMT", '"v1"', "Sun, 06 Nov 1994 08:49:37 GMT", True),
        ("Sunday, 06-Nov-94 08:49:37 GMT", None, "Sun, 06 Nov 1994 08:49:37 GMT", True),
        ("Sun, 06 Nov 1994 08:49:38 GMT", None, "Sun, 06 Nov 1994 08:49:37 GMT", False),
        ("Sun, 06 Nov 1994 08:49:37 GMT", '"v1"', None, False),
        ("garbage", None, "garbage", False),
    ],
)
def test_if_range(if_range: str | None, etag: str | None, last_modified: str | None, matches: bool) -> None:
    assert if_range_matches(if_range, etag, last_modified) is matches


def test_content_range_values() -> None:
    assert content_range(0, 499, 1234) == "bytes 0-499/1234"
    assert unsatisfied_range(1234) == "bytes */1234"
    assert multipart_content_type("B0UND") == "multipart/byteranges; boundary=B0UND"


def assemble(ranges: list[tuple[int, int]], body: bytes, content_type: str | None) -> tuple[bytes, int]:
    parts, closing, total = multipart_byteranges(ranges, len(body), content_type, "SEP")
    out = b"".join(head + body[first : last + 1] for head, first, last in parts) + closing
    return out, total


def test_multipart_byteranges_layout() -> None:
    out, total = assemble([(0, 2), (7, 9)], b"0123456789", "text/plain")
    assert out == (
        b"--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-2/10\r\n\r\n012"
        b"\r\n--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 7-9/10\r\n\r\n789"
        b"\r\n--SEP--\r\n"
    )
    assert total == len(out)


def test_multipart_without_content_type() -> None:
    out, total = assemble([(1, 1)], b"ab", None)
    assert out == b"--SEP\r\nContent-Range: bytes 1-1/2\r\n\r\nb\r\n--SEP--\r\n"
    assert total == len(out)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=5))
def test_multipart_total_length_is_exact(pairs: list[tuple[int, int]]) -> None:
    ranges = [(min(pair), max(pair)) for pair in pairs]
    out, total = assemble(ranges, bytes(range(51)), "application/octet-stream")
    assert total == len(out)


@pytest.mark.parametrize("boundary", ["", "a b", 'a"b', "x" * 71, "a\r\nb", "caf\u00e9"])
def test_invalid_boundary_is_a_bug(boundary: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        multipart_byteranges([(0, 0)], 1, None, boundary)


def test_slices_for() -> None:
    assert slices_for(0, 99, 100) == [(0, 99)]
    assert slices_for(150, 250, 100) == [(100, 199), (200, 299)]
    assert slices_for(199, 200, 100) == [(100, 199), (200, 299)]
    assert slices_for(5, 5, 1) == [(5, 5)]


@pytest.mark.parametrize(("first", "last", "size"), [(5, 4, 10), (-1, 4, 10), (0, 4, 0)])
def test_slices_for_rejects_bad_input(first: int, last: int, size: int) -> None:
    with pytest.raises(ValueError, match="slice"):
        slices_for(first, last, size)


@given(st.integers(0, 10**6), st.integers(0, 10**5), st.integers(64, 10**4))
def test_slices_cover_the_range_aligned(first: int, length: int, slice_size: int) -> None:
    last = first + length
    slices = slices_for(first, last, slice_size)
    assert slices[0][0] <= first and slices[-1][1] >= last
    assert all(start % slice_size == 0 and end - start + 1 == slice_size for start, end in slices)
    assert all(previous[1] + 1 == following[0] for previous, following in itertools.pairwise(slices))
    assert slices[0][0] > first - slice_size and slices[-1][1] < last + slice_size


def test_format_http_date_is_usable_for_if_range() -> None:
    stamp = format_http_date(784111777)
    assert if_range_matches(stamp, None, "Sun, 06 Nov 1994 08:49:37 GMT")
