"""Conditional requests: answering them from cache and revalidating upstream.

How: :func:`not_modified` evaluates a client's ``If-None-Match`` /
``If-Modified-Since`` against a stored response, as RFC 9110 §13.2.2 orders
it for GET and HEAD: ``If-None-Match`` (weak comparison, ``*`` matches any
stored response) decides alone when present; otherwise ``If-Modified-Since``
is compared with the stored ``Last-Modified`` (or ``Date`` when there is
none); an invalid date means the condition is ignored (full response). A true
answer means "send 304 with :func:`headers_for_304`".

When a stored response needs validation, :func:`validation_headers` gives the
conditional fields to send upstream (RFC 9111 §4.3.1); a 304 answer is
folded into the stored headers with :func:`merge_304` (RFC 9111 §4.3.4),
which never lets the 304 change how the stored body is framed or encoded.
Before that, :func:`freshens` checks that the 304 is about the stored
response at all (RFC 9111 §4.3.4's selection): a strong ETag in the 304 must
be the stored one; else a weak ETag or Last-Modified must match the stored
one. A 304 naming another representation updates nothing (the fetch asks
again without conditions). A 304 with no validator at all is taken as
confirming the one response we asked about: the conditional request was made
from that stored response's own validators (the RFC's "no validator" case
has the client invent an If-Modified-Since, which a fill never does).

Which stored fields a 304 replaces (RFC 9111 §3.2): all that it carries, except
those never stored (hop-by-hop, ``Connection``-listed, the proxy's own
``Proxy-Authenticate``/``Proxy-Authentication-Info``), ``Content-Length``
(a MUST), and, as §3.2 allows a cache that stores "the results of processing",
``Content-Encoding``, ``Transfer-Encoding`` and ``Content-Range``, which
describe the bytes we hold. ``Content-Type``, ``ETag``, ``Cache-Control``,
``Expires``, ``Vary`` and the rest are updated.

Entity-tags are parsed by a small scanner rather than :func:`split_list`:
an entity-tag may contain commas and backslashes that are not escapes.
"""

from __future__ import annotations

from edgefleet.cache.wire.headers import HOP_BY_HOP, Headers, connection_listed, get, get_all, parse_http_date

FIELDS_OF_304 = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"})
"""Stored fields a 304 carries (RFC 9110 §15.4.5)."""

NOT_UPDATED_BY_304 = (
    frozenset({"content-length", "content-encoding", "transfer-encoding", "content-range", "proxy-authentication-info"})
    | frozenset({"set-cookie", "set-cookie2"})
    | HOP_BY_HOP
)
"""Stored fields a 304 never replaces or adds: they describe the stored body's framing and encoding (RFC 9111
§3.2), or (cookies) are one client's own: a response with them is never stored, so a 304's must not be either,
or every later client revalidating the entry would be handed them."""

_OWS = " \t"


def entity_tags(value: str) -> list[str]:
    """Entity-tags (``"x"`` or ``W/"x"``) of an If-Match/If-None-Match list; scanning stops at malformed input."""
    tags: list[str] = []
    position, end = 0, len(value)
    while position < end:
        char = value[position]
        if char in " \t,":
            position += 1
            continue
        start = position
        if value.startswith('W/"', position):
            position += 2
        elif char != '"':
            break
        closing = value.find('"', position + 1)
        if closing < 0:
            break
        tags.append(value[start : closing + 1])
        position = closing + 1
    return tags


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def strong_etag_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison: both strong and identical."""
    return a == b and not a.startswith("W/")


def weak_etag_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: identical opaque tags, weakness ignored."""
    return _opaque(a) == _opaque(b)


def not_modified(request_headers: Headers, stored_headers: Headers) -> bool:
    """RFC 9110 §13.2.2 for GET/HEAD answered from cache: may we answer 304?"""
    if_none_match = get(request_headers, "if-none-match")
    if if_none_match is not None:
        if if_none_match.strip(_OWS) == "*":
            return True
        etag = _first(stored_headers, "etag")
        return etag is not None and any(weak_etag_match(tag, etag) for tag in entity_tags(if_none_match))
    if_modified_since = parse_http_date(get(request_headers, "if-modified-since"))
    if if_modified_since is None:
        return False
    last_modified = parse_http_date(_first(stored_headers, "last-modified"))
    if last_modified is None:
        last_modified = parse_http_date(_first(stored_headers, "date"))
    return last_modified is not None and last_modified <= if_modified_since


def _first(headers: Headers, name: str) -> str | None:
    values = get_all(headers, name)
    return values[0].strip(_OWS) if values else None


def headers_for_304(stored_headers: Headers) -> Headers:
    """The stored fields a 304 answer carries: those of :data:`FIELDS_OF_304`, in stored order."""
    return [(name, value) for name, value in stored_headers if name.lower() in FIELDS_OF_304]


def validation_headers(stored_headers: Headers) -> Headers:
    """Conditional fields for revalidating a stored response upstream: If-None-Match and/or If-Modified-Since."""
    conditions: Headers = []
    etag = _first(stored_headers, "etag")
    if etag:
        conditions.append(("If-None-Match", etag))
    last_modified = _first(stored_headers, "last-modified")
    if last_modified:
        conditions.append(("If-Modified-Since", last_modified))
    return conditions


def merge_304(stored_headers: Headers, not_modified_headers: Headers) -> Headers:
    """RFC 9111 §4.3.4: the 304's fields replace stored ones of the same name, framing and hop-by-hop excepted.

    Stored fields keep their order; replacements are appended in the 304's order.
    """
    excluded = NOT_UPDATED_BY_304 | connection_listed(not_modified_headers)
    updates = [(name, value) for name, value in not_modified_headers if name.lower() not in excluded]
    if not updates:
        return list(stored_headers)
    replaced = {name.lower() for name, _ in updates}
    return [(name, value) for name, value in stored_headers if name.lower() not in replaced] + updates


def freshens_as_well(stored_headers: Headers, not_modified_headers: Headers) -> bool:
    """RFC 9111 §4.3.4: does this 304 also update a stored response it was not asked about (another variant)?

    Only through a strong validator: all stored responses with the 304's strong ETag are identified for
    update. Weak validators (a weak ETag, Last-Modified) identify only the most recent matching response,
    which is the one the conditional request was sent for.
    """
    etag = _first(not_modified_headers, "etag")
    if etag is None or etag.startswith("W/"):
        return False
    stored_etag = _first(stored_headers, "etag")
    return stored_etag is not None and strong_etag_match(etag, stored_etag)


def freshens(stored_headers: Headers, not_modified_headers: Headers) -> bool:
    """RFC 9111 §4.3.4: may this 304 update the stored response (is it about the same representation)?

    A strong ETag in the 304 must equal the stored ETag; otherwise a weak ETag must match it weakly and a
    Last-Modified must equal the stored one; a 304 without validators confirms the response we asked about.
    """
    etag = _first(not_modified_headers, "etag")
    stored_etag = _first(stored_headers, "etag")
    if etag is not None:
        if not etag.startswith("W/"):
            return stored_etag is not None and strong_etag_match(etag, stored_etag)
        if stored_etag is None or not weak_etag_match(etag, stored_etag):
            return False
    last_modified = _first(not_modified_headers, "last-modified")
    if last_modified is None:
        return True
    stored_last_modified = parse_http_date(_first(stored_headers, "last-modified"))
    return stored_last_modified is not None and stored_last_modified == parse_http_date(last_modified)
