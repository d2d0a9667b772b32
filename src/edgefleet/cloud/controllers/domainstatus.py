"""Domain status: sum the nodes' traffic figures into each Domain's status, at a bounded write rate.

The rule (:func:`aggregate`, :func:`desired_status`, :func:`status_patch`; pure):

- the nodes counted are the Ready nodes whose view holds the Domain (the
  hub's :meth:`~edgefleet.sync.views.FleetIndex.nodes_serving`, the rule that
  sends them the Domain); ``servingSites`` are their sites;
- from each, ``Node.status.cache.domains[<domain>]`` (a window of the
  cache's last ``windowSeconds``, see :mod:`edgefleet.api.nodes`):
  ``requests`` and ``bytes`` are client requests, so their sum counts each
  user request once; ``originRequests`` and ``originBytes`` are what each
  node fetched from origins, so their sum is what the origins saw;
- ``offload`` = 1 - originRequests / requests and ``byteOffload`` = 1 -
  originBytes / bytes (clamped to [0, 1]; none without requests). A node
  that serves the Domain but reported no figures for it (idle, or not among
  its 50 busiest) adds nothing; once one serving node's cache reports at
  all, the sums are figures (0 for an idle Domain, so ``get domains`` shows
  0 requests, not ``<none>``), and they are none only while no cache has
  reported.

When: a Domain's status is written only when a figure differs from the
stored one, and at most once per ``min_interval`` seconds per Domain (20 s
by default): traffic moves the figures all the time, and each write is a
watch event for every watcher. The time of the last write is kept in memory
only; a new leader may write each Domain once at once.

How: every ``period`` seconds the controller reads Domains and Nodes from
the in-memory index of the hub of its process (no store reads), and patches
changed statuses through the status path with the Domain's resourceVersion
as a precondition (a conflict is retried next round). It runs on one cloud
replica at a time, under the leader election ``/system/leader/domainstatus``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.domains import INFO as DOMAINS
from edgefleet.cloud.controllers.loop import patch_status, run_periodically
from edgefleet.cloud.registry import Registry
from edgefleet.sync.views import FleetIndex

log = logging.getLogger("edgefleet.cloud.controllers.domainstatus")

MIN_INTERVAL = 20.0
"""Seconds: at most one status write per Domain this often."""
SUMMED = ("requests", "originRequests", "bytes", "originBytes")
WRITTEN = ("servingSites", "windowSeconds", *SUMMED, "offload", "byteOffload", "message")


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What the controller reads of one node serving a Domain."""

    name: str
    site: str
    ready: bool
    cache: Mapping[str, Any]


def aggregate(domain: str, nodes: Iterable[NodeReport]) -> JSONObject:
    """The Domain's figures from the nodes serving it (see the module docstring)."""
    ready = [node for node in nodes if node.ready]
    sums = dict.fromkeys(SUMMED, 0)
    reported, window = False, None
    for node in ready:
        if "windowSeconds" not in node.cache:
            continue  # no cache report (yet): this node says nothing about the Domain
        reported = True  # a cache that reports and has no figures for the Domain served it nothing
        window = max(window or 0, _count(node.cache.get("windowSeconds")))
        figures = (node.cache.get("domains") or {}).get(domain)
        if not isinstance(figures, Mapping):
            continue
        for name in SUMMED:
            sums[name] += _count(figures.get(name))
    status: JSONObject = {
        "servingSites": sorted({node.site for node in ready}),
        "windowSeconds": window,
        **{name: (sums[name] if reported else None) for name in SUMMED},
        "offload": _offload(sums["originRequests"], sums["requests"]) if reported else None,
        "byteOffload": _offload(sums["originBytes"], sums["bytes"]) if reported else None,
        "message": None if ready else "no Ready node serves this domain",
    }
    return status


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _offload(origin: int, whole: int) -> float | None:
    if whole <= 0:
        return None
    return round(1.0 - min(max(origin / whole, 0.0), 1.0), 4)


def desired_status(domain: StoredDocument, nodes: Iterable[NodeReport]) -> JSONObject:
    """The status fields the controller owns, for ``domain`` (None values are fields to remove)."""
    return {"observedGeneration": domain["metadata"].get("generation"), **aggregate(domain["metadata"]["name"], nodes)}


def status_patch(
    domain: StoredDocument, wanted: JSONObject, last_write: float | None, now: float, min_interval: float = MIN_INTERVAL
) -> JSONObject | None:
    """The merge patch writing ``wanted``, or None: nothing moved, or only figures did and too recently.

    A change of what serves the Domain (sites, generation, figures appearing or going) is written at once.
    """
    current = domain.get("status") or {}
    if all(current.get(name) == value for name, value in wanted.items()):
        return None
    if last_write is not None and now - last_write < min_interval and not _structural(current, wanted):
        return None
    return {"metadata": {"resourceVersion": domain["metadata"].get("resourceVersion")}, "status": wanted}


def _structural(current: Mapping[str, Any], wanted: JSONObject) -> bool:
    return (
        current.get("servingSites") != wanted.get("servingSites")
        or current.get("observedGeneration") != wanted.get("observedGeneration")
        or (current.get("requests") is None) != (wanted.get("requests") is None)
    )


def reports(index: FleetIndex, domain: str) -> list[NodeReport]:
    """The nodes whose view holds ``domain``, as :class:`NodeReport` (from the hub's index)."""
    found = []
    for name in sorted(index.nodes_serving(domain)):
        entry = index.get(f"/registry/nodes/{name}")
        if entry is None:
            continue
        document = entry[1]
        status = document.get("status") or {}
        cache = status.get("cache")
        found.append(
            NodeReport(
                name,
                str((document.get("spec") or {}).get("site", "")),
                status.get("phase") == "Ready",
                cache if isinstance(cache, Mapping) else {},
            )
        )
    return found


class DomainStatusController:
    """Every ``period`` seconds: each Domain's status from its nodes, written when it moved (bounded rate)."""

    def __init__(
        self,
        registry: Registry,
        index: Callable[[], FleetIndex],
        documents: Callable[[], Iterable[StoredDocument]],
        *,
        period: float = 5.0,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``documents``: every Domain document with metadata.resourceVersion (the hub's index)."""
        self._registry = registry
        self._index = index
        self._documents = documents
        self._period = period
        self._min_interval = min_interval
        self._clock = clock
        self._written: dict[str, float] = {}  # Domain name -> when this controller last wrote its status

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        await run_periodically(
            "domain status", self.sync_once, self._period, log, settings={"min_interval": self._min_interval}
        )

    async def sync_once(self) -> int:
        """One round; returns how many statuses were written."""
        index = self._index()
        domains = list(self._documents())
        names = {domain["metadata"]["name"] for domain in domains}
        self._written = {name: at for name, at in self._written.items() if name in names}
        written = 0
        for domain in domains:
            name = domain["metadata"]["name"]
            wanted = desired_status(domain, reports(index, name))
            now = self._clock()
            patch = status_patch(domain, wanted, self._written.get(name), now, self._min_interval)
            if patch is not None and await patch_status(self._registry, DOMAINS, name, patch):
                self._written[name] = now
                written += 1
        return written
