"""Views: the rules of who needs what, projections, and incremental changes equal to recomputation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.api.documents import StoredDocument
from edgefleet.sync.views import FleetIndex, ViewObject, digest, project_object

from .fleet import Cloud, domain_doc, key, node_doc, site_doc, small_fleet, workload_doc


def keys(view: dict[str, ViewObject]) -> set[str]:
    return set(view)


def test_the_view_of_an_edge_node() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    assert keys(cloud.view("par-1")) == {
        key("nodes", "par-1"),
        key("nodes", "par-2"),
        key("nodes", "par-3"),
        key("nodes", "fra-1"),  # a node of the parent site
        key("sites", "par-edge"),
        key("sites", "fra-parent"),
        key("workloads", "cache"),  # role=cache
        key("workloads", "par-only"),  # implicit edgefleet.io/site label
        key("domains", "shop"),  # tier=edge
    }
    # The parent site's node sees its children's nodes for trust only (test_views_trust.py), and serves the
    # parent-tier domain.
    assert keys(cloud.view("fra-1")) == {
        key("nodes", "fra-1"),
        *(key("nodes", name) for name in ("par-1", "par-2", "par-3", "lyo-1")),
        key("sites", "fra-parent"),
        key("workloads", "cache"),
        key("domains", "origin-shield"),
    }


def test_projections_leave_out_status_and_resource_version() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.edit(key("nodes", "par-2"), "metadata.resourceVersion", "17")
    view = cloud.view("par-1")
    own = view[key("nodes", "par-1")].object
    assert "status" not in own and own["metadata"]["uid"] == "uid-par-1"
    peer = view[key("nodes", "par-2")].object
    assert peer == {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": "par-2", "labels": {"role": "cache"}},
        "spec": {"site": "par-edge", "addresses": ["192.0.2.10"]},
        "status": {"phase": "Ready"},
    }
    assert "status" not in view[key("sites", "par-edge")].object
    assert project_object({"metadata": {"name": "a", "resourceVersion": "3"}, "status": {}}) == {
        "metadata": {"name": "a"}
    }


def test_parents_are_followed_transitively_and_cycles_end() -> None:
    cloud = Cloud()
    cloud.put(key("sites", "a"), site_doc("a", parents=("b",)))
    cloud.put(key("sites", "b"), site_doc("b", parents=("c",)))
    cloud.put(key("sites", "c"), site_doc("c", parents=("a", "missing")))
    cloud.put(key("nodes", "n"), node_doc("n", "a"))
    cloud.put(key("nodes", "m"), node_doc("m", "c"))
    assert keys(cloud.view("n")) == {key("nodes", "n"), key("nodes", "m")} | {key("sites", s) for s in "abc"}


def test_domains_match_site_labels_and_the_implicit_site_label() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.put(key("domains", "all"), domain_doc("all", ""))
    cloud.put(key("domains", "lyo"), domain_doc("lyo", "edgefleet.io/site=lyo-edge"))
    cloud.put(key("domains", "bad"), domain_doc("bad", "tier in ("))  # does not parse: selects nothing
    assert {k for k in cloud.view("lyo-1") if "domains" in k} == {key("domains", d) for d in ("all", "lyo", "shop")}
    assert {k for k in cloud.view("par-1") if "domains" in k} == {key("domains", d) for d in ("all", "shop")}


def test_implicit_labels_cannot_be_spoofed() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.put(key("nodes", "lyo-2"), node_doc("lyo-2", "lyo-edge", labels={"edgefleet.io/site": "par-edge"}))
    assert key("workloads", "par-only") not in cloud.view("lyo-2")


def test_unknown_kinds_and_missing_nodes_are_in_no_view() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.index.register("par-1")
    rollout: StoredDocument = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Rollout",
        "metadata": {"name": "r1"},
        "spec": {},
    }
    assert cloud.index.apply("/registry/rollouts/r1", 99, rollout) == {}
    assert cloud.index.get("/registry/rollouts/r1") == (99, rollout)
    assert key("rollouts", "r1") not in cloud.view("par-1")
    assert cloud.view("nobody") == {}


def test_apply_reports_only_registered_nodes_whose_view_changed() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    index.register("par-1")
    index.register("lyo-1")
    changes = index.apply(
        key("workloads", "par-only"), 100, workload_doc("par-only", "edgefleet.io/site=par-edge", args=("2",))
    )
    assert set(changes) == {"par-1"}
    assert changes["par-1"][key("workloads", "par-only")] == index.view("par-1")[key("workloads", "par-only")]
    assert index.apply(key("workloads", "dns"), 101, workload_doc("dns", "role=dns", args=("2",))) == {}


def test_a_heartbeat_changes_nobodys_view_but_a_phase_change_reaches_the_peers() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    for name in ("par-1", "par-2", "lyo-1"):
        index.register(name)
    heartbeat = copy.deepcopy(cloud.docs[key("nodes", "par-2")])
    heartbeat["status"]["lastHeartbeat"] = "2024-01-01T00:00:10Z"
    assert index.apply(key("nodes", "par-2"), 100, heartbeat) == {}
    heartbeat["status"]["phase"] = "NotReady"
    assert set(index.apply(key("nodes", "par-2"), 101, heartbeat)) == {"par-1"}
    # A Site's status (load) changes nobody's view either.
    cloud.edit(key("sites", "par-edge"), "status", {"load": 0.5})
    assert cloud.view("par-1")[key("sites", "par-edge")].since < cloud.revision


def test_unchanged_content_keeps_its_version_and_since() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    before = cloud.view("par-1")[key("workloads", "cache")]
    cloud.edit(key("workloads", "cache"), "status", {"readyCount": 3})
    after = cloud.view("par-1")[key("workloads", "cache")]
    assert after is before
    cloud.edit(key("workloads", "cache"), "spec.template.args", ["x"])
    changed = cloud.view("par-1")[key("workloads", "cache")]
    assert changed.rev != before.rev and changed.since == cloud.revision


def test_load_returns_what_a_relist_changed_for_registered_nodes() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.index.register("par-1")
    docs = dict(cloud.docs)
    docs.pop(key("workloads", "cache"))
    docs[key("workloads", "new")] = workload_doc("new", "role=cache")
    items = [(k, 500, doc) for k, doc in docs.items()]
    changes = cloud.index.load(items, 500)
    assert changes == {
        "par-1": {
            key("workloads", "cache"): None,
            key("workloads", "new"): cloud.index.view("par-1")[key("workloads", "new")],
        }
    }
    assert cloud.index.revision == 500


def cluster_info_doc(*servers: str, name: str = "default") -> StoredDocument:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "ClusterInfo",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"servers": list(servers)},
    }


def test_cluster_info_is_in_every_view_and_its_changes_reach_every_node() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    everyone = ["par-1", "par-2", "lyo-1", "fra-1"]
    for name in [*everyone, "not-joined-yet"]:
        index.register(name)
    ci = key("clusterinfos", "default")
    changes = index.apply(ci, 100, cluster_info_doc("http://hub-1:7440"))
    assert set(changes) == set(everyone), "every registered node with a Node, nobody else"
    for name in everyone:
        assert changes[name] == {ci: index.view(name)[ci]}
        assert index.view(name)[ci].object == {
            "apiVersion": "edgefleet.io/v1",
            "kind": "ClusterInfo",
            "metadata": {"name": "default", "uid": "uid-default"},
            "spec": {"servers": ["http://hub-1:7440"]},
        }
    assert index.view("not-joined-yet") == {}
    # The same content under a new resourceVersion moves nothing; new servers reach everyone.
    assert (
        index.apply(
            ci,
            101,
            {
                **cluster_info_doc("http://hub-1:7440"),
                "metadata": {"name": "default", "uid": "uid-default", "resourceVersion": "2"},
            },
        )
        == {}
    )
    changes = index.apply(ci, 102, cluster_info_doc("http://hub-1:7440", "http://hub-2:7440"))
    assert set(changes) == set(everyone)
    assert all(
        (obj := c[ci]) is not None and obj.object["spec"]["servers"][1] == "http://hub-2:7440" for c in changes.values()
    )
    # A node that joins now gets it in its first view; a deletion leaves every view.
    cloud.put(key("nodes", "par-9"), node_doc("par-9", "par-edge"))
    assert ci in index.view("par-9")
    assert {name: c for name, c in index.apply(ci, 103, None).items()} == {name: {ci: None} for name in everyone}
    assert ci not in index.view("par-9")


def test_cluster_info_changes_cost_the_other_kinds_nothing() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    index.register("par-1")
    cloud.put(key("clusterinfos", "default"), cluster_info_doc("http://hub-1:7440"))
    changes = index.apply(
        key("workloads", "par-only"), 200, workload_doc("par-only", "edgefleet.io/site=par-edge", args=("9",))
    )
    assert set(changes["par-1"]) == {key("workloads", "par-only")}


def test_digest_is_order_independent_and_matches_the_spec() -> None:
    import hashlib

    items = [("/registry/b", 2), ("/registry/a", 1)]
    expected = hashlib.sha256(b"/registry/a\x001\n/registry/b\x002\n").hexdigest()[:32]
    assert digest(items) == digest(reversed(items)) == expected
    assert digest([]) == hashlib.sha256(b"").hexdigest()[:32]


# --- incremental changes == recomputation, on random histories ----------------------

NODES = ["n1", "n2", "n3", "n4"]
SITES = ["s1", "s2", "s3"]
LABELS = [{}, {"role": "cache"}, {"role": "dns"}, {"role": "cache", "tier": "x"}]
SELECTORS = ["", "role=cache", "role=dns", "tier", "!tier", "edgefleet.io/site=s2", "edgefleet.io/node=n1", "bad ("]


def site_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    name = draw(st.sampled_from(SITES))
    if draw(st.integers(0, 5)) == 0:
        return key("sites", name), None
    parents = tuple(draw(st.lists(st.sampled_from(SITES), max_size=2, unique=True)))
    doc = site_doc(name, parents=parents, labels=draw(st.sampled_from(LABELS)))
    doc["status"] = {"load": draw(st.sampled_from([0.1, 0.2]))}
    return key("sites", name), doc


def node_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    name = draw(st.sampled_from(NODES))
    if draw(st.integers(0, 5)) == 0:
        return key("nodes", name), None
    doc = node_doc(name, draw(st.sampled_from(SITES)), labels=draw(st.sampled_from(LABELS)))
    doc["status"] = {
        "phase": draw(st.sampled_from(["Ready", "NotReady"])),
        "lastHeartbeat": str(draw(st.integers(0, 3))),
    }
    return key("nodes", name), doc


def selected_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    kind = draw(st.sampled_from(["workloads", "domains"]))
    name = draw(st.sampled_from(["a", "b", "c"]))
    if draw(st.integers(0, 4)) == 0:
        return key(kind, name), None
    selector = draw(st.sampled_from(SELECTORS))
    doc = (
        workload_doc(name, selector, args=(str(draw(st.integers(0, 2))),))
        if kind == "workloads"
        else domain_doc(name, selector)
    )
    doc["status"] = {"x": draw(st.integers(0, 2))}
    if kind == "workloads":
        doc["spec"]["template"]["env"] = secret_env(draw)
    elif draw(st.booleans()):
        doc["spec"]["tls"] = {"certificate": draw(st.sampled_from(CERTIFICATES))}
    if kind == "workloads" and draw(st.booleans()):
        doc["status"] = {
            "currentRevision": draw(st.sampled_from(REVISIONS)),
            "nodeRevisions": draw(st.dictionaries(st.sampled_from(NODES), st.sampled_from(REVISIONS), max_size=3)),
        }
    return key(kind, name), doc


REVISIONS = ["r0", "r1", "r2"]


def revision_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    workload, rev = draw(st.sampled_from(["a", "b"])), draw(st.sampled_from(REVISIONS))
    name = f"{workload}-{rev}"
    if draw(st.integers(0, 4)) == 0:
        return key("workloadrevisions", name), None
    return key("workloadrevisions", name), revision_doc(workload, rev)


def revision_doc(workload: str, rev: str) -> StoredDocument:
    # Revisions reference Secrets too (r1 one, r2 another), so assignments move Secrets in and out of views.
    env = (
        []
        if rev == "r0"
        else [{"name": "K", "valueFrom": {"secretRef": {"name": SECRETS[int(rev[1]) - 1], "key": "k"}}}]
    )
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "WorkloadRevision",
        "metadata": {"name": f"{workload}-{rev}"},
        "spec": {"workload": workload, "number": 1, "revision": rev, "template": {"command": ["run", rev], "env": env}},
    }


SECRETS = ["s-a", "s-b", "s-c"]


def secret_env(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A Workload template's env referencing 0-2 Secrets (and a plain variable now and then)."""
    names = draw(st.lists(st.sampled_from(SECRETS), max_size=2, unique=True))
    env: list[dict[str, Any]] = [
        {"name": f"V{i}", "valueFrom": {"secretRef": {"name": name, "key": "k"}}} for i, name in enumerate(names)
    ]
    return env + ([{"name": "PLAIN", "value": "x"}] if draw(st.booleans()) else [])


def secret_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    name = draw(st.sampled_from(SECRETS))
    if draw(st.integers(0, 3)) == 0:
        return key("secrets", name), None
    doc: StoredDocument = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "spec": {"data": {"k": draw(st.sampled_from(["v1", "v2"]))}},
    }
    return key("secrets", name), doc


CERTIFICATES = ["c-a", "c-b"]


def certificate_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    name = draw(st.sampled_from(CERTIFICATES))
    if draw(st.integers(0, 3)) == 0:
        return key("certificates", name), None
    doc: StoredDocument = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {"certificate": draw(st.sampled_from(["pem1", "pem2"])), "key": "k"},
        "status": {"x": draw(st.integers(0, 1))},
    }
    return key("certificates", name), doc


def replay(
    index: FleetIndex, history: list[Any], registered: list[str], after_each: Callable[[FleetIndex], None] | None = None
) -> None:
    """Apply ``history``; after each change, the changes reported to each registered node, applied to
    what it held, must equal its recomputed view (and ``after_each`` may check more)."""
    for name in registered:
        index.register(name)
    held = {name: index.view(name) for name in registered}
    for revision, (k, doc) in enumerate(history, start=1):
        result = index.apply(k, revision, doc)
        for name in registered:
            view = dict(held[name])
            for changed_key, obj in result.get(name, {}).items():
                if obj is None:
                    assert changed_key in view, "a deletion of a key the node does not hold"
                    del view[changed_key]
                else:
                    assert view.get(changed_key) != obj, "a put of what the node holds"
                    view[changed_key] = obj
            assert view == index.view(name)
            assert all(view[k2].object == obj.object for k2, obj in index.view(name).items())
            held[name] = view
        if after_each is not None:
            after_each(index)
        assert set(result) <= set(registered)


def cluster_info_change(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    name = draw(st.sampled_from(["default", "other"]))
    if draw(st.integers(0, 3)) == 0:
        return key("clusterinfos", name), None
    servers = draw(st.lists(st.sampled_from(["http://h1:7440", "http://h2:7440"]), min_size=1, unique=True))
    return key("clusterinfos", name), cluster_info_doc(*servers, name=name)


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, StoredDocument | None]:
    make: Callable[[st.DrawFn], tuple[str, StoredDocument | None]] = draw(
        st.sampled_from(
            [
                site_change,
                node_change,
                selected_change,
                cluster_info_change,
                revision_change,
                secret_change,
                certificate_change,
            ]
        )
    )
    return make(draw)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(changes(), min_size=1, max_size=40), st.lists(st.sampled_from(NODES), max_size=4, unique=True))
def test_incremental_changes_equal_recomputed_views(history: list[Any], registered: list[str]) -> None:
    replay(FleetIndex(), history, registered)


def spied_fleet(sites: int, per_site: int, parent: str | None = None) -> tuple[FleetIndex, list[str], int]:
    """Sites s0.. of ``per_site`` registered nodes each (under ``parent`` if given); node lookups are recorded."""
    index = FleetIndex()
    revision = 1
    if parent is not None:
        index.apply(key("sites", parent), revision, site_doc(parent))
    for s in range(sites):
        revision += 1
        index.apply(key("sites", f"s{s}"), revision, site_doc(f"s{s}", parents=(parent,) if parent else ()))
        for n in range(per_site):
            revision += 1
            index.apply(key("nodes", f"s{s}-{n}"), revision, node_doc(f"s{s}-{n}", f"s{s}"))
            index.register(f"s{s}-{n}")
    looked_at: list[str] = []
    index._nodes = _Spy(index._nodes, looked_at)
    return index, looked_at, revision


def test_a_node_change_looks_only_at_the_nodes_that_can_see_it() -> None:
    """Cost is per affected site and peer, not per connected node (10,000 connected nodes must not pay)."""
    index, looked_at, revision = spied_fleet(50, 4, parent="fra")
    changes = index.apply(key("nodes", "s7-1"), revision + 1, node_doc("s7-1", "s7", labels={"x": "y"}))
    assert set(changes) == {"s7-0", "s7-1", "s7-2", "s7-3"}
    assert {name for name in looked_at if not name.startswith("s7-")} == set(), "other sites' nodes untouched"
    assert index.peers_of("s7-1") == {"s7-0", "s7-2", "s7-3"} and index.peers_of("nobody") == frozenset()


class _Spy(dict[str, Any]):
    """A dict that records which keys were read with get()."""

    def __init__(self, data: dict[str, Any], seen: list[str]) -> None:
        super().__init__(data)
        self.seen = seen

    def get(self, name: str, default: Any = None) -> Any:
        self.seen.append(name)
        return super().get(name, default)


def test_a_workload_pinned_to_a_node_or_site_is_checked_only_against_those_nodes() -> None:
    index, looked_at, revision = spied_fleet(20, 5)
    changes = index.apply(key("workloads", "one"), revision + 1, workload_doc("one", "edgefleet.io/node=s3-2"))
    assert set(changes) == {"s3-2"} and set(looked_at) == {"s3-2"}
    looked_at.clear()
    changes = index.apply(
        key("workloads", "one"), revision + 2, workload_doc("one", "edgefleet.io/site in (s4,s5),role!=x")
    )
    assert set(changes) == {"s3-2"} | {f"s{s}-{n}" for s in (4, 5) for n in range(5)}, "left one, entered ten"
    assert set(looked_at) == set(changes)


# --- Workloads at per-node revisions ---------------------------------------------------


def rollout_fleet() -> Cloud:
    cloud = Cloud()
    cloud.put(key("sites", "s1"), site_doc("s1"))
    for name in ("n1", "n2", "n3"):
        cloud.put(key("nodes", name), node_doc(name, "s1"))
        cloud.index.register(name)
    for rev in ("r1", "r2"):
        cloud.put(key("workloadrevisions", f"web-{rev}"), revision_doc("web", rev))
    doc = workload_doc("web")
    doc["spec"]["template"] = {"command": ["run", "r2"]}
    doc["status"] = {"currentRevision": "r1"}
    cloud.put(key("workloads", "web"), doc)
    return cloud


def template_of(cloud: Cloud, node: str) -> Any:
    return cloud.view(node)[key("workloads", "web")].object["spec"]["template"]


def test_nodes_get_the_template_of_their_assigned_revision() -> None:
    cloud = rollout_fleet()
    assert [template_of(cloud, n)["command"] for n in ("n1", "n2", "n3")] == [["run", "r1"]] * 3
    projected = cloud.view("n1")[key("workloads", "web")].object
    assert set(projected["spec"]) == {"nodeSelector", "template"} and "generation" not in projected["metadata"]
    changes = cloud.index.apply(
        key("workloads", "web"),
        99,
        {**cloud.docs[key("workloads", "web")], "status": {"currentRevision": "r1", "nodeRevisions": {"n2": "r2"}}},
    )
    assert set(changes) == {"n2"}  # one node moves; nobody else is even sent anything
    assert template_of(cloud, "n2")["command"] == ["run", "r2"]


def test_a_template_edit_moves_nobody_until_assigned() -> None:
    cloud = rollout_fleet()
    doc = copy.deepcopy(cloud.docs[key("workloads", "web")])
    doc["spec"]["template"] = {"command": ["run", "r3"]}
    doc["metadata"]["generation"] = 2
    assert cloud.index.apply(key("workloads", "web"), 100, doc) == {}


def test_a_workload_before_its_first_status_runs_its_template() -> None:
    cloud = rollout_fleet()
    cloud.put(key("workloads", "fresh"), workload_doc("fresh"))
    assert key("workloads", "fresh") in cloud.view("n1")


def test_an_unknown_revision_keeps_what_the_node_has() -> None:
    cloud = rollout_fleet()
    doc = copy.deepcopy(cloud.docs[key("workloads", "web")])
    doc["status"]["nodeRevisions"] = {"n1": "missing"}
    assert cloud.index.apply(key("workloads", "web"), 100, doc) == {}
    assert template_of(cloud, "n1")["command"] == ["run", "r1"]


# --- Secrets follow the Workloads that reference them -----------------------------------


def secret_doc(name: str, **data: str) -> StoredDocument:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": data}}


def with_secret_env(doc: StoredDocument, *secrets: str) -> StoredDocument:
    doc["spec"]["template"]["env"] = [
        {"name": f"V{i}", "valueFrom": {"secretRef": {"name": name, "key": "k"}}} for i, name in enumerate(secrets)
    ]
    return doc


def test_a_secret_reaches_only_the_nodes_whose_workloads_reference_it() -> None:
    index = FleetIndex()
    revision = 0

    def put(k: str, doc: StoredDocument | None) -> dict[str, Any]:
        nonlocal revision
        revision += 1
        return index.apply(k, revision, doc)

    put(key("sites", "s1"), site_doc("s1"))
    put(key("nodes", "n1"), node_doc("n1", "s1", labels={"role": "cache"}))
    put(key("nodes", "n2"), node_doc("n2", "s1", labels={"role": "dns"}))
    for name in ("n1", "n2"):
        index.register(name)
    put(key("secrets", "db"), secret_doc("db", k="hunter2"))
    put(key("secrets", "unused"), secret_doc("unused", k="x"))
    changes = put(key("workloads", "app"), with_secret_env(workload_doc("app", "role=cache"), "db"))
    assert set(changes) == {"n1"} and set(changes["n1"]) == {key("workloads", "app"), key("secrets", "db")}
    assert key("secrets", "db") in index.view("n1")
    assert not any(k.startswith("/registry/secrets/") for k in index.view("n2"))
    assert key("secrets", "unused") not in index.view("n1")
    # A value change goes to n1 alone; a Secret nobody uses moves nobody.
    changes = put(key("secrets", "db"), secret_doc("db", k="correct horse"))
    assert set(changes) == {"n1"} and changes["n1"][key("secrets", "db")] is not None
    assert put(key("secrets", "unused"), secret_doc("unused", k="y")) == {}
    # The Workload stops referencing it: it leaves n1's view.
    changes = put(key("workloads", "app"), workload_doc("app", "role=cache"))
    assert changes["n1"][key("secrets", "db")] is None
    assert key("secrets", "db") not in index.view("n1")
