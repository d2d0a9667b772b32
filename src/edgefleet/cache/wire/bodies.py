"""A request body streamed from the client connection to the upstream request, with flow control.

How: the parser pushes each piece of a streamed body into a
:class:`BodyStream` as it is parsed (:mod:`edgefleet.cache.wire.http1`), and the
upstream request reads them with :meth:`BodyStream.chunks` (aiohttp takes it
as ``data``). Between the two is a queue of at most about :data:`HIGH_WATER`
bytes: above it the stream asks its :class:`BodyFlow` (the connection) to
stop reading the client's socket, and below :data:`LOW_WATER` to read again.
So a body of any size holds a queue, one socket read and what the kernel and
the upstream connection buffer: memory per connection is bounded, whatever
the client sends and however slowly the upstream takes it.

Why a streamed body is not replayed: once a piece was handed to an upstream
it is gone (:attr:`BodyStream.sent`); the forwarder tries the next tier only
while nothing was sent (a connect failure), and answers 502 otherwise.

A body that fails (the client stalls past ``bodyTimeout``, sends bad
framing, goes over ``maxUploadBytes`` or goes away) ends the stream with
:attr:`BodyStream.error`: the upstream request fails with it, and the proxy
answers that error (408, 413, 400) instead of the upstream's, and closes.
``Expect: 100-continue`` is answered when the body is first read, that is
once an upstream took the request head and (the expectation forwarded, see
:mod:`edgefleet.cache.upstream.client`) answered it with its own 100, or
did not answer within a second: until then the client sends nothing. An
upstream's final answer before that reaches the client with no body asked
for (RFC 9110 §10.1.1, §15.2.1).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

HIGH_WATER = 512 * 1024
"""Bytes queued between the client and the upstream above which the client's socket is no longer read."""
LOW_WATER = 128 * 1024
"""Bytes queued below which the client's socket is read again."""


class BodyFlow(Protocol):
    """What a stream asks of its connection."""

    def pause_body(self) -> None: ...

    def resume_body(self) -> None: ...

    def send_continue(self) -> None: ...


class BodyFailed(Exception):
    """Raised into the upstream request when the client's body failed (see :attr:`BodyStream.error`)."""


class BodyStream:
    """One request body on its way from the client to an upstream (see the module docstring)."""

    def __init__(self, flow: BodyFlow | None, length: int | None, expects_continue: bool) -> None:
        self.flow = flow
        self.length = length
        """The declared Content-Length; None for a chunked body."""
        self.received = 0
        self.sent = 0
        """Bytes handed to an upstream: a request that sent any cannot be retried elsewhere."""
        self.done = False
        self.error: Exception | None = None
        self.last_progress = time.monotonic()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self._continue = expects_continue
        self._waiter: asyncio.Future[None] | None = None
        self._reader = 0

    # --- the parser's side ------------------------------------------------

    def push(self, data: bytes) -> None:
        if self.error is not None:
            return
        self._chunks.append(data)
        self._queued += len(data)
        self.received += len(data)
        self.last_progress = time.monotonic()
        self._wake()
        if self._queued > HIGH_WATER and not self._paused:
            self._paused = True
            if self.flow is not None:
                self.flow.pause_body()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: Exception) -> None:
        """End the body with ``error`` (unless it is complete); what was queued is dropped."""
        if self.done or self.error is not None:
            return
        self.error = error
        self._chunks.clear()
        self._queued = 0
        self._wake()

    # --- for the connection's timeouts --------------------------------------

    @property
    def waiting_for_client(self) -> bool:
        """Whether more body is due from the client now (not complete, not failed, not paused by us, not waiting
        for a ``100 Continue`` we have not sent yet)."""
        return not self.done and self.error is None and not self._paused and not self._continue

    @property
    def awaiting_continue(self) -> bool:
        """The client holds its body back until told ``100 Continue`` (none sent, none of the body received)."""
        return self._continue and not self.received

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    @property
    def consumed(self) -> bool:
        """Complete, and all of it taken by an upstream (so the connection may carry the next request)."""
        return self.done and not self._chunks

    # --- the upstream request's side -------------------------------------------

    def go_ahead(self) -> None:
        """Tell a client that holds its body back ``100 Continue`` (once; not if the body is already coming)."""
        if self._continue:
            self._continue = False
            if self.flow is not None and not self.received:
                self.flow.send_continue()
                self.last_progress = time.monotonic()  # the body is due from now on

    def drainable(self, limit: int) -> bool:
        """Whether the rest of the body is on its way (not held back, not failed) and at most ``limit`` bytes."""
        if self.error is not None or self._continue or self.length is None:
            return False
        return self.length - self.received <= limit

    async def drain(self) -> None:
        """Read the rest of a body no upstream took and drop it (BodyFailed if it fails), so the connection can
        carry the next request instead of closing on a client that is sending it."""
        async for _ in self.chunks():
            pass

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; BodyFailed if the body fails. One reader at a time: a new one
        (a retry, when nothing was sent) makes an earlier one stop without taking anything."""
        self._reader += 1
        reader = self._reader
        self.go_ahead()
        while True:
            if reader != self._reader:
                return
            if self.error is not None:
                raise BodyFailed(str(self.error))
            if self._chunks:
                data = self._chunks.popleft()
                self._queued -= len(data)
                if self._paused and self._queued <= LOW_WATER:
                    self._paused = False
                    self.last_progress = time.monotonic()  # the client was waiting for us, not we for it
                    if self.flow is not None:
                        self.flow.resume_body()
                self.sent += len(data)
                yield data
                continue
            if self.done:
                return
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
