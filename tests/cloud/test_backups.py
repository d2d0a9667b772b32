"""Scheduled backups: when they are due, rotation, metrics; a day of schedule on an injected clock."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edgefleet.cloud.backups import (
    BackupMetrics,
    BackupSchedule,
    ScheduledBackups,
    backup_name,
    backup_time,
    next_due,
    retry_delay,
    to_delete,
)
from edgefleet.store.backup import verify_backup
from edgefleet.store.sqlite import SqliteStore

START = 1_796_000_000.0  # 2026-11-30T00:53:20Z
HOUR = 3600.0


def test_names_sort_by_time_and_say_the_revision() -> None:
    name = backup_name(START, 42)
    assert name == "edgefleet-backup-20261130T005320Z-r42.jsonl.gz"
    assert backup_time(name) == START
    assert backup_time("notes.txt") is None and backup_time("edgefleet-backup-x.jsonl.gz") is None


def test_rotation_keeps_the_newest_and_touches_nothing_else() -> None:
    names = [backup_name(START + i * HOUR, i) for i in range(5)] + ["README", ".tmp-file"]
    assert to_delete(names, 3) == names[:2]
    assert to_delete(names, 10) == []


def test_a_backup_is_due_a_period_after_the_newest() -> None:
    assert next_due([], HOUR) == 0.0
    assert next_due([backup_name(START, 1), backup_name(START + 60, 2)], HOUR) == START + 60 + HOUR
    assert retry_delay(HOUR) == 360 and retry_delay(30) == 10 and retry_delay(5) == 5


def test_bad_schedules_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--backup-every"):
        BackupSchedule(tmp_path, 0, 3)
    with pytest.raises(ValueError, match="--backup-keep"):
        BackupSchedule(tmp_path, HOUR, 0)


class Stop(Exception):
    pass


async def test_a_day_of_hourly_backups_keeps_the_newest_three(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    now = [START]
    sleeps: list[float] = []
    writes = 0

    async def sleep(seconds: float) -> None:
        nonlocal writes
        sleeps.append(seconds)
        now[0] += seconds
        await store.create(f"/registry/sites/s{writes}", b'{"kind":"Site","metadata":{"name":"s%d"}}' % writes)
        writes += 1
        if now[0] >= START + 24 * HOUR:
            raise Stop

    registry = CollectorRegistry()
    backups = ScheduledBackups(
        store, BackupSchedule(tmp_path / "backups", HOUR, 3), BackupMetrics(registry), clock=lambda: now[0], sleep=sleep
    )
    try:
        with pytest.raises(Stop):
            await backups.run()
    finally:
        await store.close()
    names = sorted(os.listdir(tmp_path / "backups"))
    assert names == [backup_name(START + h * HOUR, h) for h in (21, 22, 23)], names
    assert set(sleeps) == {HOUR}, "one backup an hour, none in between"
    newest = tmp_path / "backups" / names[-1]
    assert stat.S_IMODE(newest.stat().st_mode) == 0o600
    assert verify_backup(newest)[1].count == 23
    assert registry.get_sample_value("edgefleet_backup_last_success_timestamp_seconds") == START + 23 * HOUR
    assert registry.get_sample_value("edgefleet_backup_last_size_bytes") == newest.stat().st_size
    assert registry.get_sample_value("edgefleet_backup_failures_total") == 0


async def test_a_failed_backup_is_counted_and_retried_sooner(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    (tmp_path / "backups").write_text("a file where the directory should be")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        raise Stop

    registry = CollectorRegistry()
    backups = ScheduledBackups(
        store, BackupSchedule(tmp_path / "backups", HOUR, 3), BackupMetrics(registry), clock=lambda: START, sleep=sleep
    )
    try:
        with pytest.raises(Stop):
            await backups.run()
    finally:
        await store.close()
    assert sleeps == [retry_delay(HOUR)]
    assert registry.get_sample_value("edgefleet_backup_failures_total") == 1
    assert registry.get_sample_value("edgefleet_backup_last_success_timestamp_seconds") == 0
