"""Where a client is: a prefix -> location table, and great-circle distances.

How: :meth:`GeoTable.from_csv` reads lines ``cidr,country,region,lat,lon``
(IPv4 and IPv6; ``#`` comments and blank lines ignored; an optional header
line ``cidr,country,region,lat,lon``) and *flattens* the prefixes of each
address family into sorted, non-overlapping ranges: a /24 inside a /16
splits the /16 into the part before the /24, the /24 itself and the part
after it. A lookup is then one ``bisect`` over the range starts, whatever
the number of prefixes or of distinct prefix lengths, and the range found
carries the location of the *most specific* prefix that covers the address
(a longest-prefix match). With it comes the *scope*: the shortest aligned
prefix around the address that stays inside that range, i.e. that no more
specific prefix cuts into. That is what the DNS server returns as the EDNS
Client Subnet scope (RFC 7871 §7.2.1): the answer holds for every address in
it. (The matched prefix itself would be wrong: for 127.0.0.1 under a /8 that
also holds 127.0.2.0/24 elsewhere, a /8 scope would tell resolvers to reuse
the answer for the /24's clients too.)

Why not one dict per prefix length: it costs one probe per distinct length
(up to 33 for IPv4, 129 for IPv6) and a real table has dozens; bisect is
logarithmic in the number of ranges and runs in C. Addresses are parsed by
hand for IPv4 and plain IPv6 (``ipaddress`` costs 2-4 µs per call, more
than the rest of the lookup), and results are memoised per address string
(a table is immutable, so its memo never goes stale), so a client seen
before costs one dict probe.

:class:`GeoDatabase` is what servers hold: a table loaded from a file that
``reload()`` replaces only when the new file is good, so a bad edit never
leaves the GSLB blind. A path ending in ``.mmdb`` is read with MaxMind's
``maxminddb`` library, imported only then (``pip install maxminddb``; it is
not a dependency of edgefleet). MaxMind has no notion of edgefleet regions:
such a location's region is its continent code in lower case (``eu``,
``na``, ``as``...), which is what a latency matrix must then be keyed by.

Pure apart from reading the one file an operator names; imports no I/O
module (``tests/gslb/test_purity.py``).
"""

from __future__ import annotations

import importlib
import ipaddress
import math
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgefleet.api.common import check_country
from edgefleet.api.meta import check_dns1123_label
from edgefleet.gslb.errors import GeoTableError

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), for great-circle distances."""

MEMO_SIZE = 65536
"""Addresses whose lookup result a table remembers; the memo is emptied when full."""

HEADER = "cidr,country,region,lat,lon"
_HEX = "0123456789abcdefABCDEF"


@dataclass(frozen=True, slots=True)
class Location:
    """A place clients are mapped to: ISO country, edgefleet region, coordinates."""

    country: str
    region: str
    lat: float
    lon: float


Match = tuple[Location, int]
"""A lookup result: the location and the length of the prefix that matched."""


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in km between two points on a sphere the size of the Earth (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


def parse_ipv4(text: str) -> int | None:
    """Dotted-quad IPv4 -> integer; None unless exactly four decimal octets 0-255."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part or len(part) > 3 or not part.isascii() or not part.isdigit():
            return None
        octet = int(part)
        if octet > 255 or (part[0] == "0" and len(part) > 1):
            return None
        value = (value << 8) | octet
    return value


def parse_ipv6(text: str) -> int | None:
    """IPv6 text -> integer; None if it is not a valid IPv6 address (zoned ones included).

    Plain hex forms are parsed here; forms with an embedded IPv4 address
    (``::ffff:192.0.2.1``) are left to :mod:`ipaddress`.
    """
    if "%" in text:  # zoned (link-local with a scope id): not a routable client address
        return None
    if "." in text:
        try:
            return int(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    head, sep, tail = text.partition("::")
    groups = _hex_groups(head)
    rest = _hex_groups(tail) if sep else []
    if groups is None or rest is None or "::" in tail:
        return None
    missing = 8 - len(groups) - len(rest)
    if (sep and missing < 1) or (not sep and missing != 0):
        return None
    value = 0
    for group in groups:
        value = (value << 16) | int(group, 16)
    value <<= 16 * missing
    for group in rest:
        value = (value << 16) | int(group, 16)
    return value


def _hex_groups(text: str) -> list[str] | None:
    if not text:
        return []
    groups = text.split(":")
    for group in groups:
        if not group or len(group) > 4 or group.strip(_HEX):
            return None
    return groups


class _Ranges:
    """Non-overlapping ranges of one address family: start -> (location, prefix length) or None."""

    __slots__ = ("bits", "starts", "values")

    def __init__(self, starts: list[int], values: list[Match | None], bits: int) -> None:
        self.starts = starts
        self.values = values
        self.bits = bits

    def find(self, address: int) -> Match | None:
        """The location and the *scope*: the shortest prefix around ``address`` that a nested,
        more specific prefix does not cut into, so an ECS answer never claims a neighbour's block."""
        index = bisect_right(self.starts, address) - 1
        match = self.values[index]
        if match is None:
            return None
        low = self.starts[index]
        high = self.starts[index + 1] if index + 1 < len(self.starts) else 1 << self.bits
        length = match[1]
        while length < self.bits:
            size = 1 << (self.bits - length)
            block = address & ~(size - 1)
            if block >= low and block + size <= high:
                break
            length += 1
        return (match[0], length)

    @classmethod
    def flatten(cls, prefixes: list[tuple[int, int, Match]], bits: int) -> _Ranges:
        """Prefixes ``(start, length, match)``, disjoint or nested, -> flat ranges."""
        starts: list[int] = [0]
        values: list[Match | None] = [None]

        def mark(position: int, value: Match | None) -> None:
            if starts[-1] == position:
                values[-1] = value
            else:
                starts.append(position)
                values.append(value)

        open_prefixes: list[tuple[int, Match]] = []  # (end, match), innermost last
        for start, length, match in sorted(prefixes, key=lambda item: (item[0], item[1])):
            while open_prefixes and open_prefixes[-1][0] <= start:
                end, _ = open_prefixes.pop()
                mark(end, open_prefixes[-1][1] if open_prefixes else None)
            mark(start, match)
            open_prefixes.append((start + (1 << (bits - length)), match))
        while open_prefixes:
            end, _ = open_prefixes.pop()
            if end < 1 << bits:
                mark(end, open_prefixes[-1][1] if open_prefixes else None)
        return cls(starts, values, bits)


class GeoLookup(Protocol):
    """Anything that places addresses: a :class:`GeoTable` or a MaxMind database."""

    def lookup(self, address: str) -> Match | None: ...


class GeoTable:
    """An immutable prefix -> location table (longest-prefix match), IPv4 and IPv6."""

    def __init__(self, v4: _Ranges, v6: _Ranges, size: int, source: str) -> None:
        self._v4 = v4
        self._v6 = v6
        self._memo: dict[str, Match | None] = {}
        self.size = size
        self.source = source

    @classmethod
    def empty(cls, source: str = "<empty>") -> GeoTable:
        """A table that places nobody."""
        return cls(_Ranges([0], [None], 32), _Ranges([0], [None], 128), 0, source)

    @classmethod
    def from_csv(cls, text: str, source: str = "<geo>") -> GeoTable:
        """Read ``cidr,country,region,lat,lon`` lines; raises GeoTableError naming ``source:line``."""
        v4: list[tuple[int, int, Match]] = []
        v6: list[tuple[int, int, Match]] = []
        first_line: dict[tuple[int, int, int], int] = {}
        for number, fields in _rows(text):
            try:
                network, location = _parse_row(fields)
            except ValueError as exc:
                raise GeoTableError(f"{source}:{number}: {exc}") from None
            key = (network.version, int(network.network_address), network.prefixlen)
            if key in first_line:
                raise GeoTableError(f"{source}:{number}: {network} repeats line {first_line[key]}")
            first_line[key] = number
            entry = (int(network.network_address), network.prefixlen, (location, network.prefixlen))
            (v4 if network.version == 4 else v6).append(entry)
        return cls(_Ranges.flatten(v4, 32), _Ranges.flatten(v6, 128), len(first_line), source)

    def lookup(self, address: str) -> Match | None:
        """The location of ``address`` and its ECS scope (see the module docstring); None if unknown.

        An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is looked up as IPv4.
        """
        try:
            return self._memo[address]
        except KeyError:
            pass
        found = self._find(address)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[address] = found
        return found

    def _find(self, address: str) -> Match | None:
        if ":" not in address:
            value = parse_ipv4(address)
            return None if value is None else self._v4.find(value)
        value = parse_ipv6(address)
        if value is None:
            return None
        if value >> 32 == 0xFFFF:
            match = self._v4.find(value & 0xFFFFFFFF)
            return None if match is None else (match[0], match[1] + 96)
        return self._v6.find(value)


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of the data lines: comments, blanks and the header skipped."""
    seen_data = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [field.strip() for field in line.split(",")]
        if not seen_data and ",".join(fields).lower() == HEADER:
            continue
        seen_data = True
        yield number, fields


def _parse_row(fields: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Location]:
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields ({HEADER}), got {len(fields)}")
    cidr, country, region, lat_text, lon_text = fields
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad prefix {cidr!r}: {exc}") from None
    try:
        country = check_country(country)
    except ValueError:
        raise ValueError(f"bad country {country!r}: expected an ISO 3166-1 alpha-2 code such as FR") from None
    try:
        check_dns1123_label(region)
    except ValueError:
        raise ValueError(f"bad region {region!r}: expected a lowercase DNS label such as eu-west") from None
    lat = _coordinate(lat_text, "latitude", 90.0)
    lon = _coordinate(lon_text, "longitude", 180.0)
    return network, Location(country, region, lat, lon)


def _coordinate(text: str, what: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad {what} {text!r}: not a number") from None
    if not -limit <= value <= limit:
        raise ValueError(f"bad {what} {text!r}: must be between -{limit:g} and {limit:g}")
    return value


class _MaxMindTable:
    """A MaxMind (GeoIP2/GeoLite2 City) database read through the ``maxminddb`` library."""

    def __init__(self, path: Path) -> None:
        try:
            # Imported only for .mmdb files: an optional dependency (and untyped, hence import_module).
            maxminddb = importlib.import_module("maxminddb")
        except ImportError:
            raise GeoTableError(
                f"{path}: reading MaxMind .mmdb files needs the maxminddb library (pip install maxminddb)"
            ) from None
        try:
            self._reader: Any = maxminddb.open_database(str(path))
        except (OSError, ValueError) as exc:
            raise GeoTableError(f"{path}: cannot open MaxMind database: {exc}") from None
        self._memo: dict[str, Match | None] = {}
        self.source = str(path)

    def lookup(self, address: str) -> Match | None:
        try:
            return self._memo[address]
        except KeyError:
            pass
        try:
            record, prefix_length = self._reader.get_with_prefix_len(address)
        except ValueError:
            record, prefix_length = None, 0
        found = _maxmind_location(record, int(prefix_length))
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[address] = found
        return found


def _maxmind_location(record: object, prefix_length: int) -> Match | None:
    """A City record -> Location; None without country or coordinates."""
    if not isinstance(record, dict):
        return None
    country = (record.get("country") or record.get("registered_country") or {}).get("iso_code")
    continent = (record.get("continent") or {}).get("code")
    coordinates = record.get("location") or {}
    lat, lon = coordinates.get("latitude"), coordinates.get("longitude")
    if not isinstance(country, str) or not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    region = continent.lower() if isinstance(continent, str) else "unknown"
    return Location(country.upper(), region, float(lat), float(lon)), prefix_length


class GeoDatabase:
    """The geo table a server uses: loaded from ``path`` (CSV or ``.mmdb``), reloadable.

    ``GeoDatabase(None)`` places nobody (every client gets the policies'
    unknown-location fallback). The constructor raises GeoTableError when
    the file is bad: at start-up an operator must know; afterwards
    :meth:`reload` only reports.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._table: GeoLookup = GeoTable.empty() if self.path is None else _load(self.path)

    @classmethod
    def from_table(cls, table: GeoTable) -> GeoDatabase:
        """A database around a table built in memory (tests, the route CLI)."""
        database = cls(None)
        database._table = table
        return database

    @property
    def table(self) -> GeoLookup:
        """The table in use; a successful reload replaces it (callers may compare identities)."""
        return self._table

    def lookup(self, address: str) -> Match | None:
        """See :meth:`GeoTable.lookup`."""
        return self._table.lookup(address)

    def reload(self) -> str | None:
        """Read the file again; on error keep the current table and return the message."""
        if self.path is None:
            return None
        try:
            self._table = _load(self.path)
        except GeoTableError as exc:
            return f"{exc}; keeping the previous table"
        return None


def _load(path: Path) -> GeoLookup:
    if path.suffix.lower() == ".mmdb":
        return _MaxMindTable(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GeoTableError(f"{path}: cannot read the geo table: {exc}") from None
    return GeoTable.from_csv(text, source=str(path))


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``a.b.c.d``, ``a.b.c.d:port``, ``v6``, ``[v6]:port``); None if none.

    IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 peer) become IPv4.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
