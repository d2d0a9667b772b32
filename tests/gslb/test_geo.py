"""The geo table: CSV parsing, longest-prefix lookups, reloads, MaxMind adapter, distances."""

from __future__ import annotations

import ipaddress
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.gslb.errors import GeoTableError
from edgefleet.gslb.geo import (
    GeoDatabase,
    GeoTable,
    Location,
    great_circle_km,
    parse_ipv4,
    parse_ipv6,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
PARIS = Location("FR", "eu-west", 48.8566, 2.3522)


@pytest.fixture(scope="module")
def example() -> GeoTable:
    return GeoTable.from_csv(EXAMPLE.read_text(), source=str(EXAMPLE))


@pytest.mark.parametrize(
    ("address", "country", "region", "prefix"),
    [
        ("127.0.1.7", "FR", "eu-west", 24),
        ("127.0.2.7", "NL", "eu-west", 24),
        ("127.0.3.255", "DE", "eu-central", 24),
        ("127.0.0.1", "FR", "eu-west", 24),  # only the /8 covers it; the /24s nested in it bound the scope
        ("127.200.0.1", "FR", "eu-west", 9),
        ("198.51.100.1", "US", "us-east", 24),
        ("203.0.113.200", "JP", "ap-northeast", 24),
        ("192.0.2.0", "DE", "eu-central", 24),
        ("2001:db8:1::53", "FR", "eu-west", 48),
        ("2001:db8:2:ffff::1", "US", "us-east", 48),
        ("2001:db8:ff::1", "FR", "eu-west", 41),  # only the /32 covers it; its nested /48s bound the scope
        ("::1", "FR", "eu-west", 128),
        ("::ffff:127.0.2.9", "NL", "eu-west", 120),  # IPv4-mapped: looked up as IPv4
    ],
)
def test_example_table_places_documentation_addresses(
    example: GeoTable, address: str, country: str, region: str, prefix: int
) -> None:
    found = example.lookup(address)
    assert found is not None
    location, matched = found
    assert (location.country, location.region, matched) == (country, region, prefix)


@pytest.mark.parametrize("address", ["10.0.0.1", "8.8.8.8", "2001:db9::1", "fe80::1", "not-an-ip", "", "1.2.3", "::g"])
def test_unknown_or_unparsable_addresses_have_no_location(example: GeoTable, address: str) -> None:
    assert example.lookup(address) is None


def test_nested_prefixes_split_their_parent() -> None:
    table = GeoTable.from_csv(
        "10.0.0.0/8,FR,eu-west,48.8,2.3\n"
        "10.1.0.0/16,DE,eu-central,50.1,8.6\n"
        "10.1.2.0/24,NL,eu-west,52.3,4.9\n"
        "10.1.2.128/25,GB,eu-west,51.5,-0.1\n"
        "10.255.255.255/32,US,us-east,40.7,-74.0\n"
    )
    expected = {
        "9.255.255.255": None,
        "10.0.0.0": ("FR", 16),
        "10.1.0.0": ("DE", 23),
        "10.1.1.255": ("DE", 23),
        "10.1.2.0": ("NL", 25),
        "10.1.2.127": ("NL", 25),
        "10.1.2.128": ("GB", 25),
        "10.1.2.255": ("GB", 25),
        "10.1.3.0": ("DE", 24),
        "10.2.0.0": ("FR", 15),
        "10.255.255.254": ("FR", 32),
        "10.255.255.255": ("US", 32),
        "11.0.0.0": None,
    }
    for address, want in expected.items():
        found = table.lookup(address)
        assert (None if found is None else (found[0].country, found[1])) == want, address


def test_whole_address_space_and_adjacent_prefixes() -> None:
    table = GeoTable.from_csv(
        "0.0.0.0/0,US,us-east,40.7,-74.0\n128.0.0.0/1,JP,ap-northeast,35.6,139.6\n::/0,FR,eu-west,48.8,2.3\n"
    )
    assert table.lookup("0.0.0.0") == (Location("US", "us-east", 40.7, -74.0), 1)
    assert table.lookup("127.255.255.255") == (Location("US", "us-east", 40.7, -74.0), 1)
    assert table.lookup("128.0.0.0") == (Location("JP", "ap-northeast", 35.6, 139.6), 1)
    assert table.lookup("255.255.255.255") == (Location("JP", "ap-northeast", 35.6, 139.6), 1)
    assert table.lookup("ffff::1") == (Location("FR", "eu-west", 48.8, 2.3), 0)


def test_comments_blank_lines_header_and_case_are_accepted() -> None:
    table = GeoTable.from_csv(
        "# a comment\n\n  CIDR,Country,Region,Lat,Lon  \n 192.0.2.0/24 , fr , eu-west , 48.8 , 2.3 # Paris\n"
    )
    assert table.size == 1
    assert table.lookup("192.0.2.1") == (Location("FR", "eu-west", 48.8, 2.3), 24)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("192.0.2.0/24,FR,eu-west,48.8", "expected 5 fields"),
        ("192.0.2.0/24,FR,eu-west,48.8,2.3,extra", "expected 5 fields"),
        ("192.0.2.0/33,FR,eu-west,48.8,2.3", "bad prefix '192.0.2.0/33'"),
        ("192.0.2.1/24,FR,eu-west,48.8,2.3", "has host bits set"),
        ("paris,FR,eu-west,48.8,2.3", "bad prefix 'paris'"),
        ("192.0.2.0/24,FRA,eu-west,48.8,2.3", "bad country 'FRA'"),
        ("192.0.2.0/24,ZZ,eu-west,48.8,2.3", "bad country 'ZZ'"),
        ("192.0.2.0/24,FR,EU West,48.8,2.3", "bad region 'EU West'"),
        ("192.0.2.0/24,FR,eu-west,north,2.3", "bad latitude 'north': not a number"),
        ("192.0.2.0/24,FR,eu-west,91,2.3", "bad latitude '91': must be between -90 and 90"),
        ("192.0.2.0/24,FR,eu-west,48.8,-180.5", "bad longitude '-180.5': must be between -180 and 180"),
        ("192.0.2.0/24,FR,eu-west,nan,2.3", "bad latitude 'nan'"),
        ("cidr,country,region,lat,lon", "bad prefix 'cidr'"),  # a header only counts before the data
    ],
)
def test_a_bad_line_is_reported_with_file_line_and_reason(line: str, message: str) -> None:
    text = "# header comment\n2001:db8::/32,FR,eu-west,48.8,2.3\n" + line + "\n"
    with pytest.raises(GeoTableError) as caught:
        GeoTable.from_csv(text, source="geo.csv")
    assert str(caught.value).startswith("geo.csv:3: ")
    assert message in str(caught.value)


def test_a_repeated_prefix_names_its_first_line() -> None:
    text = "192.0.2.0/24,FR,eu-west,48.8,2.3\n\n192.0.2.0/24,DE,eu-central,50.1,8.6\n"
    with pytest.raises(GeoTableError, match=r"^t\.csv:3: 192\.0\.2\.0/24 repeats line 1$"):
        GeoTable.from_csv(text, source="t.csv")


# -- longest-prefix match against a brute-force reference -------------------------------------


def _prefix_sets(bits: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Random (network, length) prefixes, many nested, in a small corner of the space."""

    def network(length_and_value: tuple[int, int]) -> tuple[int, int]:
        length, value = length_and_value
        return (value >> (bits - length)) << (bits - length), length

    short = st.integers(min_value=bits - 12, max_value=bits)
    base = (0b1010 << (bits - 4)) if bits == 32 else (0x2001 << 112)
    values = st.integers(min_value=base, max_value=base + (1 << 12) - 1)
    return st.lists(st.tuples(short, values).map(network), max_size=25, unique=True)


def _reference(prefixes: list[tuple[int, int, str]], address: int, bits: int) -> tuple[str, int] | None:
    """Longest match, and as scope the shortest aligned block around the address no more specific prefix cuts."""
    best = None
    for network, length, country in prefixes:
        if address >> (bits - length) == network >> (bits - length) and (best is None or length > best[1]):
            best = (country, length)
    if best is None:
        return None
    country, matched = best
    for scope in range(matched, bits + 1):
        size = 1 << (bits - scope)
        block = address & ~(size - 1)
        cut = any(
            length > matched and network < block + size and network + (1 << (bits - length)) > block
            for network, length, _ in prefixes
        )
        if not cut:
            return country, scope
    return country, bits


@pytest.mark.parametrize("bits", [32, 128])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_lookup_is_the_longest_prefix_match(bits: int, data: st.DataObject) -> None:
    countries = ["FR", "DE", "NL", "US", "JP"]
    prefixes = [(net, length, countries[i % 5]) for i, (net, length) in enumerate(data.draw(_prefix_sets(bits)))]
    maker = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    text = "".join(f"{maker((net, length))},{country},r,0,0\n" for net, length, country in prefixes)
    table = GeoTable.from_csv(text)
    base = (0b1010 << 28) if bits == 32 else (0x2001 << 112)
    probes = data.draw(st.lists(st.integers(min_value=base - 2, max_value=base + (1 << 12) + 2), max_size=30))
    edges = [net + delta for net, length, _ in prefixes for delta in (-1, 0, (1 << (bits - length)) - 1)]
    for address in [*probes, *edges]:
        text_address = str(ipaddress.IPv4Address(address) if bits == 32 else ipaddress.IPv6Address(address))
        found = table.lookup(text_address)
        assert (None if found is None else (found[0].country, found[1])) == _reference(prefixes, address, bits)


# -- address parsing --------------------------------------------------------------------------


def _by_ipaddress(text: str, version: int) -> int | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(address) if address.version == version else None


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_ipv6_parser_reads_every_canonical_and_exploded_form(value: int) -> None:
    address = ipaddress.IPv6Address(value)
    assert parse_ipv6(str(address)) == value
    assert parse_ipv6(address.exploded) == value
    assert parse_ipv6(address.exploded.upper()) == value


@settings(max_examples=500)
@given(st.text(alphabet="0123456789abcdefABCDEFx:.% ", max_size=45))
def test_ipv6_parser_agrees_with_ipaddress_on_junk(text: str) -> None:
    expected = None if "%" in text else _by_ipaddress(text, 6)
    assert parse_ipv6(text) == expected


@settings(max_examples=500)
@given(st.text(alphabet="0123456789.+- x", max_size=18))
def test_ipv4_parser_agrees_with_ipaddress(text: str) -> None:
    assert parse_ipv4(text) == _by_ipaddress(text, 4)


@pytest.mark.parametrize("text", ["1.2.3.4", "0.0.0.0", "255.255.255.255"])
def test_ipv4_parser_reads_valid_addresses(text: str) -> None:
    assert parse_ipv4(text) == int(ipaddress.IPv4Address(text))


@pytest.mark.parametrize("text", ["1.2.3.256", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1..3.4", "\u0661.2.3.4", "+1.2.3.4"])
def test_ipv4_parser_refuses_invalid_addresses(text: str) -> None:
    assert parse_ipv4(text) is None


def test_lookup_results_are_remembered_per_address(example: GeoTable) -> None:
    first = example.lookup("127.0.5.5")
    assert example.lookup("127.0.5.5") is first
    assert first is not None and first[0].country == "US"


# -- the database: file loading and reloads -----------------------------------------------------


def test_database_reload_keeps_the_previous_table_when_the_new_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "geo.csv"
    path.write_text("192.0.2.0/24,FR,eu-west,48.8,2.3\n")
    database = GeoDatabase(path)
    assert database.lookup("192.0.2.1") == (Location("FR", "eu-west", 48.8, 2.3), 24)

    path.write_text("192.0.2.0/24,DE,eu-central,50.1,8.6\n192.0.2.0/99,FR,eu-west,1,1\n")
    message = database.reload()
    assert message is not None
    assert f"{path}:2: bad prefix" in message and "keeping the previous table" in message
    assert database.lookup("192.0.2.1") == (Location("FR", "eu-west", 48.8, 2.3), 24)

    path.write_text("192.0.2.0/24,DE,eu-central,50.1,8.6\n")
    assert database.reload() is None
    assert database.lookup("192.0.2.1") == (Location("DE", "eu-central", 50.1, 8.6), 24)

    path.unlink()
    message = database.reload()
    assert message is not None and "cannot read the geo table" in message
    assert database.lookup("192.0.2.1") == (Location("DE", "eu-central", 50.1, 8.6), 24)


def test_database_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(GeoTableError, match="cannot read the geo table"):
        GeoDatabase(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes(b"# caf\xe9\n")
    with pytest.raises(GeoTableError, match=r"latin1\.csv: cannot read"):
        GeoDatabase(tmp_path / "latin1.csv")


def test_database_without_a_path_places_nobody() -> None:
    database = GeoDatabase(None)
    assert database.lookup("127.0.1.1") is None
    assert database.reload() is None


def test_database_can_wrap_a_table_built_in_memory(example: GeoTable) -> None:
    database = GeoDatabase.from_table(example)
    assert database.table is example
    assert database.lookup("127.0.1.1") == (PARIS, 24)


def test_mmdb_without_the_library_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "maxminddb", None)  # makes the import fail, installed or not
    with pytest.raises(GeoTableError, match=r"GeoLite2\.mmdb: .*needs the maxminddb library \(pip install maxminddb\)"):
        GeoDatabase(tmp_path / "GeoLite2.mmdb")


class _FakeReader:
    def __init__(self, records: dict[str, tuple[Any, int]]) -> None:
        self.records = records

    def get_with_prefix_len(self, address: str) -> tuple[Any, int]:
        if address == "bad":
            raise ValueError("not an address")
        return self.records.get(address, (None, 0))


def test_mmdb_records_become_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paris = {"country": {"iso_code": "FR"}, "continent": {"code": "EU"}, "location": {"latitude": 48.8, "longitude": 2}}
    no_coordinates = {"country": {"iso_code": "FR"}}
    records = {"192.0.2.1": (paris, 24), "192.0.2.2": (no_coordinates, 24)}
    opened: list[str] = []

    def open_database(path: str) -> _FakeReader:
        opened.append(path)
        return _FakeReader(records)

    fake = types.ModuleType("maxminddb")
    fake.open_database = open_database  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "maxminddb", fake)
    database = GeoDatabase(tmp_path / "city.MMDB")
    assert opened == [str(tmp_path / "city.MMDB")]
    assert database.lookup("192.0.2.1") == (Location("FR", "eu", 48.8, 2.0), 24)
    assert database.lookup("192.0.2.2") is None
    assert database.lookup("198.51.100.1") is None
    assert database.lookup("bad") is None


def test_mmdb_that_cannot_be_opened_is_a_geo_table_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def open_database(path: str) -> _FakeReader:
        raise OSError(f"no such file: {path}")

    fake = types.ModuleType("maxminddb")
    fake.open_database = open_database  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "maxminddb", fake)
    with pytest.raises(GeoTableError, match="cannot open MaxMind database: no such file"):
        GeoDatabase(tmp_path / "city.mmdb")


# -- distances -------------------------------------------------------------------------------


def test_great_circle_distances() -> None:
    assert great_circle_km(48.8566, 2.3522, 48.8566, 2.3522) == 0.0
    assert great_circle_km(48.8566, 2.3522, 40.7128, -74.0060) == pytest.approx(5837, rel=0.005)
    assert great_circle_km(48.8566, 2.3522, 52.3676, 4.9041) == pytest.approx(430, rel=0.01)
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)
    assert great_circle_km(90, 0, -90, 0) == pytest.approx(math.pi * 6371.0088)
    assert great_circle_km(10, 179.5, 10, -179.5) == pytest.approx(109.5, rel=0.01)  # across the date line
