"""``edgefleet rollout ...``: follow and steer the rollout of a Workload.

How: every command reads the Workload (and its WorkloadRevision objects)
through the REST API and writes with one merge patch or replace:

- ``status`` renders ``Workload.status`` (phase, revision current -> target,
  the step, per-site counts, nodes in flight and waiting, message,
  conditions); ``-w`` follows the object with the API's watch until the
  rollout completes (exit 0), fails or is aborted (exit 1), or ``--timeout``
  passes (exit 2).
- ``history`` lists the WorkloadRevision objects whose ``spec.workload`` is
  the Workload (and whose ``spec.workloadUid`` is its uid, when both are
  known), by number, with how many nodes are assigned each.
- ``pause`` / ``resume`` set ``spec.paused``; ``resume`` also ends a pause
  step (``status.rollout.resumedStep``), and ``abort`` sets
  ``status.rollout.abort``: both through the status subresource with the
  object's resourceVersion as a precondition, retried on a conflict.
- ``undo`` writes a kept revision's template back into ``spec.template``
  (a full replace with the resourceVersion as precondition, so fields the
  old template lacks are gone, not merged).
- ``pin`` / ``unpin`` edit ``spec.pins``, the host version map.

Why the control signals go to status: they are messages to the workload
controller about the rollout in progress, as the docstring of
:mod:`edgefleet.api.rollouts` explains; a template edit starts a new
rollout and clears them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.errors import SelectorError
from edgefleet.api.nodes import INFO as NODES
from edgefleet.api.revisions import INFO as REVISIONS
from edgefleet.api.revisions import WorkloadRevision, revision_object_name
from edgefleet.api.rollouts import RolloutState, RolloutStep
from edgefleet.api.selectors import parse_selector
from edgefleet.api.workloads import INFO as WORKLOADS
from edgefleet.api.workloads import Workload, template_revision
from edgefleet.cli.client import ApiClient, ClientError
from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, console, fail
from edgefleet.cli.output import age, dump
from edgefleet.sync.views import NODE_LABEL, SITE_LABEL

if TYPE_CHECKING:
    from rich.live import Live

T = TypeVar("T")

RETRIES = 5
"""Attempts of a write whose resourceVersion precondition failed (409) before giving up."""
IN_PROGRESS = ("Progressing", "Paused", "Analyzing", "RollingBack")
"""Phases of a rollout still moving nodes; Completed, Failed and Aborted are final."""
FINAL_EXIT = {"Completed": 0, "Failed": 1, "Aborted": 1}
"""``status -w`` exit codes by final phase; a timeout exits 2."""
TIMEOUT_EXIT = 2
monotonic: Callable[[], float] = time.monotonic
"""The clock ``status -w`` measures its ``--timeout`` with (tests/cli/test_rollout.py puts a fake one)."""
STRUCTURED = ("yaml", "json")

out = console()
err = console(stderr=True)

rollout_app = typer.Typer(
    help="Follow and steer the rollout of a Workload's template to its nodes: status, history, pause, "
    "resume, abort, undo, and pinning nodes to a revision. The strategy (steps, budgets, drains, analysis) "
    "is spec.strategy of the Workload; docs/rollouts.md describes it.",
    no_args_is_help=True,
)

WorkloadArg = Annotated[str, typer.Argument(metavar="WORKLOAD", help="Name of the Workload", show_default=False)]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text (default), yaml or json")]


def register(app: typer.Typer) -> None:
    """Add the ``rollout`` group to the ``edgefleet`` app."""
    app.add_typer(rollout_app, name="rollout")


# -- helpers ------------------------------------------------------------------------


def _check_output(output: str) -> None:
    if output not in ("text", *STRUCTURED):
        fail(f"unknown output format {output!r}; use text, yaml or json")


def get_workload(client: ApiClient, name: str) -> Document:
    try:
        return client.get(WORKLOADS, name)
    except ClientError as exc:
        if exc.code == 404:
            fail(f"no workload named {name!r}", "`edgefleet get workloads` lists them")
        raise


def workload_model(doc: Document) -> Workload:
    return Workload.model_validate(doc)


def retrying(client: ApiClient, name: str, write: Callable[[Document], T], doc: Document | None = None) -> T:
    """``write(doc)`` with a fresh Workload, again (after a new GET) when its precondition failed (409)."""
    for attempt in range(RETRIES):
        current = doc if doc is not None else get_workload(client, name)
        try:
            return write(current)
        except ClientError as exc:
            if exc.code != 409 or attempt == RETRIES - 1:
                raise
            doc = None
    raise AssertionError("unreachable")


def precondition(doc: Document) -> Document:
    """The metadata of a merge patch that only applies to this version of the object."""
    return {"resourceVersion": doc["metadata"]["resourceVersion"]}


def in_progress(rollout: RolloutState | None) -> bool:
    return rollout is not None and rollout.phase in IN_PROGRESS


def revisions_of(client: ApiClient, workload: Workload) -> list[WorkloadRevision]:
    """The WorkloadRevision objects of this Workload (this incarnation of it), by number."""
    uid = workload.metadata.uid or ""
    found: list[WorkloadRevision] = []
    for item in client.list(REVISIONS)["items"]:
        revision = WorkloadRevision.model_validate(item)
        if revision.spec.workload != workload.name:
            continue
        if uid and revision.spec.workload_uid and revision.spec.workload_uid != uid:
            continue  # a namesake's history: the Workload was deleted and created again
        found.append(revision)
    return sorted(found, key=lambda r: r.spec.number)


def find_revision(client: ApiClient, workload: Workload, number: int) -> WorkloadRevision:
    """Revision ``number`` of the workload, or an error that points at ``rollout history``."""
    name = workload.name
    hint = f"`edgefleet rollout history {name}` lists its revisions"
    try:
        document = client.get(REVISIONS, revision_object_name(name, number))
    except ClientError as exc:
        if exc.code == 404:
            fail(f"workload/{name} has no revision {number}", hint)
        raise
    revision = WorkloadRevision.model_validate(document)
    uid = workload.metadata.uid or ""
    if revision.spec.workload != name or (uid and revision.spec.workload_uid and revision.spec.workload_uid != uid):
        fail(f"workloadrevision/{revision.name} does not belong to workload/{name} (this incarnation of it)", hint)
    return revision


def revision_label(number: int | None, revision: str | None) -> str:
    if number is not None:
        return str(number)
    return revision[:8] if revision else "?"


def node_labels(node: Document) -> dict[str, str]:
    """A Node's labels with the implicit ones (its name and site), as selectors see them."""
    labels = dict(node.get("metadata", {}).get("labels") or {})
    labels[NODE_LABEL] = node["metadata"]["name"]
    site = (node.get("spec") or {}).get("site")
    if site:
        labels[SITE_LABEL] = site
    return labels


class NodeSites:
    """Node name -> site, read (one list of the Nodes) only once a node in flight is not known yet."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client
        self.sites: dict[str, str] = {}
        self._listed_for: set[str] = set()

    def of(self, workload: Workload) -> dict[str, str]:
        rollout = workload.status.rollout
        wanted = set(rollout.nodes) if rollout is not None and in_progress(rollout) else set()
        unknown = wanted - set(self.sites) - self._listed_for
        if unknown:
            items = self._client.list(NODES)["items"]
            self.sites = {n["metadata"]["name"]: (n.get("spec") or {}).get("site", "") for n in items}
            self._listed_for |= unknown  # a node that is gone is not looked for again
        return self.sites


# -- status -------------------------------------------------------------------------


def describe_step(step: RolloutStep) -> str:
    """What one step of spec.strategy.steps does, in words."""
    if step.nodes is not None:
        return f"batch: until {step.nodes} node{' runs' if step.nodes == 1 else 's run'} the new revision"
    if step.percent is not None:
        return f"batch: until {step.percent}% of the nodes run the new revision"
    if step.selector is not None:
        return f"batch: the nodes matching '{step.selector}'"
    if step.pause is not None and step.pause.seconds is not None:
        return f"pause {step.pause.seconds}s"
    return "pause until `edgefleet rollout resume`"


def waiting_pause_step(workload: Workload) -> int | None:
    """The step index ``rollout resume`` may end: the rollout is Paused at a pause step."""
    rollout = workload.status.rollout
    steps = workload.spec.strategy.steps
    if rollout is None or rollout.phase != "Paused" or rollout.step >= len(steps):
        return None
    return rollout.step if steps[rollout.step].pause is not None else None


def step_line(workload: Workload, now: datetime | None = None) -> str:
    rollout = workload.status.rollout
    steps = workload.spec.strategy.steps
    strategy = workload.spec.strategy
    if rollout is None:
        return ""
    if not steps:
        return (
            f"Steps:     none: every node moves within the budgets (maxUnavailable {strategy.max_unavailable}, "
            f"{strategy.max_unavailable_per_site} per site)"
        )
    if rollout.step >= len(steps):
        return f"Step:      after the {len(steps)} steps: every remaining node moves"
    step = steps[rollout.step]
    text = f"Step:      {rollout.step + 1} of {len(steps)}: {describe_step(step)}"
    if rollout.step_started_at:
        text += f" (started {age(rollout.step_started_at, now)} ago)"
    if step.pause is not None and rollout.phase == "Paused":
        if rollout.resumed_step == rollout.step:
            text += "; resumed"
        elif step.pause.seconds is None:
            text += f"; `edgefleet rollout resume {workload.name}` ends it"
    return text


def headline(workload: Workload) -> str:
    status = workload.status
    rollout = status.rollout
    current = revision_label(status.current_revision_number, status.current_revision)
    update = revision_label(status.update_revision_number, status.update_revision)
    name = f"workload/{workload.name}"
    if status.current_revision is None and rollout is None:
        return f"{name}: no status yet (the workload controller has not reported on it)"
    if in_progress(rollout):
        assert rollout is not None
        target = revision_label(rollout.target_number, rollout.target)
        return f"{name}: rollout {rollout.phase}, revision {current} -> {target}"
    text = f"{name}: no rollout in progress; the nodes run revision {current}"
    if rollout is not None:
        target = revision_label(rollout.target_number, rollout.target)
        text += f" (the last rollout, to revision {target}, {rollout.phase})"
    if status.update_revision and status.update_revision != status.current_revision:
        if rollout is not None and rollout.failed_revision == status.update_revision:
            text += f"; spec.template (revision {update}) is not retried until it changes"
        else:
            text += f"; revision {update} waits to roll out"
    return text


def sites_table(workload: Workload, sites_of: dict[str, str], now: datetime | None = None) -> Table | None:
    status = workload.status
    rollout = status.rollout
    in_flight: dict[str, list[str]] = {}
    if rollout is not None and in_progress(rollout):
        for node, node_step in sorted(rollout.nodes.items()):
            site = sites_of.get(node, "<unknown>")
            in_flight.setdefault(site, []).append(f"{node} {node_step.phase} {age(node_step.since, now)}")
    site_names = sorted(set(status.sites or {}) | set(in_flight))
    if not site_names:
        return None
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header in ("SITE", "DESIRED", "UPDATED", "READY", "AVAILABLE", "UNAVAILABLE"):
        grid.add_column(header, no_wrap=True)
    grid.add_column("IN FLIGHT")
    for site in site_names:
        counts = (status.sites or {}).get(site)
        cells = (
            ["-"] * 5
            if counts is None
            else [
                str(counts.desired),
                str(counts.updated),
                str(counts.ready),
                str(counts.available),
                str(counts.unavailable),
            ]
        )
        grid.add_row(site, *cells, ", ".join(in_flight.get(site, [])) or "-")
    return grid


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def status_renderable(workload: Workload, sites_of: dict[str, str], now: datetime | None = None) -> RenderableType:
    """The whole ``rollout status`` text."""
    status = workload.status
    rollout = status.rollout
    parts: list[RenderableType] = [Text(headline(workload), style="bold")]
    lines: list[str] = []
    if in_progress(rollout):
        assert rollout is not None
        lines.append(step_line(workload, now))
        analysis = workload.spec.strategy.analysis
        if rollout.phase == "Analyzing" and rollout.analysis_started_at and analysis is not None:
            lines.append(
                f"Analysis:  started {age(rollout.analysis_started_at, now)} ago, window {analysis.interval_seconds}s"
            )
    if workload.spec.paused:
        lines.append(f"Paused:    spec.paused is set; `edgefleet rollout resume {workload.name}` continues")
    if status.desired_count is not None:
        lines.append(
            f"Nodes:     {_count(status.updated_count)}/{_count(status.desired_count)} updated, "
            f"{_count(status.ready_count)} ready, {_count(status.available_count)} available, "
            f"{_count(status.unavailable_count)} unavailable"
        )
    if workload.spec.pins:
        pins = ", ".join(f"'{p.selector}' -> {p.revision}" for p in workload.spec.pins)
        lines.append(f"Pins:      {pins}")
    if lines:
        parts.append(Text("\n".join(lines)))
    table = sites_table(workload, sites_of, now)
    if table is not None:
        parts.append(table)
    if rollout is not None:
        extra: list[str] = []
        if in_progress(rollout) and rollout.waiting:
            extra.append(f"Waiting:   {', '.join(sorted(rollout.waiting))} (not Ready: they move when they return)")
        if rollout.abort and in_progress(rollout):
            extra.append("Abort:     requested; the updated nodes move back")
        if rollout.failed_revision:
            extra.append(f"Failed:    revision {rollout.failed_revision} is not retried until the template changes")
        if rollout.message:
            extra.append(f"Message:   {rollout.message}")
        if extra:
            parts.append(Text("\n".join(extra)))
    if status.conditions:
        conditions = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            header_style="bold",
            title="Conditions",
            title_justify="left",
        )
        for header in ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"):
            conditions.add_column(header, no_wrap=header != "MESSAGE")
        for condition in status.conditions:
            when = age(condition.last_transition_time, now) if condition.last_transition_time else "-"
            conditions.add_row(condition.type, condition.status, condition.reason or "-", when, condition.message or "")
        parts.append(conditions)
    return Group(*parts)


def summary_line(workload: Workload, now: datetime | None = None) -> str:
    """One line per change for ``status -w`` when the output is not a terminal."""
    status = workload.status
    rollout = status.rollout
    clock = (now or datetime.now(UTC)).strftime("%H:%M:%S")
    if rollout is None:
        return f"{clock} {headline(workload)}"
    target = revision_label(rollout.target_number, rollout.target)
    steps = len(workload.spec.strategy.steps)
    parts = [clock, rollout.phase, f"-> revision {target}"]
    if steps and in_progress(rollout):
        parts.append(f"step {min(rollout.step + 1, steps)}/{steps}" if rollout.step < steps else "final step")
    parts.append(f"updated {_count(status.updated_count)}/{_count(status.desired_count)}")
    parts.append(f"available {_count(status.available_count)}")
    if rollout.nodes and in_progress(rollout):
        parts.append("in flight: " + ", ".join(f"{n} {s.phase}" for n, s in sorted(rollout.nodes.items())))
    if rollout.waiting and in_progress(rollout):
        parts.append("waiting: " + ", ".join(sorted(rollout.waiting)))
    if rollout.message:
        parts.append(f"({rollout.message})")
    if _behind(workload):
        parts.append(f"[the workload controller has not seen generation {workload.metadata.generation} yet]")
    return " ".join(parts)


def _behind(workload: Workload) -> bool:
    """Whether status describes an older spec than the one stored (the controller has not caught up)."""
    observed, generation = workload.status.observed_generation, workload.metadata.generation
    return observed is not None and generation is not None and observed < generation


def outcome(workload: Workload) -> str | None:
    """``Completed``, ``Failed`` or ``Aborted`` once the rollout of the current spec is over, else None."""
    status = workload.status
    if _behind(workload):
        return None  # the controller has not seen the latest spec yet: what status says may be over already
    rollout = status.rollout
    if rollout is None:
        if status.current_revision is not None and status.update_revision in (None, status.current_revision):
            return "Completed"  # nothing to roll out
        return None
    if rollout.phase in FINAL_EXIT:
        if rollout.phase == "Completed" and status.update_revision not in (None, rollout.target):
            return None  # a newer template waits for its rollout to start
        return rollout.phase
    return None


def status_document(workload: Workload, doc: Document) -> Document:
    """``status -o yaml|json``: what a script needs to decide."""
    result = outcome(workload)
    return {
        "name": workload.name,
        "generation": workload.metadata.generation,
        "observedGeneration": workload.status.observed_generation,
        "paused": workload.spec.paused,
        "inProgress": in_progress(workload.status.rollout),
        "result": result,
        "steps": (doc.get("spec") or {}).get("strategy", {}).get("steps", []),
        "status": doc.get("status") or {},
    }


@rollout_app.command("status")
def status_command(
    name: WorkloadArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help=(
                "Follow the rollout live until it completes (exit 0), fails or is aborted (exit 1), "
                "or --timeout passes (exit 2)"
            ),
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.0, help="Seconds -w follows at most; 0 follows until the end")] = 0.0,
    output: OutputOpt = "text",
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Show where the rollout of a Workload is: phase, revisions, step, per-site counts, nodes in flight.

    Revision numbers are those of `edgefleet rollout history`. Without a
    rollout in progress it says so (and how the last one ended). With -w
    the display follows every change of the Workload; piped, it prints one
    line per change and the whole status at the end. `-o yaml|json` prints
    the status as data (with -w: the final one).
    """
    _check_output(output)
    with api(server, token, context) as client:
        doc = get_workload(client, name)
        sites = NodeSites(client)
        if not watch:
            workload = workload_model(doc)
            if output in STRUCTURED:
                print(dump(status_document(workload, doc), output))
            else:
                out.print(status_renderable(workload, sites.of(workload)))
            return
        code = follow(client, name, doc, sites, timeout, output)
    raise typer.Exit(code)


@dataclass
class _Followed:
    """The Workload as ``status -w`` last saw it, and where its watch resumes."""

    doc: Document
    workload: Workload
    revision: str

    @classmethod
    def of(cls, doc: Document) -> _Followed:
        return cls(doc, workload_model(doc), doc["metadata"]["resourceVersion"])


def follow(client: ApiClient, name: str, doc: Document, sites: NodeSites, timeout: float, output: str) -> int:
    """``status -w``: show each change until the outcome; the exit code."""
    deadline = monotonic() + timeout if timeout > 0 else None
    seen = _Followed.of(doc)
    sites.of(seen.workload)
    live_display = out.is_terminal and output not in STRUCTURED
    context: AbstractContextManager[Live | None] = nullcontext()
    if live_display:
        from rich.live import Live

        context = Live(
            get_renderable=lambda: status_renderable(seen.workload, sites.sites), console=out, refresh_per_second=2
        )
    last_line = ""
    result: str | None = None
    try:
        with context as live:
            while True:
                if live is not None:
                    live.refresh()
                elif output not in STRUCTURED:
                    line = summary_line(seen.workload)
                    if line.split(" ", 1)[1] != last_line.split(" ", 1)[-1]:  # the same but for the clock
                        out.print(line, markup=False)
                        last_line = line
                result = outcome(seen.workload)
                remaining = None if deadline is None else deadline - monotonic()
                if result is not None or (remaining is not None and remaining <= 0):
                    break
                fresh = _next_change(client, name, seen, remaining, deadline)
                if fresh is not None:
                    seen = fresh
                    sites.of(seen.workload)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if output in STRUCTURED:
        print(dump(status_document(seen.workload, seen.doc), output))
    elif not live_display:
        out.print(status_renderable(seen.workload, sites.of(seen.workload)))
    return _report(seen.workload, result, timeout)


def _next_change(
    client: ApiClient, name: str, seen: _Followed, remaining: float | None, deadline: float | None
) -> _Followed | None:
    """Reads the watch until the Workload changes (its new state) or the watch or the time ends (None)."""
    seconds = None if remaining is None else max(1, math.ceil(remaining))
    try:
        for event in client.watch(WORKLOADS, resource_version=seen.revision, timeout_seconds=seconds):
            obj = event.get("object") or {}
            if event["type"] == "ERROR":
                if obj.get("code") == 410:  # the history was compacted: read the object again
                    return _Followed.of(get_workload(client, name))
                fail(obj.get("message", "the watch failed"), f"`edgefleet rollout status {name} -w` follows again")
            seen.revision = (obj.get("metadata") or {}).get("resourceVersion") or seen.revision
            if event["type"] != "BOOKMARK" and obj.get("metadata", {}).get("name") == name:
                if event["type"] == "DELETED":
                    fail(f"workload/{name} was deleted while its rollout was followed")
                return _Followed.of(obj)
            if deadline is not None and monotonic() >= deadline:
                return None
    except ClientError as exc:
        if exc.code == 410:
            return _Followed.of(get_workload(client, name))
        raise
    return None


def _report(workload: Workload, result: str | None, timeout: float) -> int:
    rollout = workload.status.rollout
    name = workload.name
    target = "?" if rollout is None else revision_label(rollout.target_number, rollout.target)
    message = f": {rollout.message}" if rollout is not None and rollout.message else ""
    if result == "Completed":
        if rollout is None:
            err.print(f"workload/{name}: nothing to roll out", markup=False)
        else:
            err.print(f"rollout of workload/{name} to revision {target} completed", markup=False)
        return 0
    if result == "Failed":
        err.print(f"[red]error:[/red] rollout of workload/{escape(name)} to revision {target} failed{escape(message)}")
        err.print(
            f"  the updated nodes went back; fix the template and apply it again, or "
            f"`edgefleet rollout undo {name}` to make the previous template the spec",
            markup=False,
        )
        return FINAL_EXIT["Failed"]
    if result == "Aborted":
        err.print(
            f"[red]error:[/red] rollout of workload/{escape(name)} to revision {target} was aborted{escape(message)}"
        )
        err.print(
            f"  spec.template still names revision {target}: `edgefleet rollout undo {name}` makes the "
            "running revision the spec again; applying a new template rolls forward",
            markup=False,
        )
        return FINAL_EXIT["Aborted"]
    phase = "waiting for the workload controller" if rollout is None else rollout.phase
    err.print(f"[red]error:[/red] timed out after {timeout:g}s: workload/{escape(name)} is still {escape(phase)}")
    err.print(f"  `edgefleet rollout status {name} -w` follows it again", markup=False)
    return TIMEOUT_EXIT


# -- history ------------------------------------------------------------------------


def history_rows(workload: Workload, revisions: list[WorkloadRevision]) -> list[Document]:
    """One row per kept revision: number, hash, when, command, nodes assigned it, and what it is now."""
    status = workload.status
    assigned = status.node_revisions or {}
    pinned = {pin.revision for pin in workload.spec.pins}
    failed = status.rollout.failed_revision if status.rollout is not None else None
    rows: list[Document] = []
    for revision in revisions:
        spec = revision.spec
        nodes = sum(1 for value in assigned.values() if value == spec.revision)
        if spec.revision == status.current_revision and status.desired_count is not None:
            nodes += max(status.desired_count - len(assigned), 0)
        marks = []
        if spec.revision == status.current_revision:
            marks.append("current")
        if spec.revision == status.update_revision:
            marks.append("update")
        if spec.number in pinned:
            marks.append("pinned")
        if failed and spec.revision == failed:
            marks.append("failed")
        command = " ".join([*spec.template.command, *spec.template.args])
        rows.append(
            {
                "number": spec.number,
                "revision": spec.revision,
                "name": revision.name,
                "created": revision.metadata.creation_timestamp,
                "command": command,
                "nodes": nodes,
                "current": spec.revision == status.current_revision,
                "update": spec.revision == status.update_revision,
                "marks": marks,
            }
        )
    return rows


@rollout_app.command("history")
def history_command(
    name: WorkloadArg,
    output: OutputOpt = "text",
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """List the kept revisions (WorkloadRevision objects) of a Workload, oldest first.

    NODES counts the nodes assigned each revision (status.nodeRevisions,
    and every other selected node for the current one). The last column
    marks the current revision (what the nodes run), the update revision
    (spec.template, where a rollout goes), pinned and failed ones. `rollout
    undo --to-revision N` and `rollout pin --revision N` take these numbers.
    """
    _check_output(output)
    with api(server, token, context) as client:
        workload = workload_model(get_workload(client, name))
        rows = history_rows(workload, revisions_of(client, workload))
    if output in STRUCTURED:
        print(dump(rows, output))
        return
    if not rows:
        out.print(
            f"No revisions of workload/{name} yet: the workload controller keeps one per template it has "
            "seen (is the cloud's workload controller running?)",
            markup=False,
        )
        return
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header in ("NUMBER", "REVISION", "CREATED", "COMMAND", "NODES", ""):
        grid.add_column(header, no_wrap=True, overflow="ellipsis", max_width=48)
    for row in rows:
        grid.add_row(
            str(row["number"]),
            row["revision"],
            age(row["created"]),
            row["command"],
            str(row["nodes"]),
            ", ".join(row["marks"]),
        )
    out.print(grid)


# -- pause, resume, abort -----------------------------------------------------------


@rollout_app.command("pause")
def pause_command(
    name: WorkloadArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Hold the rollout (spec.paused): nodes on their way finish, no other node starts moving."""
    with api(server, token, context) as client:
        workload = workload_model(get_workload(client, name))
        if workload.spec.paused:
            out.print(f"workload/{name} is already paused; `edgefleet rollout resume {name}` continues", markup=False)
            return
        client.patch(WORKLOADS, name, {"spec": {"paused": True}})
    out.print(
        f"workload/{name} paused: nodes on their way finish, no other node starts moving; "
        f"`edgefleet rollout resume {name}` continues",
        markup=False,
    )


@rollout_app.command("resume")
def resume_command(
    name: WorkloadArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Continue a paused rollout: clears spec.paused, and ends the pause step the rollout waits at.

    When the rollout is Paused at a pause step of spec.strategy.steps (one
    without seconds, or a timed one, which then ends early), this sets
    status.rollout.resumedStep to that step, with the object's
    resourceVersion as a precondition, retried on a conflict.
    """
    done: list[str] = []
    with api(server, token, context) as client:
        doc = get_workload(client, name)
        if workload_model(doc).spec.paused:
            doc = client.patch(WORKLOADS, name, {"spec": {"paused": False}})
            done.append("spec.paused cleared")

        def end_pause(current: Document) -> Document | None:
            workload = workload_model(current)
            step = waiting_pause_step(workload)
            rollout = workload.status.rollout
            if step is None or rollout is None:
                return None
            if rollout.resumed_step == step:
                done.append(f"pause step {step + 1} was resumed already; the workload controller ends it")
                return None
            patch = {"metadata": precondition(current), "status": {"rollout": {"resumedStep": step}}}
            result = client.patch(WORKLOADS, name, patch, status=True)
            done.append(f"pause step {step + 1} of {len(workload.spec.strategy.steps)} ended")
            return result

        retrying(client, name, end_pause, doc)
    if not done:
        out.print(f"workload/{name} is not paused and waits at no pause step: nothing to resume", markup=False)
        return
    out.print(f"workload/{name} resumed: {'; '.join(done)}", markup=False)


@rollout_app.command("abort")
def abort_command(
    name: WorkloadArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Stop the rollout in progress and move the updated nodes back to the current revision.

    Sets status.rollout.abort (with the object's resourceVersion as a
    precondition, retried on a conflict). spec.template keeps the aborted
    revision, which is not retried until the template changes: `rollout
    undo` makes the running revision the spec again.
    """
    with api(server, token, context) as client:

        def request(current: Document) -> str:
            workload = workload_model(current)
            rollout = workload.status.rollout
            if rollout is None or not in_progress(rollout):
                last = "" if rollout is None else f" (the last one {rollout.phase})"
                fail(
                    f"workload/{name} has no rollout in progress{last}: nothing to abort",
                    f"to go back to an earlier template: `edgefleet rollout undo {name}`",
                )
            target = revision_label(rollout.target_number, rollout.target)
            if rollout.phase == "RollingBack":
                return (
                    f"the rollout of workload/{name} to revision {target} is already rolling back "
                    f"({rollout.message or 'after a failed check'}): nothing to abort"
                )
            if rollout.abort:
                return f"an abort of the rollout of workload/{name} to revision {target} is already requested"
            patch = {"metadata": precondition(current), "status": {"rollout": {"abort": True}}}
            client.patch(WORKLOADS, name, patch, status=True)
            current_number = revision_label(workload.status.current_revision_number, workload.status.current_revision)
            return (
                f"rollout of workload/{name} to revision {target} aborted: the updated nodes move back to "
                f"revision {current_number}"
            )

        message = retrying(client, name, request)
    out.print(message, markup=False)
    out.print(
        f"follow with `edgefleet rollout status {name} -w`; spec.template still names the aborted "
        f"revision: `edgefleet rollout undo {name}` makes the running one the spec again",
        markup=False,
    )


# -- undo ---------------------------------------------------------------------------


def undo_target(workload: Workload, revisions: list[WorkloadRevision], to: int | None) -> WorkloadRevision:
    """The revision ``undo`` goes back to: ``to``; else the current one during a rollout, else the one before."""
    name = workload.name
    hint = f"`edgefleet rollout history {name}` lists them; choose one with --to-revision N"
    by_number = {r.spec.number: r for r in revisions}
    if to is not None:
        if to not in by_number:
            fail(f"workload/{name} has no revision {to}", hint)
        return by_number[to]
    status = workload.status
    if status.current_revision is None:
        fail(f"workload/{name} has no current revision yet (the workload controller has not reported on it)", hint)
    if status.update_revision is not None and status.update_revision != status.current_revision:
        for revision in revisions:
            if revision.spec.revision == status.current_revision:
                return revision
        fail(f"the current revision of workload/{name} ({status.current_revision}) is not kept", hint)
    current = status.current_revision_number
    if current is None:
        current = next((r.spec.number for r in revisions if r.spec.revision == status.current_revision), None)
    earlier = [r for r in revisions if current is not None and r.spec.number < current]
    if not earlier:
        fail(
            f"workload/{name} has no revision before revision {revision_label(current, status.current_revision)}", hint
        )
    return earlier[-1]


@rollout_app.command("undo")
def undo_command(
    name: WorkloadArg,
    to_revision: Annotated[
        int | None,
        typer.Option("--to-revision", min=1, help="Revision number to go back to (see `edgefleet rollout history`)"),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Put a kept revision's template back into spec.template, which rolls the nodes to it.

    Without --to-revision: during a rollout, back to the current revision
    (the one the nodes ran before it); otherwise to the revision before
    the current one. The write replaces the whole Workload with its
    resourceVersion as a precondition (retried on a conflict), so fields
    absent from the old template are removed, not merged.
    """
    with api(server, token, context) as client:
        workload = workload_model(get_workload(client, name))
        target = undo_target(workload, revisions_of(client, workload), to_revision)
        number = target.spec.number
        new_hash = template_revision(target.spec.template)

        def write(current: Document) -> bool:
            if template_revision(workload_model(current).spec.template) == new_hash:
                return False
            document = dict(current)
            document["spec"] = {
                **current["spec"],
                "template": target.spec.template.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
            document.pop("status", None)
            client.replace(WORKLOADS, document)
            return True

        changed = retrying(client, name, write)
        paused = workload.spec.paused
    if not changed:
        out.print(f"workload/{name}: spec.template is already revision {number}; nothing to undo", markup=False)
        return
    before = revision_label(workload.status.update_revision_number, workload.status.update_revision)
    out.print(
        f"workload/{name} rolled back: spec.template is revision {number} ({target.spec.revision}) again, "
        f"was revision {before}; the workload controller moves the nodes "
        f"(`edgefleet rollout status {name} -w` follows)",
        markup=False,
    )
    if paused:
        out.print(
            f"note: workload/{name} is paused; `edgefleet rollout resume {name}` lets the nodes move", markup=False
        )


# -- pin, unpin ---------------------------------------------------------------------


def pin_selector(node: str | None, selector: str | None, *, allow_all: bool = False, all_: bool = False) -> str:
    chosen = sum(bool(x) for x in (node, selector, all_))
    if chosen != 1:
        what = "--node NAME, --selector SEL or --all" if allow_all else "--node NAME or --selector SEL"
        fail(f"give exactly one of {what}")
    if all_:
        return ""
    text = f"{NODE_LABEL}={node}" if node else str(selector)
    try:
        parse_selector(text)
    except SelectorError as exc:
        fail(f"invalid selector {text!r}: {exc}", "e.g. --selector 'ab-test=b' or --node edge-a1")
    if not text.strip():
        fail("an empty selector would pin every node; give --node NAME or a --selector that picks some")
    return text


def _same_selector(a: str, b: str) -> bool:
    try:
        return str(parse_selector(a)) == str(parse_selector(b))
    except SelectorError:
        return a == b


def pinned_nodes(workload: Workload, pins: list[Document], index: int, nodes: list[Document]) -> list[str]:
    """Nodes of the workload the pin at ``index`` decides (no earlier pin matches them)."""
    selector = workload.spec.selector()
    chosen = parse_selector(pins[index]["selector"])
    earlier = [parse_selector(p["selector"]) for p in pins[:index]]
    names = []
    for node in nodes:
        labels = node_labels(node)
        if selector.matches(labels) and chosen.matches(labels) and not any(e.matches(labels) for e in earlier):
            names.append(node["metadata"]["name"])
    return sorted(names)


@rollout_app.command("pin")
def pin_command(
    name: WorkloadArg,
    revision: Annotated[
        int,
        typer.Option(
            "--revision",
            min=1,
            help="Revision number the nodes run (see `edgefleet rollout history`)",
            show_default=False,
        ),
    ],
    node: Annotated[str | None, typer.Option("--node", help=f"Pin this node (selector {NODE_LABEL}=NAME)")] = None,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            "-l",
            help=("Pin the nodes this label selector picks, e.g. 'ab-test=b' or 'edgefleet.io/site=par-edge'"),
        ),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Make some nodes run a given revision whatever rolls out (a pin of spec.pins, the host version map).

    A pin with the same selector is replaced; a new one goes last (the
    first matching pin wins). `rollout unpin` removes pins.
    """
    text = pin_selector(node, selector)
    with api(server, token, context) as client:
        workload = workload_model(get_workload(client, name))
        kept = find_revision(client, workload, revision)

        def write(current: Document) -> tuple[list[Document], int, bool]:
            pins = list((current.get("spec") or {}).get("pins") or [])
            entry = {"selector": text, "revision": revision}
            index = next((i for i, p in enumerate(pins) if _same_selector(p["selector"], text)), None)
            replaced = index is not None
            if index is None:
                pins.append(entry)
                index = len(pins) - 1
            else:
                pins[index] = entry
            client.patch(WORKLOADS, name, {"metadata": precondition(current), "spec": {"pins": pins}})
            return pins, index, replaced

        pins, index, replaced = retrying(client, name, write)
        nodes = client.list(NODES)["items"]
    decided = pinned_nodes(workload, pins, index, nodes)
    verb = "re-pinned" if replaced else "pinned"
    out.print(
        f"workload/{name}: nodes matching '{text}' {verb} to revision {revision} ({kept.spec.revision})", markup=False
    )
    if decided:
        out.print(
            f"it decides {len(decided)} node{'s' if len(decided) != 1 else ''} now: {', '.join(decided)}", markup=False
        )
    elif node and all(n["metadata"]["name"] != node for n in nodes):
        out.print(f"note: there is no node {node!r} (yet); the pin applies when it joins", markup=False)
    else:
        out.print(
            "note: it decides no node now (none of the workload's nodes matches it, or an earlier pin "
            "matches them first)",
            markup=False,
        )


@rollout_app.command("unpin")
def unpin_command(
    name: WorkloadArg,
    node: Annotated[str | None, typer.Option("--node", help=f"The pin of this node ({NODE_LABEL}=NAME)")] = None,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="The pin with this selector")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every pin of the workload")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Remove pins from spec.pins: those nodes follow the workload's revisions and rollouts again."""
    text = pin_selector(node, selector, allow_all=True, all_=all_)
    with api(server, token, context) as client:

        def write(current: Document) -> list[Document]:
            pins = list((current.get("spec") or {}).get("pins") or [])
            removed = pins if all_ else [p for p in pins if _same_selector(p["selector"], text)]
            if not removed:
                if all_:
                    return []
                listed = ", ".join(f"'{p['selector']}'" for p in pins) or "none"
                fail(f"workload/{name} has no pin with selector '{text}'", f"its pins: {listed}")
            kept = [p for p in pins if p not in removed]
            client.patch(WORKLOADS, name, {"metadata": precondition(current), "spec": {"pins": kept}})
            return removed

        removed = retrying(client, name, write)
    if not removed:
        out.print(f"workload/{name} has no pins", markup=False)
        return
    for pin in removed:
        out.print(f"workload/{name}: pin '{pin['selector']}' (revision {pin['revision']}) removed", markup=False)
