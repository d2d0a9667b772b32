"""Edge rules, compiled and evaluated without I/O: the engine every cache and ``edgefleet rules test`` run.

How: :func:`compile_rules` turns a Domain's ``spec.rules`` (:mod:`edgefleet.api.rules`) into a
:class:`Program` once per config load (``None`` for a Domain without rules, so it pays nothing). A request
is described as a :class:`RequestInfo`; :meth:`Program.on_request` returns a :class:`RequestOutcome`
(a synthetic answer, or the rewritten path/query, header ops, origin, cache key additions and overrides);
:meth:`Program.on_origin_response` and :meth:`Program.on_client_response` return :class:`ResponseOutcome`
s for the two response phases. Modules: :mod:`.model` (inputs and outputs), :mod:`.templates`
(``${...}``), :mod:`.match` (conditions, cheapest first), :mod:`.tokens` (signed URLs),
:mod:`.ratelimit` (token buckets in a bounded table), :mod:`.compile` (the program and the actions).

Why pure: the same decision must come out of a worker, the CLI and a test with a fake clock; ``now`` is
an argument and randomness is injected (``CompileEnv.random``).
"""

from __future__ import annotations

from edgefleet.cache.policy.rules.compile import Program, compile_rules
from edgefleet.cache.policy.rules.model import (
    ActionTrace,
    CompileEnv,
    GeoLookup,
    HeaderOp,
    RequestInfo,
    RequestOutcome,
    ResponseOutcome,
    RuleTrace,
    SecretValues,
    Synthetic,
    apply_header_ops,
    geo_from,
)
from edgefleet.cache.policy.rules.tokens import sign_path

__all__ = [
    "ActionTrace",
    "CompileEnv",
    "GeoLookup",
    "HeaderOp",
    "Program",
    "RequestInfo",
    "RequestOutcome",
    "ResponseOutcome",
    "RuleTrace",
    "SecretValues",
    "Synthetic",
    "apply_header_ops",
    "compile_rules",
    "geo_from",
    "sign_path",
]
