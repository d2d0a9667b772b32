"""The workload supervisor with real processes: start, probes, restarts, revisions, hooks, stop,
adoption after an agent restart or crash, a host reboot from disk alone, logs and bad input.

The lifecycle rules themselves (back-off schedule, policies, adoption decisions, probe counting)
are checked exactly with a fake clock in test_lifecycle.py; here each path is proved once with real
processes, waiting on observable events (files, log lines, statuses, FIFOs), never a fixed time.

Workloads are one small Python program (WORKLOAD, shipped as a template file) whose behaviour
is chosen by environment variables (or a one-line sh job where only exits matter: quick_job).
Every test's processes are SIGKILLed by the ``root`` fixture, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.api.workloads import InstanceStatus, WorkloadTemplate, template_revision
from edgefleet.edge import processes
from edgefleet.edge.backoff import Backoff
from edgefleet.edge.logfiles import LogLimits
from edgefleet.edge.supervisor import Supervisor, SupervisorError, UnknownWorkload
from tests.waiting import eventually, wait_until

FAST = Backoff(initial=0.05, maximum=0.4, reset_after=60)

WORKLOAD = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

env = os.environ
if env.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "ON_TERM" in env:
    def on_term(signum, frame):
        done = Path(env["PRESTOP_MARK"]).exists()
        Path(env["ON_TERM"]).write_text("prestop-done" if done else "no-prestop")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
if "RUNS" in env:
    with open(env["RUNS"], "a") as runs:
        runs.write(f"{time.time()} {os.getpid()}\n")
if "STARTED_FIFO" in env:
    with open(env["STARTED_FIFO"], "w") as fifo:  # blocks until a reader opens it
        fifo.write("up")
if "REPORT" in env:
    seen = {k: v for k, v in env.items() if k.startswith(("EDGEFLEET_", "GREETING", "SECRET"))}
    Path(env["REPORT"]).write_text(json.dumps({"cwd": os.getcwd(), "argv": sys.argv, "env": seen}))
print(f"started {os.getpid()}", flush=True)
if "CHILD_PIDFILE" in env:
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    Path(env["CHILD_PIDFILE"]).write_text(str(child.pid))
if "TICK" in env:
    for i in range(100000):
        print(f"tick {i:06d}", flush=True)
        time.sleep(float(env["TICK"]))
if "EXIT_CODE" in env:
    sys.exit(int(env["EXIT_CODE"]))
if "HTTP_PORT" in env:
    import http.server
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            sick = Path(env["SICK_FLAG"]).exists() if "SICK_FLAG" in env else False
            self.send_response(503 if sick else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(env["HTTP_PORT"])), Health).serve_forever()
while True:
    signal.pause()  # until a signal ends it
"""


def template(env: dict[str, str] | None = None, **fields: Any) -> WorkloadTemplate:
    """The WORKLOAD program; ``fields`` are template fields in manifest (camelCase) form."""
    files = [{"path": "main.py", "content": WORKLOAD}, *fields.pop("files", [])]
    doc = {"command": [sys.executable, "main.py"], "files": files, "env": env or {}, **fields}
    return WorkloadTemplate.model_validate(doc)


def quick_job(runs: Path, code: int, **fields: Any) -> WorkloadTemplate:
    """A workload that records its run in ``runs`` and exits with ``code`` at once (sh starts far faster
    than Python: the restart tests wait for several runs)."""
    script = f'echo "$(date +%s.%N) $$" >> {shlex.quote(str(runs))}; exit {code}'
    return WorkloadTemplate.model_validate({"command": ["sh", "-c", script], **fields})


def alive(pid: int) -> bool:
    stat = processes.read_stat(pid)
    return stat is not None and stat[0] != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def runs(path: Path) -> list[tuple[float, int]]:
    if not path.exists():
        return []
    return [(float(t), int(p)) for t, p in (line.split() for line in path.read_text().splitlines())]


def kill_recorded(root: Path, strays: list[int]) -> None:
    """SIGKILL every process group a state file names, and the strays; reap our own children."""
    pids = list(strays)
    for state in root.glob("workloads/*/state.json"):
        try:
            process = json.loads(state.read_text()).get("process")
        except (OSError, ValueError):
            continue
        if process:
            pids.append(process["pid"])
    for pid in pids:
        processes.signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(AssertionError):  # best effort: one stuck in the kernel is not this test's failure
        wait_until(lambda: not any(processes.is_child(p) and processes.reap(p) is None for p in pids), timeout=5)


@pytest.fixture
def strays() -> list[int]:
    """Process groups a test created outside the supervisor's records."""
    return []


@pytest.fixture
def root(tmp_path: Path, strays: list[int]) -> Iterator[Path]:
    root = tmp_path / "edge"
    yield root
    kill_recorded(root, strays)


class Changes:
    """An on_change callback that keeps what each call saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, InstanceStatus]] = []
        self.supervisor: Supervisor | None = None

    def __call__(self) -> None:
        assert self.supervisor is not None
        self.seen.append(self.supervisor.statuses())

    def of(self, name: str) -> list[InstanceStatus]:
        return [statuses[name] for statuses in self.seen if name in statuses]


Make = Callable[..., Supervisor]


@pytest.fixture
async def make(root: Path) -> AsyncIterator[Make]:
    """Build supervisors on ``root`` (fast back-off); each is closed at the end of the test."""
    made: list[Supervisor] = []

    def build(changes: Changes | None = None, **options: Any) -> Supervisor:
        options.setdefault("backoff", FAST)
        supervisor = Supervisor(root, node_name="node-1", on_change=changes, **options)
        if changes is not None:
            changes.supervisor = supervisor
        made.append(supervisor)
        return supervisor

    yield build
    for supervisor in made:
        await supervisor.close()


async def running(supervisor: Supervisor, *names: str) -> dict[str, int]:
    """Wait until the workloads run (and are ready); their pids."""

    def up() -> bool:
        statuses = supervisor.statuses()
        return all(n in statuses and statuses[n].state == "Running" and statuses[n].ready for n in names)

    await eventually(up)
    return {name: supervisor.pids()[name] for name in names}


# -- start, environment, files ---------------------------------------------------------------------


async def test_workload_runs_in_its_own_session_with_files_env_and_args(
    make: Make, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "agent-only")
    report = tmp_path / "report.json"
    web = template(
        {"REPORT": str(report), "GREETING": "hello"},
        args=["--flag", "two words"],
        files=[{"path": "conf/app.conf", "content": "listen 80\n", "mode": "0600"}],
    )
    supervisor = make()
    await supervisor.apply({"web": web})
    pid = (await running(supervisor, "web"))["web"]
    await eventually(report.exists)
    seen = json.loads(report.read_text())
    revision = template_revision(web)
    workdir = root / "workloads" / "web" / revision
    assert seen["cwd"] == str(workdir)
    assert seen["argv"] == ["main.py", "--flag", "two words"]
    assert seen["env"] == {
        "GREETING": "hello", "EDGEFLEET_NODE": "node-1", "EDGEFLEET_WORKLOAD": "web",
        "EDGEFLEET_REVISION": revision, "EDGEFLEET_WORKDIR": str(workdir),
    }  # fmt: skip
    assert (workdir / "conf/app.conf").read_text() == "listen 80\n"
    assert (workdir / "conf/app.conf").stat().st_mode & 0o777 == 0o600
    assert os.getsid(pid) == pid  # session leader: an agent crash does not reach it
    status = supervisor.statuses()["web"]
    assert (status.revision, status.restarts, status.message) == (revision, 0, f"running as pid {pid}")
    await eventually(lambda: "started" in (root / "logs" / "web.log").read_text())
    assert f"started {pid}" in await supervisor.read_logs("web")


async def test_http_probe_drives_readiness(make: Make, tmp_path: Path) -> None:
    port, sick = free_port(), tmp_path / "sick"
    probe = {"http": {"port": port, "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 1}
    web = template({"HTTP_PORT": str(port), "SICK_FLAG": str(sick)}, healthProbe=probe)
    changes = Changes()
    supervisor = make(changes)
    await supervisor.apply({"web": web})
    await running(supervisor, "web")
    sick.touch()
    await eventually(lambda: not supervisor.statuses()["web"].ready)
    status = supervisor.statuses()["web"]
    assert status.message == "not ready: http: status 503"
    assert (status.probe_failures or 0) >= 1, "failed probes are counted"
    states = [(s.state, s.ready) for s in changes.of("web")]
    first_ready = states.index(("Running", True))
    assert ("Running", False) in states[:first_ready]  # unready until the first passing probe
    assert states[-1] == ("Running", False)


# -- restarts ------------------------------------------------------------------------------------


async def test_crash_restarts_with_exponential_backoff(make: Make, tmp_path: Path) -> None:
    # The exact schedule is test_lifecycle.py's; here: real exits lead to real, spaced restarts.
    log = tmp_path / "runs"
    supervisor = make()
    await supervisor.apply({"crash": quick_job(log, 3)})
    await eventually(lambda: len(runs(log)) >= 3)
    times = [t for t, _ in runs(log)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, delay in zip(gaps, [0.05, 0.1], strict=False):
        assert gap >= delay  # each wait at least doubles
    await eventually(lambda: (supervisor.statuses()["crash"].restarts or 0) >= 2)
    assert supervisor.statuses()["crash"].exit_code == 3


async def test_restart_policies(make: Make, tmp_path: Path) -> None:
    supervisor = make()
    await supervisor.apply(
        {"never": quick_job(tmp_path / "never", 3, restartPolicy="Never"),
         "clean": quick_job(tmp_path / "clean", 0, restartPolicy="OnFailure"),
         "failing": quick_job(tmp_path / "failing", 3, restartPolicy="OnFailure")}
    )  # fmt: skip
    await eventually(lambda: len(runs(tmp_path / "failing")) >= 2)
    await eventually(lambda: supervisor.statuses()["never"].state == "Failed")
    await eventually(lambda: supervisor.statuses()["clean"].state == "Exited")
    never, clean = supervisor.statuses()["never"], supervisor.statuses()["clean"]
    # The message is the decision: a restart would say "; restarting in ..." (and nothing restarts a finished run).
    assert (never.exit_code, never.message, never.restarts) == (3, "exited with status 3", 0)
    assert (clean.exit_code, clean.message) == (0, "exited with status 0")
    assert len(runs(tmp_path / "never")) == len(runs(tmp_path / "clean")) == 1
    # "failing" alternates between its run and its backoff: wait for the backoff's message.
    await eventually(lambda: "restarting in" in (supervisor.statuses()["failing"].message or ""))


async def test_missing_command_fails_clearly_and_keeps_retrying(make: Make) -> None:
    supervisor = make()
    await supervisor.apply({"ghost": WorkloadTemplate(command=["/nonexistent/bin/server", "--port", "80"])})
    # Between two attempts it is Failed; during one, briefly Starting: wait for a moment between two.
    await eventually(
        lambda: (supervisor.statuses()["ghost"].restarts or 0) >= 2 and supervisor.statuses()["ghost"].state == "Failed"
    )
    status = supervisor.statuses()["ghost"]
    assert status.state == "Failed" and status.exit_code is None
    assert status.message is not None
    assert status.message.startswith("command not found: '/nonexistent/bin/server'; restarting in")
    await supervisor.apply({"ghost": template()})  # fixed by the next revision
    await running(supervisor, "ghost")


# -- converging on the desired set ----------------------------------------------------------------


async def test_revision_change_restarts_only_that_workload(make: Make, root: Path) -> None:
    supervisor = make()
    await supervisor.apply({"a": template(), "b": template({"X": "1"})})
    before = await running(supervisor, "a", "b")
    old_workdir = root / "workloads" / "b" / template_revision(template({"X": "1"}))
    await supervisor.apply({"a": template(), "b": template({"X": "2"})})
    after = await running(supervisor, "a", "b")
    assert after["a"] == before["a"]
    assert after["b"] != before["b"]
    assert not alive(before["b"])
    assert supervisor.statuses()["b"].revision == template_revision(template({"X": "2"}))
    assert supervisor.statuses()["b"].restarts == 0
    assert not old_workdir.exists()  # other revisions' directories are pruned


async def test_unchanged_apply_touches_nothing(make: Make) -> None:
    changes = Changes()
    supervisor = make(changes)
    await supervisor.apply({"a": template(), "b": template({"X": "1"})})
    before = await running(supervisor, "a", "b")
    calls = len(changes.seen)
    # Equal content in new objects (as after a store restore) is the same revision.
    reparsed = {name: WorkloadTemplate.model_validate(t.model_dump(by_alias=True)) for name, t in
                {"a": template(), "b": template({"X": "1"})}.items()}  # fmt: skip
    await supervisor.apply(reparsed)  # a restart would have stopped the old process before apply returned
    assert supervisor.pids() == before
    assert len(changes.seen) == calls


async def test_removal_stops_the_whole_process_group(make: Make, root: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    supervisor = make()
    await supervisor.apply({"parent": template({"CHILD_PIDFILE": str(pidfile)}), "other": template()})
    pids = await running(supervisor, "parent", "other")
    await eventually(pidfile.exists)
    child = int(pidfile.read_text())
    assert alive(child)
    await supervisor.apply({"other": template()})
    assert not alive(pids["parent"])
    await eventually(lambda: not alive(child))
    assert list(supervisor.statuses()) == ["other"]
    assert not (root / "workloads" / "parent").exists()
    assert not (root / "logs" / "parent.log").exists()
    with pytest.raises(UnknownWorkload):
        await supervisor.read_logs("parent")


# -- hooks and graceful stop ---------------------------------------------------------------------


def python_hook(code: str, time_limit: int = 5) -> dict[str, Any]:
    return {"exec": {"command": [sys.executable, "-c", code]}, "timeoutSeconds": time_limit}


async def test_hooks_run_around_the_process(make: Make, root: Path, tmp_path: Path) -> None:
    post, pre, on_term = tmp_path / "post", tmp_path / "pre", tmp_path / "on-term"
    write_post = (
        f"import os, pathlib; pathlib.Path({str(post)!r}).write_text(os.environ['EDGEFLEET_WORKLOAD']); "
        "print('postStart says hi')"
    )
    web = template(
        {"PRESTOP_MARK": str(pre), "ON_TERM": str(on_term)},
        postStart=python_hook(write_post),
        preStop=python_hook(f"import pathlib; pathlib.Path({str(pre)!r}).touch()"),
    )
    supervisor = make()
    await supervisor.apply({"web": web})
    await running(supervisor, "web")
    assert post.read_text() == "web"  # done before the workload counts as running
    assert "postStart says hi" in await supervisor.read_logs("web")
    await eventually(lambda: "started" in (root / "logs" / "web.log").read_text())  # its SIGTERM handler is set
    await supervisor.apply({})
    assert on_term.read_text() == "prestop-done"  # preStop ran before SIGTERM


async def test_failed_post_start_kills_the_process_and_counts_as_a_failed_start(make: Make, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    changes = Changes()
    supervisor = make(changes)
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    # The hook fails once the workload said it runs (a FIFO: both ends wait for each other, no polling).
    failing_hook = python_hook(f"open({str(fifo)!r}).read(); raise SystemExit(4)")
    await supervisor.apply({"web": template({"RUNS": str(log), "STARTED_FIFO": str(fifo)}, postStart=failing_hook)})
    await eventually(lambda: len(runs(log)) >= 2)
    first_pid = runs(log)[0][1]
    await eventually(lambda: not alive(first_pid))
    assert (supervisor.statuses()["web"].restarts or 0) >= 1
    failures = [s for s in changes.of("web") if s.state == "Failed"]
    assert failures and (failures[0].message or "").startswith("postStart hook failed: exited with status 4")


async def test_sigterm_ignoring_workload_is_killed_after_the_grace_period(make: Make, root: Path) -> None:
    supervisor = make()
    await supervisor.apply({"stubborn": template({"IGNORE_TERM": "1"}, terminationGracePeriodSeconds=1)})
    pid = (await running(supervisor, "stubborn"))["stubborn"]
    await eventually(lambda: "started" in (root / "logs" / "stubborn.log").read_text())  # SIGTERM now ignored
    began = time.monotonic()
    await supervisor.stop_all()
    assert 1.0 <= time.monotonic() - began < 4
    assert not alive(pid)


# -- agent restarts, agent crashes, host reboots -----------------------------------------------------


async def test_adoption_after_close_then_supervision_goes_on(make: Make) -> None:
    port = free_port()
    web = template({"HTTP_PORT": str(port)}, healthProbe={"http": {"port": port}, "periodSeconds": 1})
    first = make()
    await first.apply({"web": web, "worker": template()})
    await running(first, "worker")
    await eventually(lambda: listening(port))  # serving: no need to wait for its next probe (1 s period)
    before = first.pids()
    await first.close()
    assert all(alive(pid) for pid in before.values())

    changes = Changes()
    second = make(changes)
    await second.start()
    assert second.pids() == before
    statuses = second.statuses()
    assert statuses["web"].ready is True  # start() waited for the first probe of adopted workloads
    assert {s.state for s in statuses.values()} == {"Running"}
    assert {s.restarts for s in statuses.values()} == {0}
    await second.apply({"web": web, "worker": template()})
    assert second.pids() == before

    os.kill(before["worker"], signal.SIGKILL)
    await eventually(lambda: second.pids().get("worker") not in (None, before["worker"]))
    assert second.statuses()["worker"].restarts == 1
    assert 137 in [s.exit_code for s in changes.of("worker")]  # the same Python process: status known


AGENT = """
import asyncio, json, sys
from pathlib import Path
from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.edge.supervisor import Supervisor

async def main():
    desired = {name: WorkloadTemplate.model_validate(doc) for name, doc in json.loads(sys.argv[2]).items()}
    running = asyncio.Event()

    def changed():
        statuses = supervisor.statuses()
        if set(statuses) == set(desired) and all(s.state == "Running" for s in statuses.values()):
            running.set()

    supervisor = Supervisor(Path(sys.argv[1]), node_name="node-1", on_change=changed)
    await supervisor.apply(desired)
    await running.wait()
    print(json.dumps(supervisor.pids()), flush=True)
    await asyncio.Event().wait()  # until the test kills this "agent"

asyncio.run(main())
"""


async def test_adoption_after_the_agent_process_is_killed(make: Make, root: Path, strays: list[int]) -> None:
    desired = {"a": template(), "b": template({"X": "1"})}
    documents = json.dumps({name: t.model_dump(mode="json", by_alias=True) for name, t in desired.items()})
    command = [sys.executable, "-c", AGENT, str(root), documents]
    agent = await asyncio.to_thread(subprocess.Popen, command, stdout=subprocess.PIPE, start_new_session=True)
    strays.append(agent.pid)
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, agent.stdout.readline), 20)
        before = json.loads(line)
    finally:
        agent.kill()  # SIGKILL: no chance to clean up
        agent.wait()
        assert agent.stdout is not None
        agent.stdout.close()
    assert all(alive(pid) for pid in before.values())

    changes = Changes()
    supervisor = make(changes)
    await supervisor.start()  # no apply: the disk says what runs
    assert supervisor.pids() == before
    assert not processes.is_child(before["a"])  # adopted for real: its parent is gone
    os.kill(before["a"], signal.SIGKILL)
    await eventually(lambda: supervisor.pids().get("a") not in (None, before["a"]))
    exits = [s for s in changes.of("a") if s.state == "Failed"]
    assert exits and exits[0].exit_code is None and "unknown" in (exits[0].message or "")
    assert supervisor.statuses()["a"].restarts == 1
    assert supervisor.pids()["b"] == before["b"]


async def test_host_reboot_brings_everything_back_from_disk_alone(make: Make) -> None:
    first = make()
    await first.apply({"a": template(), "b": template({"X": "1"})})
    before = await running(first, "a", "b")
    await first.close()
    for pid in before.values():  # the "reboot": every workload dies with the supervisor gone
        os.killpg(pid, signal.SIGKILL)
    await eventually(lambda: not any(alive(pid) for pid in before.values()))

    second = make()
    await second.start()
    after = await running(second, "a", "b")
    assert not set(after.values()) & set(before.values())
    assert {s.restarts for s in second.statuses().values()} == {1}


async def test_a_recycled_pid_is_not_adopted(make: Make, root: Path, strays: list[int]) -> None:
    first = make()
    await first.apply({"a": template()})
    pid = (await running(first, "a"))["a"]
    await first.close()
    strays.append(pid)
    # Pretend the recorded process died and its pid went to a stranger: same pid, another start time.
    state_file = root / "workloads" / "a" / "state.json"
    state = json.loads(state_file.read_text())
    state["process"]["start_time"] += 1
    state_file.write_text(json.dumps(state))

    second = make()
    await second.start()
    new_pid = (await running(second, "a"))["a"]
    assert new_pid != pid
    assert alive(pid)  # the "stranger" was neither adopted nor signalled


async def test_finished_workload_stays_finished_after_agent_restart(make: Make, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    first = make()
    await first.apply({"job": quick_job(log, 0, restartPolicy="Never")})
    await eventually(lambda: first.statuses()["job"].state == "Exited")
    await first.close()
    second = make()
    await second.start()
    # Shown as Exited by start() itself: an instance that is to run again would still be Pending here.
    assert second.statuses()["job"].state == "Exited"
    assert second.pids() == {}
    assert second.statuses()["job"].exit_code == 0
    assert len(runs(log)) == 1


async def test_interrupted_removal_is_finished_at_start(make: Make, root: Path) -> None:
    first = make()
    await first.apply({"gone": template(), "kept": template()})
    pids = await running(first, "gone", "kept")
    await first.close()
    (root / "workloads" / "gone" / "template.json").unlink()  # the crash came right after this step
    second = make()
    await second.start()
    assert list(second.statuses()) == ["kept"]
    assert not alive(pids["gone"])
    assert not (root / "workloads" / "gone").exists()


async def test_corrupt_files_are_logged_and_ignored(make: Make, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = make()
    await first.apply({"good": template()})
    pid = (await running(first, "good"))["good"]
    await first.close()
    os.killpg(pid, signal.SIGKILL)
    (root / "workloads" / "good" / "state.json").write_text("{not json")
    (root / "workloads" / "broken").mkdir()
    (root / "workloads" / "broken" / "template.json").write_text('{"revision": "x", "template": {}}')
    (root / "workloads" / "Not A Name").mkdir()

    second = make()
    with caplog.at_level(logging.WARNING, logger="edgefleet.edge"):
        await second.start()
    await running(second, "good")
    assert list(second.statuses()) == ["good"]
    assert not (root / "workloads" / "broken").exists()
    assert "is corrupt" in caplog.text


# -- logs ----------------------------------------------------------------------------------------


async def test_logs_rotate_by_size_and_tail_reads_across_files(make: Make, root: Path) -> None:
    supervisor = make(log_limits=LogLimits(max_bytes=2000, keep=2), rotate_interval=0.05)
    await supervisor.apply({"chatty": template({"TICK": "0.002"})})
    log = root / "logs" / "chatty.log"
    await eventually(lambda: log.with_name("chatty.log.2").exists())
    text = await supervisor.read_logs("chatty", tail=300)
    ticks = [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick")]
    assert len(ticks) >= 250  # more than the live file holds: the tail spans rotated files
    assert ticks == sorted(ticks)
    assert log.stat().st_size < 20_000
    assert (await supervisor.read_logs("chatty", tail=1)).count("\n") == 1


# -- API edges -----------------------------------------------------------------------------------


async def test_stop_all_bad_names_closed_supervisor_and_failing_callback(
    make: Make, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_callback() -> None:
        raise RuntimeError("agent bug")

    supervisor = Supervisor(root, node_name="node-1", on_change=broken_callback, backoff=FAST)
    with pytest.raises(ValueError):
        await supervisor.apply({"Bad_Name": template()})
    await supervisor.apply({"a": template(), "b": template()})
    pids = await running(supervisor, "a", "b")
    assert "on_change callback failed" in caplog.text
    await supervisor.stop_all()
    assert supervisor.statuses() == {}
    assert not any(alive(pid) for pid in pids.values())
    await supervisor.close()
    with pytest.raises(SupervisorError):
        await supervisor.apply({})


async def test_read_logs_refuses_names_that_are_not_workload_names(make: Make, root: Path) -> None:
    supervisor = make()
    await supervisor.start()
    (root / "secret.log").write_text("do not show\n")
    for name in ["../secret", "a/b", "", "UPPER"]:
        with pytest.raises(UnknownWorkload):
            await supervisor.read_logs(name)


async def test_a_scaled_down_workload_stops_gracefully_stays_down_and_comes_back(
    make: Make, root: Path, tmp_path: Path
) -> None:
    """An elastic workload (edge/elastic.py): held at zero by SIGTERM, shown ScaledDown, down after an agent
    restart, and started again (same revision, no restart counted) once the hold is lifted."""
    term = tmp_path / "term"
    cache = template({"ON_TERM": str(term), "PRESTOP_MARK": str(tmp_path / "no-prestop-hook")})
    first = make()
    await first.apply({"cache": cache})
    pid = (await running(first, "cache"))["cache"]
    await eventually(lambda: "started" in (root / "logs" / "cache.log").read_text())  # its SIGTERM handler is set
    await first.apply({"cache": cache}, scaled_down={"cache": "site lab is Inactive"})
    status = first.statuses()["cache"]
    assert (status.state, status.ready, status.restarts, status.message) == (
        "ScaledDown",
        False,
        0,
        "site lab is Inactive",
    )
    assert term.read_text() == "no-prestop", "stopped by SIGTERM, gracefully"
    assert not alive(pid) and first.pids() == {}
    await first.close()

    second = make()
    await second.start()
    assert second.statuses()["cache"].state == "ScaledDown" and second.pids() == {}
    await second.apply({"cache": cache}, scaled_down={"cache": "site lab is Inactive"})
    assert second.pids() == {}, "still held: nothing starts"
    await second.apply({"cache": cache})
    again = (await running(second, "cache"))["cache"]
    assert again != pid and second.statuses()["cache"].restarts == 0
