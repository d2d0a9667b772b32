"""A parent site's nodes hold the addresses of their child sites' nodes, so their caches trust those requests.

The projection is the smallest one trust needs (name, site, addresses); a child node's change reaches its
own site and its site's parents only, and a change of a Site's parents moves its nodes out of the old
parents' views and into the new ones'. Every change is also checked against the recomputed views.
"""

from __future__ import annotations

import copy

from edgefleet.api.documents import StoredDocument
from edgefleet.sync.views import FleetIndex, ViewChanges, project_trust_node

from .fleet import Cloud, key, node_doc, site_doc, small_fleet
from .test_views import _Spy

EDGE_NODES = ("par-1", "par-2", "par-3")


def with_address(doc: StoredDocument, address: str) -> StoredDocument:
    changed = copy.deepcopy(doc)
    changed["spec"]["addresses"] = [address]
    return changed


class Checked:
    """An index whose every change is compared with the views recomputed before and after."""

    def __init__(self, cloud: Cloud, registered: list[str]) -> None:
        self.index = cloud.index
        self.revision = cloud.revision
        for name in registered:
            self.index.register(name)
        self.held = {name: self.index.view(name) for name in registered}
        self.spied: list[str] = []
        self.looked_at: list[str] = []
        """Nodes the index looked up (with spy()) during the last apply, not counting the checks."""

    def spy(self) -> None:
        self.index._nodes = _Spy(self.index._nodes, self.spied)

    def apply(self, k: str, doc: StoredDocument | None) -> dict[str, ViewChanges]:
        self.revision += 1
        self.spied.clear()
        changes = self.index.apply(k, self.revision, doc)
        self.looked_at = list(self.spied)
        for name, held in self.held.items():
            for changed_key, obj in changes.get(name, {}).items():
                if obj is None:
                    del held[changed_key]
                else:
                    held[changed_key] = obj
            assert held == self.index.view(name), name
        return changes


def test_a_parent_node_holds_its_child_sites_nodes_for_trust_only() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    view = cloud.view("fra-1")
    assert {k for k in view if k.startswith("/registry/nodes/")} == {
        key("nodes", name) for name in ("fra-1", *EDGE_NODES, "lyo-1")
    }
    assert view[key("nodes", "par-2")].object == {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": "par-2"},
        "spec": {"site": "par-edge", "addresses": ["192.0.2.10"]},
    }
    # Trust goes one way: the edge nodes see neither the other edge site nor anything of theirs below.
    assert key("nodes", "lyo-1") not in cloud.view("par-1")
    assert project_trust_node({"kind": "Node", "metadata": {"name": "x"}, "spec": {"site": "s"}}) == {
        "kind": "Node",
        "metadata": {"name": "x"},
        "spec": {"site": "s", "addresses": []},
    }


def test_only_direct_children_are_held_and_peers_stay_peers_in_a_cycle() -> None:
    cloud = Cloud()
    cloud.put(key("sites", "top"), site_doc("top"))
    cloud.put(key("sites", "mid"), site_doc("mid", parents=("top",)))
    cloud.put(key("sites", "low"), site_doc("low", parents=("mid",)))
    for name, site in (("t", "top"), ("m", "mid"), ("l", "low")):
        cloud.put(key("nodes", name), node_doc(name, site))
    assert key("nodes", "m") in cloud.view("t") and key("nodes", "l") not in cloud.view("t")
    assert key("nodes", "l") in cloud.view("m")
    # top lists mid as its parent too: a cycle, where each sees the other's nodes as peers (with their phase).
    cloud.edit(key("sites", "top"), "spec.parents", ["mid"])
    assert cloud.view("t")[key("nodes", "m")].object["status"] == {"phase": "Ready"}
    assert cloud.view("m")[key("nodes", "t")].object["status"] == {"phase": "Ready"}


def test_a_child_node_change_reaches_its_site_and_its_parents_only() -> None:
    """Cost is per affected site: 40 edge sites under one parent, 3 registered nodes each."""
    cloud = Cloud()
    cloud.put(key("sites", "fra"), site_doc("fra"))
    cloud.put(key("sites", "ams"), site_doc("ams"))
    for name, site in (("f1", "fra"), ("f2", "fra"), ("a1", "ams")):
        cloud.put(key("nodes", name), node_doc(name, site))
    for s in range(40):
        cloud.put(key("sites", f"s{s}"), site_doc(f"s{s}", parents=("fra", "ams") if s == 7 else ("fra",)))
        for n in range(3):
            cloud.put(key("nodes", f"s{s}-{n}"), node_doc(f"s{s}-{n}", f"s{s}"))
    checked = Checked(cloud, [name for name in cloud.index._nodes])
    checked.spy()
    node = key("nodes", "s7-1")
    changes = checked.apply(node, with_address(cloud.docs[node], "198.51.100.7"))
    assert set(changes) == {"s7-1", "s7-0", "s7-2", "f1", "f2", "a1"}  # itself, its peers, its parents
    assert {name for name in checked.looked_at if name.startswith("s") and not name.startswith("s7-")} == set()
    seen = changes["f1"][node]
    assert seen is not None and seen.object["spec"]["addresses"] == ["198.51.100.7"]
    # A heartbeat or a phase change moves no parent (the trust projection has no status).
    beat = copy.deepcopy(checked.index.get(node)[1])  # type: ignore[index]
    beat["status"] = {"phase": "NotReady", "lastHeartbeat": "2024-01-01T00:01:00Z"}
    assert set(checked.apply(node, beat)) == {"s7-0", "s7-2"}
    # A label change neither: the parents do not see labels.
    labelled = copy.deepcopy(beat)
    labelled["metadata"]["labels"] = {"role": "cache"}
    assert "f1" not in checked.apply(node, labelled)
    # A node that moves to another site leaves its old parents' views and enters its new ones'.
    moved = copy.deepcopy(labelled)
    moved["spec"]["site"] = "ams"
    changes = checked.apply(node, moved)
    assert changes["f1"][node] is None and changes["a1"][node] is not None
    assert checked.apply(node, None)["a1"] == {node: None}


def test_a_parents_change_updates_the_old_and_the_new_parents() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.put(key("sites", "ams-parent"), site_doc("ams-parent", labels={"tier": "parent"}))
    cloud.put(key("nodes", "ams-1"), node_doc("ams-1", "ams-parent"))
    checked = Checked(cloud, ["fra-1", "ams-1", "par-1", "lyo-1"])
    changes = checked.apply(key("sites", "par-edge"), site_doc("par-edge", parents=("ams-parent",)))
    assert changes["fra-1"] == {key("nodes", name): None for name in EDGE_NODES}
    assert set(changes["ams-1"]) == {key("nodes", name) for name in EDGE_NODES}
    assert "lyo-1" not in changes
    # par-1's own view moves too (its chain changed), as before.
    assert key("nodes", "ams-1") in checked.held["par-1"] and key("nodes", "fra-1") not in checked.held["par-1"]
    # A Site deleted takes its nodes out of its parents' views; created again, it brings them back.
    assert set(checked.apply(key("sites", "lyo-edge"), None)["fra-1"]) == {key("nodes", "lyo-1")}
    restored = site_doc("lyo-edge", parents=("fra-parent",), labels={"tier": "edge"})
    assert checked.apply(key("sites", "lyo-edge"), restored)["fra-1"][key("nodes", "lyo-1")] is not None


def test_a_fresh_index_loads_the_same_views() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    loaded = FleetIndex()
    loaded.load([(k, i + 1, doc) for i, (k, doc) in enumerate(sorted(cloud.docs.items()))], len(cloud.docs))
    assert {k: v.object for k, v in loaded.view("fra-1").items()} == {
        k: v.object for k, v in cloud.view("fra-1").items()
    }
