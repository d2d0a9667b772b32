"""What a client meets: the processes, connections, the request path and the replies.

What it holds: :mod:`.master` (the ``edgefleet cache`` process, workers,
admin endpoint), :mod:`.worker`, :mod:`.server` (asyncio connections),
:mod:`.proxy` (the request path: a thin shell that asks
:mod:`edgefleet.cache.policy.decisions` what to do and does it),
:mod:`.slices`, :mod:`.passthrough`, :mod:`.responses` (pure reply
planning), :mod:`.replies` (writing them), :mod:`.sendfile` and
:mod:`.accesslog`. What it may import: every other layer of the cache; no
other layer imports it.
"""
