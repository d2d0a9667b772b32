"""Where a workload lives on disk, and how its directory and environment are prepared.

Layout under the supervisor's root (:class:`Layout`)::

    workloads/<name>/template.json   desired template (+ revision); durable, written by apply
    workloads/<name>/state.json      revision, pid + start time + boot id, restarts, last exit
    workloads/<name>/<revision>/     working directory: the template's files, rendered
    logs/<name>.log, <name>.log.1..  stdout + stderr, rotated by size

Why one directory per revision: a new revision's files never overwrite the
files a running old revision reads, and the directory is the process's
working directory, so relative commands (``./run.sh``) find their files.
Directories of other revisions are pruned once a revision starts; data
meant to outlive an upgrade belongs outside the working directory.

Files are rendered at every start (a process that edited its config gets the
declared content back on restart), each atomically (temporary file, chmod to
the template's mode regardless of umask, rename), and never through a
symlink the workload may have planted to escape its directory.

The environment is built, not inherited: only ``PATH`` and locale variables
come from the agent (so commands resolve as in the agent's shell, and agent
credentials never leak into workloads), then the template's ``env``, then
the ``EDGEFLEET_*`` identity variables, which win.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.api.workloads import WorkloadFile, WorkloadTemplate

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ")


class RenderError(Exception):
    """A template file could not be written; the message names the file."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of everything the supervisor keeps under ``root``."""

    root: Path

    @property
    def workloads(self) -> Path:
        return self.root / "workloads"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def workload_dir(self, name: str) -> Path:
        return self.workloads / name

    def template_file(self, name: str) -> Path:
        return self.workload_dir(name) / "template.json"

    def state_file(self, name: str) -> Path:
        return self.workload_dir(name) / "state.json"

    def workdir(self, name: str, revision: str) -> Path:
        return self.workload_dir(name) / revision

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix.

    ``durable`` adds fsyncs of the file and its directory, for content that
    must survive a power loss (the desired template), not only a crash.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb", closefd=False) as writer:
            writer.write(data)
        os.fchmod(fd, mode)  # exact bits, whatever the umask
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    os.close(fd)
    os.replace(partial, path)
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def render(workdir: Path, files: Iterable[WorkloadFile]) -> None:
    """Create ``workdir`` and write the template's files into it (blocking; run in an executor)."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = workdir.resolve()
    for item in files:
        target = workdir / item.path
        try:
            # Checked before mkdir too: mkdir itself would follow a planted symlink out of the directory.
            _check_inside(target.parent, base, item.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            _check_inside(target.parent, base, item.path)
            write_atomic(target, item.content.encode("utf-8", "surrogatepass"), mode=item.mode)
        except OSError as error:
            raise RenderError(f"file {item.path!r}: {error.strerror or error}") from error


def _check_inside(directory: Path, base: Path, name: str) -> None:
    if not directory.resolve().is_relative_to(base):
        raise RenderError(f"file {name!r}: its directory leads outside the working directory")


def prune_revisions(workload_dir: Path, keep: str) -> None:
    """Remove working directories of revisions other than ``keep``."""
    with contextlib.suppress(FileNotFoundError):
        for entry in workload_dir.iterdir():
            if entry.name != keep and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


def environment(
    template: WorkloadTemplate, *, node: str, workload: str, revision: str, workdir: Path
) -> dict[str, str]:
    """The process environment: a few agent variables, the template's, then EDGEFLEET_*."""
    env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update((var.name, var.value) for var in template.env)
    env.update(
        EDGEFLEET_NODE=node,
        EDGEFLEET_WORKLOAD=workload,
        EDGEFLEET_REVISION=revision,
        EDGEFLEET_WORKDIR=str(workdir),
    )
    return env


def argv(template: WorkloadTemplate) -> list[str]:
    return [*template.command, *template.args]
