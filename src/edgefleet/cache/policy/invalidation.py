"""Invalidation after unsafe methods (RFC 9111 §4.4): which stored URLs a response makes stale.

How: the pass-through path asks :func:`invalidates` once an unsafe request got
its answer: a non-error status (2xx or 3xx) to a method other than GET, HEAD,
OPTIONS and TRACE means the target resource has likely changed. Its stored
responses, every variant and slice, are then invalidated (the proxy marks them
stale: the next request revalidates). :func:`related_targets` gives the other
URLs the RFC names as candidates, those of ``Location`` and
``Content-Location``, resolved against the request URI, as canonical request
targets (``/path?query``), but only when they are on the request's own host:
§4.4 forbids invalidating another origin's URLs, which would let one site's
POST answers throw another site's objects out of a shared cache.

Where the RFC leaves room: "same origin" is read as "same host". The cache keys
objects by host, without scheme or port (``keys.cache_key``), so a
``Location: https://same.host/x`` names the same stored object as
``http://same.host/x``. Methods we do not know are not forwarded at all (501,
``Proxy.check_head``), so the "unknown methods invalidate too" case cannot
arise. At most :data:`MAX_RELATED` URLs are taken from one response.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from edgefleet.cache.errors import BadRequest
from edgefleet.cache.wire.headers import Headers, get_all
from edgefleet.cache.wire.targets import canonical_host, canonical_target

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""RFC 9110 §9.2.1: the methods that do not change the resource; every other one invalidates."""

RELATED_FIELDS = ("location", "content-location")
MAX_RELATED = 4
"""At most this many Location/Content-Location URLs are invalidated per response (a bound on hostile answers)."""

MAX_URL_LENGTH = 8192


def invalidates(method: str, status: int) -> bool:
    """Whether an answer of ``status`` to ``method`` invalidates the target URI (RFC 9111 §4.4)."""
    return method not in SAFE_METHODS and 200 <= status < 400


def related_targets(host: str, target: str, response_headers: Headers) -> list[str]:
    """Canonical targets of the response's Location/Content-Location on ``host`` (the request's canonical Host).

    ``target`` is the request's canonical target, the base of relative references. URLs on another host,
    malformed ones and the request target itself are left out.
    """
    base = f"http://{host}{target}"
    found: list[str] = []
    for name in RELATED_FIELDS:
        for value in get_all(response_headers, name):
            related = _same_host_target(base, host, value.strip(" \t"))
            if related is not None and related != target and related not in found:
                found.append(related)
    return found[:MAX_RELATED]


def _same_host_target(base: str, host: str, reference: str) -> str | None:
    if not reference or len(reference) > MAX_URL_LENGTH:
        return None
    try:
        parts = urlsplit(urljoin(base, reference))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None
        if canonical_host(parts.netloc) != host:
            return None
        return canonical_target((parts.path or "/") + ("?" + parts.query if parts.query else ""))
    except (BadRequest, ValueError):
        return None
