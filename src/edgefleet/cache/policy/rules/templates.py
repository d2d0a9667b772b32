"""``${...}`` templates, compiled once into a list of parts and rendered per request.

How: :func:`compile_template` uses the schema's parser (:func:`edgefleet.api.rules.parse_template`,
so admission and the engine read templates alike) and turns each reference into a getter on the
:class:`~edgefleet.cache.policy.rules.context.Context`. Rendered values are made safe for where they go
(:func:`for_path`, :func:`for_query`, :func:`for_header`): a header value copied into a path cannot add
a space, a ``#`` or a CR/LF.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from edgefleet.api.rules import TemplateRef, parse_template
from edgefleet.cache.policy.rules.context import Context

Getter = Callable[[Context], str]
Rendered = Callable[[Context], str]


def _field(name: str) -> Getter:
    if name == "path":
        return lambda ctx: ctx.path
    if name == "query":
        return lambda ctx: ctx.query
    if name == "uri":
        return lambda ctx: f"{ctx.path}?{ctx.query}" if ctx.query else ctx.path
    if name == "host":
        return lambda ctx: ctx.request.host
    if name == "scheme":
        return lambda ctx: ctx.request.scheme
    if name == "method":
        return lambda ctx: ctx.request.method
    if name == "clientIp":
        return lambda ctx: ctx.client()
    if name == "country":
        return lambda ctx: (ctx.geo() or ("", ""))[0]
    if name == "region":
        return lambda ctx: (ctx.geo() or ("", ""))[1]
    return _family(name)


def _family(name: str) -> Getter:
    family, _, member = name.partition(".")
    if family == "header" and member:
        lower = member.lower()
        return lambda ctx: ctx.header(lower) or ""
    if family == "query" and member:
        return lambda ctx: ctx.param(member) or ""
    if family == "cookie" and member:
        return lambda ctx: ctx.cookie(member) or ""
    group: int | str = int(name) if name.isdigit() else name
    return lambda ctx: (ctx.captures.group(group) or "") if ctx.captures is not None else ""


def compile_template(text: str) -> Rendered:
    """A function rendering ``text`` for a request; ValueError if the template is malformed."""
    parts: list[str | Getter] = []
    for part in parse_template(text):
        parts.append(_field(part.name) if isinstance(part, TemplateRef) else part)
    if all(isinstance(part, str) for part in parts):
        constant = "".join(part for part in parts if isinstance(part, str))
        return lambda ctx: constant

    def render(ctx: Context) -> str:
        return "".join([part if isinstance(part, str) else part(ctx) for part in parts])

    return render


_UNSAFE_PATH = re.compile(r'[\x00-\x20#?"<>\\^`{|}\x7f-\U0010ffff]')
_UNSAFE_QUERY = re.compile(r'[\x00-\x20#"<>\\^`{|}\x7f-\U0010ffff]')
_UNSAFE_LOCATION = re.compile(r'[\x00-\x20"<>\\^`{|}\x7f-\U0010ffff]')
"""Characters percent-encoded where a rendered value goes: controls, space, non-ASCII and the delimiters
that would change the meaning of the result (``?`` and ``#`` in a path, ``#`` in a query)."""


def _percent(found: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in found.group().encode("utf-8", "surrogatepass"))


def _escape(text: str, unsafe: re.Pattern[str]) -> str:
    return unsafe.sub(_percent, text) if unsafe.search(text) else text


def for_path(text: str) -> str:
    """A rendered path: percent-encodes what may not appear in one; starts with '/'."""
    path = _escape(text, _UNSAFE_PATH)
    return path if path.startswith("/") else "/" + path


def for_query(text: str) -> str:
    """A rendered query string (without '?')."""
    return _escape(text.removeprefix("?"), _UNSAFE_QUERY)


def for_location(text: str) -> str:
    """A rendered Location: spaces and controls percent-encoded."""
    return _escape(text, _UNSAFE_LOCATION)


def for_header(text: str) -> str:
    """A rendered header value: CR, LF and other controls (but tab) dropped."""
    if text.isprintable():
        return text
    return "".join(ch for ch in text if ch == "\t" or (ord(ch) >= 32 and ord(ch) != 127))
