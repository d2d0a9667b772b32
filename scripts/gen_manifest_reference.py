"""Write docs/manifests.md from the kind models (see edgefleet.api.reference)."""

from pathlib import Path

from edgefleet.api import kinds  # noqa: F401  (fills the kind registry)
from edgefleet.api.reference import render

target = Path(__file__).resolve().parents[1] / "docs" / "manifests.md"
target.write_text(render())
print(f"wrote {target}")
