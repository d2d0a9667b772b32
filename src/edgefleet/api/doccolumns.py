"""Table columns read from the wire document, and the cell formatting every table uses.

How: a :class:`DocColumn` reads its cell from the JSON object the API
serves (camelCase keys, ``None`` fields left out), never from a model;
:data:`COLUMNS` holds them by kind. A kind listed there declares its
``KindInfo.columns`` from these (:func:`edgefleet.api.meta.document_columns`
adapts them to a model through its wire form), so there is one definition
of each column, and ``edgefleet get`` prints its table straight from the
listing.

Why: ``edgefleet get nodes`` is run in loops and scripts; building the
pydantic models (importing pydantic, the kind's module and its validators,
then validating every item) was about half of its time. A getter here
must take any document the server may send: missing keys, ``null`` and
unexpected types give ``<none>`` (``edgefleet.cli.output`` also turns a
getter's ``KeyError``/``TypeError`` into ``<none>``). Pure: no I/O, no
import from the package, so the CLI can import it without the models
(docs/architecture.md, "Resources").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Document = Mapping[str, Any]


def cell(value: object) -> str:
    """Render a value for a table column: ``<none>`` for None and empty."""
    if value is None or value == "" or value == [] or value == {}:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def short_list(items: list[str], limit: int = 2) -> str:
    """``a,b,+3`` : the first ``limit`` items and how many more there are."""
    if not items:
        return "<none>"
    more = len(items) - limit
    head = ",".join(items[:limit])
    return f"{head},+{more}" if more > 0 else head


def percent(ratio: float | None) -> str:
    return "<none>" if ratio is None else f"{ratio * 100:.1f}%"


@dataclass(frozen=True, slots=True)
class DocColumn:
    """A table column computed from the wire document; ``wide`` columns show with ``-o wide``."""

    header: str
    value: Callable[[Document], str]
    wide: bool = False


def section(doc: Document, name: str) -> Document:
    """``doc[name]`` when it is an object, else an empty one (a missing or null ``status``)."""
    value = doc.get(name)
    return value if isinstance(value, Mapping) else {}


def _ratio(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- Node -------------------------------------------------------------------------------------------


def _node_state(doc: Document) -> str:
    spec, status = section(doc, "spec"), section(doc, "status")
    parts: list[str] = [status.get("phase") or "Pending"]  # no phase yet: never reported, not yet judged
    if spec.get("unschedulable"):
        parts.append("SchedulingDisabled")
    if spec.get("draining") or status.get("drains"):
        parts.append("Draining")
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else ():
        reason = condition.get("reason") if isinstance(condition, Mapping) else None
        if isinstance(reason, str) and reason.isascii() and reason.isalnum() and condition.get("status") == "False":
            parts.append(reason[:64])  # e.g. RulesReady False: SecretMissing (edge.rulestatus); a word, no escapes
    return ",".join(parts)


def _node_workloads(doc: Document) -> str:
    """``ready/total`` of the instances the agent reports, e.g. ``2/3``."""
    workloads = section(doc, "status").get("workloads")
    if not isinstance(workloads, Mapping):
        return "<none>"
    ready = sum(1 for instance in workloads.values() if isinstance(instance, Mapping) and instance.get("ready"))
    return f"{ready}/{len(workloads)}"


def _node_cache(name: str, show: Callable[[object], str]) -> Callable[[Document], str]:
    """A column of Node.status.cache (``offload``, ``localRatio``...)."""

    def column(doc: Document) -> str:
        return show(section(section(doc, "status"), "cache").get(name))

    return column


def _node_field(part: str, name: str) -> Callable[[Document], str]:
    return lambda doc: cell(section(doc, part).get(name))


def _as_percent(value: object) -> str:
    return percent(_ratio(value))


NODE_COLUMNS = (
    DocColumn("STATUS", _node_state),
    DocColumn("SITE", _node_field("spec", "site")),
    DocColumn("HEARTBEAT", _node_field("status", "lastHeartbeat")),
    DocColumn("HUB", _node_field("status", "hub")),
    DocColumn("SYNCED", _node_field("status", "syncedRevision")),
    DocColumn("WORKLOADS", _node_workloads),
    DocColumn("ADDRESSES", _node_field("spec", "addresses"), wide=True),
    DocColumn("OFFLOAD", _node_cache("offload", _as_percent)),
    DocColumn("LOCAL", _node_cache("localRatio", _as_percent), wide=True),
    DocColumn("REQUESTS", _node_cache("clientRequests", cell), wide=True),
    DocColumn("BYTE-OFFLOAD", _node_cache("byteOffload", _as_percent), wide=True),
    DocColumn("HIT-RATIO", _node_cache("hitRatio", _as_percent), wide=True),
)
"""HEARTBEAT is the timestamp; ``edgefleet get`` shows its age (``cli.output.AGE_COLUMNS``)."""

COLUMNS: dict[str, tuple[DocColumn, ...]] = {"Node": NODE_COLUMNS}
"""The kinds whose table columns are read from the document, by kind."""
