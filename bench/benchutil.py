"""Processes for benchmarks: start a server, wait until it answers, stop it however the run ends.

How: a :class:`Service` is a child process in its own session (so that
stopping it reaches its workers too: nginx, the cache master), logging to a
file whose tail goes into every error message. :func:`running` stops it
(SIGTERM, then SIGKILL to the whole group) when its ``with`` block ends, by
exception or signal included, so a benchmark never leaves servers behind.
:func:`wait_until` polls a readiness check and fails early, with the log,
when the process exits instead. A server that was started on port 0 says
its port on its first stdout line: :func:`announced_port` reads it.

:func:`run_main` makes SIGTERM and SIGINT (even in a background job, where
SIGINT is ignored by default) unwind the run, so that those ``with`` blocks
do stop their processes; :func:`scratch_dir` holds the run's configs and
logs and removes them unless asked to keep them.

Benchmarks import this module as ``bench.benchutil`` after putting the
repository root on ``sys.path`` (as they do for ``tests``).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class StartError(RuntimeError):
    """A server of the benchmark did not start; the message says why."""


@dataclass
class Service:
    """A child process in its own session, logging to a file, stopped as a group."""

    name: str
    args: list[str]
    log_path: Path
    stdout_pipe: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            stdout = subprocess.PIPE if self.stdout_pipe else log
            self.proc = subprocess.Popen(self.args, stdout=stdout, stderr=log, start_new_session=True)
        return self

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service.start()
    finally:
        service.stop()


def wait_until(service: Service, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready()`` until true; StartError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.exited():
            code = service.proc.returncode if service.proc else None
            raise StartError(f"{service.name} exited with {code}:\n{service.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    raise StartError(f"{service.name} not ready after {timeout:.0f} s:\n{service.log_tail()}")


def announced_port(service: Service, prefix: str, timeout: float) -> int:
    """The port in the first stdout line of ``service`` (``<prefix>HOST:PORT``); StartError if none comes."""
    assert service.proc is not None and service.proc.stdout is not None
    ready, _, _ = select.select([service.proc.stdout], [], [], timeout)
    line = service.proc.stdout.readline().decode().strip() if ready else ""
    if not line.startswith(prefix):
        raise StartError(f"{service.name} did not start:\n{service.log_tail()}")
    return int(line.rpartition(":")[2])


def require(tools: Sequence[str], packages: str) -> None:
    """Exit with how to install them unless every one of ``tools`` is an executable."""
    missing = [tool for tool in tools if not os.access(tool, os.X_OK)]
    if missing:
        sys.exit(f"missing {' and '.join(missing)}: run scripts/install.sh (Debian packages {packages})")


def run_main(run: Callable[[], None]) -> None:
    """Run the benchmark so that SIGTERM and SIGINT unwind it, stopping every process it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background, where it is ignored
    try:
        run()
    except KeyboardInterrupt:
        sys.exit("interrupted; every process started was stopped")


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool, contents: str) -> Iterator[Path]:
    """A temporary directory for the run, removed at the end unless ``keep`` (then its path is printed)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"# kept {tmp} ({contents})", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
