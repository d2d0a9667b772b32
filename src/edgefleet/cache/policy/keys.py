"""Cache keys: which stored object answers a request.

How: the primary key, :func:`cache_key`, is ``scheme://host/path?query``
with the host lowercased and its port removed, the path kept byte for
byte (no percent-decoding: ``/a%2Fb`` and ``/a/b`` may be different resources
to the origin) and the query shaped by the Domain's ``queryString`` mode:

- ``keep``: as sent;
- ``ignore``: dropped (the origin serves the same object for every query);
- ``sort``: parameters sorted by name, then value, so that ``?b=2&a=1`` and
  ``?a=1&b=2`` share one object; empty parameters (``&&``) are dropped;
- ``allowList``: only parameters whose name is listed, sorted the same way.

Parameter names and values are compared as sent (no decoding). A fragment
(``#...``, which a client must not send, RFC 9110 §7.1) is dropped, so
that no request can name a slice key. The common case, a path without
query, costs one string join.

Slices of a large object are stored under :func:`slice_key`,
``<key>#slice=<n>``: the object's key, so a purge by prefix reaches them,
followed by a ``#`` that no primary key contains.

The secondary key, :func:`variant_key`, picks among the variants of a
response that says ``Vary`` (RFC 9111 §4.1): it lists, for each varying field
(sorted lowercase names, from :func:`parse_vary`), the request's normalised
value, or the bare name when the field is absent, so that "absent" and
"empty" are different variants. Normalisation collapses whitespace around
commas and joins repeated fields; ``Accept-Encoding`` is also compared
case-insensitively and order-insensitively, since clients differ only in
spelling (``gzip, br`` versus ``br,gzip``) and a CDN would otherwise store
many copies of one variant. The values of fields whose grammar is
case-insensitive (:data:`CASE_INSENSITIVE_VARY`: language tags and charsets;
content codings above) are lowercased, keeping their order (which may rank
them). ``Accept`` is not: media type parameter values may be case-sensitive.
``Vary: *`` never matches (such responses are not stored). Entries are
separated by ``\\n``, which cannot occur in a field value.

Variants are bounded: a key keeps at most :data:`MAX_VARIANTS` of them (the
storage tiers drop the oldest beyond it), since a client that
varies a header value at will (``Vary: User-Agent``, made-up languages) could
otherwise fill the cache with copies of one URL and make every lookup of it
scan them all (Apache Traffic Server keeps 5 alternates by default,
``proxy.config.cache.limits.http.max_alts``).
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache

from edgefleet.cache.wire.headers import Headers, get_all, split_list

QUERY_MODES = frozenset({"keep", "ignore", "sort", "allowList"})
MAX_VARIANTS = 32
"""Most variants (Vary) stored per primary key; the least recently used one goes first."""
CASE_INSENSITIVE_VARY = frozenset({"accept-language", "accept-charset"})
"""Request fields whose values compare case-insensitively (RFC 9110 §12.5): lowercased in the secondary key."""
SLICE_MARK = "#slice="
"""Between an object's key and a slice number, in the key of a stored slice."""
_OWS = " \t"


def cache_key(scheme: str, host: str, target: str, mode: str, allow_list: Collection[str]) -> str:
    """The primary cache key of a request: ``scheme://host/path[?query]`` (see the module docstring)."""
    if mode not in QUERY_MODES:
        raise ValueError(f"unknown query string mode {mode!r}; expected one of {sorted(QUERY_MODES)}")
    host = host.lower()
    if "#" in target:
        target = target.partition("#")[0]
    host = _without_port(host)
    if "?" not in target or mode == "keep":
        return f"{scheme}://{host}{target}"
    path, _, query = target.partition("?")
    if mode == "ignore":
        return f"{scheme}://{host}{path}"
    if mode == "sort":
        query = _sorted_query(query.split("&"))
    else:  # allowList
        query = _sorted_query([param for param in query.split("&") if param.partition("=")[0] in allow_list])
    return f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"


def _without_port(host: str) -> str:
    """The Host without its port: the port belongs to the listener, not to the Domain's URLs.

    A node's cache may listen on 8081 while purges, prefetches and peers name
    ``http://demo.example/...``; keying by the port would split one object in
    two and make a purge miss the copy a client fetched through the port.
    """
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    colon = host.rfind(":")
    return host[:colon] if colon != -1 and host.count(":") == 1 else host


def slice_key(key: str, index: int) -> str:
    """The key slice ``index`` of the object at ``key`` is stored under."""
    return f"{key}{SLICE_MARK}{index}"


def _sorted_query(params: list[str]) -> str:
    return "&".join(sorted((param for param in params if param), key=_param_order))


def _param_order(param: str) -> tuple[str, str]:
    name, _, value = param.partition("=")
    return name, value


def parse_vary(response_headers: Headers) -> tuple[str, ...] | None:
    """Lowercase, sorted, de-duplicated field names of ``Vary``; ``()`` when absent; ``None`` for ``*``."""
    names: set[str] = set()
    for value in get_all(response_headers, "vary"):
        names.update(name.lower() for name in split_list(value))
    if "*" in names:
        return None
    return tuple(sorted(names))


def variant_key(vary: tuple[str, ...], request_headers: Headers) -> str:
    """The secondary key: the request's normalised values of the ``vary`` fields; ``""`` when ``vary`` is empty."""
    if not vary:
        return ""
    entries = []
    for name in vary:
        values = get_all(request_headers, name)
        if not values:
            entries.append(name)
        elif name == "accept-encoding":
            entries.append(f"{name}={_normalised_accept_encoding(','.join(values))}")
        elif name in CASE_INSENSITIVE_VARY:
            entries.append(f"{name}={_normalised_list(','.join(values)).lower()}")
        else:
            entries.append(f"{name}={_normalised_list(','.join(values))}")
    return "\n".join(entries)


def _normalised_list(value: str) -> str:
    if "," not in value:
        return value.strip(_OWS)
    return ",".join(item for item in (piece.strip(_OWS) for piece in value.split(",")) if item)


@lru_cache(maxsize=256)
def _normalised_accept_encoding(value: str) -> str:
    codings = {"".join(item.lower().split()) for item in value.split(",")}
    codings.discard("")
    return ",".join(sorted(codings))
