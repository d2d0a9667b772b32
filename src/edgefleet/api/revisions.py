"""WorkloadRevision: one kept template of a Workload, for rollouts, pins and rollback.

How: the workload controller creates one per distinct template a Workload
has had, named ``<workload>-<number>`` with numbers counting up from 1
(``edgefleet rollout history`` lists them; pins and ``rollout undo
--to-revision`` name them by number). ``spec.revision`` is the template's
hash (:func:`edgefleet.api.workloads.template_revision`), the value nodes
report and ``Workload.status`` refers to. The per-node view takes a node's
template from here when the node is assigned a revision other than the
Workload's current template, so a revision must exist before anything
refers to it: the controller writes it first, and deletes the oldest unused
ones beyond ``spec.revisionHistoryLimit`` (never one still assigned, pinned
or current). ``spec.workloadUid`` ties a revision to one incarnation of its
Workload: a re-created Workload does not inherit its namesake's history.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from edgefleet.api.common import Name, cell
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register
from edgefleet.api.workloads import WorkloadTemplate


def revision_object_name(workload: str, number: int) -> str:
    """``<workload>-<number>``."""
    return f"{workload}-{number}"


class WorkloadRevisionSpec(Model):
    """One template of one Workload."""

    workload: Name = Field(description="The Workload's name.")
    workload_uid: str = Field(default="", max_length=64, description="The Workload's metadata.uid.")
    number: Annotated[int, Field(ge=1)] = Field(description="Revision number, counting up from 1.")
    revision: str = Field(min_length=1, max_length=64, description="The template's hash.")
    template: WorkloadTemplate = Field(description="The template, as it was.")


class WorkloadRevision(Resource):
    """A kept template of a Workload (written by the workload controller)."""

    KIND: ClassVar[str] = "WorkloadRevision"
    kind: Literal["WorkloadRevision"] = "WorkloadRevision"
    spec: WorkloadRevisionSpec


def _spec(obj: Resource) -> WorkloadRevisionSpec:
    assert isinstance(obj, WorkloadRevision)
    return obj.spec


INFO = register(
    KindInfo(
        kind="WorkloadRevision",
        plural="workloadrevisions",
        model=WorkloadRevision,
        short_names=("wlrev",),
        description="A kept template of a Workload: rollout history, pins and rollback name them by number.",
        columns=(
            Column("WORKLOAD", lambda o: _spec(o).workload),
            Column("NUMBER", lambda o: str(_spec(o).number)),
            Column("REVISION", lambda o: _spec(o).revision),
            Column("COMMAND", lambda o: cell(" ".join(_spec(o).template.command))[:48], wide=True),
        ),
    )
)
