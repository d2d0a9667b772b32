"""One workload instance: the life of one template revision under one name, as an asyncio task.

How: :class:`Instance` runs a loop in its own task::

    start (render files, spawn, postStart)  ->  Running (probe while waiting for the exit)
        ^                                               |
        |    back-off sleep  <-  restart policy  <------+ exit (or failed start)

and records every transition in ``state.json`` (see
:mod:`edgefleet.edge.statefiles`) and through ``notify`` (the supervisor's
change callback). It starts either fresh (:meth:`Instance.launch`) or from
what an earlier supervisor left on disk (:meth:`Instance.resume`):

- the recorded process still runs (same pid, start time and boot id) and
  has this revision: it is *adopted*, watched through a pidfd, not
  restarted;
- it runs with another revision: it is stopped (SIGTERM, grace period,
  SIGKILL; no preStop hook, since that belongs to a template we no longer
  have) and this revision starts;
- it is gone (host reboot, killed while the agent was down): this revision
  starts at once, whatever the restart policy, since the edge must come back
  on its own after a reboot; an instance that had *finished* under its
  policy (``Never``, ``OnFailure`` with exit 0) stays finished.

Two ways out: :meth:`Instance.stop` (preStop hook, SIGTERM to the process
group, ``terminationGracePeriodSeconds``, then SIGKILL to the group) and
:meth:`Instance.detach` (stop supervising, leave the process running:
agent shutdown).

Built-in workloads (``template.builtin``, e.g. the cache server): the agent
provides a :class:`Builtin` per name, which writes what the process reads
at start into its working directory (after the template's files, before
every spawn), decides its command line and the host its probe connects to.
An instance can also be signalled (:meth:`Instance.send_signal`, e.g. SIGHUP
to reload a config) without being restarted.

Probe failures: every failed probe attempt of the instance is counted
(``probeFailures``, for rollout analysis), not only the ones that cross
``failureThreshold``; the count lives as long as the instance in this agent
(a new revision or an agent restart starts it at 0). A count that moved
alone does not notify: like the cache's counters it rides along with the
next status report, so a probe failing every period does not make a report
of its own each time.

Who it runs as: at every start the instance asks the supervisor's
:class:`~edgefleet.edge.users.UserPolicy` for the account (a missing default
user is created then, off the event loop); the process, its hooks and its
exec probes run as that account, in a working directory it owns. An adopted
process's hooks and probes use the account its template names now. The
environment is built at every start too, so a Secret's current value is
read then; a Secret that is missing fails the start with a message and is
retried with the back-off.

Exceptions: a failing workload (missing command, unwritable file, failed
hook, crash) is a state with a message, never an exception; a bug in this
module is logged and shown as Failed rather than killing the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from edgefleet.api.workloads import HealthProbe, Hook, InstanceStatus, WorkloadTemplate, template_revision
from edgefleet.edge import logfiles, probes, workdirs
from edgefleet.edge.processes import (
    ExitStatus,
    ExitWatcher,
    Outcome,
    SpawnError,
    is_child,
    is_running,
    kill_and_wait,
    reap,
    run_command,
    spawn,
    terminate,
)
from edgefleet.edge.restarts import Backoff, should_restart
from edgefleet.edge.statefiles import ProcessRecord, StateRecord, write_state
from edgefleet.edge.users import Account, UserError, UserPolicy
from edgefleet.edge.workdirs import Layout, RenderError, SecretLookup

log = logging.getLogger(__name__)

State = Literal["Pending", "Starting", "Running", "Stopping", "Exited", "Failed"]


class StartFailed(Exception):
    """The process could not be started or its postStart hook failed; the message says why."""


class Builtin(Protocol):
    """What the agent adds to a workload whose template says ``builtin: <name>``."""

    def prepare(self, name: str, template: WorkloadTemplate, workdir: Path) -> None:
        """Write what the process reads at start into ``workdir`` (blocking); raising fails the start."""

    def argv(self, template: WorkloadTemplate) -> list[str]:
        """The command line to spawn."""

    def probe_host(self) -> str:
        """The address the health probe connects to."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What every instance of one supervisor shares."""

    layout: Layout
    node_name: str
    backoff: Backoff
    poll_interval: float
    kill_timeout: float
    builtins: Mapping[str, Builtin] = field(default_factory=dict)
    users: UserPolicy | None = None
    """Which user each workload runs as (see :mod:`edgefleet.edge.users`); None: the agent's, always."""
    secrets: SecretLookup | None = None
    """Values for env ``valueFrom.secretRef``; None: no Secrets (such variables fail the start)."""


@dataclass(frozen=True, slots=True)
class _Process:
    record: ProcessRecord
    watcher: ExitWatcher
    adopted: bool


class Instance:
    """The supervised process of one workload revision; see the module docstring."""

    def __init__(self, name: str, template: WorkloadTemplate, settings: Settings, notify: Callable[[], None]) -> None:
        self.name = name
        self.template = template
        self.revision = template_revision(template)
        self._settings = settings
        self._notify = notify
        self._workdir = settings.layout.workdir(name, self.revision)
        self._log = settings.layout.log_file(name)
        # Hooks and probes of an adopted process use this one; every start builds it again, strictly.
        self._env = self._environment(strict=False)
        self._account: Account | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: _Process | None = None
        self._probed = asyncio.Event()
        self._restarts = 0
        self._failures = 0  # consecutive, for the back-off
        self._finished = False
        self._state: State = "Pending"
        self._ready = False
        self._exit_code: int | None = None
        self._message: str | None = "waiting to start"
        self._probe_failures = 0
        self._shown = self._notable()

    # -- what the supervisor sees ---------------------------------------------------------------

    def status(self) -> InstanceStatus:
        return self._notable().model_copy(update={"probe_failures": self._probe_failures})

    def _notable(self) -> InstanceStatus:
        """The status without the counters that ride along: a change here notifies."""
        return InstanceStatus(
            revision=self.revision, state=self._state, ready=self._ready, restarts=self._restarts,
            exit_code=self._exit_code, message=self._message,
        )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self._process.record.pid if self._process else None

    @property
    def started_at(self) -> float | None:
        """Wall-clock time the running process was spawned."""
        return self._process.record.started_at if self._process else None

    @property
    def workdir(self) -> Path:
        return self._workdir

    def send_signal(self, signal_number: int) -> bool:
        """Send a signal to the running process itself (not its group); False if none runs."""
        process = self._process
        if process is None or process.watcher.exited.done() or not is_running(process.record.identity):
            return False
        try:
            os.kill(process.record.pid, signal_number)
        except ProcessLookupError:
            return False
        return True

    async def wait_probed(self) -> None:
        """Return once readiness is known: after the first probe, or at once without a probe."""
        await self._probed.wait()

    # -- ways in --------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start a fresh process (a new name or a new revision)."""
        self._spawn_task(self._run(None))

    def resume(self, state: StateRecord | None) -> bool:
        """Carry on from what an earlier supervisor recorded; True if the process was adopted."""
        same = state is not None and state.revision == self.revision
        if state is not None and same:
            self._restarts = state.restarts
        recorded = state.process if state is not None else None
        process = self._adopt(recorded) if recorded is not None else None
        if process is not None and same:
            self._process = process
            self._show("Running", ready=self.template.health_probe is None, message=f"adopted pid {process.record.pid}")
            self._spawn_task(self._run(process))
            return True
        if process is not None:
            self._spawn_task(self._replace(process))
        elif state is not None and same and state.finished:
            self._finished = True
            self._exit_code = state.exit_code
            self._show("Exited" if state.exit_code == 0 else "Failed", message=state.message)
            self._probed.set()
        else:
            if recorded is not None and same:
                self._restarts += 1
                log.warning("workload %s: pid %d ended while no supervisor watched it; starting it again",
                            self.name, recorded.pid)  # fmt: skip
            self._spawn_task(self._run(None))
        return False

    def _adopt(self, record: ProcessRecord) -> _Process | None:
        identity = record.identity
        if not is_running(identity):
            if is_child(identity.pid):
                reap(identity.pid)  # a zombie of this very Python process: collect it
            return None
        watcher = ExitWatcher(identity.pid, poll_interval=self._settings.poll_interval)
        # Check again now that the pidfd pins the process: the pid may have been recycled in between.
        if not is_running(identity):
            watcher.close()
            return None
        return _Process(record, watcher, adopted=True)

    # -- ways out -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop supervising and stop the process gracefully (preStop, SIGTERM, grace, SIGKILL)."""
        await self._cancel()
        if self._process is not None:
            await self._terminate(self._process, run_pre_stop=True)
        self._probed.set()

    async def detach(self) -> None:
        """Stop supervising; the process keeps running and a later supervisor adopts it."""
        await self._cancel()
        if self._process is not None:
            self._process.watcher.close()
        self._probed.set()

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            # wait() rather than await: our own cancellation must not be swallowed with the task's.
            await asyncio.wait([task])

    # -- the loop -------------------------------------------------------------------------------

    def _spawn_task(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._guarded(work), name=f"workload {self.name}")

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("supervisor bug while running workload %s", self.name)
            self._show("Failed", message="internal supervisor error; see the agent's log")
            self._probed.set()

    async def _replace(self, process: _Process) -> None:
        log.info("workload %s: pid %d runs another revision; replacing it", self.name, process.record.pid)
        await self._terminate(process, run_pre_stop=False)
        await self._run(None)

    async def _run(self, process: _Process | None) -> None:
        if process is not None:
            # Adopted: its hooks and probes run as the user it runs as (stopping it needs no user).
            with contextlib.suppress(StartFailed):
                await self._resolve_account()
        while True:
            try:
                if process is None:
                    process = await self._start()
                status: ExitStatus | None = await self._supervise(process)
                detail = status.describe() if status else "exited"
                ran_for = time.time() - process.record.started_at
            except StartFailed as failure:
                status, detail, ran_for = None, str(failure), 0.0
            process = None
            if not await self._after_exit(status, detail, ran_for):
                return

    def _environment(self, *, strict: bool) -> dict[str, str]:
        return workdirs.environment(
            self.template, node=self._settings.node_name, workload=self.name, revision=self.revision,
            workdir=self._workdir, secrets=self._settings.secrets, strict=strict,
        )  # fmt: skip

    async def _resolve_account(self) -> None:
        """Decide the user to run as (may create the default one: blocking, so in an executor)."""
        users = self._settings.users
        if users is None:
            self._account = None
            return
        try:
            self._account = await asyncio.get_running_loop().run_in_executor(None, users.account, self.template)
        except UserError as error:
            raise StartFailed(str(error)) from error

    async def _start(self) -> _Process:
        self._show("Starting", message="starting")
        loop = asyncio.get_running_loop()
        await self._resolve_account()
        try:
            self._env = self._environment(strict=True)
            await loop.run_in_executor(None, workdirs.render, self._workdir, self.template.files, self._account)
        except (RenderError, OSError) as error:
            raise StartFailed(f"cannot prepare the working directory: {error}") from error
        await self._prepare_builtin()
        process = self._spawn()
        await self._post_start(process)
        await loop.run_in_executor(None, workdirs.prune_revisions, self._workdir.parent, self.revision)
        self._show("Running", ready=self.template.health_probe is None, message=f"running as pid {process.record.pid}")
        log.info("workload %s: revision %s running as pid %d", self.name, self.revision, process.record.pid)
        return process

    def _builtin(self) -> Builtin | None:
        """The agent's part of a built-in workload; StartFailed if this agent has none of that name."""
        kind = self.template.builtin
        if kind is None:
            return None
        builtin = self._settings.builtins.get(kind)
        if builtin is None:
            raise StartFailed(f"this agent does not provide the built-in workload {kind!r}")
        return builtin

    async def _prepare_builtin(self) -> None:
        builtin = self._builtin()
        if builtin is None:
            return
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, builtin.prepare, self.name, self.template, self._workdir)
        except Exception as error:  # the builtin's failure (no view yet, disk full) is this start's failure
            raise StartFailed(f"cannot prepare the built-in {self.template.builtin} workload: {error}") from error

    def _argv(self) -> list[str]:
        builtin = self._builtin()
        return builtin.argv(self.template) if builtin is not None else workdirs.argv(self.template)

    def _spawn(self) -> _Process:
        try:
            with logfiles.appending(self._log) as output:
                identity = spawn(self._argv(), cwd=self._workdir, env=self._env, output=output,
                                 account=self._account)
        except SpawnError as error:
            raise StartFailed(str(error)) from error
        except OSError as error:
            raise StartFailed(f"cannot open the log file {self._log}: {error.strerror}") from error
        record = ProcessRecord(
            pid=identity.pid, start_time=identity.start_time, boot_id=identity.boot_id, started_at=time.time()
        )
        self._process = _Process(record, ExitWatcher(identity.pid, poll_interval=self._settings.poll_interval), False)
        self._persist()  # before any await: a crash from here on finds the pid on disk
        return self._process

    async def _post_start(self, process: _Process) -> None:
        hook = self.template.post_start
        if hook is None:
            return
        self._show("Starting", message="running the postStart hook")
        outcome = await self._run_hook(hook, hook.timeout_seconds)
        if not outcome.ok:
            await kill_and_wait(process.watcher, self._settings.kill_timeout)
            self._process = None
            self._persist()
            raise StartFailed(f"postStart hook failed: {outcome.detail}")

    async def _run_hook(self, hook: Hook, time_limit: float) -> Outcome:
        try:
            with logfiles.appending(self._log) as output:
                return await run_command(
                    hook.exec.command, cwd=self._workdir, env=self._env, output=output, time_limit=time_limit,
                    account=self._account,
                )
        except OSError as error:
            return Outcome(False, f"cannot open the log file: {error.strerror}")

    async def _supervise(self, process: _Process) -> ExitStatus:
        probe = self.template.health_probe
        prober = asyncio.get_running_loop().create_task(self._probe(process, probe)) if probe else None
        if prober is None:
            self._probed.set()
        try:
            return await asyncio.shield(process.watcher.exited)
        finally:
            if prober is not None:
                prober.cancel()

    async def _probe(self, process: _Process, probe: HealthProbe) -> None:
        loop = asyncio.get_running_loop()
        readiness = probes.Readiness(probe.failure_threshold)
        # A process adopted after an agent restart is past its start-up: probe it at once.
        await asyncio.sleep(0 if process.adopted else probe.initial_delay_seconds)
        while True:
            began = loop.time()
            outcome = await probes.check(probe, cwd=self._workdir, env=self._env, host=self._probe_host(),
                                         account=self._account)
            readiness.observe(outcome.ok)
            if not outcome.ok:
                self._probe_failures += 1
            message = f"running as pid {process.record.pid}" if readiness.ready else f"not ready: {outcome.detail}"
            self._show("Running", ready=readiness.ready, message=message)
            self._probed.set()
            await asyncio.sleep(max(0.0, probe.period_seconds - (loop.time() - began)))

    def _probe_host(self) -> str:
        try:
            builtin = self._builtin()
        except StartFailed:
            builtin = None
        return builtin.probe_host() if builtin is not None else probes.LOOPBACK

    async def _after_exit(self, status: ExitStatus | None, detail: str, ran_for: float) -> bool:
        """Record the exit; sleep the back-off and return True if the policy restarts."""
        self._process = None
        if ran_for >= self._settings.backoff.reset_after:
            self._failures = 0
        self._exit_code = status.exit_code if status else None
        state: State = "Exited" if status is not None and status.success else "Failed"
        if not should_restart(self.template.restart_policy, status):
            self._finished = True
            self._show(state, message=detail)
            self._persist()
            log.info("workload %s: %s; not restarted (restartPolicy %s)", self.name, detail,
                     self.template.restart_policy)  # fmt: skip
            return False
        self._failures += 1
        delay = self._settings.backoff.delay(self._failures)
        self._show(state, message=f"{detail}; restarting in {delay:g} s")
        self._persist()
        log.warning("workload %s: %s; restarting in %g s", self.name, detail, delay)
        await asyncio.sleep(delay)
        self._restarts += 1
        return True

    async def _terminate(self, process: _Process, *, run_pre_stop: bool) -> None:
        self._show("Stopping", message="stopping")
        loop = asyncio.get_running_loop()
        grace = float(self.template.termination_grace_period_seconds)
        deadline = loop.time() + grace
        hook = self.template.pre_stop
        if run_pre_stop and hook is not None and not process.watcher.exited.done():
            outcome = await self._run_hook(hook, min(float(hook.timeout_seconds), grace))
            if not outcome.ok:
                log.warning("workload %s: preStop hook failed: %s", self.name, outcome.detail)
        status = await terminate(
            process.watcher, grace=deadline - loop.time(), kill_time_limit=self._settings.kill_timeout
        )
        if status is None:
            process.watcher.close()
        self._process = None
        self._exit_code = status.exit_code if status else None
        self._show("Exited", message=f"stopped: {status.describe()}" if status else "stopped")
        self._persist()

    # -- bookkeeping ----------------------------------------------------------------------------

    def _show(self, state: State, *, ready: bool = False, message: str | None = None) -> None:
        """Set what statuses() shows and notify if anything visible changed."""
        self._state, self._ready = state, ready
        if message is not None:
            self._message = message
        current = self._notable()
        if current != self._shown:
            self._shown = current
            self._notify()

    def _persist(self) -> None:
        record = StateRecord(
            revision=self.revision, restarts=self._restarts,
            process=self._process.record if self._process else None, finished=self._finished,
            exit_code=self._exit_code, message=self._message,
        )  # fmt: skip
        try:
            write_state(self._settings.layout, self.name, record)
        except OSError as error:
            log.error("workload %s: cannot write its state file: %s", self.name, error)
