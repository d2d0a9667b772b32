"""The supervisor's persistent state: what each workload should run, and what runs.

How: two JSON files per workload (paths in :class:`~edgefleet.edge.workdirs.Layout`):

- ``template.json`` (:class:`TemplateRecord`): the desired template and its
  revision. Written by ``apply`` when the desired template changes, durably
  (fsync), because it is what brings workloads back after a power cut with
  no cloud. It can be large (template files up to 64 MiB), so it is written
  rarely and off the event loop. A missing ``template.json`` next to a
  ``state.json`` means "being removed": the supervisor deletes it first when
  a workload leaves the desired set, so a crash mid-removal does not bring
  the workload back.
- ``state.json`` (:class:`StateRecord`): small and written at every
  transition (spawn, exit, restart). Atomic but not fsynced: after an agent
  crash the page cache still holds it, and after a power loss its pids are
  void anyway (the boot id tells).

Corrupt or unreadable files are logged and treated as absent; a bad file
never stops the supervisor from starting the other workloads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgefleet.api.meta import check_dns1123_subdomain
from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.edge.processes import ProcessIdentity
from edgefleet.edge.workdirs import SEARCHABLE, Layout, agent_dir, write_atomic

log = logging.getLogger(__name__)


class _Record(BaseModel):
    # Unknown fields are ignored so that an older agent can read a newer one's files.
    model_config = ConfigDict(extra="ignore", frozen=True)


_R = TypeVar("_R", bound=_Record)


class ProcessRecord(_Record):
    """A spawned process, identified beyond its pid (see :mod:`edgefleet.edge.processes`)."""

    pid: int
    start_time: int
    boot_id: str
    started_at: float
    """Wall-clock time of the spawn, for the back-off reset after a long run."""

    @property
    def identity(self) -> ProcessIdentity:
        return ProcessIdentity(self.pid, self.start_time, self.boot_id)


class StateRecord(_Record):
    """What the supervisor knows about the running instance of one revision."""

    revision: str
    restarts: int = 0
    process: ProcessRecord | None = None
    finished: bool = False
    """Exited for good under the restart policy; not restarted at the next start."""
    exit_code: int | None = None
    message: str | None = None
    scaled_down: bool = False
    """Stopped on purpose while its Site is Inactive (see :mod:`edgefleet.edge.elastic`): not started at the
    next start until the agent asks for it again."""


class TemplateRecord(_Record):
    revision: str
    template: WorkloadTemplate


@dataclass(frozen=True, slots=True)
class Stored:
    """One workload as found on disk; ``template`` is None if missing or corrupt."""

    name: str
    template: WorkloadTemplate | None
    state: StateRecord | None


def write_template(layout: Layout, name: str, template: WorkloadTemplate, revision: str) -> None:
    """Durably record the desired template (blocking; run in an executor)."""
    agent_dir(layout.workload_dir(name), SEARCHABLE)
    record = TemplateRecord(revision=revision, template=template)
    data = record.model_dump_json(by_alias=True).encode()
    write_atomic(layout.template_file(name), data, durable=True)


def write_state(layout: Layout, name: str, record: StateRecord) -> None:
    agent_dir(layout.workload_dir(name), SEARCHABLE)
    write_atomic(layout.state_file(name), record.model_dump_json().encode())


def load_all(layout: Layout) -> list[Stored]:
    """Every workload directory under the root (blocking; run in an executor)."""
    try:
        entries = sorted(layout.workloads.iterdir())
    except FileNotFoundError:
        return []
    return [_load(layout, entry.name) for entry in entries if entry.is_dir() and _valid_name(entry.name)]


def _valid_name(name: str) -> bool:
    try:
        check_dns1123_subdomain(name)
    except ValueError:
        log.warning("ignoring %s in the workloads directory: not a workload name", name)
        return False
    return True


def _load(layout: Layout, name: str) -> Stored:
    template = _read(layout.template_file(name), TemplateRecord)
    if template is not None and template_revision(template.template) != template.revision:
        # Not corruption (writes are atomic and the content validated): an agent whose template
        # schema gained a defaulted field hashes the same content differently. The content wins.
        log.info("%s: revision is now %s", layout.template_file(name), template_revision(template.template))
    state = _read(layout.state_file(name), StateRecord)
    return Stored(name, template.template if template else None, state)


def _read(path: Path, model: type[_R]) -> _R | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.error("cannot read %s: %s; ignoring it", path, error)
        return None
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        log.error("%s is corrupt (%s); ignoring it", path, error.errors()[0]["msg"] if error.errors() else error)
        return None
