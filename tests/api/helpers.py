"""Helpers for the api tests: valid manifests per kind, and error capture."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.errors import ValidationFailed
from edgefleet.api.meta import Resource, kind_info

Doc = dict[str, Any]
DELETE = object()
"""Sentinel for :func:`changed`: remove the key instead of setting it."""


def make(kind: str, name: str, spec: Doc) -> Doc:
    return {"apiVersion": "edgefleet.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def site() -> Doc:
    return make(
        "Site",
        "par-edge",
        {
            "region": "eu-west",
            "location": {"lat": 48.85, "lon": 2.35, "country": "FR"},
            "tier": "edge",
            "parents": ["fra-parent"],
            "capacityGbps": 10,
        },
    )


def node() -> Doc:
    return make("Node", "par-edge-1", {"site": "par-edge", "addresses": ["192.0.2.10"]})


def domain() -> Doc:
    return make(
        "Domain",
        "shop",
        {
            "hostnames": ["www.shop.example", "*.cdn.shop.example"],
            "origins": [{"url": "https://origin.shop.example"}],
            "sites": "tier=edge",
        },
    )


def workload() -> Doc:
    return make(
        "Workload",
        "cache",
        {
            "nodeSelector": "edgefleet.io/role=cache",
            "template": {"command": ["python3", "-m", "http.server"], "args": ["8081"]},
        },
    )


def changed(document: Doc, path: str, value: Any) -> Doc:
    """A copy of ``document`` with the dotted ``path`` set (or deleted).

    Integer parts index lists: ``spec.origins.0.url``.
    """
    result = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = result
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return result


def errors_of(document: Doc) -> list[str]:
    """The ``path: message`` strings ``parse`` raises for ``document``."""
    with pytest.raises(ValidationFailed) as info:
        parse(document)
    return [str(error) for error in info.value.errors]


def row(obj: Resource, *, wide: bool = True) -> dict[str, str]:
    """The ``edgefleet get`` cells of ``obj``, by column header."""
    columns = kind_info(obj.kind).columns
    return {c.header: c.value(obj) for c in columns if wide or not c.wide}
