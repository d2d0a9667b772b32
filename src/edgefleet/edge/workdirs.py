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
credentials never leak into workloads), then the template's ``env`` (values
referenced from Secrets resolved from the node's view at every start), then
the ``EDGEFLEET_*`` identity variables, which win.

Ownership: a workload that runs as another user than the agent (see
:mod:`edgefleet.edge.users`) owns its working directory (mode 0700) and the
files rendered into it; the root (the node's data directory),
``workloads/`` and ``workloads/<name>/`` stay the agent's with mode 0711
(searchable, so that a program using the absolute path of its working
directory finds it; not listable), ``template.json`` and ``state.json``
are 0600, and ``logs/`` is 0700 (the process writes its log through a
descriptor it inherits, not by path). So a workload can neither read nor
replace the agent's files, nor another workload's directory unless it runs
as the same user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.api.workloads import WorkloadFile, WorkloadTemplate
from edgefleet.edge.users import Account

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


SEARCHABLE = 0o711
"""Mode of the agent's directories a workload's working directory lies under: searchable, not listable."""
PRIVATE = 0o700


def agent_dir(path: Path, mode: int) -> None:
    """Create ``path`` (and parents) if missing and give it exactly ``mode``: a directory of the agent's."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode, follow_symlinks=False)


def unsearchable_ancestor(path: Path) -> Path | None:
    """The first directory above ``path`` that other users may not search (no o+x), or None."""
    for ancestor in reversed(path.absolute().parents):
        try:
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                return ancestor
        except OSError:
            return ancestor
    return None


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


def render(workdir: Path, files: Iterable[WorkloadFile], owner: Account | None = None) -> None:
    """Create ``workdir`` and write the template's files into it (blocking; run in an executor).

    ``owner`` (a workload running as another user than the agent) gets the
    working directory (mode 0700), the directories created in it and the
    files written. Every path is walked from the working directory with
    ``O_NOFOLLOW`` descriptors (``openat``), so a symlink the workload
    planted, even one swapped in while this runs, cannot send a write of
    the agent (root) outside its directory.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(workdir, owner.uid, owner.gid, follow_symlinks=False)
        os.chmod(workdir, 0o700, follow_symlinks=False)
    root = os.open(workdir, _DIR_FLAGS)
    try:
        for item in files:
            try:
                _render_file(root, item, owner)
            except OSError as error:
                raise RenderError(f"file {item.path!r}: {error.strerror or error}") from error
    finally:
        os.close(root)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _render_file(root: int, item: WorkloadFile, owner: Account | None) -> None:
    *parents, name = item.path.split("/")
    directory = os.dup(root)
    try:
        for part in parents:
            child = _enter(directory, part, item.path, owner)
            os.close(directory)
            directory = child
        _write_at(directory, name, item.content.encode("utf-8", "surrogatepass"), item.mode, owner)
    finally:
        os.close(directory)


def open_subdirectory(directory: int, part: str, owner: Account | None) -> int:
    """The descriptor of subdirectory ``part`` of ``directory``, created (0755, given to ``owner``) if missing.

    Never through a symlink (``O_NOFOLLOW``: ELOOP); a file in the way is NotADirectoryError or
    FileExistsError. The caller closes the descriptor.
    """
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=directory)
    except FileNotFoundError:
        os.mkdir(part, 0o755, dir_fd=directory)
        child = os.open(part, _DIR_FLAGS, dir_fd=directory)
        if owner is not None:
            os.fchown(child, owner.uid, owner.gid)
        return child


def _enter(directory: int, part: str, path: str, owner: Account | None) -> int:
    """The descriptor of subdirectory ``part`` of ``directory`` (created if missing), never through a symlink."""
    try:
        child = open_subdirectory(directory, part, owner)
    except (NotADirectoryError, FileExistsError) as error:
        raise RenderError(
            f"file {path!r}: its directory leads outside the working directory "
            f"({part!r} is a symlink or not a directory)"
        ) from error
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RenderError(
                f"file {path!r}: its directory leads outside the working directory ({part!r} is a symlink)"
            ) from error
        raise
    return child


def _write_at(directory: int, name: str, data: bytes, mode: int, owner: Account | None) -> None:
    """Replace ``name`` in ``directory`` atomically (temporary file, exact mode, owner, rename)."""
    partial = f".edgefleet-{os.getpid()}-{threading.get_ident()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial, dir_fd=directory)  # O_EXCL below: whatever the workload planted there is not opened
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(partial, flags, 0o600, dir_fd=directory)
    try:
        with os.fdopen(fd, "wb", closefd=False) as writer:
            writer.write(data)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode)  # exact bits, whatever the umask
        os.replace(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=directory)
        raise
    finally:
        os.close(fd)


def prune_revisions(workload_dir: Path, keep: str) -> None:
    """Remove working directories of revisions other than ``keep``."""
    with contextlib.suppress(FileNotFoundError):
        for entry in workload_dir.iterdir():
            if entry.name != keep and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


SecretLookup = Callable[[str, str], "str | None"]
"""(Secret name, key) -> its value from the node's view, or None when the view has no such Secret or key."""


def environment(
    template: WorkloadTemplate,
    *,
    node: str,
    workload: str,
    revision: str,
    workdir: Path,
    secrets: SecretLookup | None = None,
    strict: bool = True,
) -> dict[str, str]:
    """The process environment: a few agent variables, the template's, then EDGEFLEET_*.

    Variables with ``valueFrom.secretRef`` take their value from ``secrets``;
    one that cannot be resolved raises :class:`RenderError` (the start fails
    with that message), or is left out when ``strict`` is False (the
    environment of hooks and probes of a process adopted from an earlier agent).
    """
    env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    for var in template.env:
        if var.value_from is None:
            env[var.name] = var.value
            continue
        ref = var.value_from.secret_ref
        value = secrets(ref.name, ref.key) if secrets is not None else None
        if value is not None:
            env[var.name] = value
        elif strict:
            raise RenderError(
                f"env {var.name}: Secret {ref.name!r} has no key {ref.key!r} on this node (missing, or not synced yet)"
            )
    env.update(
        EDGEFLEET_NODE=node,
        EDGEFLEET_WORKLOAD=workload,
        EDGEFLEET_REVISION=revision,
        EDGEFLEET_WORKDIR=str(workdir),
    )
    return env


def argv(template: WorkloadTemplate) -> list[str]:
    return [*template.command, *template.args]
