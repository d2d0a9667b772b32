"""A Domain whose edge rules name a missing Secret (or key) is accepted with a warning naming the rule's field."""

from __future__ import annotations

from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.cloud.admission import MAX_SECRET_WARNINGS, AdmissionRequest, check

from .test_admission import FakeLookup


def domain(*keys: tuple[str, str]) -> StoredDocument:
    token = {"tokenAuth": {"keys": [{"secret": secret, "key": key} for secret, key in keys]}}
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {
            "hostnames": ["www.shop.example"],
            "origins": [{"url": "http://origin.example"}],
            "rules": [{"name": "open", "actions": []}, {"name": "signed", "actions": [token]}],
        },
    }


def secret(name: str, **data: str) -> StoredDocument:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": data}}


async def warnings(document: StoredDocument, *secrets: StoredDocument, old: Any = None) -> list[str]:
    verdict = await check(AdmissionRequest.of("Domain", document, old), FakeLookup({"secrets": list(secrets)}))
    assert verdict.refusal() is None, "a warning, never a refusal: Secrets may be applied after the Domain"
    return list(verdict.warnings)


async def test_a_missing_secret_or_key_is_a_warning_with_the_field_path() -> None:
    document = domain(("sign", "current"), ("sign", "previous"), ("other", "k"))
    found = await warnings(document, secret("sign", current="v1"))
    assert found == [
        'spec.rules[1].actions[0].tokenAuth.keys[1]: Secret "sign" has no key "previous": the caches deny (403) '
        "the requests this rule checks until it does; create it with `edgefleet apply`",
        'spec.rules[1].actions[0].tokenAuth.keys[2]: Secret "other" does not exist (yet): the caches deny (403) '
        "the requests this rule checks until it does; create it with `edgefleet apply`",
    ]
    assert await warnings(document, secret("sign", current="v1", previous="v0"), secret("other", k="x")) == []


async def test_deletes_say_nothing_and_lookups_are_bounded() -> None:
    document = domain(*((f"s{i}", "k") for i in range(20)))
    assert (await check(AdmissionRequest.of("Domain", None, document), FakeLookup({}))).warnings == ()
    lookup = FakeLookup({})
    verdict = await check(AdmissionRequest.of("Domain", document, None), lookup)
    assert len(verdict.warnings) == MAX_SECRET_WARNINGS and len(lookup.reads) == MAX_SECRET_WARNINGS
