"""The periodic loop the status controllers share, and their status write (:func:`patch_status`).

How: :func:`run_periodically` calls the controller's ``sync_once`` (one
round: read, decide with the pure rule, write), logs a store or registry
failure as a warning instead of dying, waits ``period`` seconds, and starts
again, until cancelled. A failed round changes nothing the next one relies
on: controllers keep no state the store does not hold (see the package
docstring), so "retry next period" is the whole error handling.

Why one function: the three controllers had the same ``while True`` written
three times; their differences are only the round, the period and the name
in the log. The workload controller has a loop of its own (woken by index
changes, with a duty cycle) and does not use this one.

``sleep`` is injectable so a test can run rounds without waiting (a fake
sleep that records the periods and cancels after a few rounds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import NoReturn

from edgefleet.api.documents import JSONObject
from edgefleet.api.meta import KindInfo
from edgefleet.cloud.registry import ObjectNotFound, Registry, RegistryError, VersionConflict
from edgefleet.store.interface import StoreError

Round = Callable[[], Awaitable[object]]
"""One controller round (its ``sync_once``); what it returns is ignored here."""
Sleep = Callable[[float], Awaitable[None]]


async def run_periodically(
    name: str,
    round_once: Round,
    period: float,
    log: logging.Logger,
    *,
    settings: Mapping[str, object] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> NoReturn:
    """``round_once()`` every ``period`` seconds until cancelled; store failures are logged and retried.

    ``name`` goes into the log lines ("<name> controller started", "<name>
    round failed, retrying next period: ..."); ``settings`` are logged as
    extra fields of the first. Any other exception ends the loop: it is a
    bug, not weather.
    """
    log.info("%s controller started", name, extra={"period": period, **(settings or {})})
    while True:
        try:
            await round_once()
        except (StoreError, RegistryError) as exc:
            log.warning("%s round failed, retrying next period: %s", name, exc)
        await sleep(period)


async def patch_status(registry: Registry, kind: KindInfo, name: str, patch: JSONObject) -> bool:
    """Apply a status merge patch (carrying its resourceVersion precondition); False if the object moved on.

    A conflict or a deletion meanwhile is not an error for a status controller: the object is
    judged again, as it now is, next round.
    """
    try:
        await registry.patch(kind, name, patch, status=True)
    except (VersionConflict, ObjectNotFound):
        return False
    return True
