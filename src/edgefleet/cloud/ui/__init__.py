"""The web dashboard: static files served at ``/ui``, with no data in them.

How: the files beside this module (``index.html``, the JavaScript modules
and the style sheet) are the whole dashboard. The browser loads them without
a token, asks the operator for one (admin or viewer), keeps it in
``sessionStorage`` and calls the REST API with it: one multiplexed watch for
every kind it shows (``GET /apis/edgefleet.io/v1/watch?kinds=...``, see
:mod:`edgefleet.cloud.multiwatch`; ``fetch`` streaming NDJSON, since
``EventSource`` cannot send an ``Authorization`` header). One request, not
one per kind: a browser keeps six HTTP/1.1 connections per host. So the pages themselves need no authentication
and every piece of fleet data still passes the API's checks.

Why an allow-list read once at start: only the files named in
:data:`CONTENT_TYPES` are served, from memory, so no request path can reach
another file (no traversal to worry about) and a wrong name is a plain 404.
There is no build step: the modules are written for the browsers operators
use, and ``node --check`` in the tests keeps them parseable.

Responses carry a strict Content-Security-Policy (scripts, styles and
fetches from this origin only), so the dashboard makes no request anywhere
but the cloud that served it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

UI_ROOT = "/ui"
UI_DIR = Path(__file__).parent

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "model.js": "text/javascript; charset=utf-8",
    "map.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "world.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The files served, by name, with their media types."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def load_files(directory: Path = UI_DIR) -> dict[str, bytes]:
    """The dashboard's files, by name, read from ``directory``."""
    return {name: (directory / name).read_bytes() for name in CONTENT_TYPES}


def router(directory: Path = UI_DIR) -> APIRouter:
    """Routes ``GET /ui``, ``/ui/`` (the page) and ``/ui/<file>`` (its parts), without authentication."""
    files = load_files(directory)
    routes = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        body = files.get(name)
        if body is None:
            return Response(b"not found\n", status_code=404, media_type="text/plain; charset=utf-8")
        return Response(body, media_type=CONTENT_TYPES[name], headers=SECURITY_HEADERS)

    @routes.get(UI_ROOT)
    @routes.get(UI_ROOT + "/")
    async def page() -> Response:
        return serve("index.html")

    @routes.get(UI_ROOT + "/{name}")
    async def part(name: str) -> Response:
        return serve(name)

    return routes
