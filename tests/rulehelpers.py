"""Helpers for edge-rule tests: rules from plain data, requests, and a seeded engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st
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


def arrivals(keys: Sequence[str]) -> st.SearchStrategy[list[tuple[float, str]]]:
    """Request arrivals for rate-limit properties: (gap in tenths of a second, key), up to 300 of them."""
    return st.lists(
        st.tuples(st.floats(min_value=0, max_value=5, allow_nan=False), st.sampled_from(list(keys))), max_size=300
    )


def assert_within_rate(allowed: Mapping[str, list[float]], rate: float, burst: int) -> None:
    """No run of one key's admitted requests holds more than rate x its length + burst of them."""
    for times in allowed.values():
        for first in range(len(times)):
            for last in range(first, len(times)):
                assert last - first + 1 <= rate * (times[last] - times[first]) + burst + 1e-6
