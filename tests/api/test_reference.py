"""docs/manifests.md is generated from the schemas and must be current."""

from __future__ import annotations

from pathlib import Path

from edgefleet.api import kinds  # noqa: F401
from edgefleet.api.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "manifests.md"


def test_manifest_reference_is_current() -> None:
    assert DOC.exists(), "run .venv/bin/python scripts/gen_manifest_reference.py"
    assert DOC.read_text() == render(), "docs/manifests.md is stale: run scripts/gen_manifest_reference.py"


def test_reference_documents_every_spec_field() -> None:
    text = render()
    for path in ("spec.location.lat", "spec.origins[].url", "spec.template.command", "spec.site"):
        assert f"`{path}`" in text, path
