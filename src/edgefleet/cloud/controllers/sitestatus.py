"""Site status: each Site's healthy and total nodes and its measured load, at a bounded write rate.

The rule (:func:`aggregate`, :func:`status_patch`; pure):

- ``totalNodes``: the Nodes whose ``spec.site`` is the site;
- ``healthyNodes``: those the GSLB counts healthy, by its own rule
  (:class:`~edgefleet.gslb.fleet.FleetState`: a strict majority of the
  site's Ready voters voting a node down makes it unhealthy; otherwise one
  fresh healthy vote makes it healthy; without fresh votes it is healthy
  iff Ready), so DNS answers and ``get sites`` agree. Draining is not
  health: a draining node still counts as healthy here (it leaves the
  answers, and says so in ``get nodes``); a node without an address does not;
- ``loadGbps``: the sum of the latest load figures (about a minute, see
  :mod:`edgefleet.cache.accounting`) that the caches of its *counted* nodes
  reported in ``Node.status.cache``: counted nodes are Ready (the hub hears
  them, so their figures are current) and healthy (a cache that stopped
  answering its agent leaves its last figures behind). An edge site's load
  is what it sends to clients (``clientGbps``: relays between its own nodes
  stay inside the site); a parent site's is everything its nodes send
  (``egressGbps``: child sites' caches are its clients, and a cache cannot
  tell their requests from a site peer's). None when counted nodes report
  no figures (no cache runs there); 0 when no node is counted;
- ``load``: ``loadGbps / spec.capacityGbps``.

When (:func:`status_patch`): a change of ``healthyNodes`` or ``totalNodes``,
or the load appearing or going, is written at once; a change of the load
figures only when its last write is ``min_interval`` old (10 s by default)
and a figure moved by more than ``tolerance`` (5 %) of its value: traffic
moves the figures all the time, and each write is a watch event for every
watcher (the GSLB among them; a Site's status is not in any node's view).
In a large fleet the interval grows to ``sites / writes_per_second`` (20 a
second by default), so all sites together stay within a write budget.
The time of the last write is kept in memory only: a new leader may write
each site once at once.

How: every ``period`` seconds the controller reads Sites and Nodes from the
in-memory index of the hub of its process (no store reads), feeds the Nodes
that changed (by resourceVersion) to its own FleetState, and patches only its
four fields through the status path, with the Site's resourceVersion as a
precondition (a conflict, e.g. with the site activation controller, which
owns ``active``, ``phase``, ``lastTransitionTime``, ``observedGeneration``
and ``message``, is retried next round). A separate controller from site
activation because the two have different inputs and rates: activation acts
on DNS demand with hysteresis and records Events; this one follows reports.
It runs on one cloud replica at a time, under the leader election
``/system/leader/sitestatus``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.sites import INFO as SITES
from edgefleet.cloud.controllers.loop import patch_status, run_periodically
from edgefleet.cloud.registry import Registry
from edgefleet.gslb.fleet import FleetState

log = logging.getLogger("edgefleet.cloud.controllers.sitestatus")

MIN_INTERVAL = 10.0
"""Seconds: at most one write of a site's load figures this often."""
WRITES_PER_SECOND = 20.0
"""The fleet-wide budget of load writes: the interval grows with the number of sites."""
TOLERANCE = 0.05
"""A load figure is written again only when it moved by more than this share of its value."""
WRITTEN = ("healthyNodes", "totalNodes", "loadGbps", "load")
"""The status fields this controller owns (the rest of Site.status is the site activation controller's)."""


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """What the controller reads of one node: its site, whether it is counted, its reported load."""

    name: str
    site: str
    ready: bool
    healthy: bool
    egress_gbps: float | None
    client_gbps: float | None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _gbps(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return float(value)


def node_load(document: Mapping[str, Any], healthy: bool) -> NodeLoad:
    """A Node document (and the GSLB's health verdict on it) as a :class:`NodeLoad`."""
    status = _dict(document.get("status"))
    cache = _dict(status.get("cache"))
    return NodeLoad(
        str(_dict(document.get("metadata")).get("name", "")),
        str(_dict(document.get("spec")).get("site", "")),
        status.get("phase") == "Ready",
        healthy,
        _gbps(cache.get("egressGbps")),
        _gbps(cache.get("clientGbps")),
    )


def aggregate(site: Mapping[str, Any], nodes: Iterable[NodeLoad]) -> JSONObject:
    """The four status fields of ``site`` (a Site document) from its nodes (others are ignored)."""
    name = _dict(site.get("metadata")).get("name")
    spec = _dict(site.get("spec"))
    members = [node for node in nodes if node.site == name]
    counted = [node for node in members if node.ready and node.healthy]
    parent = spec.get("tier") == "parent"
    figures = [node.egress_gbps if parent else node.client_gbps for node in counted]
    reported = [figure for figure in figures if figure is not None]
    load_gbps = round(sum(reported), 6) if reported or not counted else None
    capacity = _gbps(spec.get("capacityGbps"))
    return {
        "healthyNodes": sum(1 for node in members if node.healthy),
        "totalNodes": len(members),
        "loadGbps": load_gbps,
        "load": round(load_gbps / capacity, 4) if load_gbps is not None and capacity else None,
    }


def status_patch(
    site: Mapping[str, Any],
    wanted: JSONObject,
    last_write: float | None,
    now: float,
    *,
    min_interval: float = MIN_INTERVAL,
    tolerance: float = TOLERANCE,
) -> JSONObject | None:
    """The merge patch writing ``wanted`` (the four fields only), or None: see the module docstring."""
    current = _dict(site.get("status"))
    if all(current.get(name) == value for name, value in wanted.items()):
        return None
    if not _structural(current, wanted):
        if last_write is not None and now - last_write < min_interval:
            return None
        if not any(_moved(current.get(name), wanted.get(name), tolerance) for name in ("loadGbps", "load")):
            return None
    version = _dict(site.get("metadata")).get("resourceVersion")
    return {"metadata": {"resourceVersion": version}, "status": dict(wanted)}


def _structural(current: Mapping[str, Any], wanted: JSONObject) -> bool:
    return (
        current.get("healthyNodes") != wanted.get("healthyNodes")
        or current.get("totalNodes") != wanted.get("totalNodes")
        or (current.get("loadGbps") is None) != (wanted.get("loadGbps") is None)
    )


def _moved(old: object, new: object, tolerance: float) -> bool:
    """Whether a figure moved by more than ``tolerance`` of the larger of its two values."""
    a, b = _gbps(old), _gbps(new)
    if a is None or b is None:
        return a != b
    return abs(a - b) > tolerance * max(a, b)


class NodeHealth:
    """The GSLB's health rule (:class:`~edgefleet.gslb.fleet.FleetState`) over the Nodes, fed what changed."""

    def __init__(self) -> None:
        self._fleet = FleetState()
        self._versions: dict[str, object] = {}

    def update(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """The current Nodes (with metadata.resourceVersion; without one a document is applied every time)."""
        seen = set()
        for document in nodes:
            metadata = _dict(document.get("metadata"))
            name, version = str(metadata.get("name", "")), metadata.get("resourceVersion")
            seen.add(name)
            if version is not None and self._versions.get(name) == version:
                continue
            self._fleet.apply("Node", name, _without_drains(document))
            self._versions[name] = version
        for name in set(self._versions) - seen:
            self._fleet.apply("Node", name, None)
            del self._versions[name]

    def healthy(self, name: str, now: float) -> bool:
        """Whether the GSLB's rule counts node ``name`` healthy at ``now`` (seconds since the epoch)."""
        return self._fleet.node_health(name, now)[0]


def _without_drains(document: Mapping[str, Any]) -> dict[str, Any]:
    """The Node as the health rule should see it: draining is not a health verdict."""
    spec = {**_dict(document.get("spec")), "draining": False}
    status = {key: value for key, value in _dict(document.get("status")).items() if key != "drains"}
    return {**document, "spec": spec, "status": status}


class SiteStatusController:
    """Every ``period`` seconds: each Site's nodes and load into its status, written at a bounded rate."""

    def __init__(
        self,
        registry: Registry,
        sites: Callable[[], Iterable[StoredDocument]],
        nodes: Callable[[], Iterable[StoredDocument]],
        *,
        period: float = 5.0,
        min_interval: float = MIN_INTERVAL,
        tolerance: float = TOLERANCE,
        writes_per_second: float = WRITES_PER_SECOND,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``sites`` and ``nodes``: every document of the kind with metadata.resourceVersion (the hub's index);
        ``clock``: seconds since the epoch (peer votes are dated)."""
        self._registry = registry
        self._sites = sites
        self._nodes = nodes
        self._period = period
        self._min_interval = min_interval
        self._tolerance = tolerance
        self._writes_per_second = writes_per_second
        self._clock = clock
        self._health = NodeHealth()
        self._written: dict[str, float] = {}  # Site name -> when this controller last wrote its status

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        await run_periodically(
            "site status", self.sync_once, self._period, log, settings={"min_interval": self._min_interval}
        )

    async def sync_once(self) -> int:
        """One round; returns how many statuses were written."""
        sites, nodes = list(self._sites()), list(self._nodes())
        now = self._clock()
        self._health.update(nodes)
        loads = [node_load(node, self._health.healthy(node["metadata"]["name"], now)) for node in nodes]
        by_site: dict[str, list[NodeLoad]] = {}
        for load in loads:
            by_site.setdefault(load.site, []).append(load)
        names = {site["metadata"]["name"] for site in sites}
        self._written = {name: at for name, at in self._written.items() if name in names}
        interval = max(self._min_interval, len(sites) / self._writes_per_second)
        written = 0
        for site in sites:
            name = site["metadata"]["name"]
            wanted = aggregate(site, by_site.get(name, []))
            patch = status_patch(
                site,
                wanted,
                self._written.get(name),
                now,
                min_interval=interval,
                tolerance=self._tolerance,
            )
            if patch is not None and await patch_status(self._registry, SITES, name, patch):
                self._written[name] = now
                written += 1
        return written
