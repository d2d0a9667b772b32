"""Latency controller: per-site RTTs from the nodes' probes into ``Site.status.latency``, and the probe targets.

The rule (:func:`site_latency`, :func:`latency_patch`; pure):

- A site's figure for a target (a client network, or ``site/<name>``) is
  the **median** over its *counted* nodes (Ready and healthy, by the GSLB's
  own rule, as the site status controller counts them) of what each reports
  in ``Node.status.latency``, clamped to
  [0, :data:`~edgefleet.api.probetargets.MAX_RTT_MS`]. A target no counted
  node reports has no figure.
- Only **current targets** count: the keys of the ProbeTargets objects and
  the sites. A node cannot put a network of its choice into the matrix
  (say 0 ms to 0.0.0.0/0, to draw every client to its site), and what it
  says about real targets weighs one vote in its site's median: it moves
  its own site's figure only when it is the site's only counted node (the
  same limit as peer votes; three nodes or more resist one liar). At most
  :data:`~edgefleet.api.probetargets.MAX_LATENCY_ENTRIES` figures per site
  (the targets most nodes report, then by key).
- When: a target appearing or going is written at once; figures only when
  the site's last write is ``min_interval`` old (10 s) and one moved by
  more than ``tolerance`` (25 %) *and* 1 ms: RTTs jitter, and each write is
  a watch event for every watcher (the GSLB among them). The interval
  grows to ``sites / writes_per_second`` in a large fleet.

The probe targets it keeps (:func:`site_targets`, :func:`resolver_targets`):
``fleet-sites`` (one address per site: the first address of its first
counted node, by name) and ``gslb-resolvers`` (the GSLB's busiest resolver
networks, :class:`~edgefleet.gslb.networks.NetworkCounter`: bounded top-N
with decay, a minimum query count), each written only when its list
changed and at most every ``targets_interval`` (30 s): every write of them
goes to every node's view.

How: every ``period`` seconds it reads Sites, Nodes and ProbeTargets from
the hub's in-memory index (no store reads), feeds the Nodes that changed to
its own copy of the health rule, and patches ``status.latency`` through the
status path with the Site's resourceVersion as a precondition (a conflict
is retried next round). It runs on one cloud replica at a time, under the
leader election ``/system/leader/latency``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.probetargets import INFO as PROBE_TARGETS
from edgefleet.api.probetargets import (
    MAX_LATENCY_ENTRIES,
    MAX_RTT_MS,
    RESOLVERS_NAME,
    SITE_PREFIX,
    SITES_NAME,
    ProbeTarget,
)
from edgefleet.api.sites import INFO as SITES
from edgefleet.cloud.controllers.loop import patch_status, run_periodically
from edgefleet.cloud.controllers.sitestatus import NodeHealth
from edgefleet.cloud.registry import ObjectExists, ObjectNotFound, Registry, VersionConflict
from edgefleet.gslb.networks import SeenNetwork

log = logging.getLogger("edgefleet.cloud.controllers.latency")

MIN_INTERVAL = 10.0
"""Seconds: at most one write of a site's figures this often (a target appearing or going: at once)."""
TOLERANCE = 0.25
"""A figure is written again only when it moved by more than this share of its value (and 1 ms)."""
MIN_MOVE_MS = 1.0
TARGETS_INTERVAL = 30.0
"""Seconds: at most one write of each of the cloud's ProbeTargets objects this often."""
WRITES_PER_SECOND = 20.0


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ms(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), MAX_RTT_MS)


def current_keys(probe_targets: Iterable[Mapping[str, Any]], sites: Iterable[str]) -> set[str]:
    """The latency keys nodes may report: every ProbeTargets target's, and ``site/<name>`` of every site."""
    keys = {f"{SITE_PREFIX}{site}" for site in sites}
    for document in probe_targets:
        for item in _dict(document.get("spec")).get("targets") or []:
            item = _dict(item)
            if isinstance(item.get("network"), str):
                keys.add(item["network"])
            elif isinstance(item.get("site"), str):
                keys.add(f"{SITE_PREFIX}{item['site']}")
    return keys


def site_latency(reports: Iterable[Mapping[str, Any]], allowed: set[str]) -> dict[str, float]:
    """``{key: ms}``: the median over the counted nodes' ``latency`` reports, current keys only, bounded."""
    values: dict[str, list[float]] = {}
    for report in reports:
        for key, value in _dict(report).items():
            ms = _ms(value)
            if ms is not None and key in allowed:
                values.setdefault(key, []).append(ms)
    ranked = sorted(values, key=lambda key: (-len(values[key]), key))[:MAX_LATENCY_ENTRIES]
    return {key: round(statistics.median(values[key]), 1) for key in sorted(ranked)}


def latency_patch(
    site: Mapping[str, Any],
    wanted: Mapping[str, float],
    last_write: float | None,
    now: float,
    *,
    min_interval: float = MIN_INTERVAL,
    tolerance: float = TOLERANCE,
) -> JSONObject | None:
    """The merge patch writing ``wanted`` as ``status.latency`` (removed keys as null), or None (module docstring)."""
    current = {key: value for key, value in _dict(_dict(site.get("status")).get("latency")).items()}
    if current == dict(wanted):
        return None
    if current.keys() == wanted.keys():
        if last_write is not None and now - last_write < min_interval:
            return None
        if not any(_moved(current[key], wanted[key], tolerance) for key in wanted):
            return None
    latency: dict[str, Any] = {key: None for key in current if key not in wanted}
    latency.update(wanted)
    version = _dict(site.get("metadata")).get("resourceVersion")
    return {"metadata": {"resourceVersion": version}, "status": {"latency": latency or None}}


def _moved(old: object, new: float, tolerance: float) -> bool:
    previous = _ms(old)
    if previous is None:
        return True
    change = abs(previous - new)
    return change > MIN_MOVE_MS and change > tolerance * max(previous, new)


def site_targets(sites: Iterable[str], nodes: Iterable[tuple[str, str, bool, Sequence[str]]]) -> list[JSONObject]:
    """``fleet-sites`` targets: per site, the first address of its first counted node (name, site, counted,
    addresses), by node name; sites without one are left out."""
    first: dict[str, str] = {}
    for _, site, counted, addresses in sorted(nodes):
        if counted and addresses and site not in first:
            first[site] = addresses[0]
    return [{"site": site, "address": first[site]} for site in sorted(sites) if site in first]


def resolver_targets(networks: Iterable[SeenNetwork]) -> list[JSONObject]:
    """``gslb-resolvers`` targets: each busy network, probed with TCP where it says (a resolver network: its last
    resolver address, port 53; a Client Subnet: its first host, port 443)."""
    return [
        {"network": seen.network, "address": seen.address, "port": seen.port, "method": "tcp"}
        for seen in sorted(networks, key=lambda seen: seen.network)
    ]


def _normal(targets: object) -> list[JSONObject]:
    """Targets as stored (defaults filled in), so a written list compares equal to the one read back."""
    out = []
    for item in targets if isinstance(targets, list) else []:
        with contextlib.suppress(ValidationError):
            out.append(ProbeTarget.model_validate(item).model_dump(mode="json", by_alias=True, exclude_none=True))
    return out


def no_networks() -> list[SeenNetwork]:
    return []


class LatencyController:
    """Every ``period`` seconds: sites' RTT figures into Site.status.latency, and the cloud's probe targets."""

    def __init__(
        self,
        registry: Registry,
        documents: Callable[[str], Iterable[StoredDocument]],
        *,
        networks: Callable[[], Iterable[SeenNetwork]] = no_networks,
        period: float = 5.0,
        min_interval: float = MIN_INTERVAL,
        targets_interval: float = TARGETS_INTERVAL,
        writes_per_second: float = WRITES_PER_SECOND,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``documents(plural)``: every document of the kind with metadata.resourceVersion (the hub's index);
        ``networks``: the GSLB's busiest resolver networks (none without a GSLB in this process)."""
        self._registry = registry
        self._documents = documents
        self._networks = networks
        self._period = period
        self._min_interval = min_interval
        self._targets_interval = targets_interval
        self._writes_per_second = writes_per_second
        self._clock = clock
        self._health = NodeHealth()
        self._written: dict[str, float] = {}
        self._targets_written: dict[str, float] = {}

    async def run(self) -> None:
        """Until cancelled. Store failures are logged and retried next period."""
        await run_periodically(
            "latency", self.sync_once, self._period, log, settings={"min_interval": self._min_interval}
        )

    async def sync_once(self) -> int:
        """One round; returns how many objects were written."""
        sites, nodes = list(self._documents("sites")), list(self._documents("nodes"))
        targets = list(self._documents("probetargets"))
        now = self._clock()
        self._health.update(nodes)
        names = {site["metadata"]["name"] for site in sites}
        allowed = current_keys(targets, names)
        counted: dict[str, list[Mapping[str, Any]]] = {}
        members = []
        for node in nodes:
            spec, status = _dict(node.get("spec")), _dict(node.get("status"))
            ok = status.get("phase") == "Ready" and self._health.healthy(node["metadata"]["name"], now)
            members.append((node["metadata"]["name"], str(spec.get("site", "")), ok, list(spec.get("addresses") or [])))
            if ok:
                counted.setdefault(str(spec.get("site", "")), []).append(_dict(status.get("latency")))
        written = await self._write_sites(sites, counted, allowed, now)
        by_name = {doc["metadata"]["name"]: doc for doc in targets}
        written += await self._write_targets(by_name, SITES_NAME, site_targets(names, members), now)
        written += await self._write_targets(by_name, RESOLVERS_NAME, resolver_targets(self._networks()), now)
        return written

    async def _write_sites(
        self, sites: list[StoredDocument], counted: Mapping[str, list[Mapping[str, Any]]], allowed: set[str], now: float
    ) -> int:
        names = {s["metadata"]["name"] for s in sites}
        self._written = {name: at for name, at in self._written.items() if name in names}
        interval = max(self._min_interval, len(sites) / self._writes_per_second)
        written = 0
        for site in sites:
            name = site["metadata"]["name"]
            wanted = site_latency(counted.get(name, []), allowed - {f"{SITE_PREFIX}{name}"})
            patch = latency_patch(site, wanted, self._written.get(name), now, min_interval=interval)
            if patch is not None and await patch_status(self._registry, SITES, name, patch):
                self._written[name] = now
                written += 1
        return written

    async def _write_targets(
        self, existing: Mapping[str, StoredDocument], name: str, targets: list[JSONObject], now: float
    ) -> int:
        """Create, replace or delete the cloud's ProbeTargets ``name``; 1 if written."""
        current = existing.get(name)
        targets = _normal(targets)
        have = _normal(_dict(current.get("spec")).get("targets") or []) if current is not None else None
        if have == targets or (current is None and not targets):
            return 0
        if now - self._targets_written.get(name, -math.inf) < self._targets_interval:
            return 0
        document: dict[str, Any] = {
            "apiVersion": "edgefleet.io/v1",
            "kind": "ProbeTargets",
            "metadata": {"name": name, "labels": {"edgefleet.io/managed-by": "cloud"}},
            "spec": {"targets": targets},
        }
        try:
            if current is None:
                await self._registry.create(PROBE_TARGETS, document)
            elif not targets:
                await self._registry.delete(PROBE_TARGETS, name)
            else:
                document["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                await self._registry.replace(PROBE_TARGETS, name, document)
        except (VersionConflict, ObjectNotFound, ObjectExists):
            return 0
        self._targets_written[name] = now
        return 1
