"""HTTP/1.1 on the wire, sans-I/O: the request parser, header fields, request bodies, canonical targets.

What it holds: :mod:`.http1` (httptools-based parser and response heads),
:mod:`.headers` (field lookups, HTTP dates), :mod:`.bodies` (streamed request
bodies with flow control), :mod:`.targets` (one spelling per Host and target).
What it may import: ``edgefleet.cache.errors`` and the standard library (and
httptools); nothing else of the cache. Why: every other layer speaks in
these types, so they must not depend on any of them.
"""
