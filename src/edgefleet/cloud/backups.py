"""Scheduled backups from the cloud: ``edgefleet cloud --backup-dir D --backup-every 1h --backup-keep N``.

How: one replica at a time (leader election ``/system/leader/backups``, so
replicas sharing an etcd store do not all back up) runs
:meth:`ScheduledBackups.run`: when a backup is due it writes a snapshot of
the store it already holds (:func:`edgefleet.store.backup.backup_to_file`:
one revision, temporary file, fsync, rename, mode 0600) to
``D/edgefleet-backup-<UTC time>-r<revision>.jsonl.gz``, then deletes the
oldest backups beyond the N newest. The decisions are pure functions with
the time passed in (:func:`next_due`, :func:`backup_name`,
:func:`to_delete`); the loop takes an injected clock and sleep, so tests
run a day of schedule without waiting.

When is a backup due: ``every`` seconds after the newest backup in the
directory (by the time in its name), or at once when there is none. So a
cloud restarted, or a new leader elected, does not back up again before the
period is over, and one that was down longer backs up at once.

Metrics (on the cloud's ``/metrics``):
``edgefleet_backup_last_success_timestamp_seconds``,
``edgefleet_backup_last_size_bytes``, ``edgefleet_backup_failures_total``.
A failure (disk full, store unavailable) is logged and counted, and the next
attempt comes after a tenth of the period (at least 10 s, at most the period);
the cloud keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from edgefleet.cloud.leader import LeaderElection
from edgefleet.store.backup import BackupSummary, StoreSource, backup_to_file
from edgefleet.store.interface import Store, StoreError

log = logging.getLogger("edgefleet.cloud.backups")

PREFIX = "edgefleet-backup-"
SUFFIX = ".jsonl.gz"
_NAME = re.compile(r"^edgefleet-backup-(\d{8}T\d{6}Z)-r(\d+)\.jsonl\.gz$")
_STAMP = "%Y%m%dT%H%M%SZ"
MIN_RETRY = 10.0


@dataclass(frozen=True, slots=True)
class BackupSchedule:
    directory: Path
    every: float
    """Seconds between two backups."""
    keep: int
    """How many of the newest backups are kept."""

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise ValueError("--backup-every must be a positive duration, for example 1h")
        if self.keep < 1:
            raise ValueError("--backup-keep must be at least 1")


def backup_name(now: float, revision: int) -> str:
    """``edgefleet-backup-20261207T145000Z-r1234.jsonl.gz``: sorts by time, says the revision."""
    return f"{PREFIX}{datetime.fromtimestamp(now, UTC).strftime(_STAMP)}-r{revision}{SUFFIX}"


def backup_time(name: str) -> float | None:
    """The time in a backup's name (seconds since the epoch), None for another file."""
    match = _NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC).timestamp()


def to_delete(names: list[str], keep: int) -> list[str]:
    """The backups beyond the ``keep`` newest (other files are never touched), oldest first."""
    backups = sorted((t, n) for n in names if (t := backup_time(n)) is not None)
    return [name for _, name in backups[: max(len(backups) - keep, 0)]]


def next_due(names: list[str], every: float) -> float:
    """When the next backup is due: ``every`` after the newest one in ``names``; 0 (now) if none."""
    times = [t for n in names if (t := backup_time(n)) is not None]
    return max(times) + every if times else 0.0


def retry_delay(every: float) -> float:
    return min(every, max(MIN_RETRY, every / 10))


class BackupMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            "edgefleet_backup_last_success_timestamp_seconds",
            "When the last scheduled backup was written (seconds since the epoch; 0: none yet)",
            registry=registry,
        )
        self.last_size = Gauge(
            "edgefleet_backup_last_size_bytes", "Size of the last scheduled backup file", registry=registry
        )
        self.failures = Counter(
            "edgefleet_backup_failures", "Scheduled backups that failed (see the cloud's log)", registry=registry
        )


class ScheduledBackups:
    """Back the store up on a schedule into a directory, keeping the newest N (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        schedule: BackupSchedule,
        metrics: BackupMetrics,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        source: str = "sqlite",
    ) -> None:
        self._store = store
        self._schedule = schedule
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._source = source  # the backend's name, for the backup's header

    def names(self) -> list[str]:
        try:
            return os.listdir(self._schedule.directory)
        except OSError:  # missing, or not a directory: the next backup fails, and says why
            return []

    async def run(self) -> None:
        """Forever (while leader): wait until a backup is due, write it, rotate."""
        while True:
            wait = next_due(self.names(), self._schedule.every) - self._clock()
            if wait > 0:
                await self._sleep(wait)
                continue
            if await self.backup_once() is None:
                await self._sleep(retry_delay(self._schedule.every))

    async def backup_once(self) -> BackupSummary | None:
        """One backup and rotation now; None (logged, counted) if it failed."""
        now = self._clock()
        directory = self._schedule.directory
        try:
            revision = await self._store.current_revision()
            created = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            summary = await backup_to_file(
                lambda: StoreSource(self._store, self._source),
                directory / backup_name(now, revision),
                created=created,
            )
        except (StoreError, OSError) as exc:
            self._metrics.failures.inc()
            log.error("scheduled backup failed: %s", exc, extra={"directory": str(directory)})
            return None
        self._metrics.last_success.set(now)
        self._metrics.last_size.set(summary.size)
        log.info(
            "backup written",
            extra={"path": summary.path, "revision": summary.revision, "keys": summary.count, "bytes": summary.size},
        )
        for name in to_delete(self.names(), self._schedule.keep):
            try:
                os.unlink(directory / name)
            except OSError as exc:
                log.warning("cannot delete old backup %s: %s", name, exc)
        return summary


def start(store: Store, store_url: str, schedule: BackupSchedule, registry: CollectorRegistry) -> asyncio.Task[None]:
    """The scheduled backups of ``edgefleet cloud``, on one replica at a time; metrics in ``registry``."""
    source = "etcd" if store_url.startswith("etcd://") else "sqlite"
    backups = ScheduledBackups(store, schedule, BackupMetrics(registry), source=source)
    log.info(
        "scheduled backups on",
        extra={"directory": str(schedule.directory), "every": schedule.every, "keep": schedule.keep},
    )
    return asyncio.create_task(LeaderElection(store, "backups").run(backups.run), name="backups")
