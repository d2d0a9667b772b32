"""Canonical Host and request-target: one spelling per resource, before rules, keys and forwarding.

Why: a Host or a path that has several spellings for one resource lets a
client make several cache entries for it (so a purge of one spelling misses
the others), reach the origin with a spelling the cache did not match its
rules against (``/static/..%2fapi/me`` is under ``/static/`` for the cache
but may be ``/api/me`` for the origin), or forward a raw Host the origin
never expected. So the parser replaces both with their canonical form, and
everything after it (domain lookup, cache rules, cache keys, the request
sent upstream) sees only that form.

:func:`canonical_host` (RFC 9110 §7.2, RFC 3986 §3.2.2): lowercase, the
port dropped after it is checked (digits, at most 65535: the port belongs to
the listener, not to the Domain), one trailing dot dropped (``demo.x.`` is
``demo.x``); a name must be a DNS name (letters, digits, ``-``, ``_``,
labels of 1 to 63, at most 253 in all); an IPv6 literal must be one, in
brackets. Anything else (``[demo.x]``, ``demo.x:1:2``, a space) is a
malformed Host: 400.

:func:`canonical_target` (RFC 3986 §6.2.2), on the path only:

- percent-encodings of unreserved characters are decoded (``%41`` is
  ``A``, ``%2e`` is ``.``), the others are kept, in upper case (``%2f`` is
  ``%2F``); a ``%`` not followed by two hex digits is refused (400);
- duplicate slashes are merged (``//api/`` is ``/api/``), as nginx does;
- dot segments are removed (RFC 3986 §5.2.4), so ``/static/../api/me`` is
  ``/api/me``, and a path cannot climb above ``/``;
- an encoded separator is never decoded into one (``%2F`` stays, so
  ``/a%2Fb`` and ``/a/b`` stay two resources), but a path is refused (400)
  when reading ``%2F``, ``%5C`` or ``\\`` as a separator would leave a dot
  segment in it (``/static/..%2fapi/me``): an origin that decodes them would
  resolve the path outside the rule the cache matched it against.

The query is left as sent (the Domain's ``queryString`` mode decides how it
keys) and a fragment, which a client must not send, is dropped (so no
request names a slice key, ``<key>#slice=<n>``, even on the hit fast path).
The common target (no ``%``, ``/.``, ``//``, ``#`` or backslash) costs five
substring checks and is returned as is.
"""

from __future__ import annotations

import ipaddress
import re

from edgefleet.cache.errors import BadRequest

MAX_HOST_CACHE = 4096
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_SEPARATOR_SPELLINGS = re.compile(r"%2[fF]|%5[cC]|\\")

HOSTS: dict[str, str] = {}
"""Host values seen -> canonical host (the parser looks here first: one dict lookup per request)."""


def canonical_host(value: str) -> str:
    """The canonical host of a Host header value (see the module docstring); BadRequest(400) if malformed."""
    try:
        return HOSTS[value]
    except KeyError:
        pass
    host = _canonical_host(value)
    if len(HOSTS) < MAX_HOST_CACHE:
        HOSTS[value] = host
    return host


def _canonical_host(value: str) -> str:
    text = value.lower()
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and rest[0] != ":"):
            raise BadRequest(400, f"malformed Host {value!r}")
        _check_port(rest[1:], value)
        try:
            return f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            raise BadRequest(400, f"malformed Host {value!r}: not an IPv6 address in brackets") from None
    name, _, port = text.partition(":")
    _check_port(port, value)
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise BadRequest(400, f"malformed Host {value!r}")
    return name


def _check_port(port: str, value: str) -> None:
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        raise BadRequest(400, f"malformed Host {value!r}: bad port")


def canonical_target(target: str) -> str:
    """The request-target in canonical form (see the module docstring); BadRequest(400) if it cannot be."""
    if "%" not in target and "/." not in target and "//" not in target and "#" not in target and "\\" not in target:
        return target
    target = target.partition("#")[0]
    path, question, query = target.partition("?")
    path = _remove_dot_segments(_merge_slashes(_decode_unreserved(path)))
    if _SEPARATOR_SPELLINGS.search(path):
        spelled = _SEPARATOR_SPELLINGS.sub("/", path)
        if any(segment in (".", "..") for segment in spelled.split("/")):
            raise BadRequest(400, "encoded path separator next to a dot segment")
    return path + question + query


def _decode_unreserved(path: str) -> str:
    if "%" not in path:
        return path
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise BadRequest(400, "malformed percent-encoding in the path")
        char = chr(int(piece[:2], 16))
        out.append((char if char in _UNRESERVED else "%" + piece[:2].upper()) + piece[2:])
    return "".join(out)


def _merge_slashes(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: ``.`` dropped, ``..`` removes the segment before it."""
    if "/." not in path:
        return path
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = "/" if segments[-1] in (".", "..") else ""
    return "/" + "/".join(out) + trailing if out else "/"
