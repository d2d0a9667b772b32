"""The agent's ``RulesReady`` condition: a Secret (or key) the edge rules name and the node lacks is reported."""

from __future__ import annotations

from pathlib import Path

from edgefleet.edge.cacheconfig import BuiltinCache, render_cache_config
from edgefleet.edge.rulestatus import MAX_MESSAGE_CHARS, SecretProblem, rules_condition, secret_problems

from .test_cacheconfig import CACHE, WORKDIR, domain
from .test_cacheconfig_rules import SIGNED, secret, view

ROTATING = [
    {
        "actions": [
            {"tokenAuth": {"keys": [{"secret": "sign", "key": "k"}, {"secret": "sign", "key": "previous"}]}},
        ]
    }
]


def test_a_missing_secret_and_a_missing_key_are_problems_with_their_domain_and_rule() -> None:
    documents = view(
        domain("lost", "lost.example", rules=SIGNED),
        domain("shop", "www.shop.example", rules=ROTATING),
        domain("blog", "blog.example"),
    )
    assert secret_problems(render_cache_config("par-1", documents, CACHE, WORKDIR)) == [
        SecretProblem("lost", "signed", "sign", "k", secret_missing=True),
        SecretProblem("shop", "rule-0", "sign", "k", secret_missing=True),
        SecretProblem("shop", "rule-0", "sign", "previous", secret_missing=True),
    ]
    config = render_cache_config("par-1", [*documents, secret("sign", k="v1")], CACHE, WORKDIR)
    assert secret_problems(config) == [SecretProblem("shop", "rule-0", "sign", "previous", secret_missing=False)]
    condition = rules_condition(secret_problems(config))
    assert condition["status"] == "False" and condition["reason"] == "SecretMissing"
    assert condition["message"].startswith("domain shop, rule rule-0: Secret sign has no key previous")
    config = render_cache_config("par-1", [*documents, secret("sign", k="v1", previous="v0")], CACHE, WORKDIR)
    assert secret_problems(config) == []
    assert rules_condition([]) == {"type": "RulesReady", "status": "True", "reason": "SecretsPresent", "message": ""}


def test_the_message_is_bounded_and_says_how_many_are_left_out() -> None:
    problems = [SecretProblem(f"domain-{i:03d}", "signed", f"secret-{i}", "k", True) for i in range(200)]
    message = rules_condition(problems)["message"]
    assert len(message) <= MAX_MESSAGE_CHARS and "domain-000" in message and "more" in message
    assert message.endswith("until the Secret exists with that key")


def test_the_builtin_cache_reports_the_condition_and_when_it_changes(tmp_path: Path) -> None:
    cache = BuiltinCache("par-1")
    assert cache.conditions() == [] and not cache.conditions_changed(["cache"]), "nothing before a render"
    cache.update_view(view(domain("shop", "www.shop.example", rules=SIGNED)))
    cache.sync("cache", CACHE, tmp_path)
    [condition] = cache.conditions()
    assert condition["status"] == "False" and "Secret sign is not on this node" in condition["message"]
    assert cache.conditions_changed(["cache"]) and not cache.conditions_changed(["cache"])
    cache.update_view(view(domain("shop", "www.shop.example", rules=SIGNED), secret("sign", k="v1")))
    cache.sync("cache", CACHE, tmp_path)
    assert cache.conditions_changed(["cache"]) and cache.conditions()[0]["status"] == "True"
    # A cache workload that no longer runs reports nothing.
    assert cache.conditions_changed([]) and cache.conditions() == []
