"""The manifest reference (docs/manifests.md), rendered from the kind models.

How: walk each kind's pydantic model (wire names, types, defaults and the
``Field(description=...)`` texts) into one Markdown table per kind, so the
documentation cannot drift from the schema. ``tests/api/test_reference.py``
fails when docs/manifests.md is stale; regenerate it with
``scripts/gen_manifest_reference.py``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edgefleet.api.meta import KindInfo, all_kinds

_SKIP_TOP = {"api_version", "kind", "metadata"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[1])}" if len(args) == 2 else "map"
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_nested_models(arg))
    return found


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    if info.default_factory is not None:
        return ""
    if info.default is None:
        return ""
    value = getattr(info.default, "value", info.default)
    return f"`{value}`" if not isinstance(value, BaseModel) else ""


def _rows(model: type[BaseModel], prefix: str, seen: set[type[BaseModel]]) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        wire = info.alias or name
        path = f"{prefix}.{wire}" if prefix else wire
        text = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{path}` | {_type_name(info.annotation)} | {_default(info)} | {text} |")
        for nested in _nested_models(info.annotation):
            if nested not in seen:
                rows.extend(
                    _rows(
                        nested,
                        path + ("[]" if "list" in _type_name(info.annotation) else ""),
                        seen | {nested},
                    )
                )
    return rows


def render_kind(info: KindInfo) -> str:
    lines = [f"## {info.kind}", ""]
    if info.description:
        lines += [info.description, ""]
    short = f" (short: {', '.join(info.short_names)})" if info.short_names else ""
    lines += [f"Path `/apis/edgefleet.io/v1/{info.plural}`{short}.", ""]
    lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name in ("spec", "status"):
        field = info.model.model_fields[name]
        for nested in _nested_models(field.annotation):
            lines += _rows(nested, name, {nested})
    return "\n".join(lines) + "\n"


def render() -> str:
    header = [
        "# Manifest reference",
        "",
        "Generated from the schemas by `scripts/gen_manifest_reference.py`; do not edit by hand.",
        "",
        "Every object has `apiVersion: edgefleet.io/v1`, `kind`, `metadata` and `spec`;",
        "`status` is written by the server's components through the status path.",
        "",
        "`metadata`: `name` (DNS-1123, at most 253 characters), `labels`, `annotations`;",
        "set by the server: `uid`, `resourceVersion`, `generation` (bumped when `spec` changes),",
        "`creationTimestamp`. Unknown fields are rejected everywhere.",
        "",
    ]
    return "\n".join(header) + "\n".join(render_kind(info) for info in all_kinds())
