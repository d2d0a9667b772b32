"""Asking upstream: which tier owns a key, the HTTP client, collapsed fills and storing what comes back.

What it holds: :mod:`.tiers` (rendezvous ownership, peer health, tier
header trust), :mod:`.client` (the aiohttp client to peers, parents and
origins), :mod:`.forwarding` (the order tiers are asked in),
:mod:`.fills` (one fill per key, its waiters) and :mod:`.fetches` (the task
behind a fill: ask, publish the head, stream, store).
What it may import: ``storage``, ``policy``, ``wire`` and the top-level
modules; never ``front``.
"""
