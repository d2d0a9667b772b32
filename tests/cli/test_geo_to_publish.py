"""``edgefleet cloud --dns-listen off --geo FILE``: the table is still published, so it is read at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.cli.gslb import geo_to_publish
from edgefleet.geo import GeoTableError

TABLE = "127.0.0.0/8,FR,eu-west,48.8566,2.3522\n"


def test_a_cloud_without_its_dns_publishes_its_geo_table(tmp_path: Path) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(TABLE)
    assert geo_to_publish("off", table) == table
    assert geo_to_publish("127.0.0.1:8053", table) is None, "the embedded GSLB publishes it"
    assert geo_to_publish("off", None) is None


def test_a_bad_table_stops_the_start_with_its_line(tmp_path: Path) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(TABLE + "not a line\n")
    with pytest.raises(GeoTableError, match=r"geo\.csv:2: expected 5 fields"):
        geo_to_publish("off", table)
    with pytest.raises(ValueError, match="no such file"):
        geo_to_publish("off", tmp_path / "missing.csv")
