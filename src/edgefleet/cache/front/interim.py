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

Who gets them: the request that makes the upstream request, and (RFC 8297:
hints are safe for any HTTP/1.1 client) every request that joins the fill
before its final head (:func:`join`): the fill keeps the heads it relayed and
replays them to a joiner (:class:`~edgefleet.cache.upstream.fills.Fill`).
A joiner's connection carries nothing else meanwhile: it is waiting for that
final head. A background revalidation or a prefetch has no client: its 1xx
heads reach no one. A head for a connection that is closing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgefleet.cache.front.replies import Client
from edgefleet.cache.upstream.client import INTERIM, InterimSink
from edgefleet.cache.upstream.fills import Fill
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


def join(fill: Fill, client: Client, request: Request) -> None:
    """``request`` joined ``fill``: it gets the 1xx heads relayed so far and those to come before the final one."""
    sink = sink_for(client, request)
    if sink is not None:
        fill.listen(sink)
