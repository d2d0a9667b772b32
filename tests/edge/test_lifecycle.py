"""The workload lifecycle's rules with a fake clock and no processes: restart policy and back-off,
crash loops, adoption and replacement after an agent restart, probes and readiness, what notifies.

test_supervisor.py proves the same paths once with real processes; here every rule and edge
case is checked exactly (delays to the decimal, counters), in microseconds.
"""

from __future__ import annotations

import random

import pytest

from edgefleet.api.workloads import HealthProbe
from edgefleet.edge.backoff import HUB_DIAL, RESTARTS, Backoff
from edgefleet.edge.lifecycle import (
    Adopt,
    Finished,
    Found,
    Lifecycle,
    Readiness,
    Replace,
    RestartAfter,
    RestartPolicy,
    Start,
    should_restart,
)
from edgefleet.edge.processes import ExitStatus

REV = "rev-1"
CRASH = ExitStatus(code=3)
CLEAN = ExitStatus(code=0)
PROBE = HealthProbe.model_validate(
    {"tcp": {"port": 8080}, "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 2}
)


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def lifecycle(
    policy: RestartPolicy = "Always", probe: HealthProbe | None = None, backoff: Backoff = RESTARTS
) -> Lifecycle:
    return Lifecycle(REV, policy=policy, probe=probe, backoff=backoff)


def crash_after(life: Lifecycle, clock: FakeClock, ran_for: float, status: ExitStatus = CRASH) -> object:
    """One run: started now, exited ``ran_for`` seconds later; the lifecycle's decision."""
    life.starting()
    life.started(pid=100, started_at=clock())
    return life.exited(status, clock.advance(ran_for))


# -- back-off -----------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_maximum() -> None:
    backoff = Backoff(initial=1, maximum=60, reset_after=60)
    assert [backoff.delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay(10**6) == 60
    assert backoff.healthy(60) and not backoff.healthy(59.9)
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


def test_jitter_draws_from_the_upper_part_with_the_injected_random() -> None:
    assert HUB_DIAL.delay(0, lambda: 0.0) == 0.25  # the lowest draw: half the ceiling
    assert HUB_DIAL.delay(3, lambda: 0.5) == 3.0  # 4 s ceiling, three quarters of it
    assert HUB_DIAL.delay(50, lambda: 0.999999) == pytest.approx(30.0)
    draws = [HUB_DIAL.delay(2, random.Random(seed).random) for seed in range(50)]
    assert all(1.0 <= d < 2.0 for d in draws) and len(set(draws)) == 50
    with pytest.raises(ValueError, match="random source"):
        HUB_DIAL.delay(0)


# -- restart policy and back-off over runs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "status", "restart"),
    [("Always", ExitStatus(code=0), True), ("Always", ExitStatus(code=1), True),
     ("OnFailure", ExitStatus(code=0), False), ("OnFailure", ExitStatus(code=2), True),
     ("OnFailure", ExitStatus(signal=9), True), ("OnFailure", ExitStatus(), True), ("OnFailure", None, True),
     ("Never", ExitStatus(code=1), False), ("Never", None, False)],
)  # fmt: skip
def test_restart_policy(policy: RestartPolicy, status: ExitStatus | None, restart: bool) -> None:
    assert should_restart(policy, status) is restart


def test_a_crash_loop_backs_off_exponentially_and_settles_at_the_maximum() -> None:
    clock, life = FakeClock(), lifecycle()
    delays = []
    for _ in range(9):
        action = crash_after(life, clock, ran_for=0.5)
        assert isinstance(action, RestartAfter)
        delays.append(action.delay)
        clock.advance(action.delay)
        assert life.restarting() == Start()
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert life.restarts == 9
    status = life.status()
    assert (status.state, status.exit_code, status.message) == ("Failed", 3, "exited with status 3; restarting in 60 s")


def test_a_run_that_lasted_reset_after_restarts_at_once_again() -> None:
    clock, life = FakeClock(), lifecycle()
    for expected in [1, 2, 4]:
        assert crash_after(life, clock, ran_for=1) == RestartAfter(expected)
        life.restarting()
    assert crash_after(life, clock, ran_for=60) == RestartAfter(1)  # healthy for a minute: schedule reset
    life.restarting()
    assert crash_after(life, clock, ran_for=59) == RestartAfter(2)


def test_finished_under_the_policy_is_final() -> None:
    clock = FakeClock()
    never = lifecycle("Never")
    assert crash_after(never, clock, ran_for=3) == Finished()
    assert (never.finished, never.state, never.exit_code, never.restarts) == (True, "Failed", 3, 0)
    assert never.message == "exited with status 3"
    clean = lifecycle("OnFailure")
    assert crash_after(clean, clock, ran_for=3, status=CLEAN) == Finished()
    assert (clean.state, clean.exit_code, clean.message) == ("Exited", 0, "exited with status 0")
    assert clean.readiness_known


def test_a_failed_start_is_a_failure_that_ran_for_no_time() -> None:
    life = lifecycle("OnFailure")
    life.starting()
    assert life.start_failed("command not found: '/bin/nope'") == RestartAfter(1)
    life.restarting()
    assert life.start_failed("command not found: '/bin/nope'") == RestartAfter(2)
    status = life.status()
    assert (status.state, status.exit_code, status.restarts) == ("Failed", None, 1)
    assert status.message == "command not found: '/bin/nope'; restarting in 2 s"
    assert lifecycle("Never").start_failed("postStart hook failed: exited with status 4") == Finished()


def test_a_killed_process_reports_128_plus_the_signal() -> None:
    clock, life = FakeClock(), lifecycle()
    crash_after(life, clock, ran_for=1, status=ExitStatus(signal=9))
    assert life.exit_code == 137
    assert life.message == "killed by signal SIGKILL; restarting in 1 s"


# -- after an agent restart ----------------------------------------------------------------------------


def test_nothing_recorded_starts() -> None:
    assert lifecycle().resume(None) == Start()
    assert lifecycle().launch() == Start()


def test_a_live_process_of_this_revision_is_adopted_with_its_restart_count() -> None:
    life = lifecycle(probe=PROBE)
    action = life.resume(Found(revision=REV, restarts=4, pid=321, alive=True))
    assert action == Adopt(321)
    status = life.status()
    assert (status.state, status.ready, status.restarts, status.message) == ("Running", False, 4, "adopted pid 321")
    assert not life.readiness_known, "readiness waits for the first probe"
    life.adopted(started_at=10.0)
    assert life.first_probe_in() == 0, "an adopted process is past its start-up: probe at once"
    plain = lifecycle()
    plain.resume(Found(revision=REV, pid=321, alive=True))
    plain.adopted(started_at=10.0)
    assert plain.ready and plain.readiness_known


def test_an_adopted_process_that_exits_counts_as_a_failure_with_an_unknown_status() -> None:
    clock, life = FakeClock(), lifecycle("OnFailure")
    life.resume(Found(revision=REV, pid=321, alive=True))
    life.adopted(started_at=clock.now - 3600)  # spawned an hour ago by the earlier agent
    assert life.exited(ExitStatus(), clock.advance(1)) == RestartAfter(1)
    assert (life.state, life.exit_code) == ("Failed", None)
    assert life.message is not None and "unknown" in life.message


def test_a_live_process_of_another_revision_is_replaced() -> None:
    life = lifecycle()
    assert life.resume(Found(revision="rev-0", restarts=7, pid=321, alive=True)) == Replace(321)
    assert life.restarts == 0, "a new revision counts from zero"


def test_a_vanished_process_starts_again_whatever_the_policy_and_counts_as_a_restart() -> None:
    life = lifecycle("Never")
    assert life.resume(Found(revision=REV, restarts=2, pid=321, alive=False)) == Start(vanished=321)
    assert life.restarts == 3
    other = lifecycle("Never")
    assert other.resume(Found(revision="rev-0", restarts=2, pid=321, alive=False)) == Start()
    assert other.restarts == 0


def test_a_finished_run_stays_finished() -> None:
    life = lifecycle("Never")
    found = Found(revision=REV, finished=True, exit_code=0, message="exited with status 0")
    assert life.resume(found) == Finished()
    assert (life.state, life.exit_code, life.message, life.finished) == ("Exited", 0, "exited with status 0", True)
    assert life.readiness_known
    failed = lifecycle("Never")
    assert failed.resume(Found(revision=REV, finished=True, exit_code=2, message="exited with status 2")) == Finished()
    assert failed.state == "Failed"


def test_a_record_waiting_for_its_back_off_starts_without_counting_a_restart() -> None:
    life = lifecycle()
    assert life.resume(Found(revision=REV, restarts=2, message="exited with status 3; restarting in 4 s")) == Start()
    assert life.restarts == 2


# -- probes and readiness -----------------------------------------------------------------------------


def test_readiness_starts_unready_and_needs_threshold_failures() -> None:
    readiness = Readiness(failure_threshold=2)
    assert not readiness.ready
    assert not readiness.observe(False)  # still unready: nothing changed
    assert readiness.observe(True) and readiness.ready
    assert not readiness.observe(False) and readiness.ready  # one failure is tolerated
    assert readiness.observe(False) and not readiness.ready
    assert readiness.observe(True) and readiness.ready
    assert readiness.failures == 0


def test_probes_drive_readiness_on_their_schedule_and_count_every_failure() -> None:
    clock, life = FakeClock(), lifecycle(probe=PROBE)
    life.started(pid=100, started_at=clock())
    assert (life.state, life.ready, life.readiness_known) == ("Running", False, False)
    assert life.first_probe_in() == 5
    began = clock.advance(5)
    assert life.probed(True, "tcp: connected", 100, began=began, now=clock.advance(0.25)) == 9.75
    assert (life.ready, life.message, life.readiness_known) == (True, "running as pid 100", True)
    began = clock.advance(9.75)
    life.probed(False, "tcp: connection refused", 100, began=began, now=clock.advance(1))
    assert life.ready and life.probe_failures == 1, "below the threshold: still ready, but counted"
    began = clock.advance(9)
    assert life.probed(False, "tcp: no connection within 1 s", 100, began=began, now=clock.advance(12)) == 0
    assert (life.ready, life.message) == (False, "not ready: tcp: no connection within 1 s")
    assert life.probe_failures == 2 and life.status().probe_failures == 2


def test_a_probe_count_that_moved_alone_does_not_notify() -> None:
    clock, life = FakeClock(), lifecycle(probe=PROBE)
    assert not life.changed()
    life.started(pid=100, started_at=clock())
    assert life.changed() and not life.changed()
    life.probed(False, "tcp: refused", 100, began=clock(), now=clock())
    assert life.changed(), "the message says why it is not ready"
    life.probed(False, "tcp: refused", 100, began=clock(), now=clock())
    assert life.probe_failures == 2
    assert not life.changed(), "only probeFailures moved: it rides along with the next report"
    life.probed(True, "tcp: connected", 100, began=clock(), now=clock())
    assert life.changed()


def test_probed_without_a_probe_is_a_bug() -> None:
    life = lifecycle()
    life.started(pid=100, started_at=0.0)
    with pytest.raises(RuntimeError):
        life.probed(True, "ok", 100, began=0.0, now=0.0)


def test_a_new_run_starts_unready_with_fresh_readiness() -> None:
    clock, life = FakeClock(), lifecycle(probe=PROBE)
    life.started(pid=100, started_at=clock())
    life.probed(True, "tcp: connected", 100, began=clock(), now=clock())
    assert life.exited(CRASH, clock.advance(1)) == RestartAfter(1)
    life.restarting()
    life.started(pid=101, started_at=clock())
    assert (life.ready, life.message) == (False, "running as pid 101")
    assert life.first_probe_in() == 5, "a started process gets its initial delay"


# -- ways out ------------------------------------------------------------------------------------------


def test_stop_shows_stopping_then_how_it_ended() -> None:
    clock, life = FakeClock(), lifecycle()
    life.started(pid=100, started_at=clock())
    life.stopping()
    assert (life.state, life.message) == ("Stopping", "stopping")
    life.stopped(ExitStatus(signal=15))
    assert (life.state, life.exit_code, life.message) == ("Exited", 143, "stopped: killed by signal SIGTERM")
    life.stopped(None)
    assert (life.exit_code, life.message) == (None, "stopped")


def test_a_shell_bug_shows_as_failed() -> None:
    life = lifecycle(probe=PROBE)
    life.broken("internal supervisor error; see the agent's log")
    assert (life.state, life.readiness_known) == ("Failed", True)
