"""The manifests shown in the README are valid, so a reader can paste them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from edgefleet.api import kinds  # noqa: F401
from edgefleet.api.meta import parse

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_manifests_are_valid() -> None:
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    manifests = [b for b in blocks if isinstance(b, dict) and "kind" in b]
    assert manifests, "the README shows at least one manifest"
    for manifest in manifests:
        parse(manifest)
