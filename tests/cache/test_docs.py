"""The cache config shown in docs/cache.md and config.py's docstring is valid, so operators can paste it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edgefleet.cache import config
from edgefleet.cache.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "cache.md"


def test_documented_config_is_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/cache.md shows a config"
    for block in blocks:
        parsed = config.parse_config(yaml.safe_load(block))
        assert parsed.domains


def test_docstring_example_is_valid() -> None:
    example = (config.__doc__ or "").split("Example::", 1)[1]
    parsed = config.parse_config(yaml.safe_load(example))
    assert parsed.site is not None and parsed.site.parents[0].nodes[0].name == "fra-parent-1"


def test_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"domains\[0\]\.origins\[0\]\.url: not an absolute"):
        config.parse_config({"domains": [{"name": "d", "hostnames": ["a.test"], "origins": [{"url": "ftp://x"}]}]})
    with pytest.raises(ConfigError, match="unknown field"):
        config.parse_config({"listen": "127.0.0.1:1", "bogus": 1})


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_config(tmp_path / "missing.yaml")
