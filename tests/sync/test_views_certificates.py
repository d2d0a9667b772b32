"""Certificates follow the Domains that name them into views, and no further (the private key's projection rule)."""

from __future__ import annotations

from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.sync.views import FleetIndex

from .fleet import domain_doc, key, node_doc, site_doc


def certificate_doc(name: str, pem: str = "chain-1") -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {"certificate": pem, "key": "secret-key"},
    }


def tls_domain(name: str, sites: str, certificate: str | None) -> StoredDocument:
    doc = domain_doc(name, sites)
    if certificate is not None:
        doc["spec"]["tls"] = {"certificate": certificate}
    return doc


class Fleet:
    """Sites s1 and s2 of two registered nodes each, fed one change at a time."""

    def __init__(self) -> None:
        self.index = FleetIndex()
        self.revision = 0
        for site in ("s1", "s2"):
            self.put(key("sites", site), site_doc(site))
            for n in (1, 2):
                self.put(key("nodes", f"{site}-{n}"), node_doc(f"{site}-{n}", site))
                self.index.register(f"{site}-{n}")

    def put(self, k: str, doc: StoredDocument | None) -> dict[str, Any]:
        self.revision += 1
        return self.index.apply(k, self.revision, doc)

    def holders(self, certificate: str) -> set[str]:
        return {node for node in self.index.registered if key("certificates", certificate) in self.index.view(node)}


S1, S2, ALL = {"s1-1", "s1-2"}, {"s2-1", "s2-2"}, {"s1-1", "s1-2", "s2-1", "s2-2"}


def test_a_certificate_reaches_only_the_nodes_of_the_sites_serving_a_domain_that_names_it() -> None:
    fleet = Fleet()
    assert fleet.put(key("certificates", "shop"), certificate_doc("shop")) == {}, "nobody names it yet"
    changes = fleet.put(key("domains", "shop"), tls_domain("shop", "edgefleet.io/site=s1", "shop"))
    assert set(changes) == S1
    assert all(set(changes[n]) == {key("domains", "shop"), key("certificates", "shop")} for n in S1)
    assert fleet.holders("shop") == S1
    # The projection carries the key (the node needs it) but no status, so status writes move nobody.
    obj = fleet.index.view("s1-1")[key("certificates", "shop")].object
    assert obj["spec"]["key"] == "secret-key" and "status" not in obj
    with_status = certificate_doc("shop")
    with_status["status"] = {"notAfter": "2030-01-01T00:00:00Z"}
    assert fleet.put(key("certificates", "shop"), with_status) == {}
    # A rotation goes to the serving nodes alone.
    changes = fleet.put(key("certificates", "shop"), certificate_doc("shop", "chain-2"))
    assert set(changes) == S1 and all(changes[n][key("certificates", "shop")] is not None for n in S1)


def test_a_certificate_moves_with_the_domain_and_stays_while_another_domain_names_it() -> None:
    fleet = Fleet()
    fleet.put(key("certificates", "shared"), certificate_doc("shared"))
    fleet.put(key("domains", "a"), tls_domain("a", "edgefleet.io/site=s1", "shared"))
    fleet.put(key("domains", "b"), tls_domain("b", "", "shared"))
    assert fleet.holders("shared") == ALL
    # Domain b stops using TLS: s2 loses the certificate, s1 keeps it through domain a.
    changes = fleet.put(key("domains", "b"), tls_domain("b", "", None))
    assert {n for n, c in changes.items() if key("certificates", "shared") in c} == S2
    assert all(changes[n][key("certificates", "shared")] is None for n in S2)
    assert fleet.holders("shared") == S1
    # Domain a moves to s2: the certificate moves with it.
    fleet.put(key("domains", "a"), tls_domain("a", "edgefleet.io/site=s2", "shared"))
    assert fleet.holders("shared") == S2
    # Domain a names another certificate, which does not exist yet: nobody holds either.
    fleet.put(key("domains", "a"), tls_domain("a", "edgefleet.io/site=s2", "other"))
    assert fleet.holders("shared") == set() and fleet.holders("other") == set()
    changes = fleet.put(key("certificates", "other"), certificate_doc("other"))
    assert set(changes) == S2 and fleet.holders("other") == S2
    # Deleting the certificate takes it out of the views; deleting the domain would too.
    changes = fleet.put(key("certificates", "other"), None)
    assert all(changes[n] == {key("certificates", "other"): None} for n in S2)


def test_a_node_moving_to_another_site_gains_and_loses_the_certificates() -> None:
    fleet = Fleet()
    fleet.put(key("certificates", "c"), certificate_doc("c"))
    fleet.put(key("domains", "d"), tls_domain("d", "edgefleet.io/site=s2", "c"))
    changes = fleet.put(key("nodes", "s1-1"), node_doc("s1-1", "s2"))
    assert changes["s1-1"][key("certificates", "c")] is not None
    changes = fleet.put(key("nodes", "s1-1"), node_doc("s1-1", "s1"))
    assert changes["s1-1"][key("certificates", "c")] is None


def test_a_load_puts_certificates_in_the_views_like_events_do() -> None:
    fleet = Fleet()
    fleet.put(key("certificates", "c"), certificate_doc("c"))
    fleet.put(key("domains", "d"), tls_domain("d", "edgefleet.io/site=s1", "c"))
    items = [(k, rev, doc) for k, (rev, doc) in fleet.index._objects.items()]
    fresh = FleetIndex()
    fresh.load(items, fleet.revision)
    assert {n: fresh.view(n) for n in ALL} == {n: fleet.index.view(n) for n in ALL}
