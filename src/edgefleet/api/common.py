"""Field types shared by several kinds: names, timestamps, ports, durations.

How: each type is an ``Annotated`` alias that pairs a Python type with its
pydantic constraints, so a model field reads ``site: Name = Field(...)`` and
the check lives in one place. Values keep their wire form (strings stay
strings): a manifest read back is the manifest that was written.

Why here and not in :mod:`meta`: ``meta`` is the base every kind builds on;
these are conveniences for writing kinds, and grow with them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field

from edgefleet.api.doccolumns import cell as cell  # re-exported: the kind modules format cells with these
from edgefleet.api.doccolumns import percent as percent
from edgefleet.api.doccolumns import short_list as short_list
from edgefleet.api.errors import FieldValueError
from edgefleet.api.meta import Model, check_dns1123_subdomain, check_label_key

T = TypeVar("T", bound=Hashable)
ItemT = TypeVar("ItemT")

MAX_SECONDS = 365 * 24 * 3600
"""Upper bound of every duration field: one year."""


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` and whole seconds: ``2024-05-01T12:00:00Z``.

    ``moment`` must be timezone-aware; a naive datetime is a bug in the caller.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware datetimes")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """Read an RFC 3339 timestamp with an explicit offset (``Z`` or ``+hh:mm``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    if "T" not in text.upper() or moment.tzinfo is None:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp with a UTC offset")
    return moment


def check_timestamp(text: str) -> str:
    parse_timestamp(text)
    return text


Name = Annotated[str, AfterValidator(check_dns1123_subdomain)]
"""The name of another object (a DNS-1123 subdomain, like ``metadata.name``)."""

LabelKey = Annotated[str, AfterValidator(check_label_key)]

Timestamp = Annotated[str, AfterValidator(check_timestamp)]
"""An RFC 3339 timestamp with an offset, kept as written."""

MAX_CA_BUNDLE_BYTES = 64 * 1024
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


def check_ca_bundle(text: str) -> str:
    """PEM certificates only (one or more ``CERTIFICATE`` blocks of valid base64), as a TLS client loads them."""
    blocks = _PEM_BLOCK.findall(text)
    if not blocks or _PEM_BLOCK.sub("", text).strip():
        raise ValueError("must be PEM certificates (-----BEGIN CERTIFICATE----- blocks) and nothing else")
    for block in blocks:
        try:
            base64.b64decode("".join(block.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a CERTIFICATE block is not valid base64") from None
    return text


CaBundle = Annotated[str, Field(max_length=MAX_CA_BUNDLE_BYTES), AfterValidator(check_ca_bundle)]
"""CA certificates (PEM) that a TLS client trusts instead of the system's, e.g. a private CA's."""


def check_https_for_ca_bundle(url: str, ca_bundle: str | None) -> None:
    """A model validator's part: a ``caBundle`` only means something for an https URL."""
    if ca_bundle is not None and not url.startswith("https://"):
        raise FieldValueError(("caBundle",), "is only used with an https:// url")


Port = Annotated[int, Field(ge=1, le=65535)]

Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
"""A duration in whole seconds, 0 to one year."""

PositiveSeconds = Annotated[int, Field(ge=1, le=MAX_SECONDS)]

Count = Annotated[int, Field(ge=0)]

Ratio = Annotated[float, Field(ge=0.0, le=1.0)]

# ISO 3166-1 alpha-2: the officially assigned codes, plus XK (Kosovo), which
# is user-assigned but used by every IP geolocation database.
_ISO_3166_ALPHA2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL
    BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV
    CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD
    GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM
    IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK
    LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW
    MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR
    PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS
    ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY
    UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK
"""
COUNTRY_CODES = frozenset(_ISO_3166_ALPHA2.split())


def check_country(code: str) -> str:
    """An ISO 3166-1 alpha-2 code, case-insensitive on input, uppercase after."""
    upper = code.upper()
    if upper not in COUNTRY_CODES:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'DE')")
    return upper


CountryCode = Annotated[str, AfterValidator(check_country)]


def check_unique(items: list[T], what: str) -> list[T]:
    """Refuse repeated items, blaming the second occurrence by index."""
    seen: set[T] = set()
    for index, item in enumerate(items):
        if item in seen:
            raise FieldValueError((index,), f"duplicate {what} {item!r}")
        seen.add(item)
    return items


def check_unique_by(items: list[ItemT], key: Callable[[ItemT], Hashable], field: str, what: str) -> None:
    """Refuse two items with the same ``key(item)``, blaming ``[index].field``."""
    seen: set[Hashable] = set()
    for index, item in enumerate(items):
        value = key(item)
        if value in seen:
            raise FieldValueError((index, field), f"duplicate {what} {value!r}")
        seen.add(value)


class Condition(Model):
    """A fact about the object, Kubernetes style."""

    type: str = Field(min_length=1, max_length=64, description="What the condition is about, e.g. Available.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether it holds.")
    reason: str = Field(default="", max_length=128, description="Why, as one CamelCase word.")
    message: str = Field(default="", max_length=1024, description="Why, for people.")
    last_transition_time: Timestamp | None = Field(default=None, description="When status last changed.")
