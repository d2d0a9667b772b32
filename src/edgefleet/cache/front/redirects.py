"""``tls.redirectHttp``: a plain-HTTP request for such a Domain is sent to the same URL over HTTPS.

How: :meth:`Proxy.handle` calls :func:`send_https_redirect` when the Domain has ``redirect_http``, the
connection is cleartext (``tls_version`` None) and the request is not from the fleet (site peers and
child sites ask each other over plain HTTP: they get the object, never a redirect). The fast hit path
declines such requests with one attribute test, so Domains without TLS pay nothing more.

The answer: ``301 Moved Permanently`` to GET and HEAD (what nginx users write, ``return 301
https://$host$request_uri``, and what every client follows), ``308 Permanent Redirect`` to any other
method, so that a POST is repeated as a POST with its body (a 301 lets clients turn it into a GET).
``Location`` is ``https://<host><:port><target>``: the request's canonical host (no port), the port of
``tlsListen`` unless it is 443 (none configured: 443, the port a load balancer in front would use), and
the request target as received (canonical). The body is a short text; the connection is kept alive.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from edgefleet.cache.wire.http1 import Request, response_head

if TYPE_CHECKING:
    from edgefleet.cache.front.replies import Client, Replies


def https_location(host: str, target: str, port: int) -> str:
    """``https://host[:port]target`` (the port left out when it is 443)."""
    return f"https://{host}{'' if port == 443 else f':{port}'}{target}"


def redirect_status(method: str) -> int:
    """301 for GET and HEAD, 308 (method and body kept) for the rest."""
    return 301 if method in ("GET", "HEAD") else 308


def redirect_bytes(request: Request, port: int, node: str) -> tuple[int, bytes, int]:
    """(status, the whole response, body length) of the redirect for ``request``."""
    status = redirect_status(request.method)
    location = https_location(request.host, request.target, port)
    body = f"{status}: use {location}\n".encode("latin-1", "replace")
    headers = [
        ("Location", location),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("X-Cache", f"REDIRECT from {node}"),
    ]
    if not request.keep_alive:
        headers.append(("Connection", "close"))
    return status, response_head(status, headers) + (body if request.method != "HEAD" else b""), len(body)


def send_https_redirect(replies: Replies, client: Client, request: Request, port: int) -> None:
    """Write the redirect and count it as an answered request (the access log says ``REDIRECT``)."""
    status, data, length = redirect_bytes(request, port, replies.node)
    client.write(data)
    replies.done(request, client, status, length if request.method != "HEAD" else 0, "REDIRECT", time.perf_counter())
