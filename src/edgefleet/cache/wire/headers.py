"""Header lists: case-insensitive lookups, list splitting and HTTP-dates.

How: headers travel through the cache as :data:`Headers`, a list of
``(name, value)`` pairs in the order they arrived, names in their original
case and values as latin-1 decoded ``str``. A list (not a dict) because HTTP
allows a field to repeat (``Set-Cookie``, ``Vary``) and a proxy must forward
fields as it got them. Lookups compare names case-insensitively;
:func:`get` joins repeated fields with ``", "``, which RFC 9110 §5.3 says is
equivalent for list-based fields.

:func:`split_list` splits a comma-separated list (RFC 9110 §5.6.1), keeping
commas inside quoted strings, and drops the empty elements that recipients
must ignore. :func:`parse_http_date` accepts the three date forms of RFC 9110
§5.6.7 (IMF-fixdate, obsolete RFC 850 and asctime) and answers ``None`` for
anything else; :func:`format_http_date` writes IMF-fixdate.

Why no regex and small caches: these run several times per request. Names are
compared by length first, dates repeat (one ``Date`` per second, a handful of
``Last-Modified``) so their parses and formats are memoised in bounded LRU
caches. Nothing here reads a clock: timestamps are passed in.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from functools import lru_cache

Headers = list[tuple[str, str]]
"""Header fields in arrival order: ``(name as received, latin-1 decoded value)``."""

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
"""Fields that describe one connection and are never forwarded or stored (RFC 9110 §7.6.1)."""

_OWS = " \t"
_DAY_NAMES = frozenset({"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"})
_LONG_DAY_NAMES = frozenset({"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"})
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RFC850_CENTURY_PIVOT = 70
"""Two-digit years below this are 20xx, others 19xx (the POSIX convention; RFC 850 dates are obsolete)."""


def get(headers: Headers, name: str) -> str | None:
    """The value of field ``name`` (any case); repeated fields joined with ``", "``; ``None`` if absent."""
    name = name.lower()
    size = len(name)
    found: str | None = None
    for key, value in headers:
        if len(key) == size and key.lower() == name:
            found = value if found is None else f"{found}, {value}"
    return found


def get_all(headers: Headers, name: str) -> list[str]:
    """Every value of field ``name`` (any case), in order."""
    name = name.lower()
    size = len(name)
    return [value for key, value in headers if len(key) == size and key.lower() == name]


def without(headers: Headers, names: Collection[str]) -> Headers:
    """``headers`` minus the fields named in ``names`` (given lowercase)."""
    return [(key, value) for key, value in headers if key.lower() not in names]


def connection_listed(headers: Headers) -> set[str]:
    """Lowercase field names listed in ``Connection``: hop-by-hop for this message (RFC 9110 §7.6.1)."""
    listed: set[str] = set()
    for value in get_all(headers, "connection"):
        listed.update(item.lower() for item in split_list(value))
    return listed


def split_list(value: str) -> list[str]:
    """Elements of a comma-separated list, whitespace-trimmed, empty ones dropped, quoted commas kept."""
    if '"' not in value:
        pieces = value.split(",")
    else:
        pieces = _split_outside_quotes(value)
    return [stripped for stripped in (piece.strip(_OWS) for piece in pieces) if stripped]


def _split_outside_quotes(value: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    in_quotes = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == ",":
            pieces.append(value[start:index])
            start = index + 1
    pieces.append(value[start:])
    return pieces


def parse_http_date(value: str | None) -> float | None:
    """POSIX seconds of an HTTP-date in any of the three RFC 9110 forms; ``None`` if absent or invalid."""
    if not value:
        return None
    return _parse_http_date(value)


@lru_cache(maxsize=1024)
def _parse_http_date(value: str) -> float | None:
    parts = value.split()
    if len(parts) == 6:
        return _parse_imf_fixdate(parts)
    if len(parts) == 4:
        return _parse_rfc850_date(parts)
    if len(parts) == 5:
        return _parse_asctime_date(parts)
    return None


def _parse_imf_fixdate(parts: list[str]) -> float | None:
    # Sun, 06 Nov 1994 08:49:37 GMT
    day_name, day, month, year, clock, zone = parts
    if not day_name.endswith(",") or day_name[:-1] not in _DAY_NAMES or zone != "GMT" or len(year) != 4:
        return None
    return _timestamp(year, month, day, clock)


def _parse_rfc850_date(parts: list[str]) -> float | None:
    # Sunday, 06-Nov-94 08:49:37 GMT
    day_name, date, clock, zone = parts
    if not day_name.endswith(",") or day_name[:-1] not in _LONG_DAY_NAMES or zone != "GMT":
        return None
    date_parts = date.split("-")
    if len(date_parts) != 3 or len(date_parts[2]) != 2 or not _is_digits(date_parts[2]):
        return None
    day, month, short_year = date_parts
    century = 2000 if int(short_year) < _RFC850_CENTURY_PIVOT else 1900
    return _timestamp(str(century + int(short_year)), month, day, clock)


def _parse_asctime_date(parts: list[str]) -> float | None:
    # Sun Nov  6 08:49:37 1994
    day_name, month, day, clock, year = parts
    if day_name not in _DAY_NAMES or len(year) != 4:
        return None
    return _timestamp(year, month, day, clock)


def _timestamp(year: str, month_name: str, day: str, clock: str) -> float | None:
    month = _MONTHS.get(month_name)
    clock_parts = clock.split(":")
    if month is None or len(clock_parts) != 3 or not 1 <= len(day) <= 2:
        return None
    fields = (year, day, *clock_parts)
    if not all(_is_digits(field) for field in fields) or any(len(part) != 2 for part in clock_parts):
        return None
    hour, minute, second = (int(part) for part in clock_parts)
    if second > 60:
        return None
    leap_second = 1 if second == 60 else 0
    try:
        moment = datetime(int(year), month, int(day), hour, minute, second - leap_second, tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp() + leap_second


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def format_http_date(ts: float) -> str:
    """IMF-fixdate of POSIX seconds ``ts`` (fractions dropped): ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return _format_whole_second(int(ts // 1))


@lru_cache(maxsize=64)
def _format_whole_second(second: int) -> str:
    moment = datetime.fromtimestamp(second, UTC)
    return (
        f"{_WEEKDAYS[moment.weekday()]}, {moment.day:02d} {_MONTH_NAMES[moment.month - 1]} {moment.year:04d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
    )
