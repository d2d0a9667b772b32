"""Process primitives with real processes: sessions, identities, exit watching, groups, commands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.edge import processes
from edgefleet.edge.processes import ExitStatus, ExitWatcher, ProcessIdentity, SpawnError
from tests.waiting import eventually, wait_until

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    stat = processes.read_stat(pid)
    return stat is not None and stat[0] != "Z"


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups a test started; all SIGKILLed (and reaped if ours) at the end."""
    started: list[int] = []
    yield started
    for pgid in started:
        processes.signal_group(pgid, signal.SIGKILL)
    wait_until(lambda: not any(processes.is_child(pid) and processes.reap(pid) is None for pid in started))


def spawn(groups: list[int], code: str, tmp_path: Path, output: int | None = None) -> ProcessIdentity:
    identity = processes.spawn(python(code), cwd=tmp_path, env=ENV, output=output)
    groups.append(identity.pid)
    return identity


async def test_spawn_makes_a_session_leader_with_a_stable_identity(groups: list[int], tmp_path: Path) -> None:
    identity = spawn(groups, "import signal; signal.pause()", tmp_path)
    assert os.getsid(identity.pid) == identity.pid
    assert os.getpgid(identity.pid) == identity.pid
    assert processes.is_running(identity)
    assert processes.identify(identity.pid) == identity
    # The same pid with another start time or boot is someone else.
    assert not processes.is_running(ProcessIdentity(identity.pid, identity.start_time + 1, identity.boot_id))
    assert not processes.is_running(ProcessIdentity(identity.pid, identity.start_time, "another-boot"))


async def test_missing_and_non_executable_commands_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="command not found: 'no-such-command-xyz'"):
        processes.spawn(["no-such-command-xyz"], cwd=tmp_path, env=ENV, output=None)
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(SpawnError, match="permission denied"):
        processes.spawn([str(script)], cwd=tmp_path, env=ENV, output=None)


async def test_watcher_reports_exit_code_and_signal(groups: list[int], tmp_path: Path) -> None:
    exits = spawn(groups, "raise SystemExit(3)", tmp_path)
    assert await asyncio.wait_for(ExitWatcher(exits.pid).exited, 5) == ExitStatus(code=3)
    sleeper = spawn(groups, "import signal; signal.pause()", tmp_path)
    watcher = ExitWatcher(sleeper.pid)
    os.kill(sleeper.pid, signal.SIGKILL)
    status = await asyncio.wait_for(watcher.exited, 5)
    assert status == ExitStatus(signal=signal.SIGKILL)
    assert status.exit_code == 137 and "SIGKILL" in status.describe()
    assert not processes.is_child(sleeper.pid)  # reaped: no zombie left behind


async def test_watcher_of_a_process_that_is_not_our_child(tmp_path: Path) -> None:
    # sh starts a sleeper in its own session and exits: the sleeper is re-parented away from us.
    script = f"setsid {sys.executable} -c 'import signal; signal.pause()' >/dev/null 2>&1 & echo $!"
    out = await asyncio.to_thread(subprocess.run, ["sh", "-c", script], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    try:
        await eventually(lambda: processes.read_stat(pid) is not None and os.getsid(pid) == pid)
        watcher = ExitWatcher(pid)
        await asyncio.sleep(0.05)
        assert not watcher.exited.done()
        os.killpg(pid, signal.SIGKILL)
        status = await asyncio.wait_for(watcher.exited, 5)
        assert not status.known and "unknown" in status.describe()
    finally:
        processes.signal_group(pid, signal.SIGKILL)


async def test_polling_fallback_without_pidfd(
    groups: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys\nsignal.signal(signal.SIGUSR1, lambda *_: sys.exit(5))\n"
        f"pathlib.Path({str(ready)!r}).touch()\nsignal.pause()\n"
    )
    identity = spawn(groups, code, tmp_path)
    await eventually(ready.exists)
    watcher = ExitWatcher(identity.pid, poll_interval=0.02)
    assert not watcher.exited.done()
    os.kill(identity.pid, signal.SIGUSR1)  # exits 5 while the watcher polls /proc
    assert await asyncio.wait_for(watcher.exited, 5) == ExitStatus(code=5)


async def test_close_stops_watching_and_leaves_the_process(groups: list[int], tmp_path: Path) -> None:
    identity = spawn(groups, "import signal; signal.pause()", tmp_path)
    watcher = ExitWatcher(identity.pid)
    watcher.close()
    assert watcher.exited.cancelled()
    assert processes.is_running(identity)


async def test_leader_exit_kills_the_rest_of_its_group(groups: list[int], tmp_path: Path) -> None:
    code = (
        "import signal, subprocess, sys\n"
        "signal.signal(signal.SIGUSR1, lambda *_: None)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
        "print(child.pid, flush=True)\n"
        "signal.pause()\n"
    )
    out = tmp_path / "out"
    with out.open("wb") as writer:
        identity = spawn(groups, code, tmp_path, output=writer.fileno())
    watcher = ExitWatcher(identity.pid)
    await eventually(lambda: out.read_text().strip() != "")
    child = int(out.read_text())
    assert alive(child)
    os.kill(identity.pid, signal.SIGUSR1)  # the leader returns from pause() and exits; its child still runs
    assert await asyncio.wait_for(watcher.exited, 5) == ExitStatus(code=0)
    await eventually(lambda: not alive(child))


async def test_terminate_escalates_to_sigkill_after_grace(groups: list[int], tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time, pathlib\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\nwhile True:\n    signal.pause()\n"
    )
    identity = spawn(groups, code, tmp_path)
    await eventually(ready.exists)
    began = time.monotonic()
    status = await processes.terminate(ExitWatcher(identity.pid), grace=0.3)
    assert status == ExitStatus(signal=signal.SIGKILL)
    assert 0.3 <= time.monotonic() - began < 3


async def test_run_command_success_failure_and_timeout(tmp_path: Path) -> None:
    ok = await processes.run_command(python("pass"), cwd=tmp_path, env=ENV, output=None, time_limit=5)
    assert ok.ok and ok.detail == "exited with status 0"
    bad = await processes.run_command(python("raise SystemExit(2)"), cwd=tmp_path, env=ENV, output=None, time_limit=5)
    assert not bad.ok and bad.detail == "exited with status 2"
    missing = await processes.run_command(["no-such-command-xyz"], cwd=tmp_path, env=ENV, output=None, time_limit=5)
    assert not missing.ok and "command not found" in missing.detail
    began = time.monotonic()
    slow = await processes.run_command(
        ["sh", "-c", "sleep 30 & sleep 30"], cwd=tmp_path, env=ENV, output=None, time_limit=0.2
    )
    assert not slow.ok and slow.detail == "timed out after 0.2 s"
    assert time.monotonic() - began < 3
