"""Edge rules on the request path: the shell around the pure engine (:mod:`edgefleet.cache.policy.rules`).

How, per config load (:func:`attach`): every Domain's ``rules`` are compiled once into a
:class:`~edgefleet.cache.policy.rules.Program` (``None`` for a Domain without rules) with what the engine
needs from outside: the values of the Secrets token-auth rules name (``secrets`` of the config, rendered by
the agent), the geo table (``geoTable``, read only when a rule matches on country or region, once per
worker and file) and the site's node count (``site.peers``; ``scope: site`` rate limits divide by it).
The program is set on the :class:`~edgefleet.cache.policy.domains.ServedDomain`. Rate limits keep their
buckets in the node's table shared by the workers (:mod:`edgefleet.cache.storage.ratetable`; named by
Domain, rule, action and settings, so unchanged rules find theirs again after a reload); a Proxy built
without one (tests) keeps them per process and carries them over a reload (``Program.adopt_state``).

Per request, only on the node the client reached (:func:`evaluate`): the request phase runs once, before
the cache lookup (on the hit fast path or in :meth:`Proxy.handle`, whichever sees the request first), and
its decision is kept on the request as an :class:`~edgefleet.cache.upstream.ruled.Applied`. Then:

- a synthetic answer (redirect, deny, failed token, 429, CORS preflight) is written at once
  (:func:`send_synthetic`): no lookup, no upstream;
- a rewrite (and an A/B variant's path prefix) replaces the request target, so the cache key and the
  upstream request both use it; request header ops change the request's fields, so peers, parents and the
  origin all receive them;
- ``key_extra`` (variant, ``cache.key`` additions) is appended to the cache key as ``#rules=...``
  (:func:`~edgefleet.cache.upstream.ruled.key_suffix`): after the URL, so a purge by prefix reaches
  every variant, and a purge by URL of a Domain with rules also purges the prefix ``<key>#rules=``;
- ``ttl``/``bypass`` override the path's cache policy; ``origin`` replaces the Domain's origins;
- response header ops (and the clientResponse phase) apply to every answer sent to the client, hits
  included (:func:`~edgefleet.cache.upstream.ruled.client_headers`; on the fast path, :class:`HitHeads`
  memoises the changed head); the originResponse phase runs where a response from the origin is
  received, before it is stored (:func:`~edgefleet.cache.upstream.ruled.origin_response`).

Tiers: only the node facing the client evaluates request rules. It forwards the rewritten target and the
changed fields, plus ``X-Edgefleet-Rules`` (:mod:`edgefleet.cache.upstream.ruled`: key extra, origin, ttl, bypass),
which a site peer or parent accepts only from a trusted fleet address (like every ``X-Edgefleet-*``
field) instead of evaluating the rules again: so every tier computes the same key and none applies a
rewrite twice or counts a rate limit again. The origin phase runs once, on the node that receives the
response from the origin; the client phase only where the response leaves the fleet. A parent site trusts
its child sites' nodes (the agent lists their addresses in ``site.trusted``: :mod:`edgefleet.sync.views`
projects them to the parent's nodes), so a prefix rewrite or a client-hash split is applied once, at the
edge. A request from an address the parent does not know (a standalone cache without ``site.trusted``, a
client) has its ``X-Edgefleet-*`` fields stripped and its rules run as for any client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.cache.config import CacheConfig, DomainConfig
from edgefleet.cache.errors import BadRequest, ConfigError
from edgefleet.cache.policy.domains import DomainTable, ServedDomain, host_name
from edgefleet.cache.policy.rules import (
    CompileEnv,
    GeoLookup,
    HeaderOp,
    Program,
    RequestInfo,
    RequestOutcome,
    Synthetic,
    apply_header_ops,
    compile_rules,
    geo_from,
)
from edgefleet.cache.storage.ratetable import BucketTable
from edgefleet.cache.upstream.ruled import Applied
from edgefleet.cache.wire.headers import Headers
from edgefleet.cache.wire.http1 import Request, header_block, response_head, status_line
from edgefleet.cache.wire.targets import canonical_target
from edgefleet.geo import GeoDatabase

if TYPE_CHECKING:
    from edgefleet.cache.front.replies import Client, Replies

log = logging.getLogger("edgefleet.cache")

HEAD_MEMO_SIZE = 4096
"""Hit heads with response header ops applied, kept per worker (cleared when full)."""
MEMO_SIZE = 4096
"""Static request-phase decisions kept per Domain and worker (cleared when full)."""

__all__ = ["GeoCache", "HitHeads", "attach", "evaluate", "rate_table_warning", "send_synthetic"]


# --- per config load ---------------------------------------------------------------------------------


class GeoCache:
    """The geo table of one worker, read when a rule needs it and again only when its path or file changes.

    The agent renders ``geoTable`` as the GSLB's table shipped to the node (a new file name per table,
    :mod:`edgefleet.edge.geotable`), so a new table is a new path in the config and the SIGHUP that brings
    it loads it: :meth:`preload` runs in a thread before the reload (a table of millions of lines takes
    seconds, which the worker's event loop must not wait), then :meth:`lookup` finds it loaded. Never blind:
    a table that cannot be read (missing, bad, a MaxMind file without the ``maxminddb`` library) keeps the
    one loaded before, with a warning; only a worker that never loaded one has none (the conditions then
    never hold).
    """

    def __init__(self) -> None:
        self._state: tuple[tuple[Path, int], GeoLookup] | None = None  # ((path, mtime), lookup): one reference

    def lookup(self, path: Path | None) -> GeoLookup | None:
        """The lookup for ``path`` (None: the packaged table); the previous one, with a warning, if it cannot be read.

        Relative paths are relative to the working directory (the config file's, for a cache an agent runs).
        """
        if path is None:
            path = Path(str(resources.files("edgefleet").joinpath("data/geo.csv")))
        state = self._state
        try:
            stamp = (path, path.stat().st_mtime_ns)
            if state is None or state[0] != stamp:
                state = self._state = (stamp, geo_from(GeoDatabase(path)))
        except (OSError, ValueError) as exc:  # a bad table: keep the previous one, say so in the log
            if state is None:
                log.warning("edge rules: geo table %s cannot be read (%s); country/region conditions never hold",
                            path, exc)  # fmt: skip
                return None
            log.warning("edge rules: geo table %s cannot be read (%s); keeping %s", path, exc, state[0][0])
        return state[1]

    def preload(self, config: CacheConfig) -> None:
        """Load ``config``'s table if its rules need one (blocking: run it in a thread before the reload)."""
        if needs_geo(config.domains):
            self.lookup(config.geo_table)


def needs_geo(domains: Iterable[DomainConfig]) -> bool:
    """Whether a rule of these Domains matches on country or region (only then is a table read)."""
    return any(
        rule.match.country is not None or rule.match.region is not None for domain in domains for rule in domain.rules
    )


def _needs_geo(domains: DomainTable) -> bool:
    return needs_geo(served.config for served in domains.by_name.values())


def _variant_origins(served: ServedDomain) -> frozenset[str]:
    """The origin URLs the Domain's A/B variants name: the only ones a carried decision may choose."""
    return frozenset(
        variant.origin.rstrip("/")
        for rule in served.config.rules
        for action in rule.actions
        if action.split is not None
        for variant in action.split.variants
        if variant.origin is not None
    )


def attach(
    domains: DomainTable,
    config: CacheConfig,
    previous: DomainTable | None,
    geo: GeoCache,
    rate_table: BucketTable | None = None,
) -> int:
    """Compile every Domain's rules onto ``domains`` (module docstring); how many Domains have rules.

    ``rate_table``: where rate limits keep their buckets (None: in this process).

    ConfigError if a Domain's rules do not compile (the schema should have refused them): the reload is
    refused as a whole and the worker keeps serving with the config it had.
    """
    site = config.site
    env = CompileEnv(
        secrets=config.secrets,
        geo=geo.lookup(config.geo_table) if _needs_geo(domains) else None,
        node_count=max(1, len(site.peers)) if site is not None else 1,
    )
    count = 0
    for served in domains.by_name.values():
        if rate_table is not None:
            env = replace(env, limiters=rate_table.limiters_for(served.name))
        try:
            program = compile_rules(served.config.rules, env)
        except Exception as exc:
            raise ConfigError(f"domain {served.name}: its edge rules do not compile: {exc}") from exc
        if program is None:
            continue
        old = previous.by_name.get(served.name) if previous is not None else None
        program.adopt_state(old.program if old is not None else None)
        served.program = program
        served.rule_origins = _variant_origins(served)
        count += 1
    return count


def rate_table_warning(config: CacheConfig) -> str | None:
    """A warning when the rate limits' ``tableSize`` add up to more keys than the node's table holds."""
    claimed = sum(
        action.rate_limit.table_size
        for domain in config.domains
        for rule in domain.rules
        for action in rule.actions
        if action.rate_limit is not None
    )
    slots = config.rate_limit.slots
    if claimed <= slots:
        return None
    return (
        f"edge rules: the rate limits' tableSize add up to {claimed:,} keys but the node's shared table has "
        f"{slots:,} slots: their busiest keys may evict each other; raise rateLimit.slots in the cache config "
        "(a restart applies it) or lower tableSize"
    )


# --- the request phase -------------------------------------------------------------------------------


def evaluate(domain: ServedDomain, request: Request, client: Client, now: float) -> Applied:
    """Run the request phase for a client's ``request`` and apply it to the request (module docstring).

    The decision is also set as ``request.rules``. A rewrite that makes a target that cannot be canonical
    (a dot segment behind an encoded slash, from the client's own path) becomes a synthetic 400.

    A decision the engine marks ``static`` (it read nothing but method, scheme, host, path and query, and
    no rate limit, token check or random draw took part) is memoised per Domain and reused for the same
    request line, when no response phase could read the request (:func:`_memoisable`).
    """
    program = domain.program
    assert program is not None
    scheme = "http" if client.tls_version is None else "https"
    memo_key = (request.method, scheme, request.host, request.target)
    memo = domain.rule_memo
    found = memo.get(memo_key)
    if found is not None:
        applied, target, request_ops = found
        request.rules = applied
        if target is not None:
            request.target = target
        if request_ops:
            request.headers = apply_header_ops(request.headers, request_ops)
        return applied  # type: ignore[no-any-return]
    host = request.host
    if ":" in host or host[-1:] == ".":
        host = host_name(host)
    path, _, query = request.target.partition("?")
    info = RequestInfo(request.method, scheme, host, path, query, request.headers, request.client or client.peer_ip)
    outcome = program.on_request(info, now)
    applied = request.rules = Applied(
        program, info, outcome, outcome.key_extra, outcome.origin, outcome.ttl, outcome.bypass
    )
    if outcome.respond is None:
        if outcome.rewritten or outcome.origin_path_prefix:
            _rewrite(request, outcome)
        if outcome.request_headers:
            request.headers = apply_header_ops(request.headers, outcome.request_headers)
    if _memoisable(program, outcome):
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        if program.has_client_phase:  # constant (_memoisable): what every answer to this line gets
            applied.client_ops = program.on_client_response(info, outcome, 200, []).headers
        rewritten = request.target if outcome.rewritten or outcome.origin_path_prefix else None
        memo[memo_key] = (applied, rewritten, tuple(outcome.request_headers) if outcome.respond is None else ())
    return applied


def _memoisable(program: Program, outcome: RequestOutcome) -> bool:
    """Whether a decision may serve later requests with the same request line (see :func:`evaluate`).

    Only a ``static`` outcome, and only when no response phase reads the request: the origin phase does
    not run here, and the client phase is a constant list of ops (both would otherwise see the first
    request's fields).
    """
    return outcome.static and not program.has_origin_phase and (not program.has_client_phase or program.client_constant)


def _rewrite(request: Request, outcome: RequestOutcome) -> None:
    """The rewritten target (an A/B variant's prefix included) into the request; a bad one: a synthetic 400."""
    target = outcome.origin_path_prefix + outcome.path + ("?" + outcome.query if outcome.query else "")
    try:
        request.target = canonical_target(target if target.startswith("/") else "/" + target)
    except BadRequest as exc:
        body = f"{exc.status}: an edge rule made an invalid request target: {exc.message}\n".encode()
        outcome.respond = Synthetic(exc.status, [("Content-Type", "text/plain; charset=utf-8")], body, "rewrite")


# --- synthetic answers ------------------------------------------------------------------------------


def send_synthetic(replies: Replies, client: Client, request: Request, answer: Synthetic, started: float) -> None:
    """Write a rule's own answer (redirect, deny, failed token, 429, CORS preflight) and count it."""
    body = answer.body if request.method != "HEAD" else b""
    headers = [
        *answer.headers,
        ("Content-Length", str(len(answer.body))),
        ("X-Cache", f"RULE from {replies.node}"),
    ]
    if not request.keep_alive:
        headers.append(("Connection", "close"))
    client.write(response_head(answer.status, headers) + body)
    replies.stats.rule_answers += 1
    replies.done(request, client, answer.status, len(body), "RULE", started, source="local")


# --- hits on the fast path ---------------------------------------------------------------------------


class HitHeads:
    """Heads of fast-path hits with response header ops applied, memoised by (plain head, ops).

    The ops of most hits are the same objects every time (a memoised decision's list, a program's
    constant ops), so the last ops seen for a head are checked by identity first (list, then items; they
    are held, so their ids cannot be reused); only otherwise is the op list hashed by value. The ops
    must not be changed after they are passed (the engine's lists are not).
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._memo: dict[tuple[bytes, tuple[HeaderOp, ...]], bytes] = {}
        self._last: dict[bytes, tuple[list[HeaderOp], tuple[HeaderOp, ...], bytes]] = {}

    def head(self, plain_head: bytes, status: int, headers: Headers, size: int, ops: list[HeaderOp]) -> bytes:
        """The hit head (without Age and the blank line) of a stored response with ``ops`` applied."""
        last = self._last.get(plain_head)
        if last is not None and (last[0] is ops or _same(last[1], ops)):  # a memoised decision's own list
            return last[2]
        held = tuple(ops)
        memo_key = (plain_head, held)
        found = self._memo.get(memo_key)
        if found is None:
            fields = [
                *apply_header_ops(headers, ops),
                ("Content-Length", str(size)),
                ("X-Cache", f"HIT from {self.node}"),
                ("Server-Timing", 'cache;desc="HIT"'),
            ]
            found = status_line(status) + header_block(fields)
            if len(self._memo) >= HEAD_MEMO_SIZE:
                self._memo.clear()
                self._last.clear()
            self._memo[memo_key] = found
        if len(self._last) >= HEAD_MEMO_SIZE:
            self._last.clear()
        self._last[plain_head] = (ops, held, found)
        return found


def _same(held: tuple[HeaderOp, ...], ops: list[HeaderOp]) -> bool:
    """Whether ``ops`` are the very objects of ``held``, in order."""
    if len(held) != len(ops):
        return False
    for mine, theirs in zip(held, ops, strict=True):  # noqa: SIM110 - no generator frame on the hit path
        if mine is not theirs:
            return False
    return True
