"""Conditions compiled into predicates, cheapest first, each with a readable label.

How: :func:`compile_match` turns a :class:`~edgefleet.api.rules.RuleMatch` into a tuple of
:class:`Condition` sorted by cost: method, scheme, host and path tests by equality or prefix first, then
address lists, headers, query parameters and cookies, geo and buckets, and regular expressions last, so a
rule whose cheap conditions fail never runs its regex. Each condition is a closure over precomputed
values (lowercased sets, compiled patterns, parsed networks). A negated condition holds exactly when the
test fails (``present: false`` is "absent"; a test on an absent field fails, so its negation holds).

Globs: ``*`` is any run of characters but ``/``, ``**`` any run, ``?`` one character; the whole value
must match. They are translated to regular expressions without nested quantifiers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from edgefleet.api.rules import (
    BucketMatch,
    IpMatch,
    NamedMatch,
    RuleMatch,
    StatusMatch,
    TextMatch,
    regex_literal_prefix,
)
from edgefleet.cache.policy.rules.context import Context

Test = Callable[[Context], bool]
ValueTest = Callable[[str | None], bool]

COST_EQUAL = 0
COST_LIST = 1
COST_LOOKUP = 2
COST_HASH = 3
COST_REGEX = 4


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled condition: ``test(ctx)`` is True when it holds; ``label`` says what it is."""

    label: str
    cost: int
    test: Test


def glob_to_regex(glob: str) -> str:
    """A glob as a regular expression (for ``fullmatch``)."""
    out: list[str] = []
    index = 0
    while index < len(glob):
        ch = glob[index]
        if glob.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        out.append("[^/]*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        index += 1
    return "".join(out)


def value_test(match: TextMatch, *, fold: bool = False) -> tuple[ValueTest, int, str]:
    """(test of a value or None for absent, cost, label) for one TextMatch, negation included."""
    kind = match.test()
    test, cost, label = _positive(match, kind, fold=fold or match.case_insensitive)
    if match.negate:
        return (lambda value: not test(value)), cost, f"not {label}"
    return test, cost, label


def _positive(match: TextMatch, kind: str, *, fold: bool) -> tuple[ValueTest, int, str]:
    def norm(text: str) -> str:
        return text.lower() if fold else text

    if kind == "present":
        want = bool(match.present)
        return (lambda value: (value is not None) == want), COST_EQUAL, "present" if want else "absent"
    if kind == "exact":
        exact = norm(match.exact or "")
        return (lambda value: value is not None and norm(value) == exact), COST_EQUAL, f"= {match.exact!r}"
    if kind == "prefix":
        prefix = norm(match.prefix or "")
        return (lambda value: value is not None and norm(value).startswith(prefix)), COST_EQUAL, f"prefix {prefix!r}"
    if kind == "suffix":
        suffix = norm(match.suffix or "")
        return (lambda value: value is not None and norm(value).endswith(suffix)), COST_EQUAL, f"suffix {suffix!r}"
    if kind == "one_of":
        choices = frozenset(norm(choice) for choice in match.one_of or [])
        return (lambda value: value is not None and norm(value) in choices), COST_LIST, f"in {sorted(choices)}"
    flags = re.IGNORECASE if fold else 0
    if kind == "glob":
        compiled = re.compile(glob_to_regex(match.glob or ""), flags | re.DOTALL)
        return (
            (lambda value: value is not None and compiled.fullmatch(value) is not None),
            COST_REGEX,
            (f"glob {match.glob!r}"),
        )
    pattern = re.compile(match.regex or "", flags)
    return (
        (lambda value: value is not None and pattern.search(value) is not None),
        COST_REGEX,
        (f"regex {match.regex!r}"),
    )


def _text(label: str, match: TextMatch, get: Callable[[Context], str | None], *, fold: bool = False) -> Condition:
    test, cost, what = value_test(match, fold=fold)
    return Condition(f"{label} {what}", cost, lambda ctx: test(get(ctx)))


def _path(match: TextMatch) -> Condition:
    """The path condition; a positive regex keeps its match for templates (``${1}``).

    The commonest tests (exact, prefix, oneOf; case-sensitive, not negated) read ``ctx.path`` directly:
    they are the first thing most rules test, on every request.
    """
    fast = _fast_path_test(match)
    if fast is not None:
        return fast
    if match.regex is None:
        return _text("path", match, lambda ctx: ctx.path)
    pattern = re.compile(match.regex, re.IGNORECASE if match.case_insensitive else 0)
    negate = match.negate

    def test(ctx: Context) -> bool:
        found = pattern.search(ctx.path)
        if found is not None and not negate:
            ctx.captures = found
        return (found is not None) != negate

    return Condition(f"path {'not ' if negate else ''}regex {match.regex!r}", COST_REGEX, test)


def _fast_path_test(match: TextMatch) -> Condition | None:
    if match.negate or match.case_insensitive:
        return None
    if match.prefix is not None:
        prefix = match.prefix
        return Condition(f"path prefix {prefix!r}", COST_EQUAL, lambda ctx: ctx.path.startswith(prefix))
    if match.exact is not None:
        exact = match.exact
        return Condition(f"path = {exact!r}", COST_EQUAL, lambda ctx: ctx.path == exact)
    if match.one_of is not None:
        choices = frozenset(match.one_of)
        return Condition(f"path in {sorted(choices)}", COST_LIST, lambda ctx: ctx.path in choices)
    return None


def _named(label: str, items: list[NamedMatch], get: Callable[[Context, str], str | None]) -> list[Condition]:
    out: list[Condition] = []
    for item in items:
        name = item.name.lower() if label == "header" or label == "response header" else item.name
        test, cost, what = value_test(item)
        out.append(Condition(f"{label} {item.name} {what}", max(cost, COST_LOOKUP), _named_test(test, get, name)))
    return out


def _named_test(test: ValueTest, get: Callable[[Context, str], str | None], name: str) -> Test:
    return lambda ctx: test(get(ctx, name))


def _networks(match: IpMatch) -> Condition:
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in match.cidrs]
    v4 = [net for net in networks if net.version == 4]
    v6 = [net for net in networks if net.version == 6]
    negate = match.negate

    def inside(ctx: Context) -> bool:
        try:
            address = ipaddress.ip_address(ctx.client().partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        candidates = v4 if address.version == 4 else v6
        return any(address in net for net in candidates)

    label = f"clientIp {'not ' if negate else ''}in {', '.join(match.cidrs[:4])}{'...' if len(match.cidrs) > 4 else ''}"
    return Condition(label, COST_LIST, (lambda ctx: not inside(ctx)) if negate else inside)


def bucket_of(seed: str, value: str) -> int:
    """A stable bucket 0-9999 for ``value`` (blake2b of seed and value)."""
    digest = hashlib.blake2b(f"{seed}\0{value}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000


def _bucket(match: BucketMatch, draw: Callable[[], float]) -> Condition:
    limit = round(match.percent * 100)
    by, name, seed, negate = match.by, match.name or "", match.seed, match.negate

    def key(ctx: Context) -> str | None:
        if by == "client":
            return ctx.client()
        if by == "cookie":
            return ctx.cookie(name)
        return ctx.header(name.lower())

    def inside(ctx: Context) -> bool:
        if by == "random":
            ctx.dynamic = True
            return int(draw() * 10000) < limit
        value = key(ctx)
        return value is not None and bucket_of(seed, value) < limit

    label = f"bucket {'not ' if negate else ''}{match.percent:g}% by {by}{' ' + name if name else ''}"
    return Condition(label, COST_HASH, (lambda ctx: not inside(ctx)) if negate else inside)


def _status(match: StatusMatch) -> Condition:
    statuses = frozenset(match.one_of)
    low, high, negate = match.min, match.max, match.negate

    def inside(ctx: Context) -> bool:
        return (not statuses or ctx.status in statuses) and low <= ctx.status <= high

    label = f"status {'not ' if negate else ''}{sorted(statuses) if statuses else ''} {low}-{high}".replace("  ", " ")
    return Condition(label, COST_EQUAL, (lambda ctx: not inside(ctx)) if negate else inside)


def compile_match(match: RuleMatch, draw: Callable[[], float]) -> tuple[Condition, ...]:
    """The rule's conditions, cheapest first (a stable sort: equal costs keep the schema's order)."""
    out: list[Condition] = []
    if match.method is not None:
        out.append(_text("method", match.method, lambda ctx: ctx.request.method, fold=True))
    if match.scheme is not None:
        out.append(_text("scheme", match.scheme, lambda ctx: ctx.request.scheme, fold=True))
    if match.host is not None:
        out.append(_text("host", match.host, lambda ctx: ctx.request.host, fold=True))
    if match.path is not None:
        out.append(_path(match.path))
    if match.status is not None:
        out.append(_status(match.status))
    if match.client_ip is not None:
        out.append(_networks(match.client_ip))
    out += _named("header", match.headers, lambda ctx, name: ctx.header(name))
    out += _named("query", match.query, lambda ctx, name: ctx.param(name))
    out += _named("cookie", match.cookies, lambda ctx, name: ctx.cookie(name))
    out += _named("response header", match.response_headers, lambda ctx, name: ctx.response_header(name))
    if match.country is not None:
        out.append(_text("country", match.country, _geo_part(0), fold=True))
    if match.region is not None:
        out.append(_text("region", match.region, _geo_part(1), fold=True))
    if match.bucket is not None:
        out.append(_bucket(match.bucket, draw))
    out.sort(key=lambda condition: condition.cost)
    return tuple(out)


def _geo_part(index: int) -> Callable[[Context], str | None]:
    def get(ctx: Context) -> str | None:
        place = ctx.geo()
        return None if place is None else place[index]

    return get


Guard = tuple[str, tuple[str, ...]]
"""A literal test the path must pass for a rule to match: ``("exact", paths)`` or ``("prefix", (prefix,))``."""


def path_guard(match: TextMatch | None) -> Guard | None:
    """A necessary literal condition on the path implied by ``match``, for the program's path index.

    Exact and oneOf give their values, prefix its prefix, a glob the literal text before its first
    wildcard, a regex anchored with ``^`` its leading literal characters. Negated, case-insensitive and
    other tests give None (the rule is then tried for every path).
    """
    if match is None or match.negate or match.case_insensitive:
        return None
    if match.exact is not None:
        return ("exact", (match.exact,))
    if match.one_of is not None:
        return ("exact", tuple(match.one_of))
    if match.prefix is not None:
        return ("prefix", (match.prefix,))
    if match.glob is not None:
        cut = min((i for i, ch in enumerate(match.glob) if ch in "*?"), default=len(match.glob))
        if cut == len(match.glob):
            return ("exact", (match.glob,))
        return ("prefix", (match.glob[:cut],)) if cut else None
    if match.regex is not None:
        literal = regex_literal_prefix(match.regex)
        return ("prefix", (literal,)) if literal else None
    return None
