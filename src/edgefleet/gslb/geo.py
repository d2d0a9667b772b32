"""Where a client is: the geo table, re-exported from :mod:`edgefleet.geo`.

How and why: the prefix table, its lookups and great-circle distances live in
:mod:`edgefleet.geo` (a layer of its own below the GSLB and the cache), since
the cache's edge rules place clients with the same table as the GSLB (country
and region conditions). This module keeps the GSLB's imports unchanged.
"""

from __future__ import annotations

from edgefleet.geo import (
    EARTH_RADIUS_KM,
    HEADER,
    MEMO_SIZE,
    Address,
    GeoDatabase,
    GeoLookup,
    GeoTable,
    GeoTableError,
    Location,
    Match,
    great_circle_km,
    parse_address,
    parse_ipv4,
    parse_ipv6,
)

__all__ = [
    "EARTH_RADIUS_KM",
    "HEADER",
    "MEMO_SIZE",
    "Address",
    "GeoDatabase",
    "GeoLookup",
    "GeoTable",
    "GeoTableError",
    "Location",
    "Match",
    "great_circle_km",
    "parse_address",
    "parse_ipv4",
    "parse_ipv6",
]
