"""The compiled program of one Domain's rules, and the actions it runs.

How: :func:`compile_rules` builds, once per config load, one :class:`_Compiled` per rule (its
conditions from :mod:`.match`, cheapest first, and one closure per action) grouped by phase.
:meth:`Program.on_request` walks the request rules in order: a rule whose conditions all hold runs its
actions in order; an action that answers (redirect, deny, a failed token check, a rate limit, a CORS
preflight) ends the phase, as does ``stop``. Later rules see the path and query as earlier rules
rewrote them. The two response phases work alike on the response status and headers.

Actions write into the :class:`~edgefleet.cache.policy.rules.model.RequestOutcome`; the cache key
additions are collected as ``name=value`` segments and joined into ``key_extra`` at the end (values
percent-encoded, so the text is canonical and has no separators inside values).

Why closures: a matched rule costs one call per action and a rule that fails costs its first failing
condition; nothing is parsed or compiled per request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from edgefleet.api.rules import (
    CacheOverride,
    Cors,
    Deny,
    HeaderOps,
    RateLimit,
    Redirect,
    Rewrite,
    Rule,
    RuleAction,
    Split,
    TokenAuth,
    rule_name,
)
from edgefleet.cache.errors import BadRequest
from edgefleet.cache.policy.rules.context import Context, drop_params
from edgefleet.cache.policy.rules.match import Condition, Guard, bucket_of, compile_match, path_guard
from edgefleet.cache.policy.rules.model import (
    ActionTrace,
    CompileEnv,
    HeaderOp,
    RequestInfo,
    RequestOutcome,
    ResponseOutcome,
    RuleTrace,
    Synthetic,
)
from edgefleet.cache.policy.rules.ratelimit import Limiter, TokenBuckets
from edgefleet.cache.policy.rules.templates import (
    compile_template,
    for_header,
    for_location,
    for_path,
    for_query,
)
from edgefleet.cache.policy.rules.tokens import check_token
from edgefleet.cache.wire.targets import canonical_target


@dataclass(slots=True)
class _State:
    """What actions write while one phase runs: the outcome plus the cache key segments."""

    out: RequestOutcome
    ctx: Context
    now: float
    explain: bool
    key: list[str]


Act = Callable[[_State], str]
"""An action: changes the state; returns a description when ``state.explain`` (else '')."""
RespAct = Callable[[Context, ResponseOutcome, bool], str]


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    phase: str
    conditions: tuple[Condition, ...]
    actions: tuple[tuple[str, Act], ...]
    response_actions: tuple[tuple[str, RespAct], ...]
    stop: bool
    limiters: tuple[tuple[str, Limiter], ...]
    guard: Guard | None
    guard_only: bool
    """The rule's only condition is its exact/prefix path guard: a candidate from the index matches."""
    constant_ops: tuple[HeaderOp, ...] | None
    """For a response-phase rule without conditions whose actions are constant header ops: those ops."""

    def first_failure(self, ctx: Context) -> Condition | None:
        for condition in self.conditions:
            if not condition.test(ctx):
                return condition
        return None


class Program:
    """One Domain's rules, ready to run. Holds the rate limits' buckets (or handles on the node's shared table)."""

    def __init__(self, rules: list[_Compiled], env: CompileEnv) -> None:
        self._env = env
        self._request = tuple(rule for rule in rules if rule.phase == "request")
        self._origin = tuple(rule for rule in rules if rule.phase == "originResponse")
        self._client = tuple(rule for rule in rules if rule.phase == "clientResponse")
        self.has_origin_phase = bool(self._origin)
        self.has_client_phase = bool(self._client) or any(
            kind in ("response_headers", "split", "cors") for rule in self._request for kind, _ in rule.actions
        )
        """False when no client response can get a header from the rules (skip on_client_response)."""
        self._limiters = {f"{rule.name}/{kind}": buckets for rule in rules for kind, buckets in rule.limiters}
        self._index = _PathIndex(self._request)
        self._client_constant = _constant_phase(self._client)
        self.client_constant = self._client_constant is not None
        """True when on_client_response's ops are always ``outcome.response_headers`` plus the same constant
        list (no clientResponse rule reads the request or the response): a caller may cache them per outcome."""

    def adopt_state(self, previous: Program | None) -> None:
        """After a reload: keep the buckets of rate limits whose rule name and settings did not change.

        (Buckets in the node's shared table need nothing: they are found by the same identity again.)
        """
        if previous is None:
            return
        for name, buckets in self._limiters.items():
            old = previous._limiters.get(name)
            if old is not None:
                buckets.adopt(old)

    def on_request(self, request: RequestInfo, now: float, *, explain: bool = False) -> RequestOutcome:
        """The request phase (before the cache lookup); ``now`` in POSIX seconds.

        Without ``explain`` only the rules the path index leaves are tried (a rule whose literal path
        test fails cannot match); ``explain`` walks every rule to say why each did not match. Both give
        the same outcome (tests/cache/test_rules_properties.py).
        """
        if explain:
            return self._walk(request, now)
        candidates = self._index.candidates(request.path)
        if not candidates:
            return RequestOutcome(path=request.path, query=request.query, static=True)
        ctx = Context(request, self._env.geo)
        state = _State(RequestOutcome(path=request.path, query=request.query), ctx, now, False, [])
        out = state.out
        rules = self._request
        position = 0
        while position < len(candidates):
            index = candidates[position]
            position += 1
            rule = rules[index]
            if not rule.guard_only and rule.first_failure(ctx) is not None:
                continue
            path = ctx.path
            for _, act in rule.actions:
                act(state)
                if out.respond is not None:
                    break
            if out.respond is not None or rule.stop:
                break
            if ctx.path != path:  # rewritten: later rules are chosen by the new path
                candidates = [later for later in self._index.candidates(ctx.path) if later > index]
                position = 0
        return _finish(state)

    def _walk(self, request: RequestInfo, now: float) -> RequestOutcome:
        """Every request rule in order, with a trace of each."""
        ctx = Context(request, self._env.geo)
        state = _State(RequestOutcome(path=request.path, query=request.query), ctx, now, True, [])
        out = state.out
        for index, rule in enumerate(self._request):
            failed = rule.first_failure(ctx)
            if failed is not None:
                out.trace.append(RuleTrace(rule.name, rule.phase, False, f"{failed.label}: does not hold"))
                continue
            done = []
            for kind, act in rule.actions:
                done.append(ActionTrace(kind, act(state)))
                if out.respond is not None:
                    break
            out.trace.append(RuleTrace(rule.name, rule.phase, True, _why(rule), tuple(done)))
            if out.respond is not None or rule.stop:
                out.trace += [
                    RuleTrace(r.name, r.phase, False, "not evaluated", skipped=True) for r in self._request[index + 1 :]
                ]
                break
        return _finish(state)

    def on_origin_response(
        self,
        request: RequestInfo,
        outcome: RequestOutcome,
        status: int,
        headers: list[tuple[str, str]],
        *,
        explain: bool = False,
    ) -> ResponseOutcome:
        """Before storing a response from upstream: header ops for the stored copy, ttl/bypass overrides."""
        return self._response(self._origin, request, outcome, status, headers, ResponseOutcome(), explain)

    def on_client_response(
        self,
        request: RequestInfo,
        outcome: RequestOutcome,
        status: int,
        headers: list[tuple[str, str]],
        *,
        explain: bool = False,
    ) -> ResponseOutcome:
        """Before sending: the request phase's response header ops, then this phase's."""
        if self._client_constant is not None and not explain:
            return ResponseOutcome(headers=outcome.response_headers + self._client_constant)
        result = ResponseOutcome(headers=list(outcome.response_headers))
        return self._response(self._client, request, outcome, status, headers, result, explain)

    def _response(
        self,
        rules: tuple[_Compiled, ...],
        request: RequestInfo,
        outcome: RequestOutcome,
        status: int,
        headers: list[tuple[str, str]],
        result: ResponseOutcome,
        explain: bool,
    ) -> ResponseOutcome:
        if not rules:
            return result
        ctx = Context(request, self._env.geo)
        ctx.path, ctx.query, ctx.status, ctx.response = outcome.path, outcome.query, status, headers
        for rule in rules:
            failed = rule.first_failure(ctx)
            if failed is not None:
                if explain:
                    result.trace.append(RuleTrace(rule.name, rule.phase, False, f"{failed.label}: does not hold"))
                continue
            done = tuple(ActionTrace(kind, act(ctx, result, explain)) for kind, act in rule.response_actions)
            if explain:
                result.trace.append(RuleTrace(rule.name, rule.phase, True, _why(rule), done))
            if rule.stop:
                break
        return result


def _finish(state: _State) -> RequestOutcome:
    """The outcome once the phase ended: cache key additions joined, response ops folded into an answer."""
    out = state.out
    out.static = not state.ctx.dynamic
    if state.key:
        out.key_extra = "rules:" + "&".join(state.key)
    if out.respond is not None and out.response_headers:
        respond = out.respond
        out.respond = Synthetic(
            respond.status, _apply(respond.headers, out.response_headers), respond.body, respond.reason
        )
    return out


MEMO_SIZE = 4096
"""Paths whose candidate rules a program remembers (per worker); the memo is emptied when full."""


class _PathIndex:
    """Which request rules can match a path: those without a literal path test, plus those whose test passes.

    Exact paths are one dict lookup. Prefixes are bucketed by their first :data:`HEAD` characters (one
    dict lookup, then ``startswith`` on the few prefixes of that bucket); shorter prefixes are checked
    one by one. Candidates come back in rule order.
    """

    HEAD = 4

    def __init__(self, rules: tuple[_Compiled, ...]) -> None:
        self._always: list[int] = []
        self._exact: dict[str, list[int]] = {}
        self._short: list[tuple[str, int]] = []
        self._by_head: dict[str, list[tuple[str, int]]] = {}
        for index, rule in enumerate(rules):
            if rule.guard is None:
                self._always.append(index)
            elif rule.guard[0] == "exact":
                for path in set(rule.guard[1]):
                    self._exact.setdefault(path, []).append(index)
            elif len(prefix := rule.guard[1][0]) < self.HEAD:
                self._short.append((prefix, index))
            else:
                self._by_head.setdefault(prefix[: self.HEAD], []).append((prefix, index))
        self.empty = not (self._always or self._exact or self._short or self._by_head)
        self._memo: dict[str, list[int]] = {}

    def candidates(self, path: str) -> list[int]:
        """The rules to try for ``path``, in order (a shared list: do not change it)."""
        try:
            return self._memo[path]
        except KeyError:
            pass
        found = self._find(path)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[path] = found
        return found

    def _find(self, path: str) -> list[int]:
        found = list(self._always)
        hit = self._exact.get(path)
        if hit is not None:
            found += hit
        for prefix, index in self._short:
            if path.startswith(prefix):
                found.append(index)
        bucket = self._by_head.get(path[: self.HEAD])
        if bucket is not None:
            found += [index for prefix, index in bucket if path.startswith(prefix)]
        if len(found) > 1:
            found.sort()
        return found


def _constant_phase(rules: tuple[_Compiled, ...]) -> list[HeaderOp] | None:
    """The ops a response phase always gives when all its rules are unconditional constant header ops."""
    ops: list[HeaderOp] = []
    for rule in rules:
        if rule.constant_ops is None:
            return None
        ops += rule.constant_ops
        if rule.stop:
            break
    return ops


def _constant_ops(spec: HeaderOps) -> list[HeaderOp] | None:
    """The ops of ``spec`` when no value is a template with references, else None."""
    from edgefleet.api.rules import TemplateRef, parse_template

    values = [*spec.set.values(), *spec.add.values()]
    if any(isinstance(part, TemplateRef) for value in values for part in parse_template(value)):
        return None
    ops = [HeaderOp("remove", name) for name in spec.remove]
    ops += [HeaderOp("set", name, for_header(value.replace("$$", "$"))) for name, value in spec.set.items()]
    ops += [HeaderOp("add", name, for_header(value.replace("$$", "$"))) for name, value in spec.add.items()]
    return ops


def _why(rule: _Compiled) -> str:
    return "; ".join(condition.label for condition in rule.conditions) or "no conditions (matches every request)"


def _apply(headers: list[tuple[str, str]], ops: list[HeaderOp]) -> list[tuple[str, str]]:
    from edgefleet.cache.policy.rules.model import apply_header_ops

    return apply_header_ops(headers, ops)


def compile_rules(rules: Sequence[Rule], env: CompileEnv | None = None) -> Program | None:
    """The program for ``rules`` (validated by the schema), or None when there are none."""
    if not rules:
        return None
    env = env or CompileEnv()
    draw = env.random or random.random
    compiled = [_compile(rule, index, env, draw) for index, rule in enumerate(rules)]
    return Program(compiled, env)


def _compile(rule: Rule, index: int, env: CompileEnv, draw: Callable[[], float]) -> _Compiled:
    name = rule_name(rule, index)
    actions: list[tuple[str, Act]] = []
    response_actions: list[tuple[str, RespAct]] = []
    limiters: list[tuple[str, Limiter]] = []
    for position, action in enumerate(rule.actions):
        kind = action.kind()
        if rule.phase == "request":
            act, limiter = _request_action(action, env, draw, f"{name}/{position}")
            actions.append((kind, act))
            if limiter is not None:
                limiters.append((f"{position}", limiter))
        else:
            response_actions.append((kind, _response_action(action)))
    conditions = compile_match(rule.match, draw)
    guard = path_guard(rule.match.path)
    constant: tuple[HeaderOp, ...] | None = None
    if rule.phase != "request" and not conditions:
        ops = [
            _constant_ops(action.response_headers) if action.response_headers is not None else None
            for action in rule.actions
        ]
        if all(item is not None for item in ops):
            constant = tuple(op for item in ops if item is not None for op in item)
    return _Compiled(
        name,
        rule.phase,
        conditions,
        tuple(actions),
        tuple(response_actions),
        rule.stop,
        tuple(limiters),
        guard,
        guard is not None and len(conditions) == 1 and _plain_path_test(rule),
        constant,
    )


def _plain_path_test(rule: Rule) -> bool:
    """The path test is one the index decides exactly: exact, prefix or oneOf, case-sensitive, not negated."""
    test = rule.match.path
    return (
        test is not None
        and not test.negate
        and not test.case_insensitive
        and (test.exact is not None or test.prefix is not None or test.one_of is not None)
    )


def _request_action(
    action: RuleAction, env: CompileEnv, draw: Callable[[], float], identity: str
) -> tuple[Act, Limiter | None]:
    if action.redirect is not None:
        return _redirect(action.redirect), None
    if action.rewrite is not None:
        return _rewrite(action.rewrite), None
    if action.request_headers is not None:
        return _header_ops(action.request_headers, towards_origin=True), None
    if action.response_headers is not None:
        return _header_ops(action.response_headers, towards_origin=False), None
    if action.deny is not None:
        return _deny(action.deny), None
    if action.token_auth is not None:
        return _token_auth(action.token_auth, env), None
    if action.split is not None:
        return _split(action.split, draw), None
    if action.rate_limit is not None:
        return _rate_limit(action.rate_limit, env, identity)
    if action.cache is not None:
        return _cache(action.cache), None
    assert action.cors is not None
    return _cors(action.cors), None


# --- request actions -----------------------------------------------------------------------------------


def _redirect(spec: Redirect) -> Act:
    location = compile_template(spec.location)
    status = spec.status

    def act(state: _State) -> str:
        target = for_location(location(state.ctx))
        state.out.respond = Synthetic(
            status, [("Location", target), ("Content-Type", "text/plain; charset=utf-8")], b"", "redirect"
        )
        return f"{status} to {target}" if state.explain else ""

    return act


def _rewrite(spec: Rewrite) -> Act:
    path = compile_template(spec.path) if spec.path is not None else None
    query = compile_template(spec.query) if spec.query is not None else None

    def act(state: _State) -> str:
        ctx = state.ctx
        new_path = ctx.path
        if path is not None:
            try:  # canonical like every request path: a value from the request cannot smuggle '..' or '//'
                new_path = canonical_target(for_path(path(ctx)))
            except BadRequest as exc:
                state.out.respond = Synthetic(
                    400,
                    [("Content-Type", "text/plain; charset=utf-8")],
                    f"bad rewritten path: {exc}\n".encode(),
                    "rewrite",
                )
                return f"400: {exc}" if state.explain else ""
        new_query = for_query(query(ctx)) if query is not None else ctx.query
        ctx.path = state.out.path = new_path
        ctx.query = state.out.query = new_query
        state.out.rewritten = True
        return f"to {new_path}{'?' + new_query if new_query else ''}" if state.explain else ""

    return act


def _ops(spec: HeaderOps) -> list[tuple[str, str, Callable[[Context], str] | None]]:
    ops: list[tuple[str, str, Callable[[Context], str] | None]] = [("remove", name, None) for name in spec.remove]
    ops += [("set", name, compile_template(value)) for name, value in spec.set.items()]
    ops += [("add", name, compile_template(value)) for name, value in spec.add.items()]
    return ops


def _render_ops(ops: list[tuple[str, str, Callable[[Context], str] | None]], ctx: Context) -> list[HeaderOp]:
    return [
        HeaderOp("remove", name) if render is None else HeaderOp(op, name, for_header(render(ctx)))  # type: ignore[arg-type]
        for op, name, render in ops
    ]


def _describe(ops: list[HeaderOp]) -> str:
    return "\n".join(f"{op.op} {op.name}" + (f": {op.value}" if op.op != "remove" else "") for op in ops)


def _header_ops(spec: HeaderOps, *, towards_origin: bool) -> Act:
    ops = _ops(spec)
    constant = _constant_ops(spec)
    if constant is not None and not towards_origin:

        def fixed(state: _State) -> str:
            state.out.response_headers.extend(constant)
            return _describe(constant) if state.explain else ""

        return fixed

    def act(state: _State) -> str:
        rendered = _render_ops(ops, state.ctx)
        (state.out.request_headers if towards_origin else state.out.response_headers).extend(rendered)
        return _describe(rendered) if state.explain else ""

    return act


def _deny(spec: Deny) -> Act:
    answer = Synthetic(spec.status, [("Content-Type", "text/plain; charset=utf-8")], spec.body.encode(), "deny")

    def act(state: _State) -> str:
        state.out.respond = answer
        return f"{spec.status}" if state.explain else ""

    return act


def _token_auth(spec: TokenAuth, env: CompileEnv) -> Act:
    keys = [value for ref in spec.keys if (value := (env.secrets.get(ref.secret) or {}).get(ref.key)) is not None]
    refusal = Synthetic(
        spec.status, [("Content-Type", "text/plain; charset=utf-8")], b"invalid or expired token\n", "token"
    )
    params = frozenset({spec.expires_param, spec.token_param})
    skew, lifetime = float(spec.skew_seconds), spec.max_lifetime

    def act(state: _State) -> str:
        ctx = state.ctx
        ctx.dynamic = True  # reads the clock
        if env.skip_token_auth:
            why = "unknown: the Secret is not readable with these credentials (check skipped)"
        else:
            problem = check_token(
                keys,
                ctx.request.path,
                ctx.param(spec.expires_param),
                ctx.param(spec.token_param),
                state.now,
                skew=skew,
                max_lifetime=lifetime,
            )
            if problem is not None:
                state.out.respond = refusal
                return f"{spec.status}: {problem}" if state.explain else ""
            why = "valid token"
        if spec.strip_params and ctx.query:
            ctx.query = state.out.query = drop_params(ctx.query, params)
            state.out.rewritten = True
        return why if state.explain else ""

    return act


def _split(spec: Split, draw: Callable[[], float]) -> Act:
    variants = [variant for variant in spec.variants if variant.weight > 0]
    total = sum(variant.weight for variant in variants)
    by_name = {variant.name: variant for variant in variants}
    cookie = spec.cookie or f"ef-{spec.name}"
    cookie_tail = f"; Path=/; Max-Age={spec.cookie_max_age}; SameSite=Lax"
    header = (spec.header or "").lower()

    def pick(point: int) -> str:
        for variant in variants:
            point -= variant.weight
            if point < 0:
                return variant.name
        return variants[-1].name

    def act(state: _State) -> str:
        ctx, out = state.ctx, state.out
        ctx.dynamic = True  # a draw, a cookie or a hash of the client
        chosen: str | None = None
        if spec.by == "cookie":
            held = ctx.cookie(cookie)
            if held in by_name:
                chosen = held
            else:
                chosen = pick(int(draw() * total))
                out.response_headers.append(HeaderOp("add", "Set-Cookie", f"{cookie}={chosen}{cookie_tail}"))
        else:
            value = ctx.client() if spec.by == "client" else (ctx.header(header) or "")
            chosen = pick(bucket_of(spec.name, value) * total // 10000)
        variant = by_name[chosen]
        if variant.origin is not None:
            out.origin = variant.origin
        if variant.path_prefix is not None:
            out.origin_path_prefix = variant.path_prefix.rstrip("/")
        if variant.request_header is not None:
            out.request_headers.append(HeaderOp("set", variant.request_header.name, variant.request_header.value))
        out.variant.append(f"{spec.name}={chosen}")
        state.key.append(f"v.{spec.name}={chosen}")
        return f"variant {chosen}" if state.explain else ""

    return act


def _rate_limit(spec: RateLimit, env: CompileEnv, identity: str) -> tuple[Act, Limiter]:
    """``identity`` (``rule/position``) names the action's buckets in a shared table (module ratelimit)."""
    share = max(1, env.node_count) if spec.scope == "site" else 1
    factory = env.limiters or TokenBuckets.factory
    buckets = factory(identity, spec.requests_per_second / share, max(1.0, spec.burst / share), spec.table_size)
    header = (spec.header or "").lower()
    status = spec.status

    def act(state: _State) -> str:
        ctx = state.ctx
        ctx.dynamic = True  # reads the clock and per-client state
        key = ctx.client() if spec.key == "client" else (ctx.header(header) or "")
        wait = buckets.take(key, state.now)
        if wait is None:
            return "within the limit" if state.explain else ""
        state.out.respond = Synthetic(
            status,
            [("Retry-After", str(wait)), ("Content-Type", "text/plain; charset=utf-8")],
            b"rate limit exceeded\n",
            "rate-limit",
        )
        return f"{status}, retry after {wait}s" if state.explain else ""

    return act, buckets


def _cache(spec: CacheOverride) -> Act:
    additions = spec.key

    def act(state: _State) -> str:
        out, ctx = state.out, state.ctx
        if spec.bypass:
            out.bypass, out.ttl = True, None
        elif spec.ttl is not None:
            out.ttl, out.bypass = float(spec.ttl), False
        if additions is not None:
            for name in additions.headers:
                state.key.append(f"h.{name.lower()}={quote(ctx.header(name.lower()) or '', safe='')}")
            for name in additions.cookies:
                state.key.append(f"c.{quote(name, safe='')}={quote(ctx.cookie(name) or '', safe='')}")
            for name in additions.query:
                state.key.append(f"q.{quote(name, safe='')}={quote(ctx.param(name) or '', safe='')}")
        if not state.explain:
            return ""
        return "bypass" if out.bypass else (f"ttl {out.ttl:g}s" if spec.ttl is not None else "key additions")

    return act


def _cors(spec: Cors) -> Act:
    any_origin = "*" in spec.allow_origins
    origins = frozenset(origin.lower() for origin in spec.allow_origins)
    methods = ", ".join(spec.allow_methods)
    allow_headers = ", ".join(spec.allow_headers)
    expose = ", ".join(spec.expose_headers)

    def act(state: _State) -> str:
        ctx, out = state.ctx, state.out
        origin = ctx.header("origin")
        allowed = origin is not None and (any_origin or origin.lower() in origins)
        shown = "*" if any_origin and not spec.allow_credentials else (origin or "")
        if ctx.request.method == "OPTIONS" and origin is not None and ctx.header("access-control-request-method"):
            headers: list[tuple[str, str]] = [("Vary", "Origin")]
            if allowed:
                headers += [
                    ("Access-Control-Allow-Origin", shown),
                    ("Access-Control-Allow-Methods", methods),
                    ("Access-Control-Max-Age", str(spec.max_age)),
                ]
                if allow_headers:
                    headers.append(("Access-Control-Allow-Headers", allow_headers))
                if spec.allow_credentials:
                    headers.append(("Access-Control-Allow-Credentials", "true"))
            out.respond = Synthetic(204, headers, b"", "cors-preflight")
            return f"preflight answered ({'allowed' if allowed else 'origin not allowed'})" if state.explain else ""
        if not allowed:
            return "origin absent or not allowed: no CORS headers" if state.explain else ""
        out.response_headers.append(HeaderOp("set", "Access-Control-Allow-Origin", shown))
        out.response_headers.append(HeaderOp("add", "Vary", "Origin"))
        if expose:
            out.response_headers.append(HeaderOp("set", "Access-Control-Expose-Headers", expose))
        if spec.allow_credentials:
            out.response_headers.append(HeaderOp("set", "Access-Control-Allow-Credentials", "true"))
        return f"allow origin {shown}" if state.explain else ""

    return act


# --- response actions ----------------------------------------------------------------------------------


def _response_action(action: RuleAction) -> RespAct:
    if action.response_headers is not None:
        ops = _ops(action.response_headers)

        def headers(ctx: Context, result: ResponseOutcome, explain: bool) -> str:
            rendered = _render_ops(ops, ctx)
            result.headers.extend(rendered)
            return _describe(rendered) if explain else ""

        return headers
    spec = action.cache
    assert spec is not None

    def cache(ctx: Context, result: ResponseOutcome, explain: bool) -> str:
        if spec.bypass:
            result.bypass, result.ttl = True, None
            return "bypass"
        result.ttl, result.bypass = float(spec.ttl or 0), False
        return f"ttl {spec.ttl}s"

    return cache
