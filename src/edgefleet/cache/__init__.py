"""The HTTP cache (``edgefleet cache``): one master, N workers, a memory and a disk tier.

How the package is laid out, bottom layer first (a layer imports only the
layers below it; see docs/architecture.md, "The cache"):

- ``config``, ``errors``, ``stats``, ``latency`` (top level): the config
  document, the two error families, the counters and latency windows.
  ``config`` and ``errors`` stay here: the edge agent imports them.
- :mod:`~edgefleet.cache.wire`: HTTP/1.1 on the wire, sans-I/O (parser,
  header fields, request bodies, canonical Host and target).
- :mod:`~edgefleet.cache.policy`: pure decisions (freshness, conditionals,
  keys, ranges, domain rules, and :mod:`~edgefleet.cache.policy.decisions`,
  which says hit / stale / revalidate / fill / serve-stale-on-error from the
  entry and a ``now`` passed in). No clock is read and no I/O is done there.
- :mod:`~edgefleet.cache.storage`: the memory tier, the disk tier with its
  SQLite index, entry metadata and node-wide fill locks.
- :mod:`~edgefleet.cache.upstream`: asking upstream (site peers, parents,
  origins), collapsing concurrent misses into one fill, storing the answer.
- :mod:`~edgefleet.cache.front`: what a client meets: the master and worker
  processes, connections, the proxy that runs the request path, and replies.

Why this order: it is the order of the request path read backwards (the
front end asks the policy what to do, the storage what is there, the
upstream for what is not), so a change finds its layer by the question it
answers.
"""
