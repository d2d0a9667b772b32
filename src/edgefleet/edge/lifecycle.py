"""The decisions of one workload instance, as a pure state machine (sans-I/O).

How: a :class:`Lifecycle` holds what the supervisor shows of one template
revision on this node (state, readiness, restarts, exit code, message,
probe failures) and the counters behind its decisions. The asyncio shell
(:class:`~edgefleet.edge.instances.Instance`) tells it what happened and
executes the :data:`Action` it returns::

    launch() / resume(found)  ->  Start | Adopt | Replace | Finished
    starting(), started(pid, at)                     (a start went through)
    start_failed(reason) / exited(status, now)  ->  RestartAfter(delay) | Finished
    restarting()  ->  Start                          (after the shell waited the delay)
    first_probe_in(), probed(ok, detail, began, now) ->  seconds until the next probe
    stopping(), stopped(status), broken(reason)
    scaled_down(reason)  /  scale_up()  ->  Start      (an elastic workload, see edge/elastic.py)

Time enters only as arguments (``now``, ``began``: wall-clock seconds from
the shell's injected clock), so the rules are tested with a fake clock and
no processes (``tests/edge/test_lifecycle.py``):

- **resume** after an agent restart, from what an earlier supervisor
  recorded (:class:`Found`): a live process of this revision is *adopted*;
  a live one of another revision is *replaced* (stopped, then this revision
  starts); a vanished one of this revision starts again at once whatever
  the restart policy (a host reboot must bring the edge back) and counts as
  a restart; a run that had *finished* under its policy stays finished.
- **restarts**: :func:`should_restart` applies ``restartPolicy``; the wait
  is the :class:`~edgefleet.edge.backoff.Backoff` schedule over consecutive
  failures, and a run that lasted ``reset_after`` seconds resets it, so a
  crash loop settles at one start per ``maximum`` while a crash a day
  restarts at once. A failed start (missing command, failed postStart hook)
  is a failure that ran for 0 s.
- **probes**: :class:`Readiness` turns results into readiness (unready until
  the first pass, unready again after ``failureThreshold`` failures in a
  row); every failed attempt counts in ``probeFailures``. An adopted process
  is past its start-up, so its first probe runs at once.
- **scale to zero**: an elastic workload (the cache of a site that went
  Inactive) is stopped on purpose and shown ``ScaledDown``: not a failure,
  not restarted by its policy, no restart counted; the fact is persisted, so
  an agent restart (cloud reachable or not) leaves it down, and
  :meth:`Lifecycle.scale_up` starts it again (same revision, same disk tier).
- **notification**: :meth:`Lifecycle.changed` says whether the status, less
  the counters that ride along (``probeFailures``), changed since it was
  last asked: the supervisor reports only then.

Why: the same rules encoded in asyncio control flow could only be tested
with real processes and real time. See docs/architecture.md,
"Edge autonomy and workloads".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from edgefleet.api.workloads import HealthProbe, InstanceStatus
from edgefleet.edge.backoff import Backoff

State = Literal["Pending", "Starting", "Running", "Stopping", "Exited", "Failed", "ScaledDown"]
RestartPolicy = Literal["Always", "OnFailure", "Never"]


class Exit(Protocol):
    """How a process ended, as the shell observed it (:class:`edgefleet.edge.processes.ExitStatus`)."""

    @property
    def success(self) -> bool:
        """It exited with status 0."""

    @property
    def exit_code(self) -> int | None:
        """The shell's convention (128 + signal number when killed); None when unknown."""

    def describe(self) -> str:
        """How it ended, for people."""


def should_restart(policy: RestartPolicy, status: Exit | None) -> bool:
    """Whether to start again after an exit (``status`` None: the process never started).

    An unknown status (a process adopted from an earlier agent process)
    counts as a failure: for a CDN, restarting what might have failed is the
    safe side.
    """
    if policy == "Always":
        return True
    if policy == "Never":
        return False
    return status is None or not status.success


class Readiness:
    """Whether a probed workload is ready, from consecutive probe results."""

    def __init__(self, failure_threshold: int) -> None:
        self.failure_threshold = failure_threshold
        self.ready = False
        self.failures = 0

    def observe(self, ok: bool) -> bool:
        """Record one result; True if readiness changed."""
        before = self.ready
        if ok:
            self.failures = 0
            self.ready = True
        else:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.ready = False
        return self.ready != before


# -- actions: what the shell does next ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Render the files, spawn, run postStart; then call ``started`` (or ``start_failed``)."""

    vanished: int | None = None
    """The pid of a recorded process of this revision that ended while no supervisor watched it."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """Watch the recorded process, which runs this revision: no restart."""

    pid: int


@dataclass(frozen=True, slots=True)
class Replace:
    """Stop the recorded process (another revision; no preStop hook), then start this revision."""

    pid: int


@dataclass(frozen=True, slots=True)
class RestartAfter:
    """Wait ``delay`` seconds, then call ``restarting``."""

    delay: float


@dataclass(frozen=True, slots=True)
class Finished:
    """Done under the restart policy: nothing to run until a new revision."""


Action = Start | Adopt | Replace | RestartAfter | Finished


@dataclass(frozen=True, slots=True)
class Found:
    """What an earlier supervisor recorded for this workload name, and whether its process still runs."""

    revision: str
    restarts: int = 0
    finished: bool = False
    exit_code: int | None = None
    message: str | None = None
    pid: int | None = None
    """The recorded process, if one was running when the record was written."""
    alive: bool = False
    """That very process (pid, start time, boot id) runs now."""
    scaled_down: bool = False
    """It was scaled to zero on purpose (its site was Inactive)."""


class Lifecycle:
    """The state and decisions of one workload revision; see the module docstring."""

    def __init__(self, revision: str, *, policy: RestartPolicy, probe: HealthProbe | None, backoff: Backoff) -> None:
        self.revision = revision
        self._policy: RestartPolicy = policy
        self._probe = probe
        self._backoff = backoff
        self.state: State = "Pending"
        self.ready = False
        self.restarts = 0
        self.exit_code: int | None = None
        self.message: str | None = "waiting to start"
        self.probe_failures = 0
        self.finished = False
        """Exited for good under the restart policy (persisted: stays so after an agent restart)."""
        self.readiness_known = False
        """Readiness is known: the first probe ran, or there is no probe, or nothing runs."""
        self.scaled = False
        """Scaled to zero on purpose (persisted: stays so after an agent restart until scale_up)."""
        self._failures = 0  # consecutive, for the back-off
        self._started_at: float | None = None
        self._adopted = False
        self._readiness: Readiness | None = None
        self._shown = self._notable()

    # -- what the supervisor shows ---------------------------------------------------------------

    def status(self) -> InstanceStatus:
        return self._notable().model_copy(update={"probe_failures": self.probe_failures})

    def changed(self) -> bool:
        """True if the status (less the counters that ride along) changed since the last call."""
        current = self._notable()
        if current == self._shown:
            return False
        self._shown = current
        return True

    def _notable(self) -> InstanceStatus:
        return InstanceStatus(
            revision=self.revision, state=self.state, ready=self.ready, restarts=self.restarts,
            exit_code=self.exit_code, message=self.message,
        )  # fmt: skip

    def _show(self, state: State, *, ready: bool = False, message: str | None = None) -> None:
        self.state, self.ready = state, ready
        if message is not None:
            self.message = message

    # -- ways in ---------------------------------------------------------------------------------

    def launch(self) -> Action:
        """A new name or a new revision: start it."""
        return Start()

    def resume(self, found: Found | None) -> Action:
        """Carry on from what an earlier supervisor recorded (None: nothing was)."""
        if found is None:
            return Start()
        same = found.revision == self.revision
        if same:
            self.restarts = found.restarts
        if found.alive and found.pid is not None:
            if not same:
                return Replace(found.pid)
            self._adopted = True
            self._show("Running", ready=self._probe is None, message=f"adopted pid {found.pid}")
            return Adopt(found.pid)
        if same and found.scaled_down:
            self.scaled_down(found.message or "scaled to zero")
            return Finished()
        if same and found.finished:
            self.finished, self.exit_code = True, found.exit_code
            self._show("Exited" if found.exit_code == 0 else "Failed", message=found.message)
            self.readiness_known = True
            return Finished()
        if same and found.pid is not None:
            self.restarts += 1
            return Start(vanished=found.pid)
        return Start()

    def adopted(self, started_at: float) -> None:
        """The adopted process is watched now; ``started_at``: when it was spawned (wall clock)."""
        self._started_at = started_at
        self._watching()

    # -- one run ---------------------------------------------------------------------------------

    def starting(self, step: str = "starting") -> None:
        self._show("Starting", message=step)

    def started(self, pid: int, started_at: float) -> None:
        """The process runs and its postStart hook passed; ``started_at``: its spawn time (wall clock)."""
        self._adopted = False
        self._started_at = started_at
        self._show("Running", ready=self._probe is None, message=f"running as pid {pid}")
        self._watching()

    def _watching(self) -> None:
        self._readiness = Readiness(self._probe.failure_threshold) if self._probe is not None else None
        if self._probe is None:
            self.readiness_known = True

    def start_failed(self, reason: str) -> Action:
        """The start did not go through (the message says why): a failure that ran for 0 s."""
        self._started_at = None
        return self._ended(None, reason, lasted=0.0)

    def exited(self, status: Exit, now: float) -> Action:
        """The process ended at ``now`` (wall clock)."""
        started_at, self._started_at = self._started_at, None
        lasted = now - started_at if started_at is not None else 0.0
        return self._ended(status, status.describe(), lasted=lasted)

    def _ended(self, status: Exit | None, detail: str, *, lasted: float) -> Action:
        self._readiness = None
        if self._backoff.healthy(lasted):
            self._failures = 0
        self.exit_code = status.exit_code if status is not None else None
        state: State = "Exited" if status is not None and status.success else "Failed"
        if not should_restart(self._policy, status):
            self.finished = True
            self.readiness_known = True
            self._show(state, message=detail)
            return Finished()
        self._failures += 1
        delay = self._backoff.delay(self._failures - 1)
        self._show(state, message=f"{detail}; restarting in {delay:g} s")
        return RestartAfter(delay)

    def restarting(self) -> Action:
        """The back-off wait is over: start again."""
        self.restarts += 1
        return Start()

    # -- probes ----------------------------------------------------------------------------------

    def first_probe_in(self) -> float:
        """Seconds from now to the first probe of this run (at once for an adopted process)."""
        if self._probe is None or self._adopted:
            return 0.0
        return float(self._probe.initial_delay_seconds)

    def probed(self, ok: bool, detail: str, pid: int, *, began: float, now: float) -> float:
        """Record one probe result (began at ``began``, ended at ``now``); seconds until the next probe."""
        if self._probe is None or self._readiness is None:
            raise RuntimeError("probed() without a probe on a running process")
        self._readiness.observe(ok)
        if not ok:
            self.probe_failures += 1
        ready = self._readiness.ready
        self._show("Running", ready=ready, message=f"running as pid {pid}" if ready else f"not ready: {detail}")
        self.readiness_known = True
        return max(0.0, float(self._probe.period_seconds) - (now - began))

    # -- ways out --------------------------------------------------------------------------------

    def stopping(self) -> None:
        self._readiness = None
        self._show("Stopping", message="stopping")

    def stopped(self, status: Exit | None) -> None:
        """Stopped on request (``status`` None: it did not end even after SIGKILL)."""
        self._started_at = None
        self.exit_code = status.exit_code if status is not None else None
        self._show("Exited", message=f"stopped: {status.describe()}" if status is not None else "stopped")
        self.readiness_known = True

    def scaled_down(self, reason: str) -> None:
        """Stopped (or never started) on purpose, its site being Inactive: not a failure, nothing restarts it."""
        self.scaled = True
        self._started_at, self._readiness, self._failures = None, None, 0
        self.exit_code = None
        self._show("ScaledDown", message=reason)
        self.readiness_known = True

    def scale_up(self) -> Action:
        """Its site is active again: start the same revision (not counted as a restart)."""
        self.scaled = False
        return Start()

    def broken(self, reason: str) -> None:
        """A bug in the shell: shown as Failed rather than killing the agent."""
        self._show("Failed", message=reason)
        self.readiness_known = True
