"""Purges and Prefetches on one node: done once each, retried with backoff, remembered across restarts.

How: the open Purges and Prefetches of the node's view (see
:mod:`edgefleet.sync.views`) become :class:`CacheTask`\\ s. The
:class:`TaskLedger` (pure: it is told the time) decides which are due and
records what came of each, by ``metadata.uid``:

- Done (the cache answered 200) and Failed (given up, or a Prefetch whose
  URLs the origin refused) are *final*: the uid is never done again. Final
  records are saved in ``cache-tasks.json`` in the agent's data directory
  after every change, so an agent restart or a cloud outage never repeats
  or forgets a purge. The file keeps at most :data:`MAX_RECORDS` records,
  dropping the oldest of those no longer in the view first.
- Any other answer (the cache restarting, a 5xx, a timeout, a domain the
  cache has not reloaded yet) is retried after 1, 2, 4... seconds, capped
  at :data:`RETRY_CAP_SECONDS`, and given up as Failed after
  :data:`MAX_ATTEMPTS` attempts. While the cache workload is not ready the
  task waits without spending attempts.
- A node that runs no built-in cache workload at all (by its synced view)
  has nothing cached: its tasks are Done at once, with a message saying so.

:meth:`TaskLedger.report` is what the agent puts in ``Node.status.purges``
and ``Node.status.prefetches``: every open task of the view (newest first,
at most :data:`~edgefleet.api.nodes.MAX_TASK_REPORTS`), Pending until final.

:class:`CacheAdmin` is the I/O shell: the HTTP client of the cache's admin
endpoint (``POST /purge``, ``POST /prefetch``, ``GET /status``), one aiohttp
session, bounded answers. :class:`CacheTasks` puts ledger, file and client
together for the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import ValidationError

from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.nodes import MAX_TASK_REPORTS, CacheStats
from edgefleet.edge.cacheconfig import AdminEndpoint
from edgefleet.edge.workdirs import write_atomic

log = logging.getLogger("edgefleet.edge.cachetasks")

LEDGER_FILE = "cache-tasks.json"
MAX_RECORDS = 4096
MAX_ATTEMPTS = 8
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 60.0
MAX_MESSAGE = 500
MAX_ANSWER_BYTES = 1024 * 1024
"""Security limit on an admin answer read by the agent."""
PURGE_TIMEOUT = 60.0
PREFETCH_TIMEOUT = 660.0
"""The cache gives a prefetch 600 s; the agent waits a little longer."""
STATUS_TIMEOUT = 5.0

Kind = Literal["Purge", "Prefetch"]
Final = Literal["Done", "Failed"]


@dataclass(frozen=True, slots=True)
class CacheTask:
    """One Purge or Prefetch to send to the cache's admin endpoint."""

    kind: Kind
    name: str
    uid: str
    created: str
    body: Document

    @property
    def path(self) -> str:
        return "/purge" if self.kind == "Purge" else "/prefetch"


def _task(kind: Kind, document: Mapping[str, Any]) -> CacheTask | None:
    metadata, spec = document.get("metadata") or {}, document.get("spec") or {}
    name, uid, domain = metadata.get("name"), metadata.get("uid"), spec.get("domain")
    if not (isinstance(name, str) and isinstance(uid, str) and uid and isinstance(domain, str)):
        return None
    urls = list(spec.get("urls") or [])
    if kind == "Prefetch":
        body: Document = {"domain": domain, "urls": urls}
    else:
        body = {
            "domain": domain,
            "urls": urls,
            "prefixes": list(spec.get("prefixes") or []),
            "tags": list(spec.get("tags") or []),
            "soft": spec.get("mode") == "soft",
        }
    return CacheTask(kind, name, uid, str(metadata.get("creationTimestamp") or ""), body)


def tasks_from_view(purges: Iterable[Mapping[str, Any]], prefetches: Iterable[Mapping[str, Any]]) -> list[CacheTask]:
    """The tasks of the view's Purge and Prefetch documents, oldest first (malformed ones left out)."""
    found = [_task("Purge", d) for d in purges] + [_task("Prefetch", d) for d in prefetches]
    return sorted((t for t in found if t is not None), key=lambda t: (t.created, t.kind, t.name))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an admin answer means: final (Done/Failed) or worth another try (Retry)."""

    state: Literal["Done", "Failed", "Retry"]
    message: str


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def judge(task: CacheTask, status: int, answer: Any) -> Outcome:
    """Interpret the admin endpoint's answer (``status`` and decoded JSON) to ``task``."""
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        return Outcome("Retry", _clip(f"cache admin answered HTTP {status}: {error or 'no details'}"))
    if not isinstance(answer, dict):
        return Outcome("Retry", "cache admin answered 200 without a JSON object")
    if task.kind == "Purge":
        return Outcome("Done", f"purged {answer.get('purged', '?')}")
    failed = answer.get("failed") if isinstance(answer.get("failed"), list) else []
    if not failed:
        return Outcome("Done", f"fetched {answer.get('fetched', '?')}")
    first = failed[0] if isinstance(failed[0], dict) else {}
    return Outcome(
        "Failed",
        _clip(f"{len(failed)} of {len(task.body['urls'])} URLs failed, e.g. {first.get('url')}: {first.get('error')}"),
    )


@dataclass(frozen=True, slots=True)
class Record:
    """The final result of one task on this node."""

    kind: Kind
    name: str
    state: Final
    message: str
    at: float


@dataclass(slots=True)
class _Retry:
    attempts: int = 0
    next_at: float = 0.0
    message: str = "not done yet"


@dataclass
class TaskLedger:
    """What this node did with each task (see the module docstring); pure, told the time."""

    records: dict[str, Record] = field(default_factory=dict)
    _retries: dict[str, _Retry] = field(default_factory=dict)

    def due(self, tasks: Iterable[CacheTask], now: float) -> list[CacheTask]:
        """Tasks not final whose next try is due."""
        return [t for t in tasks if t.uid not in self.records and self._retry(t).next_at <= now]

    def next_due(self, tasks: Iterable[CacheTask]) -> float | None:
        """When the earliest pending task is due (None: nothing pending)."""
        times = [self._retry(t).next_at for t in tasks if t.uid not in self.records]
        return min(times, default=None)

    def finish(self, task: CacheTask, state: Final, message: str, now: float) -> None:
        self.records[task.uid] = Record(task.kind, task.name, state, _clip(message), now)
        self._retries.pop(task.uid, None)

    def failed_attempt(self, task: CacheTask, message: str, now: float) -> bool:
        """Count a failed attempt; True if it was the last one (the task is then Failed)."""
        retry = self._retry(task)
        retry.attempts += 1
        if retry.attempts >= MAX_ATTEMPTS:
            self.finish(task, "Failed", f"gave up after {retry.attempts} attempts: {message}", now)
            return True
        retry.message = _clip(f"attempt {retry.attempts} failed, retrying: {message}")
        retry.next_at = now + min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** (retry.attempts - 1))
        return False

    def waiting(self, task: CacheTask, message: str) -> None:
        """Not tried (the cache is not ready): shown as the reason, no attempt spent."""
        self._retry(task).message = message

    def _retry(self, task: CacheTask) -> _Retry:
        return self._retries.setdefault(task.uid, _Retry())

    def report(self, tasks: Iterable[CacheTask]) -> dict[str, list[Document]]:
        """``{"purges": [...], "prefetches": [...]}`` for Node.status: the view's tasks, newest first, bounded."""
        out: dict[str, list[Document]] = {"purges": [], "prefetches": []}
        for task in sorted(tasks, key=lambda t: (t.created, t.name), reverse=True):
            reports = out["purges" if task.kind == "Purge" else "prefetches"]
            if len(reports) < MAX_TASK_REPORTS:
                reports.append(self._report(task))
        return out

    def _report(self, task: CacheTask) -> Document:
        record = self.records.get(task.uid)
        if record is not None:
            return {"name": task.name, "uid": task.uid, "state": record.state, "message": record.message}
        message = self._retries[task.uid].message if task.uid in self._retries else "not done yet"
        return {"name": task.name, "uid": task.uid, "state": "Pending", "message": message}

    def forget_absent(self, tasks: Iterable[CacheTask]) -> None:
        """Bound the records: drop the oldest of those not in the view beyond MAX_RECORDS; drop stale retries."""
        present = {task.uid for task in tasks}
        self._retries = {uid: retry for uid, retry in self._retries.items() if uid in present}
        excess = len(self.records) - MAX_RECORDS
        if excess > 0:
            absent = sorted((r.at, uid) for uid, r in self.records.items() if uid not in present)
            for _, uid in absent[:excess]:
                del self.records[uid]

    def dumps(self) -> str:
        return json.dumps(
            {"records": {uid: [r.kind, r.name, r.state, r.message, r.at] for uid, r in self.records.items()}},
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> TaskLedger:
        """Read what :meth:`dumps` wrote; ValueError if it is not that."""
        try:
            raw = json.loads(text)["records"]
            records = {
                str(uid): Record(kind, str(name), state, str(message), float(at))
                for uid, (kind, name, state, message, at) in raw.items()
                if kind in ("Purge", "Prefetch") and state in ("Done", "Failed")
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a task ledger: {exc}") from None
        return cls(records)


def cache_stats(answer: Any) -> Document | None:
    """The ``Node.status.cache`` fields of an admin ``/status`` answer (extra fields dropped), or None."""
    if not isinstance(answer, dict):
        return None
    names = {info.alias or name for name, info in CacheStats.model_fields.items()}
    fields = {key: value for key, value in answer.items() if key in names}
    for attempt in (fields, {key: value for key, value in fields.items() if key != "domains"}):
        try:  # a Domain figure out of bounds (a name, a count) costs the per-Domain figures, not the rest
            return CacheStats.model_validate(attempt).model_dump(mode="json", by_alias=True, exclude_none=True)
        except ValidationError:
            continue
    return None


# -- I/O -----------------------------------------------------------------------------------------


class CacheAdmin:
    """Client of the cache's admin endpoint (one aiohttp session, opened on first use)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, url: str, token: str, body: Document | None, limit: float) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=limit)
        async with self._session.request(method, url, json=body, headers=headers, timeout=timeout) as response:
            raw = await response.content.read(MAX_ANSWER_BYTES + 1)
            try:
                answer = json.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
            except ValueError:
                answer = None
            return response.status, answer

    async def send(self, task: CacheTask, endpoint: AdminEndpoint) -> Outcome:
        """POST the task; connection problems and timeouts are a Retry outcome, never an exception."""
        limit = PREFETCH_TIMEOUT if task.kind == "Prefetch" else PURGE_TIMEOUT
        try:
            status, answer = await self._call("POST", endpoint.url + task.path, endpoint.token, task.body, limit)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome("Retry", _clip(f"cannot reach the cache admin endpoint: {exc or type(exc).__name__}"))
        return judge(task, status, answer)

    async def status(self, endpoint: AdminEndpoint) -> Document | None:
        """The cache's counters as Node.status.cache fields, or None if it does not answer."""
        try:
            status, answer = await self._call("GET", endpoint.url + "/status", endpoint.token, None, STATUS_TIMEOUT)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        return cache_stats(answer) if status == 200 else None


class CacheTasks:
    """The agent's task runner: ledger + its file + the admin client."""

    def __init__(self, path: Path, admin: CacheAdmin) -> None:
        self.path = path
        self.admin = admin
        self.ledger = self._load()

    def _load(self) -> TaskLedger:
        try:
            return TaskLedger.loads(self.path.read_text())
        except FileNotFoundError:
            return TaskLedger()
        except (OSError, ValueError) as exc:
            log.error("%s is unreadable (%s); purges not recorded in it may be done again", self.path, exc)
            return TaskLedger()

    async def _save(self) -> None:
        data = self.ledger.dumps().encode()
        try:
            await asyncio.to_thread(write_atomic, self.path, data, mode=0o600, durable=True)
        except OSError as exc:
            log.error("cannot save %s: %s", self.path, exc)

    async def run(
        self, tasks: list[CacheTask], endpoint: AdminEndpoint | None, *, cache_expected: bool, now: float
    ) -> bool:
        """Do the due tasks, oldest first; True if any became final (then the ledger file was saved)."""
        finished = False
        for task in self.ledger.due(tasks, now):
            if endpoint is None and not cache_expected:
                self.ledger.finish(task, "Done", "no cache workload on this node: nothing cached here", now)
                finished = True
            elif endpoint is None:
                self.ledger.waiting(task, "waiting for the cache workload to be ready")
            else:
                finished = self._note(task, await self.admin.send(task, endpoint), now) or finished
        self.ledger.forget_absent(tasks)
        if finished:
            await self._save()
        return finished

    def _note(self, task: CacheTask, outcome: Outcome, now: float) -> bool:
        if outcome.state == "Retry":
            log.warning("%s %s: %s", task.kind, task.name, outcome.message)
            return self.ledger.failed_attempt(task, outcome.message, now)
        log.info("%s %s: %s (%s)", task.kind, task.name, outcome.state, outcome.message)
        self.ledger.finish(task, outcome.state, outcome.message, now)
        return True
