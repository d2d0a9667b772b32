"""Cache keys: primary key from the URL, secondary key from Vary."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.cache.policy.keys import cache_key, parse_vary, variant_key


def test_host_lowercased_and_any_port_stripped() -> None:
    assert cache_key("http", "WWW.Example.COM:80", "/a", "keep", ()) == "http://www.example.com/a"
    assert cache_key("https", "example.com:443", "/a", "keep", ()) == "https://example.com/a"
    assert cache_key("http", "example.com:8081", "/a", "keep", ()) == "http://example.com/a"  # the listener's port
    assert cache_key("https", "example.com:8443", "/a", "keep", ()) == "https://example.com/a"
    assert cache_key("http", "[::1]:80", "/", "keep", ()) == "http://[::1]/"
    assert cache_key("http", "[::1]", "/", "keep", ()) == "http://[::1]/"


def test_path_is_byte_exact() -> None:
    assert cache_key("http", "h", "/A%2Fb/%7e", "keep", ()) == "http://h/A%2Fb/%7e"
    assert cache_key("http", "h", "/a/b", "keep", ()) != cache_key("http", "h", "/a%2Fb", "keep", ())


def test_query_modes() -> None:
    target = "/p?b=2&a=1&c=3&a=0"
    assert cache_key("http", "h", target, "keep", ()) == "http://h/p?b=2&a=1&c=3&a=0"
    assert cache_key("http", "h", target, "ignore", ()) == "http://h/p"
    assert cache_key("http", "h", target, "sort", ()) == "http://h/p?a=0&a=1&b=2&c=3"
    assert cache_key("http", "h", target, "allowList", ["a", "c"]) == "http://h/p?a=0&a=1&c=3"
    assert cache_key("http", "h", target, "allowList", ["zz"]) == "http://h/p"


def test_sort_orders_by_name_before_value() -> None:
    assert cache_key("http", "h", "/?a-b=1&a=2", "sort", ()) == "http://h/?a=2&a-b=1"
    assert cache_key("http", "h", "/?x&x=", "sort", ()) == "http://h/?x&x="


def test_sort_drops_empty_parameters_and_empty_query() -> None:
    assert cache_key("http", "h", "/p?&b=1&&a", "sort", ()) == "http://h/p?a&b=1"
    assert cache_key("http", "h", "/p?", "sort", ()) == "http://h/p"
    assert cache_key("http", "h", "/p?", "keep", ()) == "http://h/p?"


def test_no_query_is_the_same_in_every_mode() -> None:
    keys = {cache_key("http", "h", "/p", mode, ["a"]) for mode in ("keep", "ignore", "sort", "allowList")}
    assert keys == {"http://h/p"}


def test_unknown_mode_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown query string mode"):
        cache_key("http", "h", "/p", "shuffle", ())


_params = st.lists(st.tuples(st.text("abcxyz-_%2", min_size=1, max_size=4), st.text("0123=%", max_size=3)), max_size=8)


@given(_params, st.randoms(use_true_random=False))
def test_sort_mode_is_order_insensitive_and_deterministic(params: list[tuple[str, str]], rng: random.Random) -> None:
    query = "&".join(f"{name}={value}" for name, value in params)
    shuffled = list(params)
    rng.shuffle(shuffled)
    shuffled_query = "&".join(f"{name}={value}" for name, value in shuffled)
    key = cache_key("https", "H", f"/x?{query}", "sort", ())
    assert key == cache_key("https", "H", f"/x?{query}", "sort", ())
    assert key == cache_key("https", "H", f"/x?{shuffled_query}", "sort", ())
    assert key.startswith("https://h/x")


@given(_params)
def test_allow_list_keeps_only_listed_names(params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{name}={value}" for name, value in params)
    key = cache_key("http", "h", f"/x?{query}", "allowList", {"a", "b"})
    _, _, kept = key.partition("?")
    assert all(param.partition("=")[0] in {"a", "b"} for param in kept.split("&") if kept)


def test_parse_vary() -> None:
    assert parse_vary([]) == ()
    assert parse_vary([("Vary", "Accept-Language, accept-encoding"), ("vary", "Accept-Encoding")]) == (
        "accept-encoding",
        "accept-language",
    )
    assert parse_vary([("Vary", "Accept, *")]) is None
    assert parse_vary([("Vary", "")]) == ()


def test_vary_order_does_not_matter() -> None:
    assert parse_vary([("Vary", "A, B")]) == parse_vary([("Vary", "b,a")])


def test_variant_key_empty_vary() -> None:
    assert variant_key((), [("Accept-Encoding", "gzip")]) == ""


def test_variant_key_absent_differs_from_empty() -> None:
    vary = ("accept-language",)
    absent = variant_key(vary, [])
    empty = variant_key(vary, [("Accept-Language", "")])
    assert absent != empty
    assert empty == variant_key(vary, [("Accept-Language", " ")])


def test_variant_key_normalises_whitespace_and_repeats() -> None:
    vary = ("accept-language",)
    one = variant_key(vary, [("Accept-Language", "en , fr")])
    assert one == variant_key(vary, [("accept-language", "en"), ("Accept-Language", "fr")])
    assert one == variant_key(vary, [("Accept-Language", "en,fr")])
    assert one != variant_key(vary, [("Accept-Language", "fr,en")]), "order may rank languages: kept"
    assert one == variant_key(vary, [("Accept-Language", "EN,fr")]), "language tags are case-insensitive"
    assert variant_key(("x-variant",), [("X-Variant", "A")]) != variant_key(("x-variant",), [("X-Variant", "a")])


def test_variant_key_accept_encoding_is_case_and_order_insensitive() -> None:
    vary = ("accept-encoding",)
    key = variant_key(vary, [("Accept-Encoding", "gzip, br")])
    assert key == variant_key(vary, [("Accept-Encoding", "BR,gzip")])
    assert key == variant_key(vary, [("Accept-Encoding", "br"), ("Accept-Encoding", "gzip, gzip")])
    assert key != variant_key(vary, [("Accept-Encoding", "gzip")])
    assert variant_key(vary, [("Accept-Encoding", "gzip;q=0.5")]) == variant_key(
        vary, [("Accept-Encoding", "gzip; q=0.5")]
    )


def test_variant_key_keeps_fields_apart() -> None:
    vary = ("accept", "accept-language")
    first = variant_key(vary, [("Accept", "a"), ("Accept-Language", "b")])
    swapped = variant_key(vary, [("Accept", "b"), ("Accept-Language", "a")])
    only_first = variant_key(vary, [("Accept", "a")])
    assert len({first, swapped, only_first}) == 3
