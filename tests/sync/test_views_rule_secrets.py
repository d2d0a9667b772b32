"""Secrets referenced by a Domain's edge rules follow that Domain into views (token-auth keys), and no further."""

from __future__ import annotations

import random
from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.sync.views import FleetIndex, ViewChanges, domain_secret_refs

from .fleet import domain_doc, key, node_doc, site_doc, workload_doc


def secret_doc(name: str, value: str = "v1") -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "spec": {"data": {"k": value}},
    }


def rules_domain(name: str, sites: str, *secrets: str) -> StoredDocument:
    doc = domain_doc(name, sites)
    doc["spec"]["rules"] = [
        {"name": f"auth-{secret}", "actions": [{"tokenAuth": {"keys": [{"secret": secret, "key": "k"}]}}]}
        for secret in secrets
    ]
    return doc


def secret_workload(name: str, selector: str, secret: str) -> StoredDocument:
    doc = workload_doc(name, selector)
    doc["spec"]["template"]["env"] = [{"name": "K", "valueFrom": {"secretRef": {"name": secret, "key": "k"}}}]
    return doc


class Fleet:
    """Sites s1 and s2 of two registered nodes each; every change is checked against the views recomputed."""

    def __init__(self) -> None:
        self.index = FleetIndex()
        self.revision = 0
        for site in ("s1", "s2"):
            self.put(key("sites", site), site_doc(site))
            for n in (1, 2):
                self.put(key("nodes", f"{site}-{n}"), node_doc(f"{site}-{n}", site))
                self.index.register(f"{site}-{n}")

    def put(self, k: str, doc: StoredDocument | None) -> dict[str, ViewChanges]:
        before = {node: self.index.view(node) for node in self.index.registered}
        self.revision += 1
        changes = self.index.apply(k, self.revision, doc)
        for node, view in before.items():  # incremental changes == the diff of whole views
            after = self.index.view(node)
            expected: ViewChanges = {k2: obj for k2, obj in after.items() if k2 not in view or view[k2].rev != obj.rev}
            expected.update({k2: None for k2 in view if k2 not in after})
            assert changes.get(node, {}) == expected, (node, k)
        return changes

    def holders(self, secret: str) -> set[str]:
        return {node for node in self.index.registered if key("secrets", secret) in self.index.view(node)}


S1, S2, ALL = {"s1-1", "s1-2"}, {"s2-1", "s2-2"}, {"s1-1", "s1-2", "s2-1", "s2-2"}


def test_secret_refs_are_found_anywhere_under_rules() -> None:
    keys = [{"secret": "a", "key": "k"}, {"secret": "b", "key": "k2"}]
    spec: dict[str, Any] = {"rules": [{"actions": [{"tokenAuth": {"keys": keys}}, {"x": [{}]}]}]}
    assert domain_secret_refs(spec) == {"a", "b"}
    assert domain_secret_refs({"rules": [{"secret": 3, "key": "k"}, {"secret": "c"}]}) == frozenset()
    assert domain_secret_refs({}) == frozenset()


def test_a_rule_secret_reaches_only_the_nodes_serving_the_domain() -> None:
    fleet = Fleet()
    assert fleet.put(key("secrets", "sign"), secret_doc("sign")) == {}, "nobody references it yet"
    changes = fleet.put(key("domains", "shop"), rules_domain("shop", "edgefleet.io/site=s1", "sign"))
    assert set(changes) == S1
    assert fleet.holders("sign") == S1
    # A key rotation goes to the serving nodes alone.
    changes = fleet.put(key("secrets", "sign"), secret_doc("sign", "v2"))
    assert set(changes) == S1
    # The Domain moves to every site: s2 gets the Secret too; then it drops the rule: everyone loses it.
    fleet.put(key("domains", "shop"), rules_domain("shop", "", "sign"))
    assert fleet.holders("sign") == ALL
    fleet.put(key("domains", "shop"), rules_domain("shop", ""))
    assert fleet.holders("sign") == set()


def test_a_secret_stays_while_a_workload_or_another_domain_references_it() -> None:
    fleet = Fleet()
    fleet.put(key("secrets", "sign"), secret_doc("sign"))
    fleet.put(key("domains", "a"), rules_domain("a", "edgefleet.io/site=s1", "sign"))
    fleet.put(key("domains", "b"), rules_domain("b", "", "sign"))
    fleet.put(key("workloads", "w"), secret_workload("w", "edgefleet.io/site=s2", "sign"))
    assert fleet.holders("sign") == ALL
    fleet.put(key("domains", "b"), None)
    assert fleet.holders("sign") == ALL, "a keeps it on s1, the workload on s2"
    fleet.put(key("workloads", "w"), None)
    assert fleet.holders("sign") == S1
    fleet.put(key("domains", "a"), None)
    assert fleet.holders("sign") == set()


def test_random_edits_keep_incremental_changes_equal_to_recomputed_views() -> None:
    rng = random.Random(17)
    fleet = Fleet()
    secrets = ["a", "b", "c"]
    selectors = ["", "edgefleet.io/site=s1", "edgefleet.io/site=s2"]
    for _ in range(300):
        choice = rng.randrange(4)
        if choice == 0:
            name = rng.choice(secrets)
            fleet.put(key("secrets", name), secret_doc(name, str(rng.randrange(3))) if rng.random() < 0.8 else None)
        elif choice == 1:
            name = rng.choice(["d1", "d2"])
            refs = rng.sample(secrets, rng.randrange(3))
            doc = rules_domain(name, rng.choice(selectors), *refs) if rng.random() < 0.85 else None
            fleet.put(key("domains", name), doc)
        elif choice == 2:
            name = rng.choice(["w1", "w2"])
            doc = secret_workload(name, rng.choice(selectors), rng.choice(secrets)) if rng.random() < 0.85 else None
            fleet.put(key("workloads", name), doc)
        else:
            node = rng.choice(sorted(ALL))
            fleet.put(key("nodes", node), node_doc(node, rng.choice(["s1", "s2"])))
