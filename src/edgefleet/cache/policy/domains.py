"""The domain table: which Domain serves a Host header, and its compiled cache policy.

How: :class:`DomainTable` maps each hostname (and each ``*.suffix``) to a
:class:`ServedDomain`, whose :meth:`~ServedDomain.policy_for` returns the
freshness :class:`~edgefleet.cache.policy.freshness.Policy` of the first matching
per-path rule, or the domain default. Policies are built once per reload, so
a request only looks them up. A Host is matched without its port, in lower
case; exact names win over wildcards.

The table is immutable: a reload builds a new one and swaps the reference,
so requests in flight keep the one they started with.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgefleet.api.domains import canonical_hostname
from edgefleet.api.presets import preset_rules
from edgefleet.cache.config import DomainConfig
from edgefleet.cache.policy.freshness import Policy

if TYPE_CHECKING:
    from edgefleet.cache.policy.rules import Program


@dataclass(frozen=True, slots=True)
class OriginTarget:
    """An origin URL prefix and the Host header to send it."""

    base: str
    host_header: str | None
    weight: int
    backup: bool


@dataclass(frozen=True, slots=True)
class PathRule:
    prefix: str | None
    regex: re.Pattern[str] | None
    policy: Policy

    def matches(self, path: str) -> bool:
        if self.prefix is not None:
            return path.startswith(self.prefix)
        return self.regex is not None and self.regex.search(path) is not None


class ServedDomain:
    """One Domain, ready for requests."""

    def __init__(self, config: DomainConfig) -> None:
        self.config = config
        self.name = config.name
        self.canonical_host = canonical_hostname(config.hostnames)
        self.aliases = frozenset(host for host in config.aliases if not host.startswith("*."))
        self.alias_suffixes = tuple(host[1:] for host in config.aliases if host.startswith("*."))
        self.has_aliases = bool(config.aliases)
        self.redirect_http = config.tls is not None and config.tls.redirect_http  # cleartext -> https (proxy)
        cache = config.cache_policy
        self.query_mode = cache.query_string.mode
        self.query_allow = frozenset(cache.query_string.allow_list)
        self.default_policy = self._policy(None, bypass=False)
        self.rules = tuple(
            PathRule(
                rule.path_prefix,
                re.compile(rule.path_regex) if rule.path_regex else None,
                self._policy(rule.ttl, bypass=rule.bypass),
            )
            for rule in (*cache.rules, *preset_rules(cache.preset))
        )
        self.origins = tuple(
            OriginTarget(origin.url.rstrip("/"), origin.host_header, origin.weight, origin.backup)
            for origin in config.origins
        )
        self.program: Program | None = None
        """The compiled edge rules (``config.rules``), set by the proxy at each config load
        (:mod:`edgefleet.cache.front.edgerules`); None: the Domain has none and pays nothing for them."""
        self.rule_origins: frozenset[str] = frozenset()
        """Origin URLs the rules' A/B variants name (the only ones a peer's carried decision may choose)."""
        self.rule_memo: dict[tuple[str, str, str, str], Any] = {}
        """Static request-phase decisions by request line (:func:`edgefleet.cache.front.edgerules.evaluate`)."""

    def _policy(self, ttl: float | None, *, bypass: bool) -> Policy:
        cache = self.config.cache_policy
        return Policy(
            ttl_override=ttl,
            bypass=bypass,
            default_ttl=float(cache.default_ttl),
            heuristic=cache.heuristic_freshness,
            serve_stale_on_error=cache.serve_stale_on_error,
            cookie_requests=cache.cache_cookie_requests,
        )

    def canonical_for(self, host_header: str) -> str | None:
        """The canonical host when ``host_header`` is one of the aliases, else None (served as itself)."""
        host = host_name(host_header)
        if host in self.aliases or host.endswith(self.alias_suffixes):
            return self.canonical_host
        return None

    def policy_for(self, path: str) -> Policy:
        for rule in self.rules:
            if rule.matches(path):
                return rule.policy
        return self.default_policy

    def origin_order(self, rng: random.Random) -> list[OriginTarget]:
        """Origins to try: non-backups in weighted random order, then backups."""
        primary = [origin for origin in self.origins if not origin.backup]
        backups = [origin for origin in self.origins if origin.backup]
        primary.sort(key=lambda origin: rng.random() ** (1.0 / origin.weight), reverse=True)
        return primary + backups


class DomainTable:
    """Host header -> ServedDomain."""

    def __init__(self, domains: list[DomainConfig]) -> None:
        self._exact: dict[str, ServedDomain] = {}
        self._wildcard: dict[str, ServedDomain] = {}
        self.by_name: dict[str, ServedDomain] = {}
        for config in domains:
            served = ServedDomain(config)
            self.by_name[config.name] = served
            for host in [*config.hostnames, *config.aliases]:
                if host.startswith("*."):
                    self._wildcard[host[1:]] = served
                else:
                    self._exact[host] = served
        self._memo: dict[str, ServedDomain | None] = {}

    def lookup(self, host_header: str) -> ServedDomain | None:
        """The domain serving ``host_header`` (memoised: the hot path pays one dict lookup)."""
        try:
            return self._memo[host_header]
        except KeyError:
            pass
        found = self._find(host_name(host_header))
        if len(self._memo) < 4096:
            self._memo[host_header] = found
        return found

    def _find(self, host: str) -> ServedDomain | None:
        served = self._exact.get(host)
        if served is not None:
            return served
        dot = host.find(".")
        while dot != -1:
            served = self._wildcard.get(host[dot:])
            if served is not None:
                return served
            dot = host.find(".", dot + 1)
        return None


def host_name(host_header: str) -> str:
    """``Example.COM:8080`` -> ``example.com``; ``[::1]:80`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, _, _ = host.partition(":")
    return name.rstrip(".")
