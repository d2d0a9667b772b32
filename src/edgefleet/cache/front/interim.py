"""Relaying an upstream's interim (1xx) responses, 103 Early Hints above all, to the client that caused them.

How: :func:`relaying` sets :data:`edgefleet.cache.upstream.client.INTERIM` to a
sink that writes each 1xx head it is given to the client connection, for the
upstream requests made inside it: the pass-through request, or the fill its
leader starts (an asyncio task copies the context it is created in, so the
fill's task keeps the sink and nothing else does). RFC 9110 §15.2: a proxy
forwards 1xx responses, never to an HTTP/1.0 client; RFC 8297: a 103's
fields are hints about the final response, not part of it. So the sink
writes a head of its own (status line and the 1xx's end-to-end fields only,
no body) and the final response is built from the final head alone.

Who gets them: the request that makes the upstream request. Requests that
join a fill already running get the final answer only (the hints came
before they joined, or could come while another request is being answered on
their connection). A background revalidation or a prefetch has no client:
its 1xx heads are dropped. A head for a connection that is closing is
dropped too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgefleet.cache.front.replies import Client
from edgefleet.cache.upstream.client import INTERIM, InterimSink
from edgefleet.cache.wire.headers import HOP_BY_HOP, connection_listed
from edgefleet.cache.wire.http1 import Request, response_head


def sink_for(client: Client, request: Request) -> InterimSink | None:
    """A sink writing 1xx heads to ``client`` ahead of its answer to ``request``; None for HTTP/1.0."""
    if request.version != "1.1":
        return None

    def forward(status: int, fields: list[tuple[str, str]]) -> None:
        transport = client.transport
        if transport is None or transport.is_closing():
            return
        dropped = HOP_BY_HOP | connection_listed(fields) | {"content-length"}
        client.write(response_head(status, [(name, value) for name, value in fields if name.lower() not in dropped]))

    return forward


@contextmanager
def relaying(client: Client, request: Request) -> Iterator[None]:
    """Upstream requests made (or tasks created) inside this block relay their 1xx heads to ``client``."""
    token = INTERIM.set(sink_for(client, request))
    try:
        yield
    finally:
        INTERIM.reset(token)
