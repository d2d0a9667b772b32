"""Where responses are kept: the memory tier, the disk tier and its index, entry metadata, fill locks.

What it holds: :mod:`.store` (:class:`~.store.Storage`, both tiers behind one
interface), :mod:`.memory`, :mod:`.disk` (files plus a SQLite index),
:mod:`.entries` (:class:`~.entries.EntryMeta`, what is known of a stored
response) and :mod:`.locks` (node-wide locks so that one worker fills a key).
What it may import: :mod:`edgefleet.cache.policy`, :mod:`edgefleet.cache.wire`
and the top-level ``errors``; never ``upstream`` or ``front``.
"""
