"""Edge rules: a Domain's declarative request and response logic, run by every cache that serves it.

How: ``Domain.spec.rules`` is an ordered list of :class:`Rule`. Each rule has a ``phase`` (``request``:
before the cache lookup; ``originResponse``: before a response from upstream is stored;
``clientResponse``: before a response is sent to the client, hits included), a :class:`RuleMatch` (every
listed condition must hold; each one can be negated with ``negate: true``; an empty match matches every
request), a list of :class:`RuleAction` (each names exactly one action) and ``stop`` (no later rule of the
same phase is evaluated once this one matched). The engine that runs them is
:mod:`edgefleet.cache.policy.rules` (pure, compiled once per config load); ``edgefleet rules test`` runs
the same engine in the CLI; ``docs/rules.md`` has worked examples.

Validation here is what the cloud refuses at admission, with the field path
(``spec.rules[2].match.path.regex: ...``): regular expressions are checked
"RE2-style" (:func:`check_safe_regex`: no backreferences, lookaround, conditionals or atomic groups, no
quantifier applied to something that already holds a quantifier, bounded repeat counts and length), so a
hostile pattern cannot make a cache backtrack for seconds; templates (:func:`parse_template`) may only
name known request fields and capture groups the rule's path regex defines; CIDRs must parse; percents
are 0-100; secret references are well-formed names; the whole list has count and size limits
(:data:`MAX_RULES`, :data:`MAX_RULES_BYTES`). Which Secret a reference names is not checked here (the
Secret may be created after the Domain); a cache that lacks it fails closed (every token check fails).

Why a field on Domain rather than a RuleSet kind: rules are versioned, projected to nodes and rolled back
together with the hostnames and origins they are about (one object, one generation, one admission);
a separate kind would need its own projection and a reference that could dangle.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from edgefleet.api.common import COUNTRY_CODES, Name, PositiveSeconds, Seconds
from edgefleet.api.errors import FieldValueError
from edgefleet.api.meta import Model

MAX_RULES = 200
"""Security limit: rules per Domain."""
MAX_RULES_BYTES = 256 * 1024
"""Security limit: the rules of one Domain as compact JSON."""
MAX_RULE_REGEX_LENGTH = 512
"""Security limit: characters in one regular expression of a rule."""
MAX_REPEAT_COUNT = 1000
"""Security limit: the largest bounded repeat (``{m,n}``) a rule's regex may use."""
MAX_TEMPLATE_LENGTH = 2048
MAX_CONDITIONS = 16
"""Security limit: entries in each list of a match (headers, query, cookies, CIDRs, values)."""
MAX_RATE_TABLE = 1_000_000
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
"""An HTTP field name (RFC 9110 token)."""
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_PARAM_NAME = re.compile(r"^[^\s&=#]{1,256}$")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_FORBIDDEN_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "content-length", "host"}
)
"""Fields header actions may not touch: they frame the message or pick the virtual host."""

Phase = Literal["request", "originResponse", "clientResponse"]

sre_parser: Any = importlib.import_module("re._parser")
sre_constants: Any = importlib.import_module("re._constants")
"""The standard library's regex parser: its parse tree is how patterns are checked (no public API has it)."""

# --- regular expressions -------------------------------------------------------------------------------

_REPEATS = frozenset(name for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(sre_constants, name))
_REFUSED = {
    "GROUPREF": "backreferences",
    "GROUPREF_EXISTS": "conditional groups",
    "ASSERT": "lookahead/lookbehind",
    "ASSERT_NOT": "lookahead/lookbehind",
    "ATOMIC_GROUP": "atomic groups",
    "GROUPREF_IGNORE": "backreferences",
}


def check_safe_regex(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` if it is "RE2-style" safe, else raise ValueError saying what to change.

    Refused: more than :data:`MAX_RULE_REGEX_LENGTH` characters, backreferences, lookaround,
    conditionals, atomic groups, a quantifier over a group that holds a quantifier (``(a+)+``, the
    classic catastrophic backtracking shape) and bounded repeats above :data:`MAX_REPEAT_COUNT`.
    """
    if len(pattern) > MAX_RULE_REGEX_LENGTH:
        raise ValueError(f"at most {MAX_RULE_REGEX_LENGTH} characters (got {len(pattern)})")
    try:
        tree = sre_parser.parse(pattern)
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"does not compile: {exc}") from None
    _walk_regex(tree, inside_repeat=False)
    return compiled


def _walk_regex(items: Any, *, inside_repeat: bool) -> bool:
    """Check a parsed pattern; True when it contains a quantifier."""
    found = False
    for op, arg in items:
        name = str(op)
        if name in _REFUSED:
            raise ValueError(f"{_REFUSED[name]} are not allowed (RE2-style patterns only)")
        if name in _REPEATS:
            low, high, sub = arg
            if inside_repeat:
                raise ValueError("nested quantifiers such as (a+)+ are not allowed (they can backtrack for ever)")
            bound = high if high != sre_constants.MAXREPEAT else low
            if bound > MAX_REPEAT_COUNT:
                raise ValueError(f"repeat counts above {MAX_REPEAT_COUNT} are not allowed")
            _walk_regex(sub, inside_repeat=True)
            found = True
        elif name == "SUBPATTERN":
            found |= _walk_regex(arg[-1], inside_repeat=inside_repeat)
        elif name == "BRANCH":
            for branch in arg[1]:
                found |= _walk_regex(branch, inside_repeat=inside_repeat)
    return found


def regex_literal_prefix(pattern: str) -> str:
    """The literal text every match of a ``^``-anchored pattern starts with ('' when none or not anchored)."""
    parsed = sre_parser.parse(pattern)
    items = list(parsed)
    if parsed.state.flags & (re.IGNORECASE | re.MULTILINE):
        return ""
    if not items or items[0] != (sre_constants.AT, sre_constants.AT_BEGINNING):
        return ""
    literal: list[str] = []
    for op, arg in items[1:]:
        if op is not sre_constants.LITERAL:
            break
        literal.append(chr(arg))
    return "".join(literal)


def _regex(pattern: str) -> str:
    check_safe_regex(pattern)
    return pattern


Regex = Annotated[str, AfterValidator(_regex)]


# --- templates -----------------------------------------------------------------------------------------

TEMPLATE_FIELDS = frozenset({"scheme", "host", "path", "query", "uri", "method", "clientIp", "country", "region"})
"""Request fields a template may name: ``${path}``; ``uri`` is the path plus ``?query`` when there is one."""
TEMPLATE_PREFIXES = ("header.", "query.", "cookie.")
"""Families of named request fields: ``${header.X-Name}``, ``${query.page}``, ``${cookie.session}``."""
_TEMPLATE_TOKEN = re.compile(r"\$\{([^}]{1,300})\}|\$\$|\$")


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """``${name}`` in a template: a request field (``path``), a family member (``header.X``) or a group."""

    name: str


TemplatePart = str | TemplateRef


def parse_template(text: str) -> list[TemplatePart]:
    """Split a template into literal text and references; ValueError for a malformed one.

    ``$$`` is a literal ``$``; a ``$`` not followed by ``{...}`` or ``$`` is an error (so a typo never
    ships a literal ``${pth}``). References are checked for shape here; whether a capture group exists
    is checked against the rule by :func:`check_template_refs`.
    """
    parts: list[TemplatePart] = []
    position = 0
    for token in _TEMPLATE_TOKEN.finditer(text):
        if token.start() > position:
            parts.append(text[position : token.start()])
        position = token.end()
        if token.group(0) == "$$":
            parts.append("$")
        elif token.group(1) is None:
            raise ValueError(f"'$' at {token.start()} must start ${{field}} (write $$ for a literal $)")
        else:
            parts.append(TemplateRef(_check_ref(token.group(1))))
    if position < len(text):
        parts.append(text[position:])
    return parts


def _check_ref(name: str) -> str:
    if name in TEMPLATE_FIELDS or name.isdigit():
        return name
    for prefix in TEMPLATE_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name
    if name.isidentifier():
        return name  # a named capture group; checked against the rule
    known = ", ".join(sorted(TEMPLATE_FIELDS))
    raise ValueError(f"${{{name}}} is not a request field ({known}, header.X, query.X, cookie.X) or a group")


def template_groups(parts: list[TemplatePart]) -> set[str]:
    """The capture groups (numbers or names) a parsed template refers to."""
    return {
        part.name
        for part in parts
        if isinstance(part, TemplateRef)
        and part.name not in TEMPLATE_FIELDS
        and not part.name.startswith(TEMPLATE_PREFIXES)
    }


def check_template_refs(text: str, regex: str | None) -> None:
    """ValueError when ``text`` names a capture group the rule's path regex (``regex``) does not define."""
    groups = template_groups(parse_template(text))
    if not groups:
        return
    if regex is None:
        raise ValueError(f"refers to group ${{{sorted(groups)[0]}}} but the rule has no match.path.regex")
    compiled = re.compile(regex)
    for group in sorted(groups):
        if group.isdigit() and not 0 <= int(group) <= compiled.groups:
            raise ValueError(f"refers to group ${{{group}}}; the path regex has {compiled.groups} group(s)")
        if not group.isdigit() and group not in compiled.groupindex:
            raise ValueError(f"refers to group ${{{group}}}, which the path regex does not define")


def _template(text: str) -> str:
    parse_template(text)
    return text


Template = Annotated[str, Field(max_length=MAX_TEMPLATE_LENGTH), AfterValidator(_template)]


# --- matching ------------------------------------------------------------------------------------------


def _header_name(name: str) -> str:
    if not HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not an HTTP field name")
    return name


def _no_controls(value: str) -> str:
    if any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, Field(max_length=8192), AfterValidator(_no_controls)]
ShortText = Annotated[str, Field(max_length=1024), AfterValidator(_no_controls)]


class TextMatch(Model):
    """A condition on one text value: exactly one of exact, prefix, suffix, glob, regex, oneOf, present."""

    exact: ShortText | None = Field(default=None, description="The value equals this.")
    prefix: ShortText | None = Field(default=None, description="The value starts with this.")
    suffix: ShortText | None = Field(default=None, description="The value ends with this.")
    glob: ShortText | None = Field(
        default=None,
        description="Shell-style pattern: * any run of characters except '/', ** any run, ? one character.",
    )
    regex: Regex | None = Field(
        default=None,
        description="RE2-style regular expression searched in the value (anchor with ^ and $); its groups "
        "(path only) feed templates as ${1} or ${name}.",
    )
    one_of: list[ShortText] | None = Field(
        default=None,
        max_length=64,
        description="The value equals one of these (case-insensitive for methods, "
        "schemes, hosts, countries and regions).",
    )
    present: bool | None = Field(
        default=None, description="true: the field is present (any value); false: it is absent."
    )
    case_insensitive: bool = Field(default=False, description="Compare exact/prefix/suffix/glob ignoring case.")
    negate: bool = Field(default=False, description="The condition holds when the test above fails.")

    @model_validator(mode="after")
    def _exactly_one(self) -> TextMatch:
        chosen = [name for name in _TEXT_TESTS if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of exact, prefix, suffix, glob, regex, oneOf, present")
        return self

    def test(self) -> str:
        """The name of the one test that is set (``exact``, ``regex``...)."""
        return next(name for name in _TEXT_TESTS if getattr(self, name) is not None)


_TEXT_TESTS = ("exact", "prefix", "suffix", "glob", "regex", "one_of", "present")


class NamedMatch(TextMatch):
    """A condition on a named header, query parameter or cookie."""

    name: ShortText = Field(min_length=1, description="The header, query parameter or cookie name.")


class IpMatch(Model):
    """The client address is in one of the listed networks."""

    cidrs: list[str] = Field(
        min_length=1,
        max_length=256,
        description="Addresses or CIDR networks, IPv4 or IPv6 (10.0.0.0/8, 2001:db8::/32).",
    )
    negate: bool = Field(default=False, description="Holds when the client is in none of them (an allow list).")

    @field_validator("cidrs")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        for index, cidr in enumerate(cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise FieldValueError((index,), f"{cidr!r} is not an IP address or CIDR network") from None
        return cidrs


class BucketMatch(Model):
    """A share of requests (A/B tests, canaries): by a random draw or a stable hash of the client."""

    percent: float = Field(ge=0, le=100, description="Share of requests that match, 0 to 100.")
    by: Literal["random", "client", "cookie", "header"] = Field(
        default="client",
        description="random: a fresh draw per request; client: a hash of the client address; cookie/header: "
        "a hash of the named cookie or header (absent: the bucket does not match).",
    )
    name: ShortText | None = Field(default=None, description="The cookie or header hashed (by: cookie/header).")
    seed: ShortText = Field(default="", description="Mixed into the hash, so two splits do not pick the same clients.")
    negate: bool = Field(default=False, description="Holds for the other share.")

    @model_validator(mode="after")
    def _name_for_by(self) -> BucketMatch:
        if self.by in ("cookie", "header") and not self.name:
            raise FieldValueError(("name",), f"required with by: {self.by}")
        if self.by not in ("cookie", "header") and self.name:
            raise FieldValueError(("name",), "only used with by: cookie or header")
        return self


class StatusMatch(Model):
    """The response status (response phases only)."""

    one_of: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list, max_length=64, description="Statuses that match."
    )
    min: int = Field(default=100, ge=100, le=599, description="Lowest status that matches.")
    max: int = Field(default=599, ge=100, le=599, description="Highest status that matches.")
    negate: bool = Field(default=False, description="Holds when the status does not match.")


class RuleMatch(Model):
    """Conditions that must all hold; an empty match holds for every request."""

    path: TextMatch | None = Field(default=None, description="The request path (without the query), as sent.")
    method: TextMatch | None = Field(default=None, description="The request method, e.g. {oneOf: [GET, HEAD]}.")
    host: TextMatch | None = Field(default=None, description="The Host header, lowercase, without port.")
    scheme: TextMatch | None = Field(default=None, description="http or https, as the client connected.")
    headers: list[NamedMatch] = Field(default_factory=list, max_length=MAX_CONDITIONS, description="Request headers.")
    query: list[NamedMatch] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Query parameters (first value, decoded)."
    )
    cookies: list[NamedMatch] = Field(default_factory=list, max_length=MAX_CONDITIONS, description="Request cookies.")
    client_ip: IpMatch | None = Field(default=None, description="The client's address.")
    country: TextMatch | None = Field(
        default=None, description="The client's ISO country from the geo table, e.g. {oneOf: [FR, DE]}."
    )
    region: TextMatch | None = Field(default=None, description="The client's region from the geo table.")
    bucket: BucketMatch | None = Field(default=None, description="A share of requests.")
    status: StatusMatch | None = Field(default=None, description="The response status (response phases only).")
    response_headers: list[NamedMatch] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Response headers (response phases only)."
    )

    @model_validator(mode="after")
    def _checks(self) -> RuleMatch:
        if self.country is not None and self.country.one_of is not None:
            for index, code in enumerate(self.country.one_of):
                if code.upper() not in COUNTRY_CODES:
                    raise FieldValueError(("country", "oneOf", index), f"{code!r} is not an ISO 3166 country code")
        for field in ("headers", "response_headers"):
            for index, item in enumerate(getattr(self, field)):
                if not HEADER_NAME.match(item.name):
                    raise FieldValueError((_camel(field), index, "name"), f"{item.name!r} is not an HTTP field name")
        for index, item in enumerate(self.cookies):
            if not _COOKIE_NAME.match(item.name):
                raise FieldValueError(("cookies", index, "name"), f"{item.name!r} is not a cookie name")
        return self


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# --- actions -------------------------------------------------------------------------------------------


class Redirect(Model):
    """Answer with a redirect instead of serving the request."""

    status: Literal[301, 302, 303, 307, 308] = Field(default=302, description="301, 302, 303, 307 or 308.")
    location: Template = Field(
        min_length=1,
        description="Target URL or path, a template: https://new.example${uri}, /docs/${1}.",
    )


class Rewrite(Model):
    """Change the path and/or query used for the cache key and the origin request (the client sees nothing)."""

    path: Template | None = Field(default=None, description="New path, a template; must start with '/'.")
    query: Template | None = Field(default=None, description="New query string without '?', a template; '' drops it.")

    @model_validator(mode="after")
    def _something(self) -> Rewrite:
        if self.path is None and self.query is None:
            raise ValueError("set path, query or both")
        if self.path is not None and not self.path.startswith(("/", "${")):
            raise FieldValueError(("path",), "must start with '/' (or a ${...} that does)")
        return self


class HeaderOps(Model):
    """Header changes: set replaces, add appends, remove deletes (in that order: remove, set, add)."""

    set: dict[HeaderName, Template] = Field(default_factory=dict, description="Name to value template; replaces.")
    add: dict[HeaderName, Template] = Field(default_factory=dict, description="Name to value template; appended.")
    remove: list[HeaderName] = Field(default_factory=list, max_length=64, description="Names removed.")

    @model_validator(mode="after")
    def _allowed(self) -> HeaderOps:
        for field in ("set", "add", "remove"):
            names = getattr(self, field)
            if len(names) > 64:
                raise FieldValueError((field,), "at most 64 headers")
            for name in names:
                if name.lower() in _FORBIDDEN_HEADERS:
                    raise FieldValueError((field, name), f"{name} frames the message; rules may not change it")
        for field in ("set", "add"):
            for name, value in getattr(self, field).items():
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    raise FieldValueError((field, name), "header values must be ISO-8859-1 text") from None
                if any(ord(ch) < 32 and ch != "\t" for ch in value):
                    raise FieldValueError((field, name), "header values must not contain control characters")
        if not (self.set or self.add or self.remove):
            raise ValueError("set at least one of set, add, remove")
        return self


class Deny(Model):
    """Answer with an error status and body (403 by default)."""

    status: int = Field(default=403, ge=400, le=599, description="Status sent, 400-599.")
    body: str = Field(default="", max_length=64 * 1024, description="Body sent (text/plain).")


class SecretKeyRef(Model):
    """A key of a Secret: the value is the HMAC key (its UTF-8 bytes)."""

    secret: Name = Field(description="Name of the Secret.")
    key: str = Field(description="Key in the Secret's data.")

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if not SECRET_KEY.match(key):
            raise ValueError(f"{key!r} must be 1-253 characters of [-._a-zA-Z0-9]")
        return key


class TokenAuth(Model):
    """Signed URLs: ``?expires=E&token=T`` where T = hex(HMAC-SHA256(key, "<path>:<E>")); else 403."""

    keys: list[SecretKeyRef] = Field(
        min_length=1, max_length=2, description="One key, or two while rotating (a token signed by either passes)."
    )
    expires_param: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = Field(
        default="expires", description="Query parameter with the expiry, POSIX seconds."
    )
    token_param: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = Field(
        default="token", description="Query parameter with the hex HMAC."
    )
    skew_seconds: Seconds = Field(default=30, description="Clock skew tolerated past the expiry.")
    max_lifetime: PositiveSeconds | None = Field(
        default=None, description="Refuse tokens expiring further than this in the future."
    )
    strip_params: bool = Field(
        default=True, description="Drop the two parameters from the cache key and the origin request once checked."
    )
    status: int = Field(default=403, ge=400, le=599, description="Status on failure.")

    @model_validator(mode="after")
    def _distinct(self) -> TokenAuth:
        if self.expires_param == self.token_param:
            raise FieldValueError(("tokenParam",), "must differ from expiresParam")
        return self


class HeaderValueSet(Model):
    """One header field with a fixed value."""

    name: HeaderName = Field(description="Header name.")
    value: HeaderValue = Field(description="Header value.")


class Variant(Model):
    """One arm of an A/B split."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = Field(description="Variant name (cookie value).")
    weight: int = Field(default=1, ge=0, le=10000, description="Relative share of clients.")
    origin: str | None = Field(default=None, description="Fetch misses from this origin URL instead.")
    path_prefix: Annotated[str, Field(pattern=r"^/[^\s?#]{0,255}$")] | None = Field(
        default=None, description="Prefix prepended to the path towards the origin (and in the cache key)."
    )
    request_header: HeaderValueSet | None = Field(default=None, description="Header sent to the origin.")

    @field_validator("origin")
    @classmethod
    def _origin(cls, url: str | None) -> str | None:
        from edgefleet.api.domains import check_origin_url

        return None if url is None else check_origin_url(url)


class Split(Model):
    """A/B: each client falls in one variant, kept by a cookie or a hash; the variant is in the cache key."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(description="Experiment name.")
    by: Literal["cookie", "client", "header"] = Field(
        default="cookie",
        description="cookie: a random draw kept in a cookie set on the response; client: a hash of the client "
        "address; header: a hash of the header named by header.",
    )
    cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = Field(
        default=None, description="Cookie name (default ef-<name>)."
    )
    cookie_max_age: Seconds = Field(default=86400 * 30, description="Lifetime of the sticky cookie.")
    header: HeaderName | None = Field(default=None, description="Header hashed with by: header.")
    variants: list[Variant] = Field(min_length=2, max_length=16, description="The arms.")

    @model_validator(mode="after")
    def _checks(self) -> Split:
        if self.by == "header" and self.header is None:
            raise FieldValueError(("header",), "required with by: header")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise FieldValueError(("variants",), "variant names must be unique")
        if not any(variant.weight for variant in self.variants):
            raise FieldValueError(("variants",), "at least one variant needs weight > 0")
        return self


class RateLimit(Model):
    """Token bucket per client address (or header value): past the burst, 429 with Retry-After."""

    requests_per_second: float = Field(gt=0, le=1_000_000, description="Sustained rate per key.")
    burst: int = Field(default=10, ge=1, le=1_000_000, description="Requests a key may make at once.")
    key: Literal["client", "header"] = Field(
        default="client",
        description="What a bucket is kept per: the client address, or the value of `header` (requests "
        "without it share one bucket).",
    )
    header: HeaderName | None = Field(default=None, description="Header whose value is the key (key: header).")
    scope: Literal["node", "site"] = Field(
        default="node",
        description="node: the rate holds on each node; site: rate and burst are divided by the site's node count.",
    )
    table_size: int = Field(
        default=65536,
        ge=16,
        le=MAX_RATE_TABLE,
        description="Keys this limit should remember at once (least recently seen evicted). A cache keeps every "
        "limit's buckets in one table its workers share (rateLimit.slots in its config) and warns when the sizes "
        "add up to more.",
    )
    status: int = Field(default=429, ge=400, le=599, description="Status when limited.")

    @model_validator(mode="after")
    def _header(self) -> RateLimit:
        if self.key == "header" and self.header is None:
            raise FieldValueError(("header",), "required with key: header")
        if self.key != "header" and self.header is not None:
            raise FieldValueError(("header",), "only used with key: header")
        return self


class CacheKeyAdd(Model):
    """Request values appended to the cache key."""

    headers: list[HeaderName] = Field(default_factory=list, max_length=MAX_CONDITIONS, description="Header names.")
    cookies: list[ShortText] = Field(default_factory=list, max_length=MAX_CONDITIONS, description="Cookie names.")
    query: list[ShortText] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Query parameter names."
    )


class CacheOverride(Model):
    """Cache behaviour for matching requests (or, in originResponse, for the response)."""

    ttl: Seconds | None = Field(default=None, description="Seconds fresh, overriding the origin and cachePolicy.")
    bypass: bool = Field(default=False, description="Do not store; always ask upstream.")
    key: CacheKeyAdd | None = Field(default=None, description="Values added to the cache key (request phase).")

    @model_validator(mode="after")
    def _consistent(self) -> CacheOverride:
        if self.bypass and self.ttl is not None:
            raise FieldValueError(("ttl",), "not allowed with bypass: true")
        if not self.bypass and self.ttl is None and self.key is None:
            raise ValueError("set ttl, bypass or key")
        return self


class Cors(Model):
    """CORS: answer preflights (OPTIONS with Access-Control-Request-Method) and label responses."""

    allow_origins: list[ShortText] = Field(
        min_length=1, max_length=64, description="Origins allowed, e.g. https://app.example; '*' allows any."
    )
    allow_methods: list[Annotated[str, Field(pattern=r"^[A-Z]{1,16}$")]] = Field(
        default_factory=lambda: ["GET", "HEAD"], max_length=16, description="Methods allowed."
    )
    allow_headers: list[HeaderName] = Field(default_factory=list, max_length=64, description="Request headers allowed.")
    expose_headers: list[HeaderName] = Field(
        default_factory=list, max_length=64, description="Response headers exposed."
    )
    allow_credentials: bool = Field(default=False, description="Send Access-Control-Allow-Credentials: true.")
    max_age: Seconds = Field(default=600, description="Seconds a browser may cache the preflight answer.")

    @model_validator(mode="after")
    def _credentials(self) -> Cors:
        if self.allow_credentials and "*" in self.allow_origins:
            raise FieldValueError(("allowOrigins",), "'*' cannot be used with allowCredentials (browsers refuse it)")
        return self


class RuleAction(Model):
    """One action: exactly one field is set."""

    redirect: Redirect | None = Field(default=None, description="Answer with a redirect.")
    rewrite: Rewrite | None = Field(default=None, description="Change path/query for the cache key and the origin.")
    request_headers: HeaderOps | None = Field(default=None, description="Headers sent to the origin.")
    response_headers: HeaderOps | None = Field(default=None, description="Headers sent to the client.")
    deny: Deny | None = Field(default=None, description="Answer with an error.")
    token_auth: TokenAuth | None = Field(default=None, description="Require a signed URL.")
    split: Split | None = Field(default=None, description="A/B variants.")
    rate_limit: RateLimit | None = Field(default=None, description="Token bucket per client.")
    cache: CacheOverride | None = Field(default=None, description="TTL, bypass and cache key additions.")
    cors: Cors | None = Field(default=None, description="CORS preflight answers and response headers.")

    @model_validator(mode="after")
    def _exactly_one(self) -> RuleAction:
        chosen = [name for name in ACTION_NAMES if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one action of {', '.join(_camel(n) for n in ACTION_NAMES)}")
        return self

    def kind(self) -> str:
        """The action's (snake_case) field name: ``redirect``, ``token_auth``..."""
        return next(name for name in ACTION_NAMES if getattr(self, name) is not None)


ACTION_NAMES = (
    "redirect",
    "rewrite",
    "request_headers",
    "response_headers",
    "deny",
    "token_auth",
    "split",
    "rate_limit",
    "cache",
    "cors",
)
PHASE_ACTIONS: dict[str, frozenset[str]] = {
    "request": frozenset(ACTION_NAMES),
    "originResponse": frozenset({"response_headers", "cache"}),
    "clientResponse": frozenset({"response_headers"}),
}
"""Which actions each phase may hold."""


class Rule(Model):
    """A match, what to do, and whether to stop."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,63}$")] | None = Field(
        default=None, description="A name shown by `edgefleet rules test` and in logs (default: rule-<index>)."
    )
    phase: Phase = Field(
        default="request",
        description="request: before the cache lookup; originResponse: before storing a response from upstream; "
        "clientResponse: before sending a response (hits too).",
    )
    match: RuleMatch = Field(default_factory=RuleMatch, description="Conditions; all must hold.")
    actions: list[RuleAction] = Field(default_factory=list, max_length=16, description="Done in order when it matches.")
    stop: bool = Field(default=False, description="Evaluate no later rule of this phase after this one matched.")

    @model_validator(mode="after")
    def _checks(self) -> Rule:
        allowed = PHASE_ACTIONS[self.phase]
        for index, action in enumerate(self.actions):
            kind = action.kind()
            if kind not in allowed:
                raise FieldValueError(("actions", index, _camel(kind)), f"not allowed in phase {self.phase}")
            if self.phase == "originResponse" and action.cache is not None and action.cache.key is not None:
                raise FieldValueError(("actions", index, "cache", "key"), "only in phase request")
        if self.phase == "request" and (self.match.status is not None or self.match.response_headers):
            raise FieldValueError(
                ("match", "status" if self.match.status else "responseHeaders"), "only in response phases"
            )
        regex = self.match.path.regex if self.match.path is not None else None
        for loc, text in _templates(self):
            try:
                check_template_refs(text, regex)
            except ValueError as exc:
                raise FieldValueError(loc, str(exc)) from None
        return self


def _templates(rule: Rule) -> list[tuple[tuple[int | str, ...], str]]:
    """Every template of a rule with its location relative to the rule."""
    out: list[tuple[tuple[int | str, ...], str]] = []
    for index, action in enumerate(rule.actions):
        base: tuple[int | str, ...] = ("actions", index)
        if action.redirect is not None:
            out.append(((*base, "redirect", "location"), action.redirect.location))
        if action.rewrite is not None:
            for field in ("path", "query"):
                value = getattr(action.rewrite, field)
                if value is not None:
                    out.append(((*base, "rewrite", field), value))
        for field in ("request_headers", "response_headers"):
            ops = getattr(action, field)
            if ops is not None:
                for op in ("set", "add"):
                    for name, value in getattr(ops, op).items():
                        out.append(((*base, _camel(field), op, name), value))
    return out


def check_rules(rules: list[Rule]) -> list[Rule]:
    """Limits over the whole list: count, size as JSON, unique names."""
    if len(rules) > MAX_RULES:
        raise ValueError(f"{len(rules)} rules; the limit is {MAX_RULES}")
    size = len(json.dumps([rule.model_dump(by_alias=True, exclude_defaults=True) for rule in rules]))
    if size > MAX_RULES_BYTES:
        raise ValueError(f"the rules are {size} bytes as JSON; the limit is {MAX_RULES_BYTES}")
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name is not None:
            if rule.name in seen:
                raise FieldValueError((index, "name"), f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
    return rules


def rule_name(rule: Rule, index: int) -> str:
    """The name shown for a rule: its own, else ``rule-<index>``."""
    return rule.name if rule.name is not None else f"rule-{index}"


def secret_refs(rules: list[Rule]) -> set[tuple[str, str]]:
    """(Secret name, key) pairs the rules' token checks read: what a node serving them needs."""
    return {
        (ref.secret, ref.key)
        for rule in rules
        for action in rule.actions
        if action.token_auth is not None
        for ref in action.token_auth.keys
    }


Rules = Annotated[list[Rule], Field(max_length=MAX_RULES), AfterValidator(check_rules)]
"""The type of ``DomainSpec.rules``."""
