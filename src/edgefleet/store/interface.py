"""The store interface every backend implements, and the values it deals in.

How: a store is a versioned key-value map. Every change (create, update,
delete, lease expiry) gets the next store *revision*, a strictly increasing
integer shared by all keys, exactly as in etcd v3. A key remembers the
revision that created it (``create_revision``), the revision of its last
change (``mod_revision``) and how many times it changed (``version``).

Why this shape: it is the etcd v3 model, so the etcd backend maps onto it
one to one and the SQLite backend copies its semantics (the layout follows
kine, which runs Kubernetes on SQL databases). Callers above the store (the
resource layer, the API server, the hub) only see these types, so one
conformance suite proves both backends equal.

Watch contract: ``watch(prefix, after_revision)`` yields every change under
``prefix`` with a revision greater than ``after_revision``, in revision
order, without gaps or duplicates, then goes on live. If that history was
compacted it raises :class:`Compacted` (at once or from the first
``__anext__``). Deletions carry the last value of the key (``kv.value``),
with ``kv.mod_revision`` set to the revision of the deletion. Besides events
a watch yields :class:`Progress` markers when idle: "every change up to this
revision has been yielded". A watch whose consumer falls too far behind may
end with :class:`WatchTooSlow`; one whose store closes simply ends. On etcd
the deletions of an expired or revoked lease's keys share one revision (one
event per key); everywhere else each change has a revision of its own.

Writes that may or may not have been applied (the reply was lost) raise
:class:`OutcomeUnknown`, never a "clean" failure.

Values are opaque bytes; keys are ``str`` paths such as
``/registry/sites/eu-west``: they start with ``/`` and contain no NUL
(:class:`InvalidKey` otherwise); prefixes are ``""`` or such a path.
Backends add their own root prefix if they need one and hide it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class StoreError(Exception):
    """Base of every error the store raises."""


class NotFound(StoreError):
    """The key does not exist (or no longer exists)."""


class AlreadyExists(StoreError):
    """``create`` of a key that exists."""


class Conflict(StoreError):
    """The key changed since the revision the caller expected.

    ``actual`` is the key's current ``mod_revision`` (0 if it was deleted).
    """

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class Compacted(StoreError):
    """The requested revision is older than the compacted history.

    ``compacted_revision`` is the oldest revision still readable/watchable.
    """

    def __init__(self, requested: int, compacted_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted; oldest available is {compacted_revision}")
        self.requested = requested
        self.compacted_revision = compacted_revision


class FutureRevision(StoreError):
    """A read at a revision the store has not reached yet."""


class LeaseNotFound(StoreError):
    """The lease expired or was revoked (or never existed)."""


class Unavailable(StoreError):
    """The backend cannot be reached or lost quorum; the caller may retry."""


class OutcomeUnknown(Unavailable):
    """A write was sent but its result never came back: it may or may not be applied.

    Raised instead of a plain failure so that a write that *did* happen is
    never reported as one that did not. Re-read the key before deciding what
    to do; a blind retry may fail with AlreadyExists/Conflict because of this
    very write.
    """


class WatchTooSlow(StoreError):
    """The watcher fell behind the writers and its buffer overflowed.

    The watch ended so that it never blocks writers or other watchers. Watch
    again after ``last_revision``: every change up to it was yielded.
    """

    def __init__(self, last_revision: int) -> None:
        super().__init__(f"watch consumer too slow (buffer overflowed); watch again after {last_revision}")
        self.last_revision = last_revision


class InvalidKey(StoreError):
    """A key or prefix that is not a ``/``-rooted path (or contains NUL)."""


class InvalidStoreURL(StoreError):
    """``open_store`` got a URL it does not understand; the message lists the accepted forms."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """One change. ``prev`` is the value before the change (None on create)."""

    type: EventType
    kv: KeyValue
    prev: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @property
    def created(self) -> bool:
        return self.type is EventType.PUT and self.kv.create_revision == self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class Progress:
    """Every change under the watched prefix up to ``revision`` was yielded."""

    revision: int


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int
    """The store revision the list was read at."""
    more: bool
    """True when ``limit`` cut the list short; continue after the last key."""


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


class Watch(Protocol[T_co]):
    """A running watch: iterate it with ``async for``; ``aclose()`` stops it and frees its buffer.

    Why a protocol: backends implement ``watch`` as async generators, and an
    async generator is a Watch; callers get ``aclose`` typed (an
    ``AsyncIterator`` has none), so ``try: async for ... finally: await
    w.aclose()`` and ``contextlib.aclosing(w)`` need no cast.
    """

    def __aiter__(self) -> AsyncIterator[T_co]: ...

    def __anext__(self) -> Coroutine[Any, Any, T_co]: ...

    def aclose(self) -> Awaitable[None]: ...


class Store(abc.ABC):
    """A revisioned key-value store. See the module docstring for semantics."""

    @property
    @abc.abstractmethod
    def epoch(self) -> str:
        """An id that changes when the store is replaced or restored."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        """Keys under ``prefix`` in key order, after ``start_after`` if given.

        ``revision`` 0 reads the latest state; otherwise the state at that
        revision (Compacted / FutureRevision when out of range). ``limit`` 0
        means no limit.
        """

    @abc.abstractmethod
    async def create(self, key: str, value: bytes, *, lease: int = 0) -> KeyValue:
        """Create ``key``; AlreadyExists if it exists. Returns the new KeyValue."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, *, expected_revision: int = 0, lease: int = 0) -> KeyValue:
        """Replace an existing key's value.

        ``expected_revision`` > 0 requires the key's mod_revision to equal it
        (Conflict otherwise); NotFound if the key does not exist.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        """Delete ``key``; returns its last value with mod_revision = the deletion's revision."""

    @abc.abstractmethod
    def watch(self, prefix: str, after_revision: int) -> Watch[Event | Progress]:
        """Changes under ``prefix`` after ``after_revision``; see the module docstring.

        Close it (``aclose``) to stop watching.
        """

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    @abc.abstractmethod
    async def compacted_revision(self) -> int: ...

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history before ``revision``; reads/watches before it raise Compacted."""

    @abc.abstractmethod
    async def grant_lease(self, ttl: int) -> Lease: ...

    @abc.abstractmethod
    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; returns the TTL. LeaseNotFound when it is gone."""

    @abc.abstractmethod
    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease and delete its keys (each deletion is an event)."""

    @abc.abstractmethod
    async def close(self) -> None: ...
