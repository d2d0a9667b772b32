"""A worker's geo table (edgerules.GeoCache): a new path loads, a bad file keeps the table it had."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgefleet.cache.config import parse_config
from edgefleet.cache.front.edgerules import GeoCache

CUSTOM = "127.0.77.0/24,AQ,antarctica,-75.0,0.0\n"
CHANGED = "127.0.77.0/24,GB,eu-west,51.5,-0.1\n"


def place(cache: GeoCache, path: Path | None, address: str = "127.0.77.1") -> tuple[str, str] | None:
    lookup = cache.lookup(path)
    assert lookup is not None
    return lookup(address)


def test_no_path_is_the_packaged_table() -> None:
    assert place(GeoCache(), None, "127.0.5.1") == ("US", "us-east")


def test_a_new_path_is_read_and_the_same_one_is_not_read_again(tmp_path: Path) -> None:
    cache = GeoCache()
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(CUSTOM)
    second.write_text(CHANGED)
    assert place(cache, first) == ("AQ", "antarctica")
    assert cache.lookup(first) is cache.lookup(first)
    assert place(cache, second) == ("GB", "eu-west")


def test_a_table_that_cannot_be_read_keeps_the_previous_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = GeoCache()
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(CUSTOM)
    bad.write_text("not,a,table\n")
    assert place(cache, good) == ("AQ", "antarctica")
    with caplog.at_level(logging.WARNING, "edgefleet.cache"):
        assert place(cache, bad) == ("AQ", "antarctica")
        assert place(cache, tmp_path / "missing.csv") == ("AQ", "antarctica")
        assert place(cache, tmp_path / "city.mmdb") == ("AQ", "antarctica")
    assert "keeping" in caplog.text
    assert GeoCache().lookup(bad) is None, "a worker that never had a table has none"


def test_preload_reads_only_what_rules_need(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text(CUSTOM)
    domain = {"name": "d", "hostnames": ["d.test"], "origins": [{"url": "http://127.0.0.1:1"}]}
    by_country = {"match": {"country": {"oneOf": ["AQ"]}}, "actions": [{"deny": {}}]}
    cache = GeoCache()
    cache.preload(parse_config({"geoTable": str(table), "domains": [domain]}))
    assert cache._state is None, "no country/region rule: no table read"
    cache.preload(parse_config({"geoTable": str(table), "domains": [{**domain, "rules": [by_country]}]}))
    assert cache._state is not None and cache._state[0][0] == table
