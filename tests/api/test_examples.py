"""Every manifest under examples/ parses, and the examples describe one fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.api import Domain, Node, Resource, Site, Workload, parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.yml"))


def _load(path: Path) -> list[Resource]:
    with path.open(encoding="utf-8") as stream:
        documents: list[Any] = [d for d in yaml.safe_load_all(stream) if d is not None]
    assert documents, f"{path.name} holds no documents"
    return [parse(document) for document in documents]


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_example_parses(path: Path) -> None:
    for obj in _load(path):
        assert parse(obj.to_dict()) == obj


def test_examples_exist() -> None:
    names = {path.name for path in FILES}
    assert {"sites.yaml", "nodes.yaml", "domains.yaml", "workloads.yaml"} <= names


def test_examples_fit_together() -> None:
    objects = [obj for path in FILES for obj in _load(path)]
    sites = {o.name: o for o in objects if isinstance(o, Site)}
    nodes = [o for o in objects if isinstance(o, Node)]
    edges = [s for s in sites.values() if s.spec.tier == "edge"]
    assert len(edges) >= 2 and any(s.spec.tier == "parent" for s in sites.values())
    assert len({s.spec.location.country for s in edges}) == len(edges)
    for edge in edges:
        assert all(parent in sites for parent in edge.spec.parents)
        assert len([n for n in nodes if n.spec.site == edge.name]) == 2
    site_labels = [s.metadata.labels for s in sites.values()]
    for domain in (o for o in objects if isinstance(o, Domain)):
        assert any(domain.spec.site_selector().matches(labels) for labels in site_labels)
    for workload in (o for o in objects if isinstance(o, Workload)):
        assert any(workload.spec.selector().matches(n.metadata.labels) for n in nodes)
