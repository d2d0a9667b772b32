"""The controllers' shared periodic loop, driven by a fake sleep: no real time passes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgefleet.cloud.controllers.loop import run_periodically
from edgefleet.cloud.registry import VersionConflict
from edgefleet.store.interface import Unavailable

log = logging.getLogger("tests.controller_loop")


class FakeSleep:
    """Records each wait; cancels the loop after ``rounds`` waits."""

    def __init__(self, rounds: int) -> None:
        self.waits: list[float] = []
        self.rounds = rounds

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) >= self.rounds:
            raise asyncio.CancelledError


async def test_rounds_are_spaced_by_the_period_until_cancelled() -> None:
    calls: list[int] = []

    async def round_once() -> int:
        calls.append(len(calls))
        return 0

    sleep = FakeSleep(rounds=3)
    with pytest.raises(asyncio.CancelledError):
        await run_periodically("test", round_once, 2.5, log, sleep=sleep)
    assert calls == [0, 1, 2]
    assert sleep.waits == [2.5, 2.5, 2.5]


async def test_store_and_registry_failures_are_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[Exception] = [Unavailable("etcd lost quorum"), VersionConflict("changed meanwhile")]
    done: list[bool] = []

    async def round_once() -> None:
        if failures:
            raise failures.pop(0)
        done.append(True)

    with caplog.at_level(logging.INFO, logger=log.name), pytest.raises(asyncio.CancelledError):
        await run_periodically("test", round_once, 1.0, log, settings={"limit": 3}, sleep=FakeSleep(rounds=3))
    assert done == [True], "the third round ran after two failed ones"
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "test controller started"
    assert getattr(caplog.records[0], "limit", None) == 3
    assert messages[1:] == [
        "test round failed, retrying next period: etcd lost quorum",
        "test round failed, retrying next period: changed meanwhile",
    ]


async def test_a_bug_in_a_round_ends_the_loop() -> None:
    async def round_once() -> None:
        raise KeyError("metadata")

    sleep = FakeSleep(rounds=10)
    with pytest.raises(KeyError):
        await run_periodically("test", round_once, 1.0, log, sleep=sleep)
    assert sleep.waits == []
