"""A small synchronous client of the REST API, for the CLI.

How: httpx with one connection pool per command. Every non-2xx answer
becomes a :class:`ClientError` carrying the server's ``Status`` (reason,
message, field causes) so the CLI can print it and say what to do next.
Connection failures say which server was tried and how to change it.

TLS: given a :class:`~edgefleet.tls.ClientTrust`, the client refuses a
cleartext ``http://`` server unless it allows it, and checks the server's
certificate against its CA alone; a certificate that CA did not sign is a
:class:`ClientError` saying so (a man in the middle, or a changed CA), not
a generic connection failure.

Warnings: the server sends ``Warning: 299 - "text"`` headers (RFC 7234, as
Kubernetes does) for writes it accepts but doubts (a selector that matches
no node, a webhook's remark). Every response's warnings go to ``on_warning``:
by default they are printed to stderr in yellow, with control characters
removed and no console markup interpreted (the text may come from a webhook).
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.text import Text

from edgefleet.tls import ClientTrust, TlsError, describe_verify_failure

if TYPE_CHECKING:  # the API base imports pydantic: commands that need no model (version, logs) skip it
    from edgefleet.api.documents import JSONObject as Document
    from edgefleet.api.kindtable import KindName
    from edgefleet.api.meta import KindInfo

    Kind = KindInfo | KindName  # a path needs the plural alone: ``get`` passes the kind table's entry

_WARNING = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')
_stderr = Console(stderr=True, highlight=False)


def parse_warning(value: str) -> str:
    """The text of one ``Warning`` header value (``299 - "text"``); the whole value if it is not of that form."""
    match = _WARNING.match(value)
    text = re.sub(r"\\(.)", r"\1", match[1]) if match else value
    return "".join(char if char.isprintable() else " " for char in text).strip()


def print_warning(text: str) -> None:
    """The CLI's default: ``Warning: text`` on stderr, in yellow."""
    _stderr.print(Text(f"Warning: {text}", style="yellow"), highlight=False)  # Text: no markup is parsed


BLOB_PATH = "/edge/v1/blobs/sha256/"
"""The cloud's content-addressed blob store (``cloud/blobs.py``): PUT to upload, GET to read; append the digest."""


class ClientError(Exception):
    """The server refused the request (or could not be reached)."""

    def __init__(self, message: str, *, code: int = 0, reason: str = "", causes: list[Document] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.causes = causes or []


def _verify(server: str, trust: ClientTrust | None) -> ssl.SSLContext | bool:
    """How to check the server's certificate: not at all for http:// (no TLS is ever spoken).

    Building a context loads a CA bundle (about 25 ms, a tenth of ``edgefleet
    get``); a plain-HTTP server never uses it, as requests go to the base URL
    and redirects are not followed.
    """
    if urlsplit(server).scheme.lower() != "https":
        return False
    return trust.ssl_context() if trust is not None else True


class ApiClient:
    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        on_warning: Callable[[str], None] | None = print_warning,
        trust: ClientTrust | None = None,
    ) -> None:
        """``on_warning`` gets the text of every warning the server sends (None: ignore them).

        ``trust``: the CA to check the server against and whether http:// is
        allowed (ClientError when it is not); None: the system's CAs, any scheme.
        """
        self.server = server
        self.on_warning = on_warning
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            if trust is not None:
                trust.check_url(server)
            verify = _verify(server, trust)
        except TlsError as exc:
            raise ClientError(str(exc)) from None
        self._http = httpx.Client(base_url=server, headers=headers, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise _connect_error(self.server, exc) from None
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the edgefleet server at {self.server} ({exc.__class__.__name__}: {exc}); "
                "is `edgefleet cloud` running? Set the address with --server or EDGEFLEET_SERVER"
            ) from None
        self._warn(response)
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _warn(self, response: httpx.Response) -> None:
        if self.on_warning is None:
            return
        for value in response.headers.get_list("warning"):
            text = parse_warning(value)
            if text:
                self.on_warning(text)

    @staticmethod
    def path(info: Kind, name: str = "", *, status: bool = False) -> str:
        from edgefleet.api.kindtable import API_VERSION  # pure and small: no model needed for a path

        path = f"/apis/{API_VERSION}/{info.plural}"
        if name:
            path += f"/{name}"
        return path + ("/status" if status else "")

    def get(self, info: Kind, name: str) -> Document:
        result: Document = self._request("GET", self.path(info, name)).json()
        return result

    def list(self, info: Kind, *, selector: str | None = None, limit: int = 500) -> Document:
        """All pages of a list, merged; ``metadata.resourceVersion`` is the first page's."""
        params: dict[str, Any] = {"limit": limit}
        if selector:
            params["labelSelector"] = selector
        result: Document = self._request("GET", self.path(info), params=params).json()
        while result["metadata"].get("continue"):
            params["continue"] = result["metadata"].pop("continue")
            page = self._request("GET", self.path(info), params=params).json()
            result["items"].extend(page["items"])
            result["metadata"]["continue"] = page["metadata"].get("continue")
        result["metadata"].pop("continue", None)
        return result

    def create(self, info: Kind, document: Document) -> Document:
        result: Document = self._request("POST", self.path(info), json=document).json()
        return result

    def replace(self, info: Kind, document: Document) -> Document:
        name = document["metadata"]["name"]
        result: Document = self._request("PUT", self.path(info, name), json=document).json()
        return result

    def patch(self, info: Kind, name: str, patch: Document, *, status: bool = False) -> Document:
        headers = {"Content-Type": "application/merge-patch+json"}
        result: Document = self._request(
            "PATCH", self.path(info, name, status=status), content=json.dumps(patch), headers=headers
        ).json()
        return result

    def delete(self, info: Kind, name: str, *, force: bool = False) -> Document:
        """``force``: delete even though other objects still name it (a Site with Nodes)."""
        params = {"force": "true"} if force else {}
        result: Document = self._request("DELETE", self.path(info, name), params=params).json()
        return result

    def put_bytes(self, path: str, body: Iterable[bytes], size: int) -> Document:
        """PUT ``size`` bytes streamed from ``body`` (an upload; no timeout while it runs)."""
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        response = self._request("PUT", path, content=body, headers=headers, timeout=None)
        document: Document = response.json()
        return document

    def get_bytes(self, path: str, limit: int) -> bytes:
        """A binary endpoint's body (a blob), read in chunks; ClientError when it is over ``limit`` bytes."""
        try:
            with self._http.stream("GET", path, timeout=None) as response:
                self._warn(response)
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ClientError(f"{path}: more than {limit} bytes; refusing to read it")
                    chunks.append(chunk)
        except httpx.ConnectError as exc:
            raise _connect_error(self.server, exc) from None
        except httpx.TransportError as exc:
            raise ClientError(f"cannot read {path} from {self.server} ({exc.__class__.__name__}: {exc})") from None
        return b"".join(chunks)

    def text(self, path: str, **params: Any) -> str:
        """A plain-text endpoint (for example a workload's log)."""
        return self._request("GET", path, params=params).text

    def version(self) -> Document:
        result: Document = self._request("GET", "/version").json()
        return result

    def watch(
        self,
        info: Kind,
        *,
        selector: str | None = None,
        resource_version: str = "",
        timeout_seconds: int | None = None,
    ) -> Iterator[Document]:
        """Watch events as documents; with ``timeout_seconds`` the server ends the stream after that long."""
        params: dict[str, Any] = {"watch": "true"}
        if selector:
            params["labelSelector"] = selector
        if timeout_seconds is not None:
            params["timeoutSeconds"] = timeout_seconds
        if resource_version:
            params["resourceVersion"] = resource_version
        try:
            with self._http.stream("GET", self.path(info), params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise ClientError(f"the watch on {self.server} ended: {exc}") from None


def _connect_error(server: str, exc: httpx.ConnectError) -> ClientError:
    cause = exc.__context__ or exc.__cause__
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__context__ or cause.__cause__
    if cause is not None:
        return ClientError(describe_verify_failure(server, cause))
    return ClientError(
        f"cannot reach the edgefleet server at {server} ({exc.__class__.__name__}: {exc}); "
        "is `edgefleet cloud` running? Set the address with --server or EDGEFLEET_SERVER"
    )


def _error_from(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("message") or f"HTTP {response.status_code}: {response.text[:200]}"
    causes = (body.get("details") or {}).get("causes") or []
    return ClientError(message, code=response.status_code, reason=body.get("reason", ""), causes=causes)
