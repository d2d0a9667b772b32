"""One watch stream for several kinds: ``GET /apis/edgefleet.io/v1/watch?kinds=sites,nodes:42,...``.

Why: a browser keeps at most six HTTP/1.1 connections per host, and a watch
holds one for as long as it streams. The dashboard watched six kinds with one
request each, so a seventh kind, or any other fetch while the six streamed,
waited forever in the browser's queue. One multiplexed stream holds one
connection whatever the number of kinds.

How: each entry of ``kinds`` is ``<plural>`` (list first, like a watch
without ``resourceVersion``) or ``<plural>:<resourceVersion>`` (resume after
that revision). Every kind is the same watch as
``GET /apis/edgefleet.io/v1/<plural>?watch=true`` (cloud/server.py opens it:
the same authorization, redaction for viewers, store watch, bookmarks and
line encoding), and every line it writes carries ``"resource": "<plural>"``.
A kind started without a revision sends its objects as ADDED, then a
BOOKMARK annotated ``edgefleet.io/initial-events-end: "true"`` at the
revision they were read at, so a client replaces its copy of that kind then.
A kind whose revision was compacted gets one ``ERROR`` line with a 410
Status, tagged with its plural, and ends; the other kinds go on. The client
resumes every kind from its own last revision and relists only the kinds that
got 410.

A task per kind pumps its lines into one queue of :data:`QUEUE_LINES` lines
that the response reads. A reader that stops reading fills the queue, the
pumps stop pulling from the store, the store's bounded per-watcher queue
overflows, and the stream ends (a warning in the log): a slow reader is
dropped, never buffered without limit, and resumes from its revisions, which
replays the gap from the store's log.

Limits: at most :data:`MAX_KINDS` kinds; an unknown or repeated kind, an
empty entry or a malformed revision is 400 before anything is read. Each
kind holds one of the principal's watch slots (``--max-watches-per-principal``),
since each is one store watch. ``edgefleet_api_multiplexed_watches`` counts
open streams; their kinds count in ``edgefleet_api_watchers{kind}`` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse
from prometheus_client import Gauge
from starlette.types import Receive, Scope, Send

from edgefleet.api.meta import API_VERSION, KindInfo
from edgefleet.cloud.limits import WatchSlots
from edgefleet.cloud.registry import BadRequest
from edgefleet.store.interface import StoreError

WATCH_PATH = f"/apis/{API_VERSION}/watch"
MAX_KINDS = 16
"""Security limit: kinds in one stream (each is a store watch and a watch slot)."""
QUEUE_LINES = 256
"""Lines buffered between the kinds' watches and a slow reader before the store's own bound ends it."""
INITIAL_EVENTS_END = "edgefleet.io/initial-events-end"
"""Annotation of the BOOKMARK after a listed kind's ADDED objects: the client's copy is complete."""
KINDS_HELP = (
    "Comma-separated kinds to watch, by plural (at most 16, each once). `sites` lists the kind first "
    "(ADDED objects, then a BOOKMARK annotated edgefleet.io/initial-events-end); `sites:42` resumes "
    "after resourceVersion 42."
)
DESCRIPTION = (
    "Several kinds on one connection (browsers keep six per host). Each line is "
    '`{"type", "resource", "object"}`: the watch events of `GET /apis/edgefleet.io/v1/<resource>?watch=true`, '
    "tagged with the kind's plural. A kind whose resourceVersion was compacted gets one ERROR line with "
    "a 410 Status and ends; list it again (or name it without a revision) and resume the rest. "
    "Each kind is authorized and counted against the token's watch limit like a watch of its own."
)
log = logging.getLogger("edgefleet.cloud.multiwatch")


@dataclass(frozen=True, slots=True)
class KindStart:
    """One kind of a multiplexed watch: list first (``after`` 0) or resume after ``after``."""

    info: KindInfo
    after: int


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "...")


def parse_kinds(text: str, kinds: Mapping[str, KindInfo]) -> list[KindStart]:
    """``sites,nodes:42`` -> the kinds to watch; BadRequest (400) naming what is wrong."""
    entries = [entry.strip() for entry in text.split(",")]
    if len(entries) > MAX_KINDS:
        raise BadRequest(f"kinds: {len(entries)} kinds named, at most {MAX_KINDS} per watch; open a second watch")
    starts: list[KindStart] = []
    for entry in entries:
        plural, colon, version = entry.partition(":")
        info = kinds.get(plural)
        if info is None:
            hint = "an empty entry" if not plural else f"unknown kind {_shown(plural)}"
            raise BadRequest(f"kinds: {hint}; name kinds by plural, one of: {', '.join(sorted(kinds))}")
        if any(start.info is info for start in starts):
            raise BadRequest(f"kinds: {plural!r} is named twice; name each kind once")
        if colon and not (version.isascii() and version.isdigit()):
            raise BadRequest(
                f"kinds: {plural}:{_shown(version)}: the resourceVersion must be a decimal store revision "
                f"(or leave it out, `{plural}`, to list the kind first)"
            )
        starts.append(KindStart(info, int(version) if colon else 0))
    return starts


def acquire_slots(slots: WatchSlots, principal: str, count: int) -> None:
    """One watch slot per kind; TooManyWatches (and none held) when the principal has too few left."""
    for taken in range(count):
        try:
            slots.acquire(principal)
        except BaseException:
            release_slots(slots, principal, taken)
            raise


def release_slots(slots: WatchSlots, principal: str, count: int) -> None:
    for _ in range(count):
        slots.release(principal)


@dataclass(frozen=True, slots=True)
class _End:
    """A kind's pump finished; ``error`` when its watch failed (too slow, store gone)."""

    error: Exception | None


async def _pump(lines: AsyncGenerator[bytes, None], queue: asyncio.Queue[bytes | _End]) -> None:
    error: Exception | None = None
    try:
        async for line in lines:
            await queue.put(line)  # blocks while the reader is behind: the store's bound ends a slow reader
    except Exception as exc:  # reported through the queue: the stream ends and says why in the log
        error = exc
    finally:
        await lines.aclose()
    await queue.put(_End(error))


async def merged(
    streams: Sequence[AsyncGenerator[bytes, None]], queue_lines: int = QUEUE_LINES
) -> AsyncGenerator[bytes, None]:
    """The lines of every stream as they come (each stream's order kept); ends when all end or one fails."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(queue_lines)
    pumps = [asyncio.create_task(_pump(stream, queue)) for stream in streams]
    running = len(pumps)
    try:
        while running:
            item = await queue.get()
            if not isinstance(item, _End):
                yield item
                continue
            running -= 1
            if item.error is not None:
                _log_end(item.error)
                return
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def _log_end(error: Exception) -> None:
    if isinstance(error, StoreError):
        log.warning("multiplexed watch ended: %s; the client resumes from its revisions", error)
    else:
        log.error("multiplexed watch failed", exc_info=error)


async def holding(
    lines: AsyncGenerator[bytes, None], slots: WatchSlots, principal: str, count: int, gauge: Gauge
) -> AsyncGenerator[bytes, None]:
    """``lines``, counted in ``gauge`` while open, releasing the ``count`` slots however it ends."""
    gauge.inc()
    try:
        async for line in lines:
            yield line
    finally:
        gauge.dec()
        release_slots(slots, principal, count)
        await lines.aclose()  # stops the kinds' store watches now, not when the generator is collected


class ClosingStream(StreamingResponse):
    """A streaming response that closes its body when it ends, however it ends.

    Starlette leaves a body iterator suspended when the client goes away (the
    send fails); it would be closed only when collected, and until then it
    would hold its store watches, its watch slots and its gauge.
    """

    def __init__(self, lines: AsyncGenerator[bytes, None], media_type: str) -> None:
        super().__init__(lines, media_type=media_type)
        self._lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._lines.aclose()
