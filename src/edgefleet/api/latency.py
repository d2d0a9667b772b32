"""Latency figures in status: keys (client networks, ``site/<name>``) and bounded RTT values.

Shared by ``Node.status.latency`` (an agent's measurements), ``Site.status.latency``
(the latency controller's median over a site's nodes) and the ProbeTargets kind
(:mod:`edgefleet.api.probetargets`); a module of its own so that reading a Node
does not load the ProbeTargets model.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from edgefleet.api.meta import check_dns1123_subdomain

MAX_RTT_MS = 60_000.0
"""The largest RTT a status may carry, in ms (values above are clamped by agents and the controller)."""
MAX_LATENCY_ENTRIES = 256
"""Security limit: targets one Node or Site status reports an RTT for."""
SITE_PREFIX = "site/"
"""Latency keys of site targets: ``site/<name>``."""


def check_network(text: str) -> str:
    """An IPv4 or IPv6 network in CIDR form, returned normalised (host bits cleared)."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"{text!r} is not a network in CIDR form (e.g. 192.0.2.0/24)")
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not a network in CIDR form (e.g. 192.0.2.0/24)") from None


def check_probe_address(text: str) -> str:
    """A unicast IP address (probes dial addresses, not names: no resolver in the measurement)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text!r} is not a unicast address")
    return str(address)


def check_latency_key(text: str) -> str:
    """A latency key: a network in CIDR form, or ``site/<site name>``."""
    if text.startswith(SITE_PREFIX):
        check_dns1123_subdomain(text[len(SITE_PREFIX) :])
        return text
    return check_network(text)


Network = Annotated[str, AfterValidator(check_network)]
ProbeAddress = Annotated[str, AfterValidator(check_probe_address)]
LatencyKey = Annotated[str, Field(max_length=64), AfterValidator(check_latency_key)]
Milliseconds = Annotated[float, Field(ge=0, le=MAX_RTT_MS)]
