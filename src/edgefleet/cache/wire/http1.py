"""HTTP/1.1 request parsing and response framing for the cache server, without I/O.

How: :class:`RequestParser` is fed the bytes a client sends and returns the
complete :class:`Request` objects it found (several when the client
pipelines). Request bodies up to ``max_body_bytes`` are collected whole
(forwarded with a Content-Length, and retried on the next tier if one
fails). A larger one of a method that forwards it (POST, PUT, PATCH, DELETE,
OPTIONS) is streamed: a declared ``Content-Length`` over ``max_body_bytes``
hands the request out as soon as its head is complete, a chunked body as
soon as it outgrows ``max_body_bytes``, with a
:class:`~edgefleet.cache.wire.bodies.BodyStream` the rest of its body goes into
as it is parsed (the proxy forwards it to the upstream as it arrives, with
flow control; see :mod:`edgefleet.cache.wire.bodies`). Response heads are built by :func:`response_head`; bodies of
unknown length are framed by :func:`chunk`.

Why httptools: it wraps llhttp, nginx-grade strictness in C (it refuses
Content-Length together with Transfer-Encoding, duplicate Content-Lengths,
bad chunk sizes, bare LF line ends and whitespace before colons: the request
smuggling vectors), and it costs about 0.4 µs per small request here, less
than any pure-Python parser. Our own checks sit on top, as security limits:

- ``max_url_bytes``: longer request-targets get 414;
- ``max_header_bytes`` / ``max_headers``: larger header blocks get 431;
- ``max_body_bytes``: larger bodies of GET and HEAD get 413 (others are
  streamed); ``max_upload_bytes``: larger streamed bodies get 413 (a
  ``Content-Length`` as soon as the field is in, a chunked body once it
  grows past it);
- a request with a body is checked before any of its body is kept (at its
  first piece), or asked for with ``100 Continue`` (once the head is
  complete; a forwarding method's body that waits for it is streamed at
  once instead, so that the upstream's answer decides) (``head_check``: Host, Domain, method; the proxy's 421/404/501),
  so a client cannot make the server buffer a body nobody will take (a
  streamed request is checked when its head is complete, before it is
  handed out). Requests without a body pay nothing for it;
- trailer fields of a chunked body are dropped: llhttp reports them like
  header fields, but RFC 9110 §6.5.1 forbids merging them into the header
  section (a trailer must not add a field the origin would trust);
- a Transfer-Encoding other than ``chunked`` gets 501, and an HTTP/1.1
  request without Host gets 400 (RFC 9112 §3.2); HTTP versions other than
  1.0 and 1.1 (llhttp accepts 0.9 and 2.0 in the text form) get 505;
- the Host and the request-target are replaced by their canonical forms
  (:mod:`edgefleet.cache.wire.targets`): a malformed Host, a bad percent-encoding
  or a dot segment hidden behind an encoded slash gets 400.

httptools keeps a header field that has not ended yet in a Python string and
reports it only once it is complete, so the per-field checks above cannot
stop a client that streams one endless header line. :meth:`RequestParser.feed`
therefore also counts the bytes of every feed that did not complete a
request and carries no body yet, and answers 431 once a head outgrows
``max_url_bytes + max_header_bytes`` (plus a little for the request line).
That check runs only on the partial-request path, never for a feed that
completed a request.

HTTP/1.0 requests are answered and the connection closed, even with
``Connection: keep-alive``: a 1.0 client keeps the connection only when the
response says ``Connection: keep-alive`` too (RFC 9112 §9.3), otherwise it
expects the server to close, and a server that stays open leaves it waiting
until the idle timeout. Closing is always allowed; echoing the option in
every response head would cost the 1.1 hot path.

A :class:`~edgefleet.cache.errors.BadRequest` carries the status to answer;
the connection is closed after it, since the byte stream can no longer be
trusted. Requests completed by the same feed before the bad bytes are kept:
:meth:`RequestParser.take_completed` returns them, so that the server can
answer them in order before the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from edgefleet.cache.errors import BadRequest
from edgefleet.cache.wire.bodies import BodyFlow, BodyStream
from edgefleet.cache.wire.targets import HOSTS, canonical_host, canonical_target

REASONS: dict[int, bytes] = {status.value: status.phrase.encode() for status in HTTPStatus}
REQUEST_LINE_SLACK = 1024
"""Bytes of a head beyond the URL and header limits: method, version, line ends, whitespace."""


@dataclass(slots=True)
class Limits:
    """Security limits of one connection's parser."""

    max_url_bytes: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100
    max_body_bytes: int = 2**20
    max_upload_bytes: int = 2**30


HeadCheck = Callable[[str, str], None]
"""Called with (method, canonical host) before the body of a request is kept or asked for."""


class Request:
    """One parsed request.

    ``plain`` is true when the request has no Range or conditional (If-*)
    fields: the hit fast path answers only those. ``client`` is the peer
    address, set by the connection for requests that leave the fast path.
    ``from_fleet`` is true once the proxy found the client to be a trusted
    node of the fleet (its tier header fields are kept).
    """

    __slots__ = (
        "agent",
        "body",
        "client",
        "from_fleet",
        "has_body",
        "headers",
        "host",
        "keep_alive",
        "method",
        "plain",
        "referer",
        "rules",
        "stream",
        "target",
        "tier",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        host: str,
        keep_alive: bool,
        version: str,
        body: bytes = b"",
        has_body: bool = False,
        plain: bool = True,
        stream: BodyStream | None = None,
        agent: str | None = None,
        referer: str | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.version = version
        self.body = body
        self.has_body = has_body
        self.plain = plain
        self.stream = stream
        """A streamed body (see :mod:`edgefleet.cache.wire.bodies`): still arriving when the request is handled."""
        self.client = ""
        self.from_fleet = False
        self.tier = False
        """Whether it says it comes from another cache of the fleet (X-Edgefleet-Tier), trusted or not: the proxy
        sets it, and it is counted apart from client requests (module edgefleet.cache.accounting)."""
        self.agent = agent
        """The first User-Agent field (for the access log, which then need not keep the header list)."""
        self.referer = referer
        self.rules: Any = None
        """What the Domain's edge rules decided for it (``edgefleet.cache.front.edgerules.Applied``), evaluated
        once (on the hit fast path or in the proxy) and read by every later step; None: no rules apply."""

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r} host={self.host!r})"


_METHODS = {name.encode(): name for name in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


class RequestParser:
    """Feed bytes, get complete requests; raises BadRequest on malformed input."""

    def __init__(self, limits: Limits, head_check: HeadCheck | None = None, flow: BodyFlow | None = None) -> None:
        self._limits = limits
        self._head_check = head_check
        self._flow = flow
        self._parser = httptools.HttpRequestParser(self)
        self._reset()
        self._done: list[Request] = []
        self._streamed_done = False

    def _reset(self) -> None:
        self._partial_bytes = 0
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._host = ""
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._declares_body = False
        self._length: int | None = None
        self._chunked = False
        self.stream: BodyStream | None = None
        self._plain = True
        self._trailers_from = -1
        self._agent: str | None = None
        self._referer: str | None = None
        self._head_checked = False
        self._expects_continue = False
        self.continue_wanted = False

    def feed(self, data: bytes) -> list[Request]:
        """Parse ``data``; the requests completed by it, in order."""
        self._streamed_done = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise BadRequest(400, "protocol upgrades are not supported") from None
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, BadRequest):
                raise exc.__context__ from None
            raise BadRequest(400, f"malformed request: {exc}") from None
        done, self._done = self._done, []
        if not done and not self._body_bytes and self.stream is None and not self._streamed_done:
            self._count_partial_head(len(data))
            if self._expects_continue:
                self._continue_once_head_is_in(data)
        return done

    def _count_partial_head(self, size: int) -> None:
        """Bound a head that httptools buffers (see the module docstring)."""
        self._partial_bytes += size
        limits = self._limits
        limit = limits.max_url_bytes + limits.max_header_bytes + REQUEST_LINE_SLACK
        if self._partial_bytes > limit:
            raise BadRequest(431, f"request head larger than {limit} bytes")

    def take_completed(self) -> list[Request]:
        """After a BadRequest: the requests the failing feed completed before the bad bytes."""
        done, self._done = self._done, []
        return done

    def pending(self) -> bool:
        """Whether a request has started but not completed."""
        return bool(self._url or self._headers)

    def head_pending(self) -> bool:
        """Whether a request has started and none of its body arrived yet (for the header timeout)."""
        return bool(self._url or self._headers) and not self._body_bytes

    # --- httptools callbacks --------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            raise BadRequest(414, f"request-target longer than {self._limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            raise BadRequest(431, f"request header fields larger than {self._limits.max_header_bytes} bytes")
        if len(self._headers) >= self._limits.max_headers:
            raise BadRequest(431, f"more than {self._limits.max_headers} request header fields")
        text = name.decode("latin-1")
        decoded = value.decode("latin-1")
        lower = text.lower()
        if lower == "host":
            if self._host:
                raise BadRequest(400, "more than one Host header field")
            self._host = decoded
        elif lower[0] in "ritceu":
            self._special(lower, decoded)
        self._headers.append((text, decoded))

    def _special(self, lower: str, value: str) -> None:
        """Fields that change how a request is handled (body framing, ranges, conditionals) or that it logs."""
        if lower == "transfer-encoding":
            if value.strip().lower() != "chunked":
                raise BadRequest(501, f"Transfer-Encoding {value!r} is not supported (only chunked)")
            self._declares_body = True
            self._chunked = True
        elif lower == "content-length":
            length = value.strip()
            self._declares_body = self._declares_body or length != "0"
            if length.isdigit():
                self._length = int(length)
                if self._length > self._limits.max_upload_bytes:  # refused before it is sent
                    raise BadRequest(413, f"request body larger than {self._limits.max_upload_bytes} bytes")
        elif lower == "range" or lower.startswith("if-"):
            self._plain = False
        elif lower == "expect":
            if value.strip().lower() != "100-continue":
                raise BadRequest(417, f"Expect {value!r} is not supported (only 100-continue)")
            if self._parser.get_http_version() == "1.1":  # RFC 9110 §10.1.1: ignored in an HTTP/1.0 request
                self._expects_continue = True
                self._head_tail = b""
        elif lower == "user-agent":
            self._agent = self._agent if self._agent is not None else value
        elif lower == "referer":
            self._referer = self._referer if self._referer is not None else value

    def _continue_once_head_is_in(self, data: bytes) -> None:
        """``Expect: 100-continue``: once the head is complete, check it, then say the body may come.

        The head is complete when the bytes fed end with the blank line that ends it (the client waits
        for our answer before it sends more); only the last four bytes are kept to see it across feeds.
        """
        self._head_tail = (self._head_tail + data)[-4:]
        if self._head_tail == b"\r\n\r\n":
            self._expects_continue = False
            if not self._head_checked:
                self._check_head()
            self.continue_wanted = True

    def _check_head(self) -> None:
        """A request with a body is checked (Host, Domain, method) before any of its body is kept or asked for."""
        self._head_checked = True
        if self._head_check is None:
            return
        host = self._host
        if self._url[:1] != b"/":
            host = _origin_form(self._url.decode("latin-1"), host)[0]
        if not host:
            raise BadRequest(400, "request without a Host header field")
        method = self._parser.get_method()
        self._head_check(_METHODS.get(method) or method.decode("ascii"), canonical_host(host))

    def on_headers_complete(self) -> None:
        """A declared body over ``max_body_bytes``, of a method that forwards it, is streamed: the request is
        handed out now, with a :class:`BodyStream` its body goes into as it is parsed. Of GET or HEAD: 413.
        A body the client holds back for ``Expect: 100-continue`` is streamed whatever its size: the 100 (or
        a final answer instead) then comes from the upstream's answer to the forwarded head."""
        limits = self._limits
        if self._expects_continue and self._declares_body and self._parser.get_method() not in (b"GET", b"HEAD"):
            self._start_stream()  # RFC 9110 §10.1.1: the upstream's answer to the head says whether the body comes
            return
        if self._length is None or self._length <= limits.max_body_bytes:
            return
        if self._parser.get_method() in (b"GET", b"HEAD"):  # buffered whole, or not at all
            raise BadRequest(413, f"request body larger than {limits.max_body_bytes} bytes")
        self._start_stream()

    def _start_stream(self) -> None:
        if not self._head_checked:
            self._check_head()
        self.stream = BodyStream(self._flow, self._length, self._expects_continue)
        self._expects_continue = False  # asked for when the body is first read (or already, if it is arriving)
        self._done.append(self._request(b"", list(self._headers), self.stream))
        for piece in self._body:
            self.stream.push(piece)
        self._body = []

    def on_body(self, body: bytes) -> None:
        stream = self.stream
        if stream is not None:
            self._body_bytes += len(body)
            if self._body_bytes > self._limits.max_upload_bytes:
                raise BadRequest(413, f"request body larger than {self._limits.max_upload_bytes} bytes")
            stream.push(body)
            return
        if not self._head_checked:  # the first piece of a body: nothing of it is kept yet
            self._check_head()
        self._body_bytes += len(body)
        self._body.append(body)
        if self._body_bytes > self._limits.max_body_bytes:
            if not self._chunked or self._parser.get_method() in (b"GET", b"HEAD"):
                raise BadRequest(413, f"request body larger than {self._limits.max_body_bytes} bytes")
            self._start_stream()  # a chunked body outgrew the buffer: what came is streamed, and the rest
            if self._body_bytes > self._limits.max_upload_bytes:
                raise BadRequest(413, f"request body larger than {self._limits.max_upload_bytes} bytes")

    def on_chunk_header(self) -> None:
        if self._trailers_from < 0:  # the first chunk: every field reported from now on is a trailer
            self._trailers_from = len(self._headers)

    def on_message_complete(self) -> None:
        if self._trailers_from >= 0:
            self._drop_trailers()
        if self.stream is not None:  # handed out with its head; now its body is complete
            self.stream.finish()
            self._streamed_done = True
        else:
            self._done.append(self._request(b"".join(self._body) if self._body else b"", self._headers, None))
        self._reset()

    def _request(self, body: bytes, headers: list[tuple[str, str]], stream: BodyStream | None) -> Request:
        """The request parsed so far (its head complete, and its body unless ``stream``)."""
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise BadRequest(505, f"HTTP/{version} is not supported (only HTTP/1.0 and HTTP/1.1)")
        elif not self._host:
            raise BadRequest(400, "HTTP/1.1 request without a Host header field")
        if not self._url:
            raise BadRequest(400, "empty request-target")
        target = self._url.decode("latin-1")
        host = self._host
        if target[0] != "/":
            host, target = _origin_form(target, host)
        if "%" in target or "/." in target or "//" in target or "#" in target or "\\" in target:
            target = canonical_target(target)
        if host:
            host = HOSTS.get(host) or canonical_host(host)
        method = parser.get_method()
        return Request(
            _METHODS.get(method) or method.decode("ascii"),
            target,
            headers,
            host,
            version == "1.1" and parser.should_keep_alive(),
            version,
            body,
            self._declares_body or bool(self._body_bytes),
            self._plain,
            stream,
            self._agent,
            self._referer,
        )

    def _drop_trailers(self) -> None:
        """Forget the trailer fields (see the module docstring); a trailer Host must not pick the domain."""
        del self._headers[self._trailers_from :]
        self._host = next((value for name, value in self._headers if name.lower() == "host"), "")
        self._plain = not any(name.lower() == "range" or name.lower().startswith("if-") for name, _ in self._headers)
        self._agent = next((value for name, value in self._headers if name.lower() == "user-agent"), None)
        self._referer = next((value for name, value in self._headers if name.lower() == "referer"), None)


def _origin_form(target: str, host: str) -> tuple[str, str]:
    """RFC 9112 §3.2.2: an absolute-form target's authority replaces Host; ``*`` and others are refused."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadRequest(400, "request-target must be a path or an absolute http(s) URL")
    authority, slash, path = rest.partition("/")
    if not authority or "@" in authority:
        raise BadRequest(400, "absolute request-target without a valid host")
    return authority, slash + path if slash else "/"


def status_line(status: int) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``."""
    return b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))


def header_block(headers: list[tuple[str, str]]) -> bytes:
    """Header fields as wire bytes (no final blank line)."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1", "replace")


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """A complete response head, blank line included."""
    return status_line(status) + header_block(headers) + b"\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` must not be empty)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def error_body(status: int, message: str, node: str) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and a short plain-text body for an error the cache itself answers."""
    reason = REASONS.get(status, b"Error").decode()
    body = f"{status} {reason}: {message}\n(edgefleet cache on {node})\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    return headers, body
