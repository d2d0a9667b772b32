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
module. It sits in a layer of its own below the GSLB and the cache (it moved
here from ``edgefleet.gslb.geo``, which re-exports it) because both place
clients with it: the GSLB to route, the cache's edge rules for their
country/region conditions (:mod:`edgefleet.cache.policy.rules`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import ipaddress
import itertools
import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgefleet.api.common import check_country
from edgefleet.api.meta import check_dns1123_label


class GeoTableError(ValueError):
    """A geo table could not be read; the message names ``file:line`` and what is wrong.

    A ``ValueError``: it is always an operator's bad file (the previous table stays in use).
    ``edgefleet.gslb.errors`` re-exports it.
    """


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


_NOWHERE = (1 << 64) - 1


class _Ranges:
    """Non-overlapping ranges of one address family: start -> (location, prefix length) or None.

    Laid out for lookups in tables of millions of ranges, where memory
    latency, not Python, is the cost: range starts in one contiguous array
    (IPv4: 4 bytes each), the location of each range as an index into the
    table's few distinct locations, and for IPv4 an index by the top 16 bits
    of the address, so a lookup bisects a few neighbouring ranges rather
    than twenty scattered ones.
    """

    __slots__ = ("_buckets", "_values", "bits", "locations", "starts")

    def __init__(self, starts: list[int], values: list[Match | None], bits: int) -> None:
        self.bits = bits
        self.starts: Sequence[int] = array("I", starts) if bits == 32 else starts
        locations: dict[int, int] = {}
        self.locations: list[Location] = []
        packed = array("Q")  # per range: location index << 8 | prefix length; _NOWHERE: no location
        for value in values:
            if value is None:
                packed.append(_NOWHERE)
                continue
            index = locations.get(id(value[0]))
            if index is None:
                index = locations[id(value[0])] = len(self.locations)
                self.locations.append(value[0])
            packed.append(index << 8 | value[1])
        self._values = packed
        self._buckets = None
        if bits == 32:  # index of the range holding each /16's first address
            self._buckets = array("I", (bisect_right(starts, top << 16) - 1 for top in range(65536)))

    def find(self, address: int) -> Match | None:
        """The location and the *scope*: the shortest prefix around ``address`` that a nested,
        more specific prefix does not cut into, so an ECS answer never claims a neighbour's block."""
        starts, buckets = self.starts, self._buckets
        if buckets is not None:
            top = address >> 16
            high_index = buckets[top + 1] + 1 if top < 65535 else len(starts)
            index = bisect_right(starts, address, buckets[top], high_index) - 1
        else:
            index = bisect_right(starts, address) - 1
        value = self._values[index]
        if value == _NOWHERE:
            return None
        low = starts[index]
        high = starts[index + 1] if index + 1 < len(starts) else 1 << self.bits
        length = value & 0xFF
        while length < self.bits:
            size = 1 << (self.bits - length)
            block = address & ~(size - 1)
            if block >= low and block + size <= high:
                break
            length += 1
        return (self.locations[value >> 8], length)

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
        with _no_cyclic_gc():  # millions of acyclic tuples: each collection would scan them all again
            return cls._from_rows(text, source)

    @classmethod
    def _from_rows(cls, text: str, source: str) -> GeoTable:
        v4: list[tuple[int, int, Match, int]] = []
        v6: list[tuple[int, int, Match, int]] = []
        parser = _RowParser()
        for number, fields in _rows(text):
            try:
                version, start, length, location = parser.parse(fields)
            except ValueError as exc:
                raise GeoTableError(f"{source}:{number}: {exc}") from None
            (v4 if version == 4 else v6).append((start, length, (location, length), number))
        ranges = [_Ranges.flatten(_unique(rows, bits, source), bits) for rows, bits in ((v4, 32), (v6, 128))]
        return cls(ranges[0], ranges[1], len(v4) + len(v6), source)

    @property
    def locations(self) -> int:
        """Distinct locations in the table (what routing decisions are shared by)."""
        return len({id(location) for ranges in (self._v4, self._v6) for location in ranges.locations})

    def lookup_wire_v4(self, address: bytes) -> Match | None:
        """:meth:`lookup_wire` for IPv4 (family 1)."""
        return self._v4.find(int.from_bytes(address.ljust(4, b"\0")[:4], "big"))

    def lookup_wire(self, family: int, address: bytes) -> Match | None:
        """:meth:`lookup` for an address in wire form (an ECS option's, zero-padded), without a memo.

        ``family`` is 1 (IPv4) or 2 (IPv6), as in RFC 7871. Why no memo: the
        callers are fresh queries (a memo of millions of subnets would only
        churn) and a bisect over the ranges costs about as much as a probe.
        """
        if family == 1:
            return self._v4.find(int.from_bytes(address.ljust(4, b"\0")[:4], "big"))
        value = int.from_bytes(address.ljust(16, b"\0")[:16], "big")
        if value >> 32 == 0xFFFF:
            match = self._v4.find(value & 0xFFFFFFFF)
            return None if match is None else (match[0], match[1] + 96)
        return self._v6.find(value)

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


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting goes on), as it was before after.

    Loading a table allocates a few objects per line and frees none: the
    collector would run every 700 allocations and rescan the growing heap
    (on a busy 2-core VM, a million-line table: 7.7 s with it, 6.4 s without;
    ten million lines: 128 s with it, 68 s without).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _unique(rows: list[tuple[int, int, Match, int]], bits: int, source: str) -> list[tuple[int, int, Match]]:
    """The prefixes sorted by (start, length); GeoTableError naming both lines if one repeats.

    Sorting finds repeats without a dict of every prefix (a million-line
    table would need hundreds of MB for it); the sort is stable, so the
    earlier line is named first.
    """
    rows.sort(key=lambda row: (row[0], row[1]))
    for before, after in itertools.pairwise(rows):
        if before[:2] == after[:2]:
            network = (
                ipaddress.ip_network((after[0], after[1]))
                if bits == 32
                else ipaddress.IPv6Network((after[0], after[1]))
            )
            raise GeoTableError(f"{source}:{after[3]}: {network} repeats line {before[3]}")
    return [(start, length, match) for start, length, match, _ in rows]


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


class _RowParser:
    """Parses data rows, sharing one :class:`Location` object per distinct location.

    Why share: a real geo table has millions of ranges but far fewer places
    (cities), and routing decisions are made per place: equal locations
    being the same object makes them cheap dict keys and the table small.
    IPv4 prefixes are parsed by hand (``ipaddress`` costs a few µs a line,
    most of the load time of a million-line table); country and region
    checks are memoised (a table repeats a few hundred of each).
    """

    def __init__(self) -> None:
        self._locations: dict[tuple[str, str, str, str], Location] = {}

    def parse(self, fields: list[str]) -> tuple[int, int, int, Location]:
        """(IP version, first address, prefix length, location) of a row; ValueError if it is bad."""
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields ({HEADER}), got {len(fields)}")
        version, start, length = _parse_cidr(fields[0])
        key = (fields[1], fields[2], fields[3], fields[4])
        location = self._locations.get(key)
        if location is None:
            country = _country(fields[1])
            region = _region(fields[2])
            lat = _coordinate(fields[3], "latitude", 90.0)
            lon = _coordinate(fields[4], "longitude", 180.0)
            location = self._locations[key] = Location(country, region, lat, lon)
        return version, start, length, location


def _parse_cidr(cidr: str) -> tuple[int, int, int]:
    """(version, first address, length) of a strict prefix (no host bits set); ValueError if bad."""
    address, slash, length_text = cidr.partition("/")
    value = parse_ipv4(address) if slash and ":" not in address else None
    if value is not None and length_text.isascii() and length_text.isdigit() and len(length_text) <= 2:
        length = int(length_text)
        canonical = length_text == "0" or length_text[0] != "0"
        if length <= 32 and canonical and value & ((1 << (32 - length)) - 1) == 0:
            return 4, value, length
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad prefix {cidr!r}: {exc}") from None
    return network.version, int(network.network_address), network.prefixlen


@functools.lru_cache(maxsize=1024)
def _country(text: str) -> str:
    try:
        return check_country(text)
    except ValueError:
        raise ValueError(f"bad country {text!r}: expected an ISO 3166-1 alpha-2 code such as FR") from None


@functools.lru_cache(maxsize=4096)
def _region(text: str) -> str:
    try:
        check_dns1123_label(text)
    except ValueError:
        raise ValueError(f"bad region {text!r}: expected a lowercase DNS label such as eu-west") from None
    return text


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

    def wire_lookup(self, family: int) -> Callable[[bytes], Match | None]:
        """:meth:`lookup_wire` for one family and the current table (a reload needs a new one)."""
        table = self._table
        if isinstance(table, GeoTable) and family == 1:
            return table.lookup_wire_v4
        return functools.partial(self.lookup_wire, family)

    def lookup_wire(self, family: int, address: bytes) -> Match | None:
        """The location of an address in wire form (ECS family 1 or 2, zero-padded bytes)."""
        table = self._table
        if isinstance(table, GeoTable):
            return table.lookup_wire(family, address)
        if family == 1:
            text = ".".join(str(byte) for byte in address.ljust(4, b"\0")[:4])
        else:
            text = str(ipaddress.IPv6Address(address.ljust(16, b"\0")[:16]))
        return table.lookup(text)

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
