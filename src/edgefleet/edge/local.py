"""The edge package's public interface for tools on the same host (``edgefleet up``/``down``).

How: a node's data directory is the agent's, but a local fleet manager needs
three things from it without running an agent: identify and signal the
processes it started itself (:func:`identify_child`, :func:`is_running`,
:func:`signal_group`, with the same pid + start time + boot id identity as
the supervisor, so a recycled pid is never signalled), list the workload
processes the node's supervisor recorded (:func:`recorded_workloads`), and
stop them the graceful way (:func:`stop_workloads`, which runs a supervisor
on the directory for as long as it takes).

Why a facade: callers outside ``edgefleet.edge`` use these names only, so
the supervisor's modules (processes, state files, working-directory layout)
can change without touching the CLI. The agent, and with it the cache
configuration, is imported only when :func:`stop_workloads` runs.
See docs/architecture.md, "Edge autonomy and workloads".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefleet.edge.processes import ProcessIdentity, boot_id, identify, is_running, signal_group
from edgefleet.edge.statefiles import load_all
from edgefleet.edge.workdirs import Layout

__all__ = [
    "ProcessIdentity",
    "RecordedWorkload",
    "identify_child",
    "is_running",
    "recorded_workloads",
    "signal_group",
    "stop_workloads",
]


@dataclass(frozen=True, slots=True)
class RecordedWorkload:
    """A workload process a node's supervisor recorded as running (it may have ended since)."""

    name: str
    identity: ProcessIdentity
    log_file: Path


def identify_child(pid: int) -> ProcessIdentity:
    """The identity of a process this caller just spawned (start time 0 if /proc cannot tell)."""
    return identify(pid) or ProcessIdentity(pid, 0, boot_id())


def recorded_workloads(data_dir: Path) -> list[RecordedWorkload]:
    """Every workload of the node at ``data_dir`` whose state file names a process, by name."""
    layout = Layout(data_dir.absolute())
    found = []
    for stored in load_all(layout):
        record = stored.state.process if stored.state is not None else None
        if record is not None:
            found.append(RecordedWorkload(stored.name, record.identity, layout.log_file(stored.name)))
    return found


async def stop_workloads(data_dir: Path) -> None:
    """Stop every workload of the node at ``data_dir`` gracefully and forget them (decommission)."""
    from edgefleet.edge import agent  # the agent pulls the cache configuration in: only when needed

    await agent.stop_workloads(data_dir)
