"""Helpers for edge-rule tests: rules from plain data, requests, and a seeded engine."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from edgefleet.api.rules import Rule
from edgefleet.cache.policy.rules import CompileEnv, Program, RequestInfo, compile_rules

RULES = TypeAdapter(list[Rule])


def rules(*items: dict[str, Any]) -> list[Rule]:
    """Rules as a manifest would give them (camelCase), validated by the schema."""
    return RULES.validate_python(list(items))


def program(*items: dict[str, Any], env: CompileEnv | None = None) -> Program:
    compiled = compile_rules(rules(*items), env or CompileEnv(random=lambda: 0.5))
    assert compiled is not None
    return compiled


def request(
    path: str = "/",
    query: str = "",
    *,
    method: str = "GET",
    scheme: str = "http",
    host: str = "www.example.com",
    headers: list[tuple[str, str]] | None = None,
    client: str = "192.0.2.10",
) -> RequestInfo:
    return RequestInfo(method, scheme, host, path, query, headers or [], client)
