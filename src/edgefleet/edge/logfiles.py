"""Workload log files: append-only files the workloads write themselves, rotated by size.

How: the supervisor opens ``logs/<name>.log`` with ``O_APPEND`` and hands the
descriptor to the child as stdout and stderr (:func:`appending`). The agent
is not in the data path: a chatty workload costs the agent nothing, and
logging goes on while the agent restarts.

Rotation is *copytruncate* (:func:`rotate_if_needed`), checked periodically
by the supervisor: ``.N-1`` moves to ``.N`` (the oldest falls off), the live
file is copied to ``.1``, then truncated in place. The child never reopens
anything; since it writes with ``O_APPEND``, its next write lands at the new
end of the file, offset 0. The price of copytruncate: lines written between
the copy and the truncation are lost, a window of one copy of at most
``max_bytes``.

Security limits: a rotated file holds at most the last ``max_bytes`` of the
live file (a file that grew far past the limit between two checks does not
fill the disk with one huge ``.1``), and :func:`tail` reads at most
:data:`MAX_TAIL_LINES` lines and :data:`MAX_TAIL_BYTES` bytes however it is
asked.

Every function here does blocking file I/O; the supervisor calls them in an
executor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_TAIL_LINES = 10_000
MAX_TAIL_BYTES = 8 * 1024 * 1024
_BLOCK = 64 * 1024
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogLimits:
    """Rotate a live log over ``max_bytes``; keep ``keep`` rotated files (``.1`` newest)."""

    max_bytes: int = 10 * 1024 * 1024
    keep: int = 3

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.keep < 1:
            raise ValueError("LogLimits needs max_bytes >= 1 and keep >= 1")


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


@contextlib.contextmanager
def appending(path: Path) -> Iterator[int]:
    """A descriptor of ``path`` opened for appending (created 0640), closed on exit.

    The child gets its own copy of the descriptor at spawn, so closing ours
    does not affect it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        yield fd
    finally:
        os.close(fd)


def rotate_if_needed(path: Path, limits: LogLimits) -> bool:
    """Copytruncate ``path`` if it is larger than ``limits.max_bytes``; True if it rotated."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= limits.max_bytes:
        return False
    for index in range(limits.keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(rotated(path, index), rotated(path, index + 1))
    _copy_tail(path, rotated(path, 1), limits.max_bytes)
    os.truncate(path, 0)
    return True


def _copy_tail(source: Path, target: Path, max_bytes: int) -> None:
    """Copy the last ``max_bytes`` of ``source`` (from a line start) to ``target``, atomically."""
    partial = target.with_name(target.name + ".tmp")
    with source.open("rb") as reader, partial.open("wb") as writer:
        size = reader.seek(0, os.SEEK_END)
        if size > max_bytes:
            reader.seek(size - max_bytes)
            reader.readline()  # drop the cut line
        else:
            reader.seek(0)
        shutil.copyfileobj(reader, writer, _COPY_CHUNK)
    os.replace(partial, target)


def tail(path: Path, lines: int, keep: int) -> str:
    """The last ``lines`` lines of the log, reaching into rotated files when the live one is short."""
    wanted = max(0, min(lines, MAX_TAIL_LINES))
    budget = MAX_TAIL_BYTES
    collected: list[bytes] = []
    for candidate in [path, *(rotated(path, i) for i in range(1, keep + 1))]:
        if len(collected) >= wanted or budget <= 0:
            break
        found, used = _last_lines(candidate, wanted - len(collected), budget)
        collected[:0] = found
        budget -= used
    return b"".join(collected).decode("utf-8", "replace")


def _last_lines(path: Path, count: int, budget: int) -> tuple[list[bytes], int]:
    """Up to ``count`` last lines of one file reading at most ``budget`` bytes, and bytes read."""
    try:
        reader = path.open("rb")
    except FileNotFoundError:
        return [], 0
    with reader:
        position = reader.seek(0, os.SEEK_END)
        data = b""
        # One newline more than lines wanted guarantees the first kept line is complete.
        while position > 0 and data.count(b"\n") <= count and len(data) < budget:
            step = min(_BLOCK, position, budget - len(data))
            position -= step
            reader.seek(position)
            data = reader.read(step) + data
    found = data.splitlines(keepends=True)
    if position > 0 and found:
        found = found[1:]  # started mid-line
    return found[-count:] if count else [], len(data)


def remove(path: Path) -> None:
    """Delete the live log and all its rotated files (whatever ``keep`` was when they were made)."""
    prefix = path.name + "."
    doomed = [path]
    with contextlib.suppress(FileNotFoundError):
        doomed += [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()]
    for candidate in doomed:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
