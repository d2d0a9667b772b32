"""The cache package's exception hierarchy.

Two families, kept apart (docs/architecture.md, "The cache"): ``BadRequest`` is a client's bad
input and maps to a 4xx (and never takes the server down); ``UpstreamError``
is a peer, parent or origin failing and maps to 502/504 (or a stale serve).
``ConfigError`` is an operator's bad config file, reported with its field
path. Everything else is a local bug.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of every error the cache package raises on purpose."""


class ConfigError(CacheError):
    """The cache config file is missing, malformed or invalid."""


class BadRequest(CacheError):
    """A client sent a request we refuse; ``status`` is the 4xx to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UpstreamError(CacheError):
    """A fetch from a peer, parent or origin failed; ``status`` is 502 or 504."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StorageError(CacheError):
    """The disk tier could not read or write an object (treated as a miss)."""
