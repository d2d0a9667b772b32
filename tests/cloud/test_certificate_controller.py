"""Certificate controller: the rule with a fake clock (pure), then rounds on a real store.

Expiry Events must come once per certificate content: not on every round,
not again from a new controller (a cloud restart or another leader), and
again for a renewed certificate that reaches its own end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.api import meta
from edgefleet.api.certificates import CertificateFacts
from edgefleet.api.documents import StoredDocument
from edgefleet.api.meta import kind_info
from edgefleet.cloud.controllers.certificates import (
    CertificateController,
    Note,
    decide,
    inspect_document,
    missing_certificates,
)
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store
from tests.pemfiles import Issued, certificate_manifest, issue

CERTIFICATES, DOMAINS, EVENTS = kind_info("Certificate"), kind_info("Domain"), kind_info("Event")
ISSUED_AT = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def domain(name: str, certificate: str | None, *hostnames: str) -> StoredDocument:
    spec: dict[str, Any] = {
        "hostnames": list(hostnames) or [f"www.{name}.example"],
        "origins": [{"url": "http://127.0.0.1:8080"}],
    }
    if certificate is not None:
        spec["tls"] = {"certificate": certificate}
    return {"apiVersion": "edgefleet.io/v1", "kind": "Domain", "metadata": {"name": name}, "spec": spec}


def stored(issued: Issued, status: dict[str, Any] | None = None) -> Any:
    document: Any = certificate_manifest("shop", issued)
    document["metadata"]["resourceVersion"] = "7"
    document["status"] = status or {}
    return document


def facts_of(document: StoredDocument) -> CertificateFacts:
    facts = inspect_document(document)
    assert isinstance(facts, CertificateFacts)
    return facts


# -- the rule -------------------------------------------------------------------------------


def test_status_is_read_from_the_pem_and_lists_the_domains_using_it() -> None:
    document = stored(issue(["www.shop.example"], now=ISSUED_AT))
    facts = facts_of(document)
    decision = decide(document, facts, [domain("shop", "shop")], ISSUED_AT)
    assert decision.notes == ()
    assert decision.patch is not None and decision.patch["metadata"] == {"resourceVersion": "7"}
    status = decision.patch["status"]
    assert status["dnsNames"] == ["www.shop.example"] and status["domains"] == ["shop"]
    assert status["fingerprint"] == facts.fingerprint and status["expiryEvents"] == []
    assert status["message"] is None
    # Written: the same decision is no write at all.
    written = stored(issue(["x.example"]), {k: v for k, v in status.items() if v is not None})
    written["spec"] = document["spec"]
    assert decide(written, facts, [domain("shop", "shop")], ISSUED_AT).patch is None


def test_expiry_warnings_come_once_each_and_only_for_certificates_in_use() -> None:
    document = stored(issue(["www.shop.example"], now=ISSUED_AT))
    facts = facts_of(document)
    users = [domain("shop", "shop")]
    soon = facts.not_after - timedelta(days=13)
    assert decide(document, facts, [], soon).notes == (), "nobody uses it: nobody to warn"
    assert decide(document, facts, users, facts.not_after - timedelta(days=15)).notes == ()
    decision = decide(document, facts, users, soon)
    [note] = decision.notes
    assert (note.kind, note.name, note.reason) == ("Certificate", "shop", "CertificateExpiringSoon")
    assert "expires in 13 day(s)" in note.message
    assert decision.patch is not None and decision.patch["status"]["expiryEvents"] == ["ExpiringSoon"]
    # Recorded: the next round says nothing until it expires, then once.
    document["status"] = {**decision.patch["status"]}
    assert decide(document, facts, users, soon + timedelta(days=1)).notes == ()
    expired = decide(document, facts, users, facts.not_after + timedelta(seconds=1))
    assert [n.reason for n in expired.notes] == ["CertificateExpired"]
    assert expired.patch is not None and expired.patch["status"]["expiryEvents"] == ["ExpiringSoon", "Expired"]
    assert expired.patch["status"]["message"] == "expired"


def test_a_renewed_certificate_starts_its_expiry_events_again() -> None:
    old = stored(issue(["www.shop.example"], now=ISSUED_AT), {"expiryEvents": ["ExpiringSoon", "Expired"]})
    old["status"]["fingerprint"] = facts_of(old).fingerprint
    renewed = stored(issue(["www.shop.example"], now=ISSUED_AT), dict(old["status"]))
    decision = decide(renewed, facts_of(renewed), [domain("shop", "shop")], ISSUED_AT)
    assert decision.patch is not None and decision.patch["status"]["expiryEvents"] == []


def test_hostnames_the_certificate_does_not_cover_are_reported() -> None:
    document = stored(issue(["*.shop.example"], now=ISSUED_AT))
    users = [domain("shop", "shop", "shop.example", "www.shop.example")]
    decision = decide(document, facts_of(document), users, ISSUED_AT)
    [note] = decision.notes
    assert note.reason == "CertificateMismatch" and "does not cover shop.example of domain shop" in note.message
    assert decision.patch is not None and decision.patch["status"]["message"] == note.message


def test_the_status_message_stays_within_its_bound_however_many_domains_mismatch() -> None:
    document = stored(issue(["www.shop.example"], now=ISSUED_AT))
    users = [domain(f"d{n:03}", "shop", f"host-{n}.other.example") for n in range(100)]
    decision = decide(document, facts_of(document), users, ISSUED_AT)
    assert len(decision.notes) == 100
    assert decision.patch is not None and len(decision.patch["status"]["message"]) == 2048
    meta.parse({**document, "status": {k: v for k, v in decision.patch["status"].items() if v is not None}})


def test_an_unusable_pem_is_reported_in_the_status_and_old_facts_removed() -> None:
    good = issue(["www.shop.example"])
    document = stored(good, {"dnsNames": ["www.shop.example"], "serial": "1"})
    document["spec"]["key"] = issue(["www.shop.example"]).key  # stored before admission checked it
    decision = decide(document, inspect_document(document), [], ISSUED_AT)
    assert decision.patch is not None
    status = decision.patch["status"]
    assert status["message"].startswith("unusable: spec.key: does not match")
    assert status["dnsNames"] is None and status["serial"] is None, "a merge patch removing the stale facts"


def test_domains_naming_a_missing_certificate_are_noted() -> None:
    notes = missing_certificates([domain("a", "gone"), domain("b", "here"), domain("c", None)], ["here"])
    assert [(n.kind, n.name, n.reason) for n in notes] == [("Domain", "a", "CertificateNotFound")]
    assert Note("Domain", "a", "CertificateNotFound", "x").event_name.startswith("a.certificatenotfound-")


# -- rounds on a store ---------------------------------------------------------------------------


async def warnings_about(registry: Registry, name: str) -> list[str]:
    page = await registry.list(EVENTS)
    return sorted(e["spec"]["reason"] for e in page.items if e["spec"]["involvedObject"]["name"] == name)


async def test_rounds_write_status_once_and_record_each_event_once_across_restarts(store: Store) -> None:
    registry = Registry(store)
    issued = issue(["www.shop.example"], now=ISSUED_AT)
    await registry.create(CERTIFICATES, certificate_manifest("shop", issued))
    await registry.create(DOMAINS, domain("shop", "shop"))
    await registry.create(DOMAINS, domain("blog", "nowhere"))
    not_after = facts_of(stored(issued)).not_after
    now = [ISSUED_AT]
    controller = CertificateController(registry, clock=lambda: now[0])
    assert await controller.sync_once() == 1
    assert await controller.sync_once() == 0, "nothing new: no write"
    status = (await registry.get(CERTIFICATES, "shop"))["status"]
    assert status["domains"] == ["shop"] and status["notAfter"]
    assert await warnings_about(registry, "blog") == ["CertificateNotFound"]
    sample = controller.metrics.registry.get_sample_value(
        "edgefleet_certificate_not_after_seconds", {"certificate": "shop"}
    )
    assert sample == not_after.timestamp()

    now[0] = not_after - timedelta(days=3)
    assert await controller.sync_once() == 1
    assert await controller.sync_once() == 0
    restarted = CertificateController(registry, clock=lambda: now[0])  # a new leader, nothing in memory
    assert await restarted.sync_once() == 0
    assert await warnings_about(registry, "shop") == ["CertificateExpiringSoon"]
    assert await warnings_about(registry, "blog") == ["CertificateNotFound"], "found, not recorded twice"

    # The certificate is deleted (the registry itself: no admission): the gauge forgets it.
    await registry.delete(CERTIFICATES, "shop")
    await restarted.sync_once()
    assert (
        restarted.metrics.registry.get_sample_value("edgefleet_certificate_not_after_seconds", {"certificate": "shop"})
        is None
    )
