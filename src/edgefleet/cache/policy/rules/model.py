"""The engine's inputs and outputs: how a request and a response are described, and the decisions.

How: the cache (and ``edgefleet rules test``) describe a request as a :class:`RequestInfo`, ask the
compiled :class:`~edgefleet.cache.policy.rules.compile.Program` for a :class:`RequestOutcome` before the
cache lookup, then for :class:`ResponseOutcome` s before storing (origin phase) and before sending (client
phase). Everything here is plain data: no I/O, no clock (``now`` is an argument), so the same decisions
are made by every worker, by the CLI and by the tests.

Header changes travel as :class:`HeaderOp` lists applied in order by :func:`apply_header_ops`, so the
cache applies them to whatever header list it holds (origin request, stored or relayed response).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from edgefleet.cache.policy.rules.ratelimit import LimiterFactory
from edgefleet.cache.wire.headers import Headers

GeoLookup = Callable[[str], "tuple[str, str] | None"]
"""Client address text -> (ISO country, region), or None when the geo table does not place it."""

SecretValues = Mapping[str, Mapping[str, str]]
"""Secret name -> its ``spec.data``: where token-auth keys are read from."""


@dataclass(frozen=True, slots=True)
class CompileEnv:
    """What a compiled program needs from its surroundings, fixed for one config load.

    ``secrets``: the Secrets token-auth rules name (name -> data); a missing Secret or key makes that key
    unusable (a rule whose keys are all missing denies every request: fail closed). ``geo``: places
    clients for country/region matches (None: such conditions never hold, negated ones always do).
    ``node_count``: nodes in this node's site, dividing ``scope: site`` rate limits. ``random``: a draw in
    [0, 1) for ``bucket.by: random`` and first-time ``split.by: cookie`` (inject a seeded one in tests).
    ``skip_token_auth``: the CLI without access to Secrets: token checks pass but are reported as unknown.
    ``limiters``: where rate-limit actions keep their buckets (a cache worker: the node's shared table, keyed
    by Domain; None: a :class:`~edgefleet.cache.policy.rules.ratelimit.TokenBuckets` per action).
    """

    secrets: SecretValues = field(default_factory=dict)
    geo: GeoLookup | None = None
    node_count: int = 1
    random: Callable[[], float] | None = None
    skip_token_auth: bool = False
    limiters: LimiterFactory | None = None


@dataclass(slots=True)
class RequestInfo:
    """A request as the engine sees it (what the client sent, before any rule).

    ``path`` is the target's path in the canonical form the cache's parser gives it (percent-encoded,
    :func:`edgefleet.cache.wire.targets.canonical_target`: rules then cannot be dodged with ``//``, ``..``
    or ``%61``-style spellings), without the query; ``query`` the raw query string
    without ``?`` ('' when none); ``host`` the Host without port, lowercase; ``scheme`` ``http`` or
    ``https`` (how the client reached this node); ``headers`` the request's header list (names in any
    case); ``client_ip`` the client's address as text (the trusted one: the peer address, or the address a
    trusted fleet hop forwarded). Not frozen (building a frozen dataclass costs a ``__setattr__`` per
    field, per request), but the engine never changes it: treat it as read-only.
    """

    method: str
    scheme: str
    host: str
    path: str
    query: str
    headers: Headers
    client_ip: str


HeaderOpKind = Literal["set", "add", "remove"]


@dataclass(frozen=True, slots=True)
class HeaderOp:
    """``set`` replaces every field of that name with one, ``add`` appends one, ``remove`` deletes all."""

    op: HeaderOpKind
    name: str
    value: str = ""


def apply_header_ops(headers: Headers, ops: list[HeaderOp] | tuple[HeaderOp, ...]) -> Headers:
    """A new header list: ``headers`` with ``ops`` applied in order (names compared case-insensitively)."""
    out = list(headers)
    for op in ops:
        lower = op.name.lower()
        if op.op == "add":
            out.append((op.name, op.value))
            continue
        out = [pair for pair in out if pair[0].lower() != lower]
        if op.op == "set":
            out.append((op.name, op.value))
    return out


@dataclass(frozen=True, slots=True)
class Synthetic:
    """A response the cache sends itself, without a lookup or an origin request (redirect, deny, 403
    token failure, 429, CORS preflight). ``headers`` excludes Content-Length (the cache adds it).
    ``reason`` is a short word for logs and metrics: ``redirect``, ``deny``, ``token``, ``rate-limit``,
    ``cors-preflight``."""

    status: int
    headers: Headers
    body: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class ActionTrace:
    """What one action of a matched rule did, for ``edgefleet rules test``: ``detail`` is readable text, one line
    per header change."""

    action: str
    detail: str


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule's evaluation: matched or not, why not (the first condition that failed), what it did."""

    name: str
    phase: str
    matched: bool
    reason: str
    actions: tuple[ActionTrace, ...] = ()
    skipped: bool = False
    """True when an earlier rule's ``stop`` or a synthetic answer ended evaluation before this rule."""


@dataclass(slots=True, init=False)
class RequestOutcome:
    """The request phase's decision. Unchanged fields keep the request's values.

    - ``respond``: answer with this now (no cache lookup, no origin); the other fields still say which
      ``response_headers`` apply (they are already folded into ``respond.headers``).
    - ``path``/``query``: for the cache key and the origin request (``rewritten`` when a rule changed
      them; token parameters stripped count as a rewrite). The origin path also gets ``origin_path_prefix``
      prepended (an A/B variant's prefix; it is part of the key through ``key_extra``).
    - ``request_headers``: ops for the request sent upstream (origin, peer, parent).
    - ``response_headers``: ops for every response sent to the client (hit or miss), incl. a variant's
      ``Set-Cookie``; :meth:`Program.on_client_response` returns them followed by the clientResponse
      phase's own.
    - ``origin``: fetch misses from this origin URL (an A/B variant) instead of the Domain's origins.
    - ``key_extra``: text to append to the cache key ('' when nothing): variant and ``cache.key``
      additions, in a canonical form (same request -> same text on every node).
    - ``ttl``/``bypass``: cache overrides (``None``/``False``: the Domain's cache policy decides).
    - ``variant``: ``"<split>=<variant>"`` pairs chosen, for logs.
    - ``trace``: per-rule explanation, filled only when asked (``explain=True``).
    - ``static``: True when the outcome depended only on the request's method, scheme, host, path and
      query: no header, cookie, client address or geo was read, no clock (token, rate limit) and no random
      draw or split was involved. The same five values then always give an equal outcome, so a caller may
      memoise it (and share it read-only). False when unsure.
    """

    path: str
    query: str
    rewritten: bool
    respond: Synthetic | None
    request_headers: list[HeaderOp]
    response_headers: list[HeaderOp]
    origin: str | None
    origin_path_prefix: str
    key_extra: str
    ttl: float | None
    bypass: bool
    variant: list[str]
    trace: list[RuleTrace]
    static: bool

    # Written out: it runs per request, and a dataclass's default factories cost more.
    def __init__(
        self,
        path: str,
        query: str,
        rewritten: bool = False,
        respond: Synthetic | None = None,
        request_headers: list[HeaderOp] | None = None,
        response_headers: list[HeaderOp] | None = None,
        origin: str | None = None,
        origin_path_prefix: str = "",
        key_extra: str = "",
        ttl: float | None = None,
        bypass: bool = False,
        variant: list[str] | None = None,
        trace: list[RuleTrace] | None = None,
        static: bool = False,
    ) -> None:
        self.path = path
        self.query = query
        self.rewritten = rewritten
        self.respond = respond
        self.request_headers = [] if request_headers is None else request_headers
        self.response_headers = [] if response_headers is None else response_headers
        self.origin = origin
        self.origin_path_prefix = origin_path_prefix
        self.key_extra = key_extra
        self.ttl = ttl
        self.bypass = bypass
        self.variant = [] if variant is None else variant
        self.trace = [] if trace is None else trace
        self.static = static


@dataclass(slots=True)
class ResponseOutcome:
    """A response phase's decision: header ops (in order) and, in the origin phase, cache overrides."""

    headers: list[HeaderOp] = field(default_factory=list)
    ttl: float | None = None
    bypass: bool = False
    trace: list[RuleTrace] = field(default_factory=list)


class _PlaceTable(Protocol):
    """What :func:`geo_from` needs of a geo table (``edgefleet.geo.GeoDatabase`` and ``GeoTable`` have it)."""

    def lookup(self, address: str) -> tuple[_Place, int] | None: ...


class _Place(Protocol):
    @property
    def country(self) -> str: ...
    @property
    def region(self) -> str: ...


def geo_from(table: _PlaceTable) -> GeoLookup:
    """The engine's geo input from a geo table: ``geo_from(edgefleet.geo.GeoDatabase(path))``.

    A :class:`~edgefleet.geo.GeoDatabase` that is reloaded later is seen by the returned function (it
    calls the database's current table each time).
    """

    def lookup(address: str) -> tuple[str, str] | None:
        found = table.lookup(address)
        return None if found is None else (found[0].country, found[0].region)

    return lookup
