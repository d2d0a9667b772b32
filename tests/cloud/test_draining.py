"""Watch deadlines brought forward on a stop (cloud/draining.py), on a real event loop without a server."""

from __future__ import annotations

import asyncio

import pytest

from edgefleet.cloud.draining import end_watches, watch_deadline


async def a_watch(started: asyncio.Event, seconds: float = 60.0) -> str:
    """What the watch route does: wait for events under its deadline; the deadline ends it quietly."""
    try:
        async with watch_deadline(seconds):
            started.set()
            await asyncio.Event().wait()  # no event ever comes
    except TimeoutError:
        return "ended at its deadline"
    return "not reached"


async def test_end_watches_ends_every_open_watch_as_its_timeout_would() -> None:
    events = [asyncio.Event(), asyncio.Event()]
    watches = [asyncio.create_task(a_watch(started)) for started in events]
    for started in events:
        await started.wait()
    assert end_watches() == 2
    assert await asyncio.wait_for(asyncio.gather(*watches), 5) == ["ended at its deadline"] * 2
    assert end_watches() == 0, "ended watches are forgotten"


async def test_a_watch_opened_after_an_earlier_end_stays_open_until_the_next() -> None:
    end_watches()
    started = asyncio.Event()
    watch = asyncio.create_task(a_watch(started))
    await started.wait()
    await asyncio.sleep(0)  # still open: only end_watches (or its own deadline) ends it
    assert not watch.done()
    assert end_watches() == 1
    assert await asyncio.wait_for(watch, 5) == "ended at its deadline"


async def test_an_error_inside_a_watch_still_propagates_and_unregisters() -> None:
    with pytest.raises(ValueError, match="boom"):
        async with watch_deadline(60):
            raise ValueError("boom")
    assert end_watches() == 0
