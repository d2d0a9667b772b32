"""An in-memory fleet for the sync tests: a store, the hub's index, nodes and the links between them.

How: :class:`Cloud` plays the store and the hub shell: every write gets the
next revision, goes through the :class:`FleetIndex`, and the view changes go
to the sessions of connected nodes. :class:`EdgeNode` plays the agent shell
and its local store (a dict). A :class:`Link` is one WebSocket: messages wait
in two queues until the test delivers, drops, duplicates them or cuts the
link, and every delivered message is recorded so tests can count bytes and
message types. Nothing here is mocked: the sessions and the index are the
real ones; only the I/O is replaced by queues.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from edgefleet.api.documents import JSONObject, ObjectMetadata, StoredDocument
from edgefleet.sync.agent import AgentSession, ApplyBatch, LocalState, LogsRequested
from edgefleet.sync.cloud import CloudSession
from edgefleet.sync.views import FleetIndex, ViewObject

Doc = StoredDocument


def key(kind: str, name: str) -> str:
    return f"/registry/{kind}/{name}"


def site_doc(name: str, *, parents: tuple[str, ...] = (), labels: dict[str, str] | None = None, **extra: Any) -> Doc:
    spec: JSONObject = {
        "region": "eu-west",
        "location": {"lat": 48.85, "lon": 2.35, "country": "FR"},
        "tier": "parent" if name.endswith("parent") else "edge",
        "parents": list(parents),
        "capacityGbps": 10,
        **extra,
    }
    return _doc("Site", name, spec, labels)


def node_doc(name: str, site: str, *, labels: dict[str, str] | None = None, phase: str | None = "Ready") -> Doc:
    doc = _doc("Node", name, {"site": site, "addresses": ["192.0.2.10"]}, labels)
    doc["status"] = {"phase": phase, "lastHeartbeat": "2024-01-01T00:00:00Z"} if phase else {}
    return doc


def workload_doc(name: str, selector: str = "", *, args: tuple[str, ...] = ()) -> Doc:
    spec: JSONObject = {"nodeSelector": selector, "template": {"command": ["cache-server"], "args": list(args)}}
    return _doc("Workload", name, spec, None)


def domain_doc(name: str, sites: str = "", *, ttl: int = 3600) -> Doc:
    spec: JSONObject = {
        "hostnames": [f"{name}.example"],
        "origins": [{"url": f"https://origin.{name}.example"}],
        "cachePolicy": {"defaultTtl": ttl},
        "sites": sites,
    }
    return _doc("Domain", name, spec, None)


def _doc(kind: str, name: str, spec: JSONObject, labels: dict[str, str] | None) -> Doc:
    metadata: ObjectMetadata = {"name": name, "uid": f"uid-{name}", "generation": 1}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "edgefleet.io/v1", "kind": kind, "metadata": metadata, "spec": spec}


class Cloud:
    """The store and the hub shell."""

    def __init__(self, epoch: str = "epoch-1") -> None:
        self.epoch = epoch
        self.revision = 0
        self.docs: dict[str, Doc] = {}
        self.index = FleetIndex()
        self.links: dict[str, Link] = {}

    def put(self, k: str, doc: Doc) -> None:
        self.revision += 1
        self.docs[k] = doc
        self._fan_out(self.index.apply(k, self.revision, doc))

    def delete(self, k: str) -> None:
        self.revision += 1
        self.docs.pop(k, None)
        self._fan_out(self.index.apply(k, self.revision, None))

    def edit(self, k: str, path: str, value: Any) -> None:
        """Set a dotted path (``spec.parents``, ``metadata.labels``) in a copy of the document and store it."""
        doc = copy.deepcopy(self.docs[k])
        *parents, last = path.split(".")
        target = cast(JSONObject, doc)  # a dotted path may reach any field: the index reads the result
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
        self.put(k, doc)

    def restore(self, epoch: str, docs: dict[str, Doc], start_revision: int = 1) -> None:
        """A new store (restored from a backup): new epoch, new revisions; sessions are dropped."""
        for link in list(self.links.values()):
            link.cut()
        self.epoch = epoch
        self.docs = dict(docs)
        self.revision = start_revision + len(docs)
        items = [(k, start_revision + i, doc) for i, (k, doc) in enumerate(sorted(self.docs.items()))]
        self.index = FleetIndex()
        self.index.load(items, self.revision)

    def view(self, node: str) -> dict[str, ViewObject]:
        return self.index.view(node)

    def _fan_out(self, changes: dict[str, dict[str, ViewObject | None]]) -> None:
        for name, link in self.links.items():
            link.session.update(changes.get(name, {}), self.revision)
            link.flush()


@dataclass
class EdgeNode:
    """The agent shell and its local store."""

    name: str
    epoch: str = ""
    revision: int = 0
    store: dict[str, ViewObject] = field(default_factory=dict)
    applied_batches: int = 0
    crash_before_commit: bool = False  # hand batches out but never commit them

    def local_state(self) -> LocalState:
        return LocalState(self.epoch, self.revision, self.holdings(), "0.1.0")

    def holdings(self) -> dict[str, int]:
        return {k: obj.rev for k, obj in self.store.items()}

    def commit(self, event: ApplyBatch) -> None:
        for k in event.delete:
            self.store.pop(k, None)
        for obj in event.put:
            self.store[obj.key] = obj
        self.revision = event.revision
        self.epoch = event.epoch
        self.applied_batches += 1

    def matches(self, view: dict[str, ViewObject]) -> bool:
        """The store holds exactly ``view``: same keys, revs and documents."""
        return self.holdings() == {k: obj.rev for k, obj in view.items()} and all(
            self.store[k].object == obj.object for k, obj in view.items()
        )


class Link:
    """One WebSocket between a node's AgentSession and its CloudSession on the hub."""

    def __init__(self, cloud: Cloud, node: EdgeNode, *, window: int = 4, max_batch_bytes: int = 1024 * 1024) -> None:
        self.cloud = cloud
        self.node = node
        self.session = CloudSession(
            node.name,
            epoch=cloud.epoch,
            hub_id="hub-a",
            heartbeat_seconds=10,
            window=window,
            max_batch_bytes=max_batch_bytes,
        )
        self.agent = AgentSession(node.name, local=node.local_state())
        self.up: deque[str] = deque()  # agent -> cloud
        self.down: deque[str] = deque()  # cloud -> agent
        self.delivered: list[tuple[str, str]] = []  # ("up" | "down", text)
        self.open = True
        cloud.index.register(node.name)
        cloud.links[node.name] = self
        self.up.append(self.agent.hello())

    # --- delivery ------------------------------------------------------------

    def deliver_up(self) -> None:
        text = self.up.popleft()
        self.delivered.append(("up", text))
        self.session.receive(text)
        if self.session.needs_view:
            self.session.start(self.cloud.view(self.node.name), self.cloud.revision)
        self.flush()

    def deliver_down(self) -> None:
        text = self.down.popleft()
        self.delivered.append(("down", text))
        for event in self.agent.receive(text):
            if isinstance(event, ApplyBatch) and not self.node.crash_before_commit:
                self.node.commit(event)
                self.agent.applied(event.seq)
            elif isinstance(event, LogsRequested):
                self.agent.logs_reply(event.id, f"{event.tail} lines of {event.workload}")
        self.flush()

    def flush(self) -> None:
        if self.open:
            self.down.extend(self.session.data_to_send())
            self.up.extend(self.agent.data_to_send())

    def pump(self, max_steps: int = 100_000) -> None:
        """Deliver everything, both ways, until both sides are quiet."""
        for _ in range(max_steps):
            if self.up:
                self.deliver_up()
            elif self.down:
                self.deliver_down()
            else:
                return
        raise AssertionError("the link never went quiet")

    def cut(self) -> None:
        """The connection drops: whatever is in flight is lost."""
        if self.open:
            self.open = False
            self.up.clear()
            self.down.clear()
            self.cloud.index.unregister(self.node.name)
            if self.cloud.links.get(self.node.name) is self:
                del self.cloud.links[self.node.name]

    # --- what went over the wire -----------------------------------------------

    def messages(self, direction: str, kind: str | None = None) -> list[JSONObject]:
        docs = [json.loads(text) for way, text in self.delivered if way == direction]
        return [doc for doc in docs if kind is None or doc["type"] == kind]

    def types(self, direction: str) -> list[str]:
        return [doc["type"] for doc in self.messages(direction)]

    def bytes(self) -> int:
        return sum(len(text.encode()) for _, text in self.delivered)

    def put_keys(self) -> list[str]:
        return [item["key"] for batch in self.messages("down", "batch") for item in batch["put"]]

    def deleted_keys(self) -> list[str]:
        return [k for batch in self.messages("down", "batch") for k in batch["delete"]]


def sync(cloud: Cloud, node: EdgeNode, **options: Any) -> Link:
    """Connect ``node`` and deliver everything until both sides are quiet."""
    link = Link(cloud, node, **options)
    link.pump()
    return link


def small_fleet(cloud: Cloud) -> None:
    """Sites par-edge (parent fra-parent) and lyo-edge; nodes par-1..3, fra-1, lyo-1; some workloads and domains."""
    cloud.put(key("sites", "fra-parent"), site_doc("fra-parent", labels={"tier": "parent"}))
    cloud.put(key("sites", "par-edge"), site_doc("par-edge", parents=("fra-parent",), labels={"tier": "edge"}))
    cloud.put(key("sites", "lyo-edge"), site_doc("lyo-edge", parents=("fra-parent",), labels={"tier": "edge"}))
    for name, site in [("par-1", "par-edge"), ("par-2", "par-edge"), ("par-3", "par-edge")]:
        cloud.put(key("nodes", name), node_doc(name, site, labels={"role": "cache"}))
    cloud.put(key("nodes", "fra-1"), node_doc("fra-1", "fra-parent", labels={"role": "cache"}))
    cloud.put(key("nodes", "lyo-1"), node_doc("lyo-1", "lyo-edge", labels={"role": "cache"}))
    cloud.put(key("workloads", "cache"), workload_doc("cache", "role=cache"))
    cloud.put(key("workloads", "dns"), workload_doc("dns", "role=dns"))
    cloud.put(key("workloads", "par-only"), workload_doc("par-only", "edgefleet.io/site=par-edge"))
    cloud.put(key("domains", "shop"), domain_doc("shop", "tier=edge"))
    cloud.put(key("domains", "origin-shield"), domain_doc("origin-shield", "tier=parent"))


def big_fleet(cloud: Cloud, node: str = "par-1", size: int = 200) -> None:
    """A fleet where ``node``'s view holds exactly ``size`` objects, plus objects of other nodes."""
    small_fleet(cloud)
    for i in range(50):
        cloud.put(key("workloads", f"other-{i}"), workload_doc(f"other-{i}", "role=dns"))
    i = 0
    while len(cloud.view(node)) < size:
        cloud.put(key("workloads", f"w-{i}"), workload_doc(f"w-{i}", "role=cache", args=(str(i),)))
        i += 1
    assert len(cloud.view(node)) == size
