"""Random histories: store changes, disconnects, lost and duplicated messages, crashes, reconnects.

Whatever happened, a final clean sync leaves every node holding exactly its
view (keys, versions and documents); and whenever a link is quiet with
nothing pending or unacknowledged, the node already holds its view.
"""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgefleet.sync.cloud import CloudState

from .fleet import Cloud, EdgeNode, Link, domain_doc, key, node_doc, site_doc, workload_doc

WATCHED = ["a1", "a2", "b1"]  # nodes with an agent
OTHERS = ["p1", "o1"]
SITES = ["s-edge-a", "s-edge-b", "s-parent", "s-other"]
NODE_LABELS = [{}, {"role": "cache"}, {"role": "dns"}, {"role": "cache", "tier": "gold"}]
SITE_LABELS = [{"tier": "edge"}, {"tier": "parent"}, {"tier": "edge", "region": "eu"}]
WORKLOAD_SELECTORS = [
    "",
    "role=cache",
    "role=dns",
    "edgefleet.io/site=s-edge-a",
    "edgefleet.io/node=a1",
    "tier",
    "!tier",
]
DOMAIN_SELECTORS = ["", "tier=edge", "tier=parent", "edgefleet.io/site=s-edge-b", "region=eu"]
WORKLOADS = [f"w{i}" for i in range(6)]
DOMAINS = [f"d{i}" for i in range(4)]


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cloud = Cloud()
        self.nodes = {name: EdgeNode(name) for name in WATCHED}
        self.links: dict[str, Link] = {}
        self.cloud.put(key("sites", "s-parent"), site_doc("s-parent", labels={"tier": "parent"}))
        self.cloud.put(key("sites", "s-edge-a"), site_doc("s-edge-a", parents=("s-parent",), labels={"tier": "edge"}))
        self.cloud.put(key("sites", "s-edge-b"), site_doc("s-edge-b", parents=("s-parent",), labels={"tier": "edge"}))
        self.cloud.put(key("sites", "s-other"), site_doc("s-other", labels={"tier": "edge", "region": "eu"}))
        for name, site in [
            ("a1", "s-edge-a"),
            ("a2", "s-edge-a"),
            ("b1", "s-edge-b"),
            ("p1", "s-parent"),
            ("o1", "s-other"),
        ]:
            self.cloud.put(key("nodes", name), node_doc(name, site, labels={"role": "cache"}))

    # --- the store changes ---------------------------------------------------------------

    @rule(name=st.sampled_from(WORKLOADS), selector=st.sampled_from(WORKLOAD_SELECTORS), version=st.integers(0, 3))
    def put_workload(self, name: str, selector: str, version: int) -> None:
        self.cloud.put(key("workloads", name), workload_doc(name, selector, args=(str(version),)))

    @rule(name=st.sampled_from(DOMAINS), selector=st.sampled_from(DOMAIN_SELECTORS), ttl=st.integers(0, 3))
    def put_domain(self, name: str, selector: str, ttl: int) -> None:
        self.cloud.put(key("domains", name), domain_doc(name, selector, ttl=ttl))

    @rule(kind=st.sampled_from(["workloads", "domains"]), index=st.integers(0, 5))
    def delete_object(self, kind: str, index: int) -> None:
        names = WORKLOADS if kind == "workloads" else DOMAINS
        k = key(kind, names[index % len(names)])
        if k in self.cloud.docs:
            self.cloud.delete(k)

    @rule(name=st.sampled_from(WATCHED + OTHERS), site=st.sampled_from(SITES), labels=st.sampled_from(NODE_LABELS))
    def change_node(self, name: str, site: str, labels: dict[str, str]) -> None:
        self.cloud.put(key("nodes", name), node_doc(name, site, labels=labels))

    @rule(name=st.sampled_from(WATCHED + OTHERS), phase=st.sampled_from(["Ready", "NotReady", None]))
    def heartbeat(self, name: str, phase: str | None) -> None:
        k = key("nodes", name)
        if k in self.cloud.docs:
            doc = copy.deepcopy(self.cloud.docs[k])
            doc["status"] = {"phase": phase, "lastHeartbeat": str(self.cloud.revision)} if phase else {}
            self.cloud.put(k, doc)

    @rule(name=st.sampled_from(WATCHED))
    def delete_node(self, name: str) -> None:
        if key("nodes", name) in self.cloud.docs:
            self.cloud.delete(key("nodes", name))

    @rule(
        name=st.sampled_from(SITES),
        parents=st.lists(st.sampled_from(SITES), max_size=2, unique=True),
        labels=st.sampled_from(SITE_LABELS),
    )
    def change_site(self, name: str, parents: list[str], labels: dict[str, str]) -> None:
        self.cloud.put(
            key("sites", name), site_doc(name, parents=tuple(p for p in parents if p != name), labels=labels)
        )

    # --- the network -------------------------------------------------------------------------

    @rule(name=st.sampled_from(WATCHED), window=st.integers(1, 4), batch_bytes=st.sampled_from([300, 1500, 1 << 20]))
    def connect(self, name: str, window: int, batch_bytes: int) -> None:
        if name not in self.links:
            self.links[name] = Link(self.cloud, self.nodes[name], window=window, max_batch_bytes=batch_bytes)

    @rule(name=st.sampled_from(WATCHED), count=st.integers(1, 8))
    def deliver(self, name: str, count: int) -> None:
        link = self.links.get(name)
        for _ in range(count):
            if link is None or not (link.up or link.down):
                return
            link.deliver_up() if link.up and (not link.down or count % 2) else link.deliver_down()

    @rule(name=st.sampled_from(WATCHED))
    def deliver_all(self, name: str) -> None:
        if name in self.links:
            self.links[name].pump()

    @rule(name=st.sampled_from(WATCHED), upward=st.booleans())
    def lose_a_message(self, name: str, upward: bool) -> None:
        # A reliable transport loses a message only when the connection breaks.
        link = self.links.get(name)
        queue = None if link is None else (link.up if upward else link.down)
        if link is not None and queue:
            queue.popleft()
            self.disconnect(name)

    @rule(name=st.sampled_from(WATCHED))
    def duplicate_a_batch(self, name: str) -> None:
        link = self.links.get(name)
        if link is not None and link.down and json.loads(link.down[0])["type"] == "batch":
            link.down.insert(1, link.down[0])

    @rule(name=st.sampled_from(WATCHED))
    def crash_before_commit(self, name: str) -> None:
        link = self.links.get(name)
        if link is not None and link.down and not link.up:
            self.nodes[name].crash_before_commit = True
            link.deliver_down()
            self.nodes[name].crash_before_commit = False
            self.disconnect(name)

    @rule(name=st.sampled_from(WATCHED))
    def disconnect(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            link.cut()

    # --- what must always hold ------------------------------------------------------------------

    @invariant()
    def pending_is_bounded(self) -> None:
        for name, link in self.links.items():
            if not link.session.holdings_known:
                continue  # a resumed handshake assumes holdings until its check batch is answered
            in_flight = {item["key"] for text in link.down for item in json.loads(text).get("put", [])}
            bound = set(self.cloud.view(name)) | set(self.nodes[name].store) | in_flight
            assert link.session.pending_count <= len(bound)

    @invariant()
    def a_quiet_link_means_an_exact_copy(self) -> None:
        for name, link in self.links.items():
            session = link.session
            quiet = not link.up and not link.down and session.state is CloudState.STREAMING
            if quiet and session.pending_count == 0 and session.in_flight_count == 0:
                assert self.nodes[name].matches(self.cloud.view(name))

    def teardown(self) -> None:
        for name in WATCHED:
            self.disconnect(name)
            link = Link(self.cloud, self.nodes[name])
            link.pump()
            assert self.nodes[name].matches(self.cloud.view(name)), name
            assert self.nodes[name].epoch == self.cloud.epoch
            link.cut()


SyncMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRandomSync = SyncMachine.TestCase
