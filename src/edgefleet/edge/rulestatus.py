"""The ``RulesReady`` condition of ``Node.status``: whether every Secret the edge rules name is on the node.

Why: a token-auth rule whose Secret (or key) is missing from the node's view makes the cache deny every
request the rule checks (fail closed: protected content is never served unchecked). That is correct, and
invisible unless the operator reads the agent's log. So the agent reports it where operators look: a
condition in its status report, which the hub writes to ``Node.status.conditions`` (on change only,
:mod:`edgefleet.cloud.statuswrites`) and turns into an Event (:mod:`edgefleet.cloud.rulestatus`).

How (pure; no clock, no I/O): :func:`secret_problems` reads the rendered cache config (the Domains the
node serves, their rules, and the Secret data the agent found, see :mod:`edgefleet.edge.cacheconfig`) and
lists every ``{secret, key}`` reference of a rule that the config cannot satisfy; :func:`rules_condition`
makes the condition: ``True``/``SecretsPresent`` without problems, else ``False``/``SecretMissing`` with a
message naming each Domain, rule, Secret and key (bounded). The condition carries no time: a report stays
byte-identical while nothing changes, and the cloud stamps ``lastTransitionTime`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefleet.api.rules import rule_name, secret_refs
from edgefleet.cache.config import CacheConfig

CONDITION_TYPE = "RulesReady"
MISSING_REASON = "SecretMissing"
READY_REASON = "SecretsPresent"
MAX_MESSAGE_CHARS = 1024
"""The condition's message limit (``Condition.message``): the first problems, then a count of the rest."""

__all__ = [
    "CONDITION_TYPE",
    "MISSING_REASON",
    "READY_REASON",
    "SecretProblem",
    "rules_condition",
    "secret_problems",
]


@dataclass(frozen=True, slots=True, order=True)
class SecretProblem:
    """A rule of ``domain`` names ``secret``/``key``, which the node does not have (``what``: which is missing)."""

    domain: str
    rule: str
    secret: str
    key: str
    secret_missing: bool

    def describe(self) -> str:
        if self.secret_missing:
            missing = f"Secret {self.secret} is not on this node (it does not exist)"
        else:
            missing = f"Secret {self.secret} has no key {self.key}"
        return f"domain {self.domain}, rule {self.rule}: {missing}"


def secret_problems(config: CacheConfig) -> list[SecretProblem]:
    """Every Secret reference of the config's rules that its ``secrets`` cannot satisfy, sorted."""
    found: set[SecretProblem] = set()
    for domain in config.domains:
        for index, rule in enumerate(domain.rules):
            for secret, key in secret_refs([rule]):
                data = config.secrets.get(secret)
                if data is None or key not in data:
                    found.add(SecretProblem(domain.name, rule_name(rule, index), secret, key, data is None))
    return sorted(found)


def rules_condition(problems: Iterable[SecretProblem]) -> dict[str, str]:
    """The ``RulesReady`` condition (wire names) for ``problems`` (see the module docstring)."""
    listed = sorted(set(problems))
    if not listed:
        return {"type": CONDITION_TYPE, "status": "True", "reason": READY_REASON, "message": ""}
    return {
        "type": CONDITION_TYPE,
        "status": "False",
        "reason": MISSING_REASON,
        "message": _message(listed),
    }


def _message(problems: list[SecretProblem]) -> str:
    tail = "; requests these rules check are denied (403) until the Secret exists with that key"
    parts: list[str] = []
    for shown, problem in enumerate(problems):
        text = problem.describe()
        rest = len(problems) - shown - 1
        more = f"; and {rest} more" if rest else ""
        if len("; ".join([*parts, text])) + len(more) + len(tail) > MAX_MESSAGE_CHARS:
            parts.append(f"and {len(problems) - shown} more")
            break
        parts.append(text)
    return ("; ".join(parts) + tail)[:MAX_MESSAGE_CHARS]


def conditions_of(problems_by_workload: Mapping[str, list[SecretProblem]]) -> list[dict[str, str]]:
    """The conditions to report for the built-in caches' problems (none before a cache config was rendered)."""
    if not problems_by_workload:
        return []
    return [rules_condition(problem for problems in problems_by_workload.values() for problem in problems)]
