"""The workload supervisor: runs the edge node's workloads as processes that outlive the agent.

Public API::

    sup = Supervisor(root, node_name="edge-1", on_change=report)   # options below
    await sup.start()            # load root, adopt live processes, bring back the rest
    await sup.apply({"cache": template, ...})   # the full desired set, by workload name
    await sup.apply(desired, scaled_down={"cache": "site lab is Inactive"})  # held at zero, disk kept
    sup.statuses()               # {name: InstanceStatus}
    sup.pids()                   # {name: pid} of running workloads (diagnostics)
    sup.running()                # {name: Running(template, workdir, pid, ready, started_at)}
    sup.signal("cache", SIGHUP)  # signal a workload's process without restarting it
    await sup.read_logs("cache", tail=200)
    await sup.close()            # agent shutdown: stop supervising, LEAVE workloads running
    await sup.stop_all()         # stop and forget every workload (decommission, tests)

Options: ``builtins`` (name -> :class:`~edgefleet.edge.instances.Builtin`,
the agent's part of ``builtin:`` templates such as the cache server),
``backoff`` (:class:`~edgefleet.edge.backoff.Backoff`, default 1 s
doubling to 60 s, reset after 60 s of running), ``log_limits``
(:class:`~edgefleet.edge.logfiles.LogLimits`, default 10 MiB x 3),
``rotate_interval`` (seconds between log size checks), ``poll_interval``
(exit polling where pidfds are unavailable), ``kill_timeout`` (how long to
wait after SIGKILL), ``users`` (:class:`~edgefleet.edge.users.UserPolicy`:
which user each workload runs as; default None, the supervisor's own user
for all, as in tests; the agent passes ``UserPolicy.for_agent()``),
``secrets`` (``(secret, key) -> value``, for env ``valueFrom.secretRef``;
the agent reads them from its view store).

How it converges: ``apply`` compares each name's desired template revision
(:func:`~edgefleet.api.workloads.template_revision`, a content hash) with
the running one. A new name starts; a missing name is stopped gracefully and
its files removed; a changed revision restarts that workload alone; an equal
revision is not touched. A name in ``scaled_down`` keeps its template on
disk but its process is stopped gracefully and held at zero (``ScaledDown``,
persisted, see :mod:`edgefleet.edge.elastic`) until an ``apply`` without it.
Comparing content, never store revisions, is what
lets an agent restart or a store restore (new epoch) reconcile without
restarting anything whose template did not change.

Edge autonomy: every workload is a session leader of its own (see
:mod:`edgefleet.edge.processes`), its desired template is on disk
(:mod:`edgefleet.edge.statefiles`), its output goes straight to a file
(:mod:`edgefleet.edge.logfiles`). So an agent restart adopts the running
processes (pid + start time + boot id, watched through pidfds), and after a
host reboot ``start()`` alone, with no cloud and no ``apply``, brings every
workload back. Each workload's lifecycle (start, hooks, probes, restarts,
graceful stop) is an :class:`~edgefleet.edge.instances.Instance`: a thin
asyncio shell around the pure :class:`~edgefleet.edge.lifecycle.Lifecycle`,
which holds every decision (adopt, replace, restart and back-off, readiness).

On-disk layout: see :mod:`edgefleet.edge.workdirs`.

Supported and not:

- Linux only (``/proc``, pidfds from Linux 5.3, polling fallback before).
- The exit code of a process adopted after the *agent process* restarted is
  unknown (only its parent, now init, may read it): reported as
  ``exitCode: null`` with a message saying so, and counted as a failure.
- Workloads must stay in the foreground; when a leader exits, the rest of
  its process group is killed.
- Under systemd, the agent's unit needs ``KillMode=process`` (or workloads
  in their own scope): the default ``control-group`` kills the workloads
  when the agent stops, which defeats adoption.
- The health probe is a readiness probe: it never restarts a process.
- ``restarts`` counts starts after the first of the running revision and
  persists across agent restarts (reset by a new revision). A process that
  vanished while no supervisor watched it (host reboot) is started again
  whatever its ``restartPolicy``; one that had finished under its policy
  stays finished.
- The environment is built, not inherited from the agent (see
  :mod:`edgefleet.edge.workdirs`); env ``valueFrom.secretRef`` values come
  from ``secrets`` at each start (a Secret change restarts nothing).
- Isolation (``users``): with a policy that switches users (agent running
  as root), each workload runs as its ``runAsUser`` or the default workload
  user, owns its working directory and cannot read the agent's files; see
  :mod:`edgefleet.edge.users` for what holds and what does not, and what an
  agent that is not root gives (nothing against the same uid).
- ``read_logs`` raises :class:`UnknownWorkload` for a name that is not a
  workload here (including anything that is not a DNS-1123 name).
- ``apply`` waits for graceful stops (up to each grace period) but not for
  starts; concurrent calls are serialised. Cancelling an ``apply`` leaves the
  disk saying what is desired, so the next ``start`` or ``apply`` finishes
  the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgefleet.api.meta import check_dns1123_subdomain
from edgefleet.api.workloads import InstanceStatus, WorkloadTemplate, template_revision
from edgefleet.edge import logfiles
from edgefleet.edge.backoff import RESTARTS, Backoff
from edgefleet.edge.instances import Artifacts, Builtin, Instance, Settings
from edgefleet.edge.logfiles import LogLimits
from edgefleet.edge.processes import ExitWatcher, is_running, terminate
from edgefleet.edge.statefiles import Stored, load_all, write_template
from edgefleet.edge.users import UserPolicy
from edgefleet.edge.workdirs import PRIVATE, SEARCHABLE, Layout, SecretLookup, agent_dir, unsearchable_ancestor

__all__ = ["Backoff", "Builtin", "LogLimits", "Running", "Supervisor", "SupervisorError", "UnknownWorkload"]

log = logging.getLogger(__name__)

DEFAULT_BACKOFF = RESTARTS
DEFAULT_LOG_LIMITS = LogLimits()
LEFTOVER_GRACE_SECONDS = 10.0
"""Grace period for a process whose template is gone (its removal was interrupted)."""


class SupervisorError(Exception):
    """Misuse of the supervisor (closed, unknown workload); workload failures are states, not errors."""


class UnknownWorkload(SupervisorError, LookupError):
    """No workload of that name on this node."""


@dataclass(frozen=True, slots=True)
class Running:
    """A workload whose process runs now."""

    template: WorkloadTemplate
    workdir: Path
    pid: int
    ready: bool
    started_at: float


class Supervisor:
    """Runs the desired workloads of one node under ``root``; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        node_name: str,
        on_change: Callable[[], None] | None = None,
        builtins: Mapping[str, Builtin] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        log_limits: LogLimits = DEFAULT_LOG_LIMITS,
        rotate_interval: float = 10.0,
        poll_interval: float = 0.5,
        kill_timeout: float = 5.0,
        users: UserPolicy | None = None,
        secrets: SecretLookup | None = None,
        artifacts: Artifacts | None = None,
    ) -> None:
        self.layout = Layout(Path(root).absolute())
        self._settings = Settings(
            self.layout, node_name, backoff, poll_interval, kill_timeout, dict(builtins or {}), users, secrets,
            artifacts=artifacts,
        )  # fmt: skip
        self._failed_updates: dict[str, tuple[str, str]] = {}  # name -> (revision, why its artifacts failed)
        self._on_change = on_change
        self._log_limits = log_limits
        self._rotate_interval = rotate_interval
        self._instances: dict[str, Instance] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._rotation: asyncio.Task[None] | None = None

    # -- queries --------------------------------------------------------------------------------

    def statuses(self) -> dict[str, InstanceStatus]:
        statuses = {name: instance.status() for name, instance in sorted(self._instances.items())}
        for name, (revision, why) in self._failed_updates.items():
            if name in statuses:
                message = f"update to revision {revision} failed, revision {statuses[name].revision} runs on: {why}"
                statuses[name] = statuses[name].model_copy(update={"message": message[:1024]})
        return statuses

    def failed_updates(self) -> dict[str, tuple[str, str]]:
        """Workloads whose new revision could not get its artifacts: name -> (revision, why); the old one runs."""
        return dict(self._failed_updates)

    def pids(self) -> dict[str, int]:
        """Process ids of the running workloads (for diagnostics and tests)."""
        return {name: pid for name, instance in self._instances.items() if (pid := instance.pid) is not None}

    def running(self) -> dict[str, Running]:
        """The workloads whose process runs now, by name."""
        out: dict[str, Running] = {}
        for name, instance in sorted(self._instances.items()):
            pid, started_at = instance.pid, instance.started_at
            if pid is not None and started_at is not None:
                ready = bool(instance.status().ready)
                out[name] = Running(instance.template, instance.workdir, pid, ready, started_at)
        return out

    def signal(self, name: str, signal_number: int) -> bool:
        """Signal workload ``name``'s process (not its group), e.g. SIGHUP to reload; False if it does not run."""
        instance = self._instances.get(name)
        return instance is not None and instance.send_signal(signal_number)

    async def read_logs(self, name: str, tail: int = 200) -> str:
        """The last ``tail`` lines of the workload's output (see :func:`logfiles.tail` for limits)."""
        if not _is_workload_name(name):  # the name becomes a path: no "../" tricks from a log request
            raise UnknownWorkload(f"no workload named {name!r} on this node")
        path = self.layout.log_file(name)
        if name not in self._instances and not path.exists():
            raise UnknownWorkload(f"no workload named {name!r} on this node")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, logfiles.tail, path, tail, self._log_limits.keep)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the root, adopt live processes and start the others; idempotent."""
        async with self._lock:
            self._check_open()
            if self._started:
                return
            loop = asyncio.get_running_loop()
            stored = await loop.run_in_executor(None, self._load)
            adopted = [self._resume(entry) for entry in stored if entry.template is not None]
            leftovers = [entry for entry in stored if entry.template is None]
            await asyncio.gather(*(self._remove_leftover(entry) for entry in leftovers))
            await self._settle([instance for instance in adopted if instance is not None])
            self._rotation = loop.create_task(self._rotate_forever(), name="workload log rotation")
            self._started = True
            self._changed()

    def _load(self) -> list[Stored]:
        users = self._settings.users
        if users is not None and users.switch:
            # Workloads of other users find their working directory by absolute path too (many programs
            # use getcwd()); the agent's files in it stay 0600 and its subdirectories 0700 or 0711.
            agent_dir(self.layout.root, SEARCHABLE)
            blocking = unsearchable_ancestor(self.layout.root)
            if blocking is not None:
                log.warning(
                    "%s is not searchable by other users: workloads that run as another user reach their "
                    "working directory only by relative paths (python -m http.server and other programs "
                    "using absolute paths fail); chmod o+x it or move the data directory",
                    blocking,
                )
        agent_dir(self.layout.workloads, SEARCHABLE)
        agent_dir(self.layout.logs, PRIVATE)
        return load_all(self.layout)

    def _resume(self, entry: Stored) -> Instance | None:
        assert entry.template is not None
        instance = self._instances[entry.name] = self._new_instance(entry.name, entry.template)
        return instance if instance.resume(entry.state) else None

    async def _settle(self, adopted: list[Instance]) -> None:
        """Wait (bounded) for the first probe of adopted workloads, so start() reports real readiness."""
        limits = [i.template.health_probe.timeout_seconds for i in adopted if i.template.health_probe]
        if not limits:
            return
        waiters = [asyncio.ensure_future(instance.wait_probed()) for instance in adopted]
        _, late = await asyncio.wait(waiters, timeout=max(limits) + 1.0)
        for waiter in late:
            waiter.cancel()

    async def apply(
        self, desired: Mapping[str, WorkloadTemplate], *, scaled_down: Mapping[str, str] | None = None
    ) -> None:
        """Converge on ``desired``, the complete set of workloads this node should run; the names in
        ``scaled_down`` (name -> why) are kept but held at zero."""
        for name in desired:
            check_dns1123_subdomain(name)  # names become paths: refuse anything else up front
        held = scaled_down or {}
        await self.start()
        async with self._lock:
            self._check_open()
            names = sorted(set(self._instances) | set(desired))
            results = await asyncio.gather(
                *(self._converge(name, desired.get(name), held.get(name)) for name in names), return_exceptions=True
            )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Exception):
                log.error("workload %s: could not apply the change", name, exc_info=result)

    async def _converge(self, name: str, template: WorkloadTemplate | None, held: str | None = None) -> None:
        current = self._instances.get(name)
        if template is None:
            self._failed_updates.pop(name, None)
            if current is not None:
                await self._remove(name, current)
            return
        revision = template_revision(template)
        if current is not None and current.revision == revision:
            self._failed_updates.pop(name, None)
            await self._scale(name, current, held)
            return
        if current is not None and not await self._fetch_artifacts(name, template, revision):
            return  # the old revision keeps running; the next apply retries
        await self._record_template(name, template, revision)
        if current is not None:
            log.info("workload %s: revision %s replaces %s", name, revision, current.revision)
            await current.stop()
        if self._closed:
            return  # the template is on disk: the next supervisor starts it
        instance = self._instances[name] = self._new_instance(name, template)
        if held is not None:
            instance.hold(held)  # recorded, started when its site activates
        else:
            instance.launch()
        self._changed()

    async def _scale(self, name: str, instance: Instance, held: str | None) -> None:
        """Hold ``instance`` at zero (``held``: why) or start it again (None), if it is not so already."""
        if held is not None and not instance.scaled_down:
            log.info("workload %s: scaling to zero (%s)", name, held)
            await instance.scale_down(held)
        elif held is None and instance.scaled_down:
            log.info("workload %s: scaling up again", name)
            instance.scale_up()

    async def _fetch_artifacts(self, name: str, template: WorkloadTemplate, revision: str) -> bool:
        """Fetch and verify the new revision's artifacts before the old process stops; False if they failed."""
        artifacts = self._settings.artifacts
        if not template.artifacts or artifacts is None:
            return True
        try:
            await artifacts.fetch_template(template)
        except Exception as error:  # any failure keeps the old revision running, with a message
            log.error("workload %s: revision %s not started, its artifacts failed: %s", name, revision, error)
            self._failed_updates[name] = (revision, str(error))
            self._changed()
            return False
        if self._failed_updates.pop(name, None) is not None:
            self._changed()
        return True

    async def _record_template(self, name: str, template: WorkloadTemplate, revision: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, write_template, self.layout, name, template, revision)
        except OSError as error:
            # Run it anyway: serving now matters more; only a reboot would forget it.
            log.error("workload %s: cannot record its template (%s); it will not survive a reboot", name, error)

    async def _remove(self, name: str, instance: Instance) -> None:
        log.info("workload %s: removing", name)
        # The template goes first: a crash from here on finds a workload being removed, not one to restart.
        with contextlib.suppress(FileNotFoundError):
            self.layout.template_file(name).unlink()
        await instance.stop()
        del self._instances[name]
        await asyncio.get_running_loop().run_in_executor(None, self._delete_files, name)
        self._changed()

    def _delete_files(self, name: str) -> None:
        shutil.rmtree(self.layout.workload_dir(name), ignore_errors=True)
        logfiles.remove(self.layout.log_file(name))

    async def _remove_leftover(self, entry: Stored) -> None:
        """Finish a removal an earlier supervisor began (or drop a workload whose template is unreadable)."""
        process = entry.state.process if entry.state is not None else None
        if process is not None and is_running(process.identity):
            log.warning("workload %s: no template; stopping its pid %d", entry.name, process.pid)
            watcher = ExitWatcher(process.pid, poll_interval=self._settings.poll_interval)
            if is_running(process.identity):
                await terminate(watcher, grace=LEFTOVER_GRACE_SECONDS, kill_time_limit=self._settings.kill_timeout)
            watcher.close()
        await asyncio.get_running_loop().run_in_executor(None, self._delete_files, entry.name)

    async def close(self) -> None:
        """Stop supervising; every workload keeps running, for the next supervisor to adopt."""
        self._closed = True
        if self._rotation is not None:
            self._rotation.cancel()
            await asyncio.wait([self._rotation])
            self._rotation = None
        await asyncio.gather(*(instance.detach() for instance in self._instances.values()))

    async def stop_all(self) -> None:
        """Stop every workload gracefully and forget it (its files and logs are removed)."""
        await self.apply({})

    # -- logs -----------------------------------------------------------------------------------

    async def rotate_logs(self) -> None:
        """Rotate every workload log over its size limit now (the supervisor also does it periodically)."""
        paths = [self.layout.log_file(name) for name in self._instances]
        await asyncio.get_running_loop().run_in_executor(None, self._rotate, paths)

    def _rotate(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                logfiles.rotate_if_needed(path, self._log_limits)
            except OSError as error:
                log.error("cannot rotate %s: %s", path, error)

    async def _rotate_forever(self) -> None:
        while True:
            await asyncio.sleep(self._rotate_interval)
            await self.rotate_logs()

    # -- helpers --------------------------------------------------------------------------------

    def _new_instance(self, name: str, template: WorkloadTemplate) -> Instance:
        return Instance(name, template, self._settings, self._changed)

    def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            # The callback belongs to the agent; its bug must not stop supervision.
            log.exception("on_change callback failed")

    def _check_open(self) -> None:
        if self._closed:
            raise SupervisorError("the supervisor is closed")


def _is_workload_name(name: str) -> bool:
    try:
        check_dns1123_subdomain(name)
    except ValueError:
        return False
    return True
