"""Freshness policy of a shared cache (RFC 9111, RFC 5861, RFC 9213), without I/O.

How: the proxy calls :func:`evaluate` once per response it may store. The
answer, a :class:`Decision`, says whether to store it and for how long it is
fresh, how long it may be served stale while a background revalidation runs
(``stale-while-revalidate``) or when the upstream fails (``stale-if-error``),
and which fields to drop from the stored copy. :func:`initial_age` is the
age the response already had on arrival (RFC 9111 §4.2.3) and :func:`timing`
turns both into absolute deadlines, kept in the stored entry, so that the hit
path (:func:`use`) compares ``now`` with one float. No clock is read here:
every time is passed in as POSIX seconds.

Storage rules, checked in this order (``Decision.reason`` names the first that
refuses): a Domain ``bypass`` rule; method other than GET (the proxy turns
HEAD into GET before fetching); a status that is not final (1xx), a 304 (it
validates, it is not stored) or not a status at all (600 and up); with
``must-understand``, a status this cache does not understand (RFC 9111
§5.2.2.3; ``no-store`` is then ignored for one it does); ``no-store``;
unqualified ``private``; a request with ``Authorization`` unless
the response says ``public``, ``s-maxage`` or ``must-revalidate`` (§3.5);
a request with ``Cookie`` unless the Domain's ``cacheCookieRequests`` says so
(the origin may have personalised the answer); any ``Set-Cookie`` (a CDN must never hand one user's cookie to another);
``Vary: *``; and finally no freshness lifetime at all.

Lifetime precedence: a Domain rule's ``ttl`` (it overrides the origin's
freshness, and unqualified ``no-cache``, but never ``no-store``/``private``);
then the first *targeted* field of :attr:`Policy.targeted_headers` that is
present and parses (RFC 9213: ``CDN-Cache-Control`` gives ``s-maxage`` or
``max-age``, ``Surrogate-Control`` its ``max-age``, ``60+30`` read as 60);
then ``s-maxage``, ``max-age``, ``Expires`` minus ``Date``; then, only for the
heuristically cacheable statuses or a ``public`` response, 10% of
``Date - Last-Modified`` capped at one day (when :attr:`Policy.heuristic`)
and :attr:`Policy.default_ttl` (0: not stored). An invalid ``max-age`` or
``Expires`` means "already stale" (lifetime 0, stored but validated before
each use), as RFC 9111 §4.2.1 and §5.3 recommend; so do several ``Expires``
field lines (§4.2.1 allows "the first" or "stale": stale is the safe one).

Statuses (RFC 9111 §3, §4.2.2): any final status may be stored when the origin
makes it explicitly fresh. The heuristically cacheable ones
(:data:`HEURISTICALLY_CACHEABLE`) and the redirects 302/303/307 also take a
Domain rule's ``ttl``, the heuristic and ``defaultTtl``; every other status
(201, 403, 500, 503, ...) is stored only for the lifetime its origin gives
(``s-maxage``, ``max-age``, ``Expires``, a targeted field) or, with
``public``, the Last-Modified heuristic: a Domain's ``ttl`` or ``defaultTtl``
never turns an origin's error into a cached one.

Targeted fields follow RFC 9213: when one is in effect it replaces
``Cache-Control`` *and* ``Expires`` for every decision above, including
``no-store``/``private`` (an origin sending ``Cache-Control: no-store`` and
``CDN-Cache-Control: max-age=60`` wants browsers not to store but the CDN to
cache). Only ``stale-while-revalidate``/``stale-if-error`` fall back to
``Cache-Control`` when the targeted field does not give them.

The caller must pass the response headers with ``Date`` present (the proxy
adds one when the origin did not): ``Expires`` and the heuristic are computed
against ``Date``; without it ``Expires`` yields lifetime 0.

Why client request directives are ignored: see :func:`only_if_cached`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgefleet.cache.wire.headers import (
    HOP_BY_HOP,
    Headers,
    connection_listed,
    get,
    get_all,
    parse_http_date,
    split_list,
)

MAX_DELTA_SECONDS = 2**31
"""RFC 9111 §1.2.2: larger delta-seconds are clamped to this."""

HEURISTIC_LIFETIME_CAP = 86400.0
"""RFC 9111 §4.2.2 heuristic lifetimes are capped at one day."""

HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 451, 501})
"""Statuses that may be stored without explicit freshness (RFC 9110 §15.1)."""

DEFAULT_FRESHNESS_STATUSES = HEURISTICALLY_CACHEABLE | {302, 303, 307}
"""Statuses a Domain rule's ``ttl``, the heuristic and ``defaultTtl`` apply to (302/303/307 only with ``public``)."""

UNDERSTOOD_STATUSES = DEFAULT_FRESHNESS_STATUSES | {
    *range(200, 207),
    *range(300, 306),
    *range(400, 418),
    421,
    422,
    426,
    428,
    429,
    431,
    *range(500, 506),
    511,
}
"""Final statuses of RFC 9110 §15 (and RFC 6585) whose caching rules this cache implements: what
``must-understand`` (RFC 9111 §5.2.2.3) asks about. Other final statuses are stored only without it."""

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = " \t"

Directives = dict[str, str | None]


@dataclass(frozen=True, slots=True)
class Policy:
    """The Domain's caching policy for one request, as resolved by the proxy."""

    ttl_override: float | None
    bypass: bool
    default_ttl: float
    heuristic: bool
    serve_stale_on_error: bool
    cookie_requests: bool = False
    """Whether a response to a request with a Cookie may be stored (the Domain's ``cacheCookieRequests``)."""
    stale_if_error_default: float = 86400
    targeted_headers: tuple[str, ...] = ("cdn-cache-control", "surrogate-control")


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether and how to store one response; ``reason`` says why not when ``storable`` is false."""

    storable: bool
    reason: str
    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    must_revalidate: bool
    no_cache: bool
    strip_fields: frozenset[str]


@dataclass(frozen=True, slots=True)
class Timing:
    """Absolute deadlines (POSIX seconds) of a stored response."""

    fresh_until: float
    stale_while_revalidate_until: float
    stale_if_error_until: float


class Use(enum.Enum):
    """What the hit path may do with a stored response."""

    FRESH = "fresh"
    STALE_REVALIDATE_ASYNC = "stale-revalidate-async"
    MUST_VALIDATE = "must-validate"


def parse_cache_control(value: str | None) -> Directives:
    """Directives of a Cache-Control-like field: lowercase names, unquoted values; malformed parts skipped.

    A directive without argument maps to ``None``. A repeated directive keeps
    its first well-formed occurrence.
    """
    directives: Directives = {}
    if not value:
        return directives
    for item in split_list(value):
        name, has_argument, argument = item.partition("=")
        name = name.rstrip(_OWS).lower()
        if not name or name in directives or not _TCHAR.issuperset(name):
            continue
        if not has_argument:
            directives[name] = None
            continue
        parsed = _directive_argument(argument.lstrip(_OWS))
        if parsed is not None:
            directives[name] = parsed
    return directives


def _directive_argument(argument: str) -> str | None:
    if not argument.startswith('"'):
        return argument if argument and _TCHAR.issuperset(argument) else None
    if len(argument) < 2 or not argument.endswith('"'):
        return None
    return _unquote(argument[1:-1])


def _unquote(inner: str) -> str | None:
    if "\\" not in inner:
        return None if '"' in inner else inner
    unquoted: list[str] = []
    chars = iter(inner)
    for char in chars:
        if char == '"':
            return None
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:  # the closing quote was escaped: unterminated
                return None
            char = escaped
        unquoted.append(char)
    return "".join(unquoted)


def _delta_seconds(value: str | None) -> float | None:
    """Non-negative integer seconds, clamped to 2**31; ``None`` when not a valid delta-seconds."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    if len(value) > 10:
        return float(MAX_DELTA_SECONDS)
    return float(min(int(value), MAX_DELTA_SECONDS))


def evaluate(method: str, status: int, request_headers: Headers, response_headers: Headers, policy: Policy) -> Decision:
    """Whether a shared cache may store this response, and its freshness (see the module docstring)."""
    refusal = _request_refusal(method, status, policy)
    if refusal is not None:
        return _refuse(refusal)
    cache_control = parse_cache_control(get(response_headers, "cache-control"))
    targeted_name, targeted = _targeted(response_headers, policy.targeted_headers)
    controls = cache_control if targeted is None else targeted
    if "must-understand" in controls:
        if status not in UNDERSTOOD_STATUSES:
            return _refuse(f"must-understand: status {status} not understood")
        controls = {name: value for name, value in controls.items() if name != "no-store"}
    refusal = _storage_refusal(controls, request_headers, response_headers, policy)
    if refusal is not None:
        return _refuse(refusal)
    lifetime = _explicit_lifetime(controls, targeted_name, response_headers, policy, status)
    if lifetime is None:
        if status not in HEURISTICALLY_CACHEABLE and "public" not in controls:
            return _refuse(f"status {status} not cacheable without explicit freshness")
        lifetime = _fallback_lifetime(response_headers, policy, status)
        if lifetime is None:
            return _refuse("no freshness lifetime")
    overridden = policy.ttl_override is not None and status in DEFAULT_FRESHNESS_STATUSES
    return _stored(lifetime, controls, targeted, cache_control, response_headers, policy, overridden=overridden)


def _refuse(reason: str) -> Decision:
    return Decision(False, reason, 0.0, 0.0, 0.0, False, False, frozenset())


def _request_refusal(method: str, status: int, policy: Policy) -> str | None:
    if policy.bypass:
        return "bypass rule"
    if method != "GET":
        return f"method {method}"
    if not 200 <= status <= 599 or status == 304:
        return f"status {status} not cacheable"
    return None


def _targeted(response_headers: Headers, names: tuple[str, ...]) -> tuple[str | None, Directives | None]:
    """The first targeted field (RFC 9213) that is present and parses to at least one directive."""
    for name in names:
        directives = parse_cache_control(get(response_headers, name))
        if directives:
            return name.lower(), directives
    return None, None


def _storage_refusal(
    controls: Directives, request_headers: Headers, response_headers: Headers, policy: Policy
) -> str | None:
    if "no-store" in controls:
        return "no-store"
    if "private" in controls and controls["private"] is None:
        return "private"
    if get(request_headers, "authorization") is not None and not (
        "public" in controls or "s-maxage" in controls or "must-revalidate" in controls
    ):
        return "authorization"
    if not policy.cookie_requests and get(request_headers, "cookie") is not None:
        return "cookie"
    if get(response_headers, "set-cookie") is not None:
        return "set-cookie"
    vary = get(response_headers, "vary")
    if vary is not None and "*" in split_list(vary):
        return "vary *"
    return None


def _explicit_lifetime(
    controls: Directives, targeted_name: str | None, response_headers: Headers, policy: Policy, status: int
) -> float | None:
    if policy.ttl_override is not None and status in DEFAULT_FRESHNESS_STATUSES:
        return max(0.0, policy.ttl_override)
    if targeted_name == "surrogate-control":
        max_age = controls.get("max-age")
        return None if max_age is None else _delta_or_stale(max_age.partition("+")[0])
    for directive in ("s-maxage", "max-age"):
        if directive in controls:
            return _delta_or_stale(controls[directive])
    if targeted_name is not None:  # RFC 9213: a targeted field in effect hides Expires too
        return None
    expires = get_all(response_headers, "expires")
    if not expires:
        return None
    if len(expires) > 1:  # RFC 9111 §4.2.1: use the first, or consider the response stale
        return 0.0
    return _expires_lifetime(expires[0], get(response_headers, "date"))


def _delta_or_stale(value: str | None) -> float:
    """An invalid delta means the response is stale (RFC 9111 §4.2.1)."""
    delta = _delta_seconds(value)
    return 0.0 if delta is None else delta


def _expires_lifetime(expires: str, date: str | None) -> float:
    expires_at = parse_http_date(expires)
    date_at = parse_http_date(date)
    if expires_at is None or date_at is None:
        return 0.0
    return max(0.0, expires_at - date_at)


def _fallback_lifetime(response_headers: Headers, policy: Policy, status: int) -> float | None:
    if policy.heuristic:
        last_modified = parse_http_date(get(response_headers, "last-modified"))
        date = parse_http_date(get(response_headers, "date"))
        if last_modified is not None and date is not None and last_modified <= date:
            return min(0.1 * (date - last_modified), HEURISTIC_LIFETIME_CAP)
    if policy.default_ttl > 0 and status in DEFAULT_FRESHNESS_STATUSES:
        return float(policy.default_ttl)
    return None


def _stored(
    lifetime: float,
    controls: Directives,
    targeted: Directives | None,
    cache_control: Directives,
    response_headers: Headers,
    policy: Policy,
    *,
    overridden: bool,
) -> Decision:
    must_revalidate = "must-revalidate" in controls or "proxy-revalidate" in controls or "s-maxage" in controls
    no_cache = "no-cache" in controls and controls["no-cache"] is None and not overridden
    stale_while_revalidate = stale_if_error = 0.0
    if not must_revalidate:
        stale_while_revalidate = _stale_window("stale-while-revalidate", targeted, cache_control) or 0.0
        origin_stale_if_error = _stale_window("stale-if-error", targeted, cache_control)
        if origin_stale_if_error is not None:
            stale_if_error = origin_stale_if_error
        elif policy.serve_stale_on_error:
            stale_if_error = float(policy.stale_if_error_default)
    strip_fields = _strip_fields(controls, response_headers)
    return Decision(True, "", lifetime, stale_while_revalidate, stale_if_error, must_revalidate, no_cache, strip_fields)


def _stale_window(directive: str, targeted: Directives | None, cache_control: Directives) -> float | None:
    for directives in (targeted, cache_control):
        if directives is not None and directive in directives:
            window = _delta_seconds(directives[directive])
            if window is not None:
                return window
    return None


def _strip_fields(controls: Directives, response_headers: Headers) -> frozenset[str]:
    """Hop-by-hop fields, Connection-listed ones and those named by qualified no-cache/private."""
    extra = connection_listed(response_headers)
    for directive in ("no-cache", "private"):
        fields = controls.get(directive)
        if fields:
            extra.update(field.lower() for field in split_list(fields))
    return HOP_BY_HOP | extra if extra else HOP_BY_HOP


def initial_age(response_headers: Headers, request_time: float, response_time: float) -> float:
    """RFC 9111 §4.2.3 ``corrected_initial_age``: the response's age when it arrived at ``response_time``.

    ``Age`` is read as RFC 9111 §5.1 says: of a list (``Age: 10, 20`` or two field lines) the first
    member; one that is not a valid delta-seconds (``-5``, ``1.5``, ``abc``) is ignored (counts as 0);
    a huge one is clamped to 2**31.
    """
    date = parse_http_date(get(response_headers, "date"))
    apparent_age = 0.0 if date is None else max(0.0, response_time - date)
    age_value = _age_value(response_headers)
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


def _age_value(response_headers: Headers) -> float:
    """The ``Age`` field's first member in seconds; 0 when absent or invalid (RFC 9111 §5.1)."""
    values = get_all(response_headers, "age")
    if not values:
        return 0.0
    return _delta_seconds(values[0].partition(",")[0].strip(_OWS)) or 0.0


def timing(decision: Decision, initial_age: float, response_time: float) -> Timing:
    """Absolute deadlines of a stored response (``fresh_until`` = ``response_time - initial_age + lifetime``)."""
    fresh_until = response_time - initial_age + decision.lifetime
    return Timing(
        fresh_until=fresh_until,
        stale_while_revalidate_until=fresh_until + decision.stale_while_revalidate,
        stale_if_error_until=fresh_until + decision.stale_if_error,
    )


def current_age(initial_age: float, response_time: float, now: float) -> int:
    """RFC 9111 §4.2.3 ``current_age`` in whole seconds, for the ``Age`` field; never negative."""
    return max(0, int(initial_age + now - response_time))


def use(timing: Timing, now: float, *, no_cache: bool, invalidated: bool) -> Use:
    """How the hit path may use a stored response at ``now``.

    ``invalidated`` (soft-purged) and ``no_cache`` (unqualified ``no-cache``)
    force validation. Otherwise a response is fresh while ``now < fresh_until``,
    then may be served while revalidating in the background until
    ``stale_while_revalidate_until``, and must be validated after that.
    """
    if no_cache or invalidated:
        return Use.MUST_VALIDATE
    if now < timing.fresh_until:
        return Use.FRESH
    if now < timing.stale_while_revalidate_until:
        return Use.STALE_REVALIDATE_ASYNC
    return Use.MUST_VALIDATE


def may_serve_stale_on_error(timing: Timing, now: float) -> bool:
    """After an upstream failure: may the stored response still be served (``stale-if-error`` window)?"""
    return now < timing.stale_if_error_until


def only_if_cached(request_headers: Headers) -> bool:
    """Whether the client sent ``Cache-Control: only-if-cached`` (answer from cache or 504).

    It is the only request directive we honour. A client's ``no-cache``,
    ``max-age=0``, ``no-store`` or ``max-stale`` are deliberately ignored: a
    CDN exists to protect its origin, and honouring them would let any client
    (or a browser's reload button, at scale) turn every request into an
    origin fetch and bypass the cache at will. nginx and Varnish do the same
    by default; purges are the operator's tool for forcing freshness.
    """
    value = get(request_headers, "cache-control")
    return value is not None and "only-if-cached" in parse_cache_control(value)
