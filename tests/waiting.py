"""Waiting for a condition in tests: poll with a deadline, never sleep a fixed time.

Tests that cross a process boundary cannot be told when the other process
has done something, so they poll: ``wait_until`` (blocking) and
``eventually`` (asyncio) call a predicate until it returns something truthy
and return that value, or fail with what was awaited and the last value seen
after ``timeout`` seconds. A predicate that raises counts as "not yet" (the
process may not be listening yet; the last exception is shown on failure),
unless the exception is one the caller says to ``give_up`` on.

``pace`` keeps a bounded loop at a given rate (requests a second) without
drifting, for the tests that load a server for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, overload

T = TypeVar("T")
Falsy = Literal[False] | None  # "not yet" results of a predicate, never returned by wait_until


class Deadline:
    """``timeout`` seconds from now, on the monotonic clock."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def failure(self, what: str, last: object) -> AssertionError:
        return AssertionError(f"timed out after {self.timeout}s waiting for {what} (last: {last!r})")


def wait_until(
    predicate: Callable[[], T | Falsy],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
    give_up: type[Exception] | tuple[type[Exception], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return that.

    Typed to drop ``None`` and ``False`` from the result: ``wait_until(lambda: (r := get()).is_success and r)``
    is typed as the response ``get`` returns.

    An exception of a ``give_up`` type (say, "the process exited") ends the wait at once.
    """
    deadline = Deadline(timeout)
    last: object = None
    while True:
        try:
            value = predicate()
        except give_up:
            raise
        except Exception as error:  # not ready yet: remember why
            last = error
        else:
            if value:
                return value
            last = value
        if deadline.passed():
            raise deadline.failure(what, last)
        time.sleep(interval)


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T | Falsy]], within: float = ..., interval: float = ..., what: str = ...
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T | Falsy], within: float = ..., interval: float = ..., what: str = ...
) -> T: ...


async def eventually(
    predicate: Callable[[], object], within: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> object:
    """The asyncio ``wait_until`` (``within`` seconds): ``predicate`` may be a plain or an async function."""
    deadline = Deadline(within)
    last: object = None
    while True:
        try:
            value = predicate()
            if isinstance(value, Awaitable):
                value = await value
        except Exception as error:
            last = error
        else:
            if value:
                return value
            last = value
        if deadline.passed():
            raise deadline.failure(what, last)
        await asyncio.sleep(interval)


def pace(sent: int, rate: float, started: float) -> None:
    """Block until the ``sent``-th event of a loop started at ``started`` (monotonic) is due at ``rate``/s."""
    time.sleep(max(0.0, started + sent / rate - time.monotonic()))


def hold(seconds: float) -> None:
    """Let real time pass on purpose: the test asserts that something does *not* happen for a while.

    The only fixed wait tests may use, and only for that (a negative needs a window);
    say in the caller what must not happen.
    """
    time.sleep(seconds)
