"""Request body size limit, enforced before the body is buffered.

How: a pure ASGI middleware. A declared ``Content-Length`` over the limit is
answered 413 at once, without reading the body; a chunked body is counted as
it arrives and the request is answered 413 as soon as it passes the limit.
This is a security limit (a client must not make the server buffer
unbounded bytes), documented as ``--max-body-bytes``.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.cloud.errors import status_body

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    pass


async def send_status(send: Send, code: int, reason: str, message: str) -> None:
    body = json.dumps(status_body(code, reason, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large_message(self) -> str:
        return (
            f"request body exceeds the limit of {self.max_bytes} bytes; "
            "split the request or raise the server's --max-body-bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_status(send, 413, "RequestEntityTooLarge", self._too_large_message())
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_status(send, 413, "RequestEntityTooLarge", self._too_large_message())
