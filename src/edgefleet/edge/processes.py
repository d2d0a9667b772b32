"""Process primitives of the workload supervisor: spawn, identify, watch, signal, reap.

How: :func:`spawn` starts a program with :class:`subprocess.Popen` in a new
session (``setsid``), so the child is the leader of its own session and
process group. An agent crash, a SIGKILL to the agent or a Ctrl-C in the
agent's terminal therefore never reaches a workload, and :func:`signal_group`
reaches the workload *and* every process it started.

A process is identified by :class:`ProcessIdentity`: pid, start time (field
22 of ``/proc/<pid>/stat``, clock ticks after boot) and the kernel boot id.
A pid alone is not an identity: pids are recycled (``pid_max`` may be as low
as 32768), and after a reboot every recorded pid is meaningless. The three
together name one process for its whole life; :func:`is_running` compares
them, so a recycled pid is never mistaken for a workload.

:class:`ExitWatcher` learns when a process ends without being its parent:
``os.pidfd_open`` (Linux >= 5.3) gives a descriptor that becomes readable
when the process exits, and ``loop.add_reader`` turns that into a future.
This works for processes an earlier agent started (adopted after an agent
restart), which ``waitpid`` cannot watch. Where ``pidfd_open`` fails (old
kernel, seccomp) the watcher polls ``/proc`` instead.

Exit codes: only a parent can read one. Children of *this* Python process
are kept in a process-wide table (:data:`_children`) until reaped, so a
workload started by one :class:`~edgefleet.edge.supervisor.Supervisor` and
adopted by another in the same process still reports its exit code. A
process adopted after the agent process itself restarted was re-parented to
init; its exit code is unknown and reported as such (``ExitStatus.code`` is
``None``), never guessed.

Why not ``asyncio.create_subprocess_exec``: its transport kills the child
when closed and its child watchers wait in threads per process; the
supervisor must instead be able to walk away from running children (agent
shutdown) and pick them up again, so it owns spawning and reaping itself.

A process group does not outlive its leader: when a leader exits, the
watcher SIGKILLs what is left of its group *before* reaping the leader
(while the zombie still pins the pid, so the group id cannot have been
recycled). Workloads must therefore run in the foreground, as under any
supervisor; a program that daemonizes looks like a crash.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.edge.users import Account

log = logging.getLogger(__name__)

_PROC = Path("/proc")
_REAP_RETRY_SECONDS = 0.01
_REAP_RETRIES = 500
"""After a pidfd turns readable the child may take a moment to become reapable."""

_children: dict[int, subprocess.Popen[bytes]] = {}
"""Children of this Python process not yet reaped, by pid (see module docstring)."""


class SpawnError(Exception):
    """A program could not be started; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """One process for its whole life: pid, start time (clock ticks after boot) and boot id."""

    pid: int
    start_time: int
    boot_id: str


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended; ``code`` and ``signal`` are both ``None`` when unknown."""

    code: int | None = None
    signal: int | None = None

    @property
    def known(self) -> bool:
        return self.code is not None or self.signal is not None

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def exit_code(self) -> int | None:
        """The shell's convention: 128 + signal number for a process killed by a signal."""
        return 128 + self.signal if self.signal is not None else self.code

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by signal {_signal_name(self.signal)}"
        if self.code is not None:
            return f"exited with status {self.code}"
        return "exited (exit status unknown: the process was adopted from an earlier agent process)"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a short command (hook, exec probe): did it succeed, and a detail for people."""

    ok: bool
    detail: str


@functools.cache
def boot_id() -> str:
    """The kernel's random id of this boot; it changes on every reboot."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def read_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start_time)`` from ``/proc/<pid>/stat``, or ``None`` if there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def identify(pid: int) -> ProcessIdentity | None:
    stat = read_stat(pid)
    return None if stat is None else ProcessIdentity(pid, stat[1], boot_id())


def is_running(identity: ProcessIdentity) -> bool:
    """True if the very process ``identity`` names still runs (zombies count as ended)."""
    if identity.boot_id != boot_id():
        return False
    stat = read_stat(identity.pid)
    return stat is not None and stat[0] not in ("Z", "X", "x") and stat[1] == identity.start_time


def spawn(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], output: int | None, account: Account | None = None
) -> ProcessIdentity:
    """Start ``argv`` as the leader of a new session; stdout and stderr go to ``output``.

    ``output`` is a file descriptor (``None``: /dev/null) that the child
    inherits, so its output never passes through the agent. Fork and exec
    take milliseconds, so this runs on the event loop thread: doing it in an
    executor would risk losing the pid of a child if the caller is cancelled.

    ``account``: the user to run as (the agent must be root). The child
    changes into ``cwd`` *before* dropping to it (``subprocess`` does chdir,
    then setgroups([]), setgid, setuid, then exec), so the workload needs no
    right on the agent's directories above its working directory.
    """
    target = subprocess.DEVNULL if output is None else output
    switch: dict[str, Any] = {}
    if account is not None:
        switch = {"user": account.uid, "group": account.gid, "extra_groups": []}
    try:
        child = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=target,
            stderr=target, start_new_session=True, close_fds=True, **switch,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        by = f" by user {account.name} (uid {account.uid})" if account is not None else ""
        raise SpawnError(_spawn_failure(argv[0], error, by)) from error
    _children[child.pid] = child
    identity = identify(child.pid)
    # An unreaped child always has a /proc entry; the fallback only guards odd /proc mounts.
    return identity or ProcessIdentity(child.pid, 0, boot_id())


def _spawn_failure(program: str, error: BaseException, by: str = "") -> str:
    if isinstance(error, FileNotFoundError):
        return f"command not found: {program!r}"
    if isinstance(error, PermissionError):
        return f"permission denied: {program!r} is not executable{by}"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"cannot start {program!r}: {reason}"


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only zombies of another user can remain; nothing we may or need to do.
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def reap(pid: int) -> ExitStatus | None:
    """The exit status of a process that ended, or ``None`` if our child still runs.

    For children of this Python process this collects the zombie. For any
    other process it returns an unknown status (only its parent may read
    it), so call it once the process is known to have ended.
    """
    child = _children.get(pid)
    if child is None:
        return ExitStatus()
    code = child.poll()
    if code is None:
        return None
    del _children[pid]
    return ExitStatus(signal=-code) if code < 0 else ExitStatus(code=code)


def is_child(pid: int) -> bool:
    """True if ``pid`` is an unreaped child of this Python process (its exit code will be known)."""
    return pid in _children


class ExitWatcher:
    """``exited`` resolves with the :class:`ExitStatus` of ``pid`` once it has ended.

    Create it on the event loop that should be notified. :meth:`close`
    stops watching without touching the process (agent shutdown).
    """

    def __init__(self, pid: int, *, poll_interval: float = 0.5) -> None:
        self.pid = pid
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[ExitStatus] = self._loop.create_future()
        self._poll_interval = poll_interval
        self._fd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._retries = 0
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already gone and reaped by someone else: its group id is no longer pinned, so
            # signalling it could hit a stranger that recycled the number.
            self._finish(kill_group=False)
        except (OSError, AttributeError) as error:
            log.debug("pidfd_open(%d) failed (%s); polling /proc instead", pid, error)
            self._poller = self._loop.create_task(self._poll())
        else:
            self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        self._close_fd()
        self._finish()

    def _finish(self, kill_group: bool = True) -> None:
        if self.exited.done():
            return
        if kill_group:
            # Kill leftovers of the group before reaping: the zombie leader still pins the group id.
            signal_group(self.pid, signal.SIGKILL)
        status = reap(self.pid)
        if status is None and self._retries < _REAP_RETRIES:
            # The pidfd can turn readable a moment before the zombie is waitable.
            self._retries += 1
            self._loop.call_later(_REAP_RETRY_SECONDS, self._finish, kill_group)
            return
        self.exited.set_result(status or ExitStatus())

    async def _poll(self) -> None:
        identity = identify(self.pid)
        while True:
            if is_child(self.pid):
                ended = reap_peek(self.pid)
            else:
                ended = identity is None or not is_running(identity)
            if ended:
                self._finish()
                return
            await asyncio.sleep(self._poll_interval)

    def _close_fd(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Stop watching; the process is left alone."""
        self._close_fd()
        if self._poller is not None:
            self._poller.cancel()
        if not self.exited.done():
            self.exited.cancel()


def reap_peek(pid: int) -> bool:
    """True if child ``pid`` has ended (without collecting it; :func:`reap` does that)."""
    child = _children.get(pid)
    if child is None:
        return True
    try:
        # WNOWAIT leaves the zombie in place, so reap() can still read its status.
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None


async def wait_exit(watcher: ExitWatcher, time_limit: float) -> ExitStatus | None:
    """The exit status if the process ends within ``time_limit`` seconds, else ``None``."""
    try:
        return await asyncio.wait_for(asyncio.shield(watcher.exited), max(time_limit, 0.0))
    except TimeoutError:
        return None


async def kill_and_wait(watcher: ExitWatcher, time_limit: float = 5.0) -> ExitStatus | None:
    """SIGKILL the group of ``watcher.pid`` and wait (bounded) for the leader to end."""
    signal_group(watcher.pid, signal.SIGKILL)
    status = await wait_exit(watcher, time_limit)
    if status is None:
        # Uninterruptible sleep (D state) can outlast SIGKILL; report it rather than hang.
        log.error("process %d did not end %.0f s after SIGKILL", watcher.pid, time_limit)
    return status


async def terminate(watcher: ExitWatcher, *, grace: float, kill_time_limit: float = 5.0) -> ExitStatus | None:
    """SIGTERM the group, wait up to ``grace`` seconds for the leader, then SIGKILL the group."""
    signal_group(watcher.pid, signal.SIGTERM)
    status = await wait_exit(watcher, grace)
    if status is None:
        log.warning("process %d still running %g s after SIGTERM; sending SIGKILL", watcher.pid, grace)
        status = await kill_and_wait(watcher, kill_time_limit)
    return status


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    output: int | None,
    time_limit: float,
    account: Account | None = None,
) -> Outcome:
    """Run a short command (hook, exec probe) in its own group, as ``account``; kill the group after ``time_limit``."""
    try:
        identity = spawn(argv, cwd=cwd, env=env, output=output, account=account)
    except SpawnError as error:
        return Outcome(False, str(error))
    watcher = ExitWatcher(identity.pid)
    try:
        status = await wait_exit(watcher, time_limit)
    except asyncio.CancelledError:
        # The watcher still reaps the command once the kill lands.
        signal_group(identity.pid, signal.SIGKILL)
        raise
    if status is None:
        await kill_and_wait(watcher)
        return Outcome(False, f"timed out after {time_limit:g} s")
    return Outcome(status.success, status.describe())
