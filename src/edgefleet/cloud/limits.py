"""Security limits of the cloud: request bodies, per-session message rates, watches per principal.

Request bodies: a pure ASGI middleware. A declared ``Content-Length`` over the limit is
answered 413 at once, without reading the body; a chunked body is counted as
it arrives and the request is answered 413 as soon as it passes the limit.
This is a security limit (a client must not make the server buffer
unbounded bytes), documented as ``--max-body-bytes``.

Message rates (:class:`TokenBucket`, :class:`SessionBudget`, pure): the hub
charges every agent message to its session's budget (messages and bytes)
and, when the budget is spent, stops reading that WebSocket until it has
refilled. A node that floods its session slows only itself (TCP pushes back
on it); nothing is dropped, and status reports coalesce meanwhile (the
latest report wins, see :mod:`edgefleet.cloud.statuswrites`).

Watches (:class:`WatchSlots`, pure): each principal may hold
``max_per_principal`` watches open at once; one more is answered 429 with
the limit in the message, before anything is read from the store.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; a take may overdraw, the debt is a wait."""

    rate: float
    burst: float
    tokens: float = math.nan  # starts full
    stamp: float = -math.inf

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        if math.isnan(self.tokens):
            self.tokens = self.burst

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens at monotonic ``now``; the seconds to wait before taking more (0: none)."""
        if self.stamp != -math.inf:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= cost
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass(frozen=True, slots=True)
class SessionRates:
    """What one agent session may send: messages and bytes a second, and the bursts above that."""

    messages_per_second: float = 100.0
    message_burst: float = 200.0
    bytes_per_second: float = 4 * 1024 * 1024
    byte_burst: float = 8 * 1024 * 1024
    """At least one largest message (sync.messages.MAX_AGENT_MESSAGE_BYTES, 1 MiB) and then some."""


@dataclass(slots=True)
class SessionBudget:
    """One session's two buckets: :meth:`charge` says how long to stop reading it."""

    rates: SessionRates = field(default_factory=SessionRates)
    messages: TokenBucket = field(init=False)
    data: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.messages = TokenBucket(self.rates.messages_per_second, self.rates.message_burst)
        self.data = TokenBucket(self.rates.bytes_per_second, self.rates.byte_burst)

    def charge(self, size: int, now: float) -> float:
        """One message of ``size`` bytes received at ``now``: seconds before the next may be read."""
        return max(self.messages.take(1, now), self.data.take(size, now))


DEFAULT_WATCHES_PER_PRINCIPAL = 128


class TooManyWatches(Exception):
    """The principal holds its limit of open watches (HTTP 429)."""


class WatchSlots:
    """Open watches per principal name, up to ``max_per_principal`` each (0: no limit)."""

    def __init__(self, max_per_principal: int = DEFAULT_WATCHES_PER_PRINCIPAL) -> None:
        if max_per_principal < 0:
            raise ValueError("--max-watches-per-principal must be 0 (no limit) or positive")
        self.max_per_principal = max_per_principal
        self._open: dict[str, int] = {}

    def acquire(self, principal: str) -> None:
        """Count one more watch of ``principal``; TooManyWatches when it holds its limit already."""
        held = self._open.get(principal, 0)
        if self.max_per_principal and held >= self.max_per_principal:
            raise TooManyWatches(
                f"{principal!r} holds {held} open watches, the limit per token; close one (or raise the "
                "server's --max-watches-per-principal)"
            )
        self._open[principal] = held + 1

    def release(self, principal: str) -> None:
        held = self._open.get(principal, 0) - 1
        if held > 0:
            self._open[principal] = held
        else:
            self._open.pop(principal, None)

    def held(self, principal: str) -> int:
        return self._open.get(principal, 0)
