"""What the edge rules decided for one request, as every step after the request phase reads it.

How: the node facing the client runs the request phase once (:mod:`edgefleet.cache.front.edgerules`) and
keeps its decision on the request (``Request.rules``) as an :class:`Applied`. The steps below the front
read it from there: the cache key (:func:`key_suffix`), the upstream request (the chosen origin, and the
tier field :data:`RULES_HEADER` for peers and parents, :func:`tier_fields`), the store
(:func:`origin_response`, the originResponse phase) and every answer's head (:func:`client_headers`).

The tier field: a site peer or a parent asked by that node must compute the same cache key and store
with the same overrides, without running the rules again (a rewrite applied twice, a rate limit counted
twice). So the node sends, besides the rewritten target and the changed request fields, ``X-Edgefleet-Rules``:
compact JSON ``{"k": key extra, "o": origin, "t": ttl, "b": bypass}`` (members left out when empty).
It starts with ``X-Edgefleet-``, so the proxy strips it from everyone but trusted fleet addresses
(:mod:`edgefleet.cache.upstream.tiers`), and :func:`carried` accepts an origin only if one of the Domain's
A/B variants names it (a fleet node cannot be made to fetch from anywhere else). An origin never sees it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from edgefleet.cache.policy.domains import ServedDomain
from edgefleet.cache.policy.rules import HeaderOp, Program, RequestInfo, RequestOutcome, apply_header_ops
from edgefleet.cache.wire.headers import Headers, get
from edgefleet.cache.wire.http1 import Request

log = logging.getLogger("edgefleet.cache")

RULES_HEADER = "X-Edgefleet-Rules"
"""Tier field: the decision of the node facing the client, for the peers and parents it asks."""
RULES_FIELD = RULES_HEADER.lower()
KEY_MARK = "#rules="
"""Between a URL's cache key and the rules' key additions (no canonical request target contains ``#``)."""
MAX_CARRIED_BYTES = 8192
"""A longer tier field is ignored (served as if no rule applied)."""

__all__ = [
    "KEY_MARK",
    "RULES_FIELD",
    "RULES_HEADER",
    "Applied",
    "carried",
    "client_headers",
    "key_suffix",
    "origin_response",
    "tier_fields",
]


@dataclass(slots=True)
class Applied:
    """The rules' decision for one request (``Request.rules``).

    ``program``/``info``/``outcome`` are None for a decision carried from the tier below (the node facing
    the client ran the request phase): then only the origin phase can run here, and no client phase.
    """

    program: Program | None
    info: RequestInfo | None
    outcome: RequestOutcome | None
    key_extra: str = ""
    origin: str | None = None
    ttl: float | None = None
    bypass: bool = False
    client_ops: list[HeaderOp] | None = None
    """The client phase's ops when they cannot depend on the response (``Program.client_constant``), computed
    once for a memoised decision; None: ask the program per answer."""

    def tier_field(self) -> str | None:
        """The :data:`RULES_HEADER` value for peers and parents; None when there is nothing to carry."""
        fields: dict[str, Any] = {}
        if self.key_extra:
            fields["k"] = self.key_extra
        if self.origin is not None:
            fields["o"] = self.origin
        if self.ttl is not None:
            fields["t"] = self.ttl
        if self.bypass:
            fields["b"] = True
        return json.dumps(fields, separators=(",", ":")) if fields else None


def key_suffix(key_extra: str) -> str:
    """What the rules add to a cache key: ``#rules=<extra>`` (``%`` and ``#`` escaped), '' for nothing.

    After the URL, so a purge by URL prefix reaches every variant; ``#`` escaped so that no extra can
    look like a slice key (``...#slice=N``).
    """
    return KEY_MARK + key_extra.replace("%", "%25").replace("#", "%23") if key_extra else ""


def carried(domain: ServedDomain, request: Request) -> Applied:
    """The decision a trusted tier below sent in :data:`RULES_HEADER`, set on the request.

    No field: an empty decision (no rule applied there). A malformed field, or an origin that none of the
    Domain's A/B variants names, is ignored with a warning (its sender, a fleet node, already ran the rules).
    """
    applied = Applied(None, None, None)
    request.rules = applied
    value = get(request.headers, RULES_FIELD)
    if value is None:
        return applied
    try:
        if len(value) > MAX_CARRIED_BYTES:
            raise ValueError(f"longer than {MAX_CARRIED_BYTES} characters")
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        key_extra, origin, ttl, bypass = data.get("k", ""), data.get("o"), data.get("t"), data.get("b", False)
        if not isinstance(key_extra, str) or not isinstance(bypass, bool):
            raise ValueError("k must be a string and b a boolean")
        if origin is not None and (not isinstance(origin, str) or origin.rstrip("/") not in domain.rule_origins):
            raise ValueError(f"origin {origin!r} is not one of the Domain's A/B variants")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl < 2**31):
            raise ValueError("t must be a number of seconds")
    except ValueError as exc:
        log.warning("%s from %s ignored: %s", RULES_HEADER, request.client, exc)
        return applied
    applied.key_extra, applied.origin, applied.bypass = key_extra, origin, bypass
    applied.ttl = None if ttl is None else float(ttl)
    return applied


def tier_fields(request: Request) -> list[tuple[str, str]]:
    """The tier field for a peer or parent (never for an origin), from the request's decision."""
    applied = request.rules
    field = applied.tier_field() if isinstance(applied, Applied) else None
    return [(RULES_HEADER, field)] if field is not None else []


def origin_of(request: Request) -> str | None:
    """The origin URL an A/B variant chose for this request (None: the Domain's origins)."""
    applied = request.rules
    return applied.origin if isinstance(applied, Applied) else None


def client_headers(request: Request, status: int, headers: Headers) -> Headers:
    """The fields of an answer to the client with the rules' response ops applied (``headers`` without)."""
    applied = request.rules
    if applied is None or applied.program is None or not applied.program.has_client_phase:
        return headers
    ops = applied.client_ops
    if ops is None:
        ops = applied.program.on_client_response(applied.info, applied.outcome, status, headers).headers
    return apply_header_ops(headers, ops) if ops else headers


def origin_response(request: Request, status: int, headers: Headers) -> tuple[Headers, float | None, bool]:
    """The originResponse phase, on a response from the origin before it is stored: (fields, ttl, bypass)."""
    applied = request.rules
    if applied is None or applied.program is None or not applied.program.has_origin_phase:
        return headers, None, False
    out = applied.program.on_origin_response(applied.info, applied.outcome, status, headers)
    return (apply_header_ops(headers, out.headers) if out.headers else headers), out.ttl, out.bypass
