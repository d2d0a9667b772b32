"""One workload instance: the life of one template revision under one name, as an asyncio task.

How: the decisions live in a pure :class:`~edgefleet.edge.lifecycle.Lifecycle`
(adopt or replace what an earlier supervisor left, restart policy and
back-off, readiness from probes, what to show); :class:`Instance` is its
thin asyncio shell. It feeds the lifecycle what happened (a start went
through or failed, the process exited, a probe answered) with the time from
an injected clock, and executes the action it gets back::

    Start   (render files, spawn, postStart)  ->  watch the exit, probe meanwhile
    Adopt   (watch the recorded process)       ->  watch the exit, probe meanwhile
    Replace (stop the recorded process)        ->  Start
    RestartAfter(delay)                        ->  sleep, then Start
    Finished                                   ->  the task ends

Every transition is recorded in ``state.json`` (see
:mod:`edgefleet.edge.statefiles`) and, when the visible status changed,
through ``notify`` (the supervisor's change callback). An instance starts
either fresh (:meth:`Instance.launch`) or from what an earlier supervisor
left on disk (:meth:`Instance.resume`): the recorded process still runs
(same pid, start time and boot id) or not is the one observation made here;
what follows from it is the lifecycle's rule (see its module docstring).

Two ways out: :meth:`Instance.stop` (preStop hook, SIGTERM to the process
group, ``terminationGracePeriodSeconds``, then SIGKILL to the group) and
:meth:`Instance.detach` (stop supervising, leave the process running:
agent shutdown). An elastic workload can also be held at zero
(:meth:`Instance.scale_down`: the same graceful stop, then ``ScaledDown``,
persisted; :meth:`Instance.hold` for a revision that never started) and
started again by :meth:`Instance.scale_up` (see :mod:`edgefleet.edge.elastic`).

Built-in workloads (``template.builtin``, e.g. the cache server): the agent
provides a :class:`Builtin` per name, which writes what the process reads
at start into its working directory (after the template's files, before
every spawn), decides its command line and the host its probe connects to.
An instance can also be signalled (:meth:`Instance.send_signal`, e.g. SIGHUP
to reload a config) without being restarted.

Probe failures: every failed probe attempt of the instance is counted
(``probeFailures``, for rollout analysis); the count lives as long as the
instance in this agent (a new revision or an agent restart starts it at 0).
A count that moved alone does not notify: like the cache's counters it rides
along with the next status report.

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
from typing import Any, Protocol

from edgefleet.api.workloads import HealthProbe, Hook, InstanceStatus, WorkloadTemplate, template_revision
from edgefleet.edge import logfiles, probes, workdirs
from edgefleet.edge.backoff import Backoff
from edgefleet.edge.lifecycle import Action, Adopt, Finished, Found, Lifecycle, Replace, RestartAfter, Start
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
from edgefleet.edge.statefiles import ProcessRecord, StateRecord, write_state
from edgefleet.edge.users import Account, UserError, UserPolicy
from edgefleet.edge.workdirs import Layout, RenderError, SecretLookup

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Wall-clock seconds (``time.time``): spawn times are persisted and compared across agent restarts."""


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


class Artifacts(Protocol):
    """How instances get the artifacts of ``template.artifacts`` (see :mod:`edgefleet.edge.artifacts`)."""

    async def fetch_template(self, template: WorkloadTemplate) -> None:
        """Make every artifact of ``template`` present and verified on the node; raising fails the start."""

    def install(self, template: WorkloadTemplate, workdir: Path, owner: Account | None = None) -> None:
        """Copy or unpack them into ``workdir`` (blocking); raising fails the start."""


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
    clock: Clock = time.time
    artifacts: Artifacts | None = None
    """Fetches and installs ``template.artifacts``; None: templates with artifacts fail to start."""


@dataclass(frozen=True, slots=True)
class _Process:
    record: ProcessRecord
    watcher: ExitWatcher


class Instance:
    """The supervised process of one workload revision; see the module docstring."""

    def __init__(self, name: str, template: WorkloadTemplate, settings: Settings, notify: Callable[[], None]) -> None:
        self.name = name
        self.template = template
        self.revision = template_revision(template)
        self._settings = settings
        self._notify = notify
        self._life = Lifecycle(self.revision, policy=template.restart_policy, probe=template.health_probe,
                               backoff=settings.backoff)  # fmt: skip
        self._workdir = settings.layout.workdir(name, self.revision)
        self._log = settings.layout.log_file(name)
        # Hooks and probes of an adopted process use this one; every start builds it again, strictly.
        self._env = self._environment(strict=False)
        self._account: Account | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: _Process | None = None
        self._probed = asyncio.Event()

    # -- what the supervisor sees ---------------------------------------------------------------

    def status(self) -> InstanceStatus:
        return self._life.status()

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

    @property
    def scaled_down(self) -> bool:
        """Held at zero on purpose (its site is Inactive)."""
        return self._life.scaled

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
        self._spawn_task(self._run(self._life.launch()))

    def resume(self, state: StateRecord | None) -> bool:
        """Carry on from what an earlier supervisor recorded; True if the process was adopted."""
        recorded = state.process if state is not None else None
        process = self._adopt(recorded) if recorded is not None else None
        found = None
        if state is not None:
            found = Found(revision=state.revision, restarts=state.restarts, finished=state.finished,
                          exit_code=state.exit_code, message=state.message,
                          pid=recorded.pid if recorded is not None else None, alive=process is not None,
                          scaled_down=state.scaled_down)  # fmt: skip
        action = self._life.resume(found)
        self._changed()
        if isinstance(action, Adopt | Replace):
            self._process = process
        elif process is not None:
            process.watcher.close()  # not ours to watch (cannot happen: alive means Adopt or Replace)
        if isinstance(action, Start) and action.vanished is not None:
            log.warning("workload %s: pid %d ended while no supervisor watched it; starting it again",
                        self.name, action.vanished)  # fmt: skip
        if not isinstance(action, Finished):
            self._spawn_task(self._run(action))
        return isinstance(action, Adopt)

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
        return _Process(record, watcher)

    # -- ways out -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop supervising and stop the process gracefully (preStop, SIGTERM, grace, SIGKILL)."""
        await self._cancel()
        if self._process is not None:
            await self._terminate(self._process, run_pre_stop=True)
        self._probed.set()

    async def scale_down(self, reason: str) -> None:
        """Stop the process gracefully, as :meth:`stop`, and hold the workload at zero (persisted)."""
        await self._cancel()
        if self._process is not None:
            await self._terminate(self._process, run_pre_stop=True)
        self.hold(reason)

    def hold(self, reason: str) -> None:
        """Show and record the workload as scaled to zero (``reason`` says why); nothing runs."""
        self._life.scaled_down(reason)
        self._changed()
        self._persist()

    def scale_up(self) -> None:
        """Start the held workload again (its revision, its working directory)."""
        self._spawn_task(self._run(self._life.scale_up()))

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

    # -- executing the lifecycle's actions ------------------------------------------------------

    def _spawn_task(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._guarded(work), name=f"workload {self.name}")

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("supervisor bug while running workload %s", self.name)
            self._life.broken("internal supervisor error; see the agent's log")
            self._changed()

    async def _run(self, action: Action) -> None:
        while not isinstance(action, Finished):
            action = await self._execute(action)

    async def _execute(self, action: Action) -> Action:
        """Do what ``action`` says; the lifecycle's next decision."""
        if isinstance(action, RestartAfter):
            await asyncio.sleep(action.delay)
            return self._life.restarting()
        if isinstance(action, Replace):
            assert self._process is not None
            log.info("workload %s: pid %d runs another revision; replacing it", self.name, action.pid)
            await self._terminate(self._process, run_pre_stop=False)
            return Start()
        if isinstance(action, Adopt):
            assert self._process is not None
            # Adopted: its hooks and probes run as the user it runs as (stopping it needs no user).
            with contextlib.suppress(StartFailed):
                await self._resolve_account()
            self._life.adopted(self._process.record.started_at)
            self._changed()
            return await self._supervise(self._process)
        try:
            process = await self._start()
        except StartFailed as failure:
            return self._decided(self._life.start_failed(str(failure)), str(failure))
        return await self._supervise(process)

    def _decided(self, action: Action, detail: str) -> Action:
        """Record the lifecycle's decision after an exit or a failed start, and log it."""
        self._process = None
        self._changed()
        self._persist()
        if isinstance(action, RestartAfter):
            log.warning("workload %s: %s; restarting in %g s", self.name, detail, action.delay)
        else:
            log.info("workload %s: %s; not restarted (restartPolicy %s)", self.name, detail,
                     self.template.restart_policy)  # fmt: skip
        return action

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
        self._life.starting()
        self._changed()
        loop = asyncio.get_running_loop()
        await self._resolve_account()
        try:
            self._env = self._environment(strict=True)
            await loop.run_in_executor(None, workdirs.render, self._workdir, self.template.files, self._account)
        except (RenderError, OSError) as error:
            raise StartFailed(f"cannot prepare the working directory: {error}") from error
        await self._install_artifacts()
        await self._prepare_builtin()
        process = self._spawn()
        await self._post_start(process)
        await loop.run_in_executor(None, workdirs.prune_revisions, self._workdir.parent, self.revision)
        self._life.started(process.record.pid, process.record.started_at)
        self._changed()
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

    async def _install_artifacts(self) -> None:
        """Fetch (normally done already, before the old revision stopped) and install the template's artifacts."""
        if not self.template.artifacts:
            return
        artifacts = self._settings.artifacts
        if artifacts is None:
            raise StartFailed("this agent cannot fetch artifacts (template.artifacts)")
        try:
            await artifacts.fetch_template(self.template)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, artifacts.install, self.template, self._workdir, self._account)
        except Exception as error:  # a bad digest, a failed fetch, an unsafe archive: this start's failure
            raise StartFailed(f"cannot install artifacts: {error}") from error

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
                identity = spawn(self._argv(), cwd=self._workdir, env=self._env, output=output, account=self._account)
        except SpawnError as error:
            raise StartFailed(str(error)) from error
        except OSError as error:
            raise StartFailed(f"cannot open the log file {self._log}: {error.strerror}") from error
        record = ProcessRecord(pid=identity.pid, start_time=identity.start_time, boot_id=identity.boot_id,
                               started_at=self._settings.clock())  # fmt: skip
        self._process = _Process(record, ExitWatcher(identity.pid, poll_interval=self._settings.poll_interval))
        self._persist()  # before any await: a crash from here on finds the pid on disk
        return self._process

    async def _post_start(self, process: _Process) -> None:
        hook = self.template.post_start
        if hook is None:
            return
        self._life.starting("running the postStart hook")
        self._changed()
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
                    hook.exec.command,
                    cwd=self._workdir,
                    env=self._env,
                    output=output,
                    time_limit=time_limit,
                    account=self._account,
                )
        except OSError as error:
            return Outcome(False, f"cannot open the log file: {error.strerror}")

    async def _supervise(self, process: _Process) -> Action:
        """Probe while waiting for the exit; the lifecycle's decision once it came."""
        probe = self.template.health_probe
        prober = asyncio.get_running_loop().create_task(self._probe(process, probe)) if probe else None
        try:
            status: ExitStatus = await asyncio.shield(process.watcher.exited)
        finally:
            if prober is not None:
                prober.cancel()
        return self._decided(self._life.exited(status, self._settings.clock()), status.describe())

    async def _probe(self, process: _Process, probe: HealthProbe) -> None:
        delay = self._life.first_probe_in()
        while True:
            await asyncio.sleep(delay)
            began = self._settings.clock()
            outcome = await probes.check(probe, cwd=self._workdir, env=self._env, host=self._probe_host(),
                                         account=self._account)  # fmt: skip
            delay = self._life.probed(outcome.ok, outcome.detail, process.record.pid, began=began,
                                      now=self._settings.clock())  # fmt: skip
            self._changed()

    def _probe_host(self) -> str:
        try:
            builtin = self._builtin()
        except StartFailed:
            builtin = None
        return builtin.probe_host() if builtin is not None else probes.LOOPBACK

    async def _terminate(self, process: _Process, *, run_pre_stop: bool) -> None:
        self._life.stopping()
        self._changed()
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
        self._life.stopped(status)
        self._changed()
        self._persist()

    # -- bookkeeping ----------------------------------------------------------------------------

    def _changed(self) -> None:
        """Notify if anything visible changed; release wait_probed() once readiness is known."""
        if self._life.readiness_known:
            self._probed.set()
        if self._life.changed():
            self._notify()

    def _persist(self) -> None:
        life = self._life
        record = StateRecord(
            revision=self.revision, restarts=life.restarts,
            process=self._process.record if self._process else None, finished=life.finished,
            exit_code=life.exit_code, message=life.message, scaled_down=life.scaled,
        )  # fmt: skip
        try:
            write_state(self._settings.layout, self.name, record)
        except OSError as error:
            log.error("workload %s: cannot write its state file: %s", self.name, error)
