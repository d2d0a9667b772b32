"""Ending the API's watches promptly when the cloud stops (SIGTERM, SIGINT).

Why: on a stop uvicorn closes its listeners, then waits up to its graceful
timeout (3 s) for the requests in flight. A watch (``?watch=true``, the
dashboard's multiplexed watch) is a request that never finishes by itself,
so every stop with a watch open took the full 3 s and then cancelled the
stream mid-body: the client saw a broken chunked response instead of the
end of its watch, and uvicorn logged an error. An operator restarting a
replica, and every test that stops a cloud, paid that.

How: each watch runs under :func:`watch_deadline` (its ``timeoutSeconds``,
an :class:`asyncio.Timeout`), registered here while it runs.
:class:`DrainingServer` (the uvicorn server ``edgefleet cloud`` runs) stops
listening, then moves every open deadline to now: each watch ends as it
does at its timeout, with a well-formed end of the response body, and its
client watches again from the last resourceVersion it saw (on another
replica, or on this one once restarted), as it does after
``timeoutSeconds``. A watch only reads, so no acknowledged write is at
stake; writes in flight still finish within uvicorn's graceful timeout.

The registry of open deadlines is per process: only the process shell
(:mod:`edgefleet.cloud.process`) ends them, once, when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn

log = logging.getLogger("edgefleet.cloud.draining")

_open: set[asyncio.Timeout] = set()


@contextlib.asynccontextmanager
async def watch_deadline(seconds: float) -> AsyncIterator[None]:
    """``asyncio.timeout(seconds)`` that :func:`end_watches` can bring forward to now."""
    async with asyncio.timeout(seconds) as deadline:
        _open.add(deadline)
        try:
            yield
        finally:
            _open.discard(deadline)


def end_watches() -> int:
    """Bring every open watch's deadline to now (each ends as at its timeout); how many there were."""
    now = asyncio.get_running_loop().time()
    ended = 0
    for deadline in list(_open):
        if deadline.expired():
            continue
        with contextlib.suppress(RuntimeError):  # expiring at this very moment: it ends anyway
            deadline.reschedule(now)
            ended += 1
    return ended


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which ends the open watches as soon as it stops listening (see the module docstring)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new connection (uvicorn closes them too; twice is harmless)
            server.close()
        ended = end_watches()
        if ended:
            log.info("ended open watches for the shutdown", extra={"watches": ended})
        await super().shutdown(sockets)
