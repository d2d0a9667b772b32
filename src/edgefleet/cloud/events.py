"""Recording Events about objects, and forgetting them after an hour.

How: :func:`record` creates one :class:`~edgefleet.api.events.Event`
through the registry, named ``<object>.<random>`` (the object's name, cut
short if needed, a dot and 12 random hex digits), so that ``edgefleet get
events`` lists an object's events together and two components recording at
once never collide. It does not aggregate repeats into ``count``: the
cloud's components record decisions (a site activated), which are rare and
each worth a line; a reporter that repeats itself should say so in its own
rate, not make every record a read-modify-write.

Retention: :class:`EventCollector` lists the Events every ``period``
seconds and deletes those whose ``lastTimestamp`` is older than ``max_age``
(an hour), each with its resourceVersion as a precondition (an Event
updated meanwhile is judged again next round). Events are a recent history
for people, not an audit log, and every hub replica keeps every object in
memory, so they must not pile up. It runs on one cloud replica at a time,
under the leader election ``/system/leader/events``. :func:`expired` is
the pure rule.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from edgefleet.api.common import format_timestamp, parse_timestamp
from edgefleet.api.documents import StoredDocument
from edgefleet.api.events import INFO as EVENTS
from edgefleet.api.events import MAX_MESSAGE_LENGTH
from edgefleet.api.meta import MAX_NAME_LENGTH
from edgefleet.cloud.registry import ObjectNotFound, Registry, RegistryError, VersionConflict
from edgefleet.store.interface import StoreError

log = logging.getLogger("edgefleet.cloud.events")

MAX_AGE_SECONDS = 3600.0
"""Events whose lastTimestamp is older than this are deleted."""
SUFFIX_HEX_DIGITS = 12


def event_name(object_name: str, suffix: str | None = None) -> str:
    """``<object>.<random>``, within the 253 characters of a name."""
    suffix = suffix or secrets.token_hex(SUFFIX_HEX_DIGITS // 2)
    room = MAX_NAME_LENGTH - len(suffix) - 1
    head = object_name[:room].rstrip(".-") or "event"
    return f"{head}.{suffix}"


def event_document(
    kind: str, name: str, reason: str, message: str, *, type: str, source: str, now: datetime
) -> StoredDocument:
    """The Event to create (a fresh name each call); long messages lose their tail."""
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
    stamp = format_timestamp(now)
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Event",
        "metadata": {"name": event_name(name)},
        "spec": {
            "involvedObject": {"kind": kind, "name": name},
            "reason": reason,
            "message": message,
            "type": type,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": source,
        },
    }


async def record(
    registry: Registry,
    kind: str,
    name: str,
    reason: str,
    message: str,
    type: str = "Normal",
    source: str = "edgefleet-cloud",
    *,
    now: datetime | None = None,
) -> StoredDocument:
    """Create an Event about object ``kind``/``name``; returns it as stored.

    Raises the registry's and the store's errors (ValidationFailed for a
    reason that is not a CamelCase word): callers that record on the side
    of their real work catch and log them.
    """
    document = event_document(kind, name, reason, message, type=type, source=source, now=now or datetime.now(UTC))
    return await registry.create(EVENTS, document)


def expired(events: Iterable[StoredDocument], now: datetime, max_age: float = MAX_AGE_SECONDS) -> list[StoredDocument]:
    """The events whose lastTimestamp is older than ``max_age`` seconds (or unreadable)."""
    limit = now - timedelta(seconds=max_age)
    old = []
    for event in events:
        try:
            last = parse_timestamp(str((event.get("spec") or {}).get("lastTimestamp")))
        except ValueError:
            old.append(event)  # stored objects were validated; an unreadable time is not worth keeping
            continue
        if last < limit:
            old.append(event)
    return old


class EventCollector:
    """Every ``period`` seconds: delete the Events older than ``max_age`` seconds."""

    def __init__(
        self,
        registry: Registry,
        *,
        period: float = 60.0,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._period = period
        self._max_age = max_age
        self._clock = clock

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        while True:
            try:
                await self.collect_once()
            except (StoreError, RegistryError) as exc:
                log.warning("event garbage collection failed, retrying next period: %s", exc)
            await asyncio.sleep(self._period)

    async def collect_once(self) -> int:
        """One round; returns how many Events were deleted."""
        page = await self._registry.list(EVENTS)
        deleted = 0
        for event in expired(page.items, self._clock(), self._max_age):
            metadata = event["metadata"]
            try:
                await self._registry.delete(EVENTS, metadata["name"], resource_version=int(metadata["resourceVersion"]))
            except (ObjectNotFound, VersionConflict):
                continue  # deleted or updated meanwhile: judged again next round
            deleted += 1
        if deleted:
            log.info("deleted %d expired events", deleted)
        return deleted
