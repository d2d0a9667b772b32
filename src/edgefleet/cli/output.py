"""Printing resources: tables (with kind-specific columns), YAML, JSON, describe.

How: table columns come from the kind registry (``KindInfo.columns``), so a
new kind gets a useful ``edgefleet get`` by declaring them. Every table
starts with NAME and ends with AGE, as kubectl's do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from edgefleet.api.doccolumns import COLUMNS
from edgefleet.api.documents import JSONObject as Document
from edgefleet.api.kindtable import API_VERSION, KindName

if TYPE_CHECKING:  # the API base imports pydantic: a kind with document columns is printed without it
    from edgefleet.api.meta import KindInfo, Resource

OUTPUT_FORMATS = ("table", "wide", "yaml", "json", "name")
# Columns whose getter returns an RFC 3339 timestamp, shown as its age ("12s") like AGE:
# the kind modules are pure and have no clock.
AGE_COLUMNS = {("Node", "HEARTBEAT"), ("Hub", "STARTED"), ("Event", "LAST SEEN"), ("Event", "FIRST SEEN")}
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """``2026-11-21T10:00:00Z`` -> ``5m``/``3h``/``2d`` (kubectl's short form)."""
    then = _instant(timestamp)
    if then is None:
        return "<unknown>"
    seconds = max(int(((now or datetime.now(UTC)) - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _instant(timestamp: object) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None if missing or malformed."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return then if then.tzinfo is not None else then.replace(tzinfo=UTC)


def display_order(info: KindInfo | KindName, docs: list[Document]) -> list[Document]:
    """Events by ``lastTimestamp``, the latest last (kubectl's order); other kinds as listed (by name)."""
    if info.kind != "Event":
        return docs
    return sorted(
        docs,
        key=lambda doc: (_instant((doc.get("spec") or {}).get("lastTimestamp")) or _LONG_AGO, doc["metadata"]["name"]),
    )


def to_model(info: KindInfo, doc: Document) -> Resource:
    return info.model.model_validate(doc)


def table(info: KindInfo | KindName, docs: list[Document], *, wide: bool = False) -> Table:
    """The kind's columns between NAME and AGE: read from each document when the kind has document
    columns (:mod:`edgefleet.api.doccolumns`: no model is built), else from each document's model."""
    doc_columns = COLUMNS.get(info.kind)
    columns: list[tuple[str, Callable[[Any], str]]]
    if doc_columns is not None:
        columns = [(c.header, c.value) for c in doc_columns if wide or not c.wide]
        rows = [[_cell(value, doc) for _, value in columns] for doc in docs]
    else:
        from edgefleet.api.meta import KindInfo  # loaded already: ``info`` comes from there

        assert isinstance(info, KindInfo), f"{info.kind}: no document columns, and no model"
        columns = [(c.header, c.value) for c in info.columns if wide or not c.wide]
        models = [to_model(info, doc) for doc in docs]
        rows = [[_cell(value, model) for _, value in columns] for model in models]
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    grid.add_column("NAME", no_wrap=True)
    for header, _ in columns:
        grid.add_column(header, no_wrap=True, overflow="ellipsis", max_width=48)
    grid.add_column("AGE")
    for doc, cells in zip(docs, rows, strict=True):
        cells = [
            age(text) if (info.kind, header) in AGE_COLUMNS and text != "<none>" else text
            for (header, _), text in zip(columns, cells, strict=True)
        ]
        grid.add_row(doc["metadata"]["name"], *cells, age(doc["metadata"].get("creationTimestamp")))
    return grid


def _cell(getter: Any, source: object) -> str:
    try:
        value = getter(source)
    except (AttributeError, KeyError, IndexError, TypeError):
        return "<none>"
    return "<none>" if value in (None, "") else str(value)


def dump(docs: Document | list[Document], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(docs, indent=2)
    import yaml  # here: tables (most of ``get``) do without it

    if isinstance(docs, list):
        return yaml.safe_dump_all(docs, sort_keys=False).rstrip()
    return yaml.safe_dump(docs, sort_keys=False).rstrip()


def print_docs(console: Console, info: KindInfo | KindName, docs: list[Document], fmt: str, *, single: bool) -> None:
    if fmt in ("table", "wide"):
        if not docs:
            console.print(f"No {info.plural} found.")
        else:
            console.print(table(info, docs, wide=fmt == "wide"))
        return
    if fmt == "name":
        for doc in docs:
            console.print(f"{info.singular}/{doc['metadata']['name']}", highlight=False)
        return
    payload: Any = (
        docs[0]
        if single
        else {
            "apiVersion": API_VERSION,
            "kind": f"{info.kind}List",
            "items": docs,
        }
    )
    print(dump(payload, fmt))


def describe(info: KindInfo, doc: Document) -> str:
    """A readable, sectioned view of one object."""
    import yaml

    meta = doc["metadata"]
    lines = [
        f"Name:              {meta['name']}",
        f"Kind:              {info.kind}",
        f"Labels:            {_pairs(meta.get('labels'))}",
        f"Annotations:       {_pairs(meta.get('annotations'))}",
        f"UID:               {meta.get('uid', '')}",
        f"Resource version:  {meta.get('resourceVersion', '')}",
        f"Generation:        {meta.get('generation', '')}",
        f"Created:           {meta.get('creationTimestamp', '')} ({age(meta.get('creationTimestamp'))} ago)",
    ]
    for section in ("spec", "status"):
        body = doc.get(section)
        text = yaml.safe_dump(body, sort_keys=False).rstrip() if body else "<none>"
        lines.append(f"{section.capitalize()}:")
        lines.extend(f"  {line}" for line in text.splitlines())
    return "\n".join(lines)


def _pairs(mapping: dict[str, str] | None) -> str:
    if not mapping:
        return "<none>"
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))
