"""InstanceStatus: one workload instance on one node, as that node's agent reports it.

How: a plain wire model; ``Node.status.workloads`` maps each workload's name
to one, and the edge supervisor builds them. :mod:`edgefleet.api.workloads`
re-exports it, so ``from edgefleet.api.workloads import InstanceStatus``
keeps working.

Why its own module: the Node model needs this one class of the workload
models, and importing :mod:`edgefleet.api.workloads` for it would load the
whole Workload kind (templates, rollouts, selectors) into every process
that only reads Nodes, such as ``edgefleet get nodes``
(docs/architecture.md, "Resources").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgefleet.api.common import Count
from edgefleet.api.meta import Model


class InstanceStatus(Model):
    """One workload instance on one node, as the node's agent reports it."""

    revision: str | None = Field(default=None, description="Template revision running.")
    state: Literal["Pending", "Starting", "Running", "Stopping", "Exited", "Failed", "ScaledDown"] | None = Field(
        default=None,
        description="Supervisor state of the process; ScaledDown: stopped on purpose while its Site is Inactive "
        "(not a failure: it starts again when the site activates).",
    )
    ready: bool | None = Field(default=None, description="Whether the health probe passes.")
    restarts: Count | None = Field(default=None, description="Restarts since the agent started.")
    exit_code: int | None = Field(default=None, description="Exit status of the last run.")
    probe_failures: Count | None = Field(
        default=None, description="Failed health probes since the agent started (for rollout analysis)."
    )
    message: str | None = Field(default=None, description="Why it is in this state.")
