"""Workload log files: append descriptors, copytruncate rotation, tails across rotated files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.edge import logfiles
from edgefleet.edge.logfiles import LogLimits
from tests.waiting import wait_until


def lines(first: int, last: int) -> str:
    return "".join(f"line {i}\n" for i in range(first, last + 1))


def test_rotation_shifts_copies_and_truncates_in_place(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    limits = LogLimits(max_bytes=100, keep=2)
    log.write_text("x" * 50)
    assert not logfiles.rotate_if_needed(log, limits)
    inode = log.stat().st_ino
    for generation in "abc":
        log.write_text(f"{generation}\n" * 60)
        assert logfiles.rotate_if_needed(log, limits)
        assert log.stat().st_size == 0 and log.stat().st_ino == inode  # same file: the child keeps writing to it
    assert logfiles.rotated(log, 1).read_text().startswith("c\n")
    assert logfiles.rotated(log, 2).read_text().startswith("b\n")
    assert not logfiles.rotated(log, 3).exists()  # "a" fell off
    assert len(logfiles.rotated(log, 1).read_bytes()) <= 100  # only the last max_bytes are kept


def test_child_writing_with_o_append_continues_at_the_start_after_truncation(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    code = "import sys; sys.stdout.write('a' * 300 + '\\n'); sys.stdout.flush(); sys.stdin.readline(); print('after')"
    with logfiles.appending(log) as fd:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=fd, stdin=subprocess.PIPE)
    try:
        wait_until(lambda: log.stat().st_size >= 301)
        assert logfiles.rotate_if_needed(log, LogLimits(max_bytes=100, keep=1))
        assert child.stdin is not None
        child.stdin.write(b"\n")
        child.stdin.close()
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait()
    assert log.read_text() == "after\n"  # no hole of NULs: the write went to offset 0


def test_tail_reaches_into_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    logfiles.rotated(log, 2).write_text(lines(1, 10))
    logfiles.rotated(log, 1).write_text(lines(11, 20))
    log.write_text(lines(21, 25) + "partial")
    assert logfiles.tail(log, 3, keep=2) == "line 24\nline 25\npartial"
    assert logfiles.tail(log, 8, keep=2) == lines(19, 25) + "partial"
    assert logfiles.tail(log, 100, keep=2) == lines(1, 25) + "partial"
    assert logfiles.tail(log, 100, keep=1) == lines(11, 25) + "partial"
    assert logfiles.tail(log, 0, keep=2) == ""


def test_tail_of_a_large_file_reads_blocks_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    log.write_text(lines(1, 50_000))
    assert logfiles.tail(log, 2, keep=3) == "line 49999\nline 50000\n"
    assert logfiles.tail(log, 10**9, keep=3).count("\n") == logfiles.MAX_TAIL_LINES


def test_tail_of_missing_log_is_empty(tmp_path: Path) -> None:
    assert logfiles.tail(tmp_path / "none.log", 10, keep=3) == ""


def test_remove_deletes_rotated_files_of_that_log_only(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    for path in [log, logfiles.rotated(log, 1), logfiles.rotated(log, 7), tmp_path / "a.log.log", tmp_path / "b.log"]:
        path.write_text("x")
    logfiles.remove(log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log.log", "b.log"]


def test_appending_creates_the_file_private(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "w.log"
    with logfiles.appending(log) as fd:
        os.write(fd, b"hello\n")
    assert log.read_text() == "hello\n"
    assert log.stat().st_mode & 0o007 == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        LogLimits(max_bytes=0)
