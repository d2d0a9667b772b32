"""Leader election over a store lease: one cloud replica at a time runs a controller.

How: the leader holds the key ``/system/leader/<name>``, created only if
absent and bound to a lease of ``ttl`` seconds, with the holder's id as its
value. While leading, it refreshes the lease every ``ttl / 3`` seconds and
checks that the key is still its own; other replicas look every ``ttl / 3``
seconds and create the key once it is gone (deleted when the leader resigns,
or by the store when the leader's lease expires). Cancelling
:meth:`LeaderElection.run` stops the work and resigns (revokes the lease), so
a successor starts within one poll instead of one TTL.

Why it is safe enough: the old leader stops its work as soon as a refresh
fails for as long as its lease could still live, measured from *before* the
last successful refresh was sent; the store cannot expire the lease earlier
than that, so the old leader stops first. A stalled process (paused,
swapped out) can still overlap a successor for a moment, so controllers run
under an election must keep their writes idempotent and guarded by
resourceVersion preconditions, as the node lifecycle controller does.

Why polling rather than a watch: elections are rare and a poll every few
seconds costs nothing, while a watch would need its own reconnect logic.
The same code runs on SQLite (one process: it simply wins) and on etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from edgefleet.store.interface import AlreadyExists, LeaseNotFound, Store, StoreError

log = logging.getLogger("edgefleet.cloud.leader")

LEADER_PREFIX = "/system/leader/"
Work = Callable[[], Coroutine[Any, Any, None]]
DEFAULT_TTL = 10
RESIGN_TIMEOUT = 2.0


def default_holder() -> str:
    """``host-pid-random``: unique per process, readable in the store."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class LeaderElection:
    """Run work only while holding ``/system/leader/<name>``; see the module docstring."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        holder: str | None = None,
        ttl: int = DEFAULT_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 1:
            raise ValueError("the leader lease ttl must be at least 1 second")
        self.key = LEADER_PREFIX + name
        self.holder = holder or default_holder()
        self.is_leader = False
        self._store = store
        self._ttl = ttl
        self._interval = ttl / 3
        self._now = monotonic

    async def run(self, work: Work) -> None:
        """Forever: wait for leadership, run ``work`` while leading, stop it when leadership ends."""
        while True:
            lease = await self._campaign()
            try:
                await self._lead(lease, work)
            finally:
                await self._resign(lease)
            await asyncio.sleep(self._interval)  # leadership was lost: give the others a turn

    async def _campaign(self) -> int:
        while True:
            lease = await self._try_acquire()
            if lease:
                log.info("became leader", extra={"election": self.key, "holder": self.holder})
                return lease
            await asyncio.sleep(self._interval)

    async def _try_acquire(self) -> int:
        """The lease id if this replica now holds the key, else 0."""
        try:
            if await self._store.get(self.key) is not None:
                return 0
            lease = (await self._store.grant_lease(self._ttl)).id
        except StoreError as exc:
            log.warning("leader election cannot read the store: %s", exc, extra={"election": self.key})
            return 0
        try:
            await self._store.create(self.key, self._value(), lease=lease)
        except StoreError as exc:  # AlreadyExists: lost the race; others: give up this round
            if not isinstance(exc, AlreadyExists):
                log.warning("leader election write failed: %s", exc, extra={"election": self.key})
            await self._revoke(lease)
            return 0
        return lease

    async def _lead(self, lease: int, work: Work) -> None:
        """Run ``work`` until it ends (a bug: logged) or leadership is lost."""
        self.is_leader = True
        worker = asyncio.create_task(work(), name=f"leader:{self.key}")
        keeper = asyncio.create_task(self._keep(lease), name=f"lease:{self.key}")
        try:
            await asyncio.wait({worker, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.is_leader = False
            for task in (worker, keeper):
                task.cancel()
            await asyncio.gather(worker, keeper, return_exceptions=True)
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            log.error("leader work failed; resigning", exc_info=worker.exception(), extra={"election": self.key})

    async def _keep(self, lease: int) -> None:
        """Refresh the lease until that fails for too long or the key is not ours; then return."""
        deadline = self._now() + self._ttl
        while True:
            await asyncio.sleep(max(min(self._interval, deadline - self._now()), 0))
            sent = self._now()
            if sent >= deadline:
                log.warning("lease refresh failed for a whole ttl; stepping down", extra={"election": self.key})
                return
            try:
                async with asyncio.timeout(deadline - sent):
                    await self._store.keepalive(lease)
                    ours = await self._still_ours(lease)
            except LeaseNotFound:
                log.warning("leader lease expired; stepping down", extra={"election": self.key})
                return
            except (StoreError, TimeoutError) as exc:
                log.warning("leader lease refresh failed: %s", exc, extra={"election": self.key})
                continue
            if not ours:
                log.warning("leader key taken or deleted; stepping down", extra={"election": self.key})
                return
            deadline = sent + self._ttl

    async def _still_ours(self, lease: int) -> bool:
        kv = await self._store.get(self.key)
        return kv is not None and kv.lease == lease and kv.value == self._value()

    async def _resign(self, lease: int) -> None:
        self.is_leader = False
        await self._revoke(lease)

    async def _revoke(self, lease: int) -> None:
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout(RESIGN_TIMEOUT):
                await self._store.revoke_lease(lease)

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder}, separators=(",", ":")).encode()
