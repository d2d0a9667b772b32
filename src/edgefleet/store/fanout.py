"""In-memory fan-out of committed events to live watchers.

How: every live watcher owns a :class:`Subscriber`: its prefix, a bounded
queue of events and a wake-up flag. Right after the SQLite writer commits a
batch, the store calls :meth:`Fanout.publish` on the event loop with the
batch's events in revision order; each event is appended to the queue of
every subscriber whose prefix it starts with. Subscribers are grouped by
prefix, so an event is tested once per distinct prefix, not once per
watcher (many hub sessions watch the same prefixes).

Why bounded queues that end the watch: a consumer that stops reading must
cost neither the writer (which never waits on a watcher) nor the other
watchers, and must not grow memory without bound. When a queue is full the
subscriber is dropped on the spot, its queue freed, and its watch ends with
``WatchTooSlow``; the caller re-watches from the last revision it saw, which
replays the gap from the log table.

Everything here runs on the event loop thread only: no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from edgefleet.store.interface import Event


class Subscriber:
    """One live watcher's queue. ``start`` is the last revision published when it joined."""

    __slots__ = ("_limit", "_queue", "_wakeup", "closed", "overflowed", "prefix", "start")

    def __init__(self, prefix: str, start: int, limit: int) -> None:
        self.prefix = prefix
        self.start = start
        self.overflowed = False
        self.closed = False
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._wakeup = asyncio.Event()

    def pop(self) -> Event | None:
        return self._queue.popleft() if self._queue else None

    async def wait(self, idle_seconds: float) -> bool:
        """Wait for an event or the end of the subscription; False on timeout."""
        if self._queue or self.overflowed or self.closed:
            return True
        self._wakeup.clear()
        try:
            async with asyncio.timeout(idle_seconds):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    def _push(self, event: Event) -> bool:
        if len(self._queue) >= self._limit:
            return False
        self._queue.append(event)
        self._wakeup.set()
        return True

    def _end(self, *, overflowed: bool) -> None:
        if overflowed:
            self._queue.clear()  # the watch ends anyway; free the memory now
            self.overflowed = True
        self.closed = True
        self._wakeup.set()


class Fanout:
    """The set of live subscribers, by prefix."""

    def __init__(self, queue_limit: int) -> None:
        self._queue_limit = queue_limit
        self._by_prefix: dict[str, set[Subscriber]] = {}

    def subscribe(self, prefix: str, start: int) -> Subscriber:
        subscriber = Subscriber(prefix, start, self._queue_limit)
        self._by_prefix.setdefault(prefix, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._by_prefix.get(subscriber.prefix)
        if group is not None:
            group.discard(subscriber)
            if not group:
                del self._by_prefix[subscriber.prefix]

    def publish(self, events: Iterable[Event]) -> None:
        """Queue each event for the subscribers of matching prefixes; drop the full ones."""
        too_slow: list[Subscriber] = []
        for event in events:
            key = event.kv.key
            for prefix, group in self._by_prefix.items():
                if key.startswith(prefix):
                    too_slow.extend(s for s in group if not s.overflowed and not s._push(event))
            for subscriber in too_slow:
                subscriber._end(overflowed=True)
                self.unsubscribe(subscriber)
            too_slow.clear()

    def close(self) -> None:
        """End every subscription (the store is closing)."""
        for group in list(self._by_prefix.values()):
            for subscriber in group:
                subscriber._end(overflowed=False)
        self._by_prefix.clear()
