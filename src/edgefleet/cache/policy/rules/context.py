"""One request's view for the rules: parsed lazily, so a rule pays only for the fields it reads.

How: :class:`Context` wraps the :class:`~edgefleet.cache.policy.rules.model.RequestInfo` and the current
path and query (earlier rules may have rewritten them). ``dynamic`` records whether anything beyond the
method, scheme, host, path and query was read (headers, cookies, the client, geo; actions set it for the
clock and random draws), which makes an outcome ``static`` (see ``RequestOutcome``). Header, cookie and
query parameter tables are built on first use, the geo lookup is done once, and the last path-regex
match is kept for templates (``${1}``, ``${name}``). In response phases it also holds the response
status and headers.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from edgefleet.cache.policy.rules.model import GeoLookup, RequestInfo
from edgefleet.cache.wire.headers import Headers

_UNSET: tuple[str, str] = ("", "")


class Context:
    """The request (and, in response phases, the response) as the conditions and templates read them."""

    __slots__ = (
        "_cookies",
        "_geo",
        "_geo_lookup",
        "_headers",
        "_params",
        "_params_of",
        "_response_headers",
        "captures",
        "dynamic",
        "path",
        "query",
        "request",
        "response",
        "status",
    )

    def __init__(self, request: RequestInfo, geo: GeoLookup | None) -> None:
        self.request = request
        self.path = request.path
        self.query = request.query
        self.captures: re.Match[str] | None = None
        self.dynamic = False
        """Set once anything but method, scheme, host, path and query was read (or the clock, or a draw)."""
        self.status = 0
        self.response: Headers | None = None
        self._geo_lookup = geo
        self._geo: tuple[str, str] | None = _UNSET
        self._headers: dict[str, str] | None = None
        self._response_headers: dict[str, str] | None = None
        self._cookies: dict[str, str] | None = None
        self._params: dict[str, str] | None = None
        self._params_of = ""

    def header(self, name: str) -> str | None:
        """A request header (lowercase ``name``); repeated fields joined with ', '."""
        self.dynamic = True
        if self._headers is None:
            self._headers = _table(self.request.headers)
        return self._headers.get(name)

    def response_header(self, name: str) -> str | None:
        self.dynamic = True
        if self._response_headers is None:
            self._response_headers = _table(self.response or [])
        return self._response_headers.get(name)

    def cookie(self, name: str) -> str | None:
        self.dynamic = True
        if self._cookies is None:
            self._cookies = parse_cookies(self.header("cookie") or "")
        return self._cookies.get(name)

    def param(self, name: str) -> str | None:
        """The first value of a query parameter of the current query, percent-decoded."""
        if self._params is None or self._params_of != self.query:
            self._params = parse_query(self.query)
            self._params_of = self.query
        return self._params.get(name)

    def client(self) -> str:
        """The client's address."""
        self.dynamic = True
        return self.request.client_ip

    def geo(self) -> tuple[str, str] | None:
        """(country, region) of the client, or None."""
        self.dynamic = True
        if self._geo is _UNSET:
            self._geo = self._geo_lookup(self.request.client_ip) if self._geo_lookup is not None else None
        return self._geo


def _table(headers: Headers) -> dict[str, str]:
    table: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        table[key] = f"{table[key]}, {value}" if key in table else value
    return table


def parse_cookies(header: str) -> dict[str, str]:
    """``a=1; b=2`` -> {a: 1, b: 2}; the first of repeated names wins; malformed pairs are skipped."""
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, eq, value = pair.strip().partition("=")
        if eq and name and name not in cookies:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies[name] = value
    return cookies


def parse_query(query: str) -> dict[str, str]:
    """``a=1&b=x%20y`` -> {a: 1, b: 'x y'}; the first of repeated names wins; a bare name has value ''."""
    params: dict[str, str] = {}
    if not query:
        return params
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = unquote_plus(name)
        if name not in params:
            params[name] = unquote_plus(value)
    return params


def drop_params(query: str, names: frozenset[str]) -> str:
    """``query`` without the parameters named (compared decoded), the others kept as sent."""
    return "&".join(pair for pair in query.split("&") if pair and unquote_plus(pair.partition("=")[0]) not in names)
