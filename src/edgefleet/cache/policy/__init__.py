"""Pure request and response decisions of the cache: no clock read, no I/O, no asyncio.

What it holds: :mod:`.freshness` (RFC 9111 storage and lifetimes),
:mod:`.conditionals` (validators, 304s), :mod:`.keys` (cache keys and Vary
variants), :mod:`.ranges` (Range requests), :mod:`.domains` (which Domain and
rule a request falls under) and :mod:`.decisions` (what the request path does
with a stored entry at ``now``, and with an upstream answer or failure).
What it may import: :mod:`edgefleet.cache.wire`, ``config``, ``errors`` and
:mod:`edgefleet.api`. Why: every time is an argument, so the decisions are
tested with plain numbers instead of sleeping past a ``max-age`` (the model
is ``edgefleet.sync``; docs/architecture.md, "Layering").
"""
