"""The latency matrix: measured RTTs from the Sites' status, as the ``latency`` policy reads them.

How: each Site's ``status.latency`` (the latency controller's median over
the site's nodes, :mod:`edgefleet.cloud.controllers.latency`) holds RTTs
from the site to client networks (CIDR keys) and to other sites
(``site/<name>``). :func:`build` turns them into one
:data:`~edgefleet.gslb.policy.LatencyMatrix` with two kinds of rows:

- a **network** row per measured client network: ``matrix[network][site]``
  is the site's RTT to it. The client's address is matched against these
  networks by longest prefix (:class:`~edgefleet.gslb.networks.NetworkTable`).
- a **region** row per region whose sites measured other sites:
  ``matrix[region][site]`` is the median, over the region's sites X, of the
  RTT from X to the site (0 from X to itself). A client of that region with
  no measured network is routed by it: a stand-in for the client's own RTT,
  from the nearest point of presence the fleet has. A region without such
  measurements has no row (plain ``geo``, as before).

Why keys never collide: a region is a DNS label, a network holds a ``/``.
Pure: values in, values out.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edgefleet.gslb.networks import NetworkTable
from edgefleet.gslb.policy import LatencyMatrix

SITE_PREFIX = "site/"


@dataclass(frozen=True, slots=True)
class SiteLatency:
    """One site's region and measured RTTs (key -> ms)."""

    name: str
    region: str
    latency: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Latency:
    """The matrix and the table of its measured networks."""

    matrix: LatencyMatrix = field(default_factory=dict)
    networks: NetworkTable = field(default_factory=lambda: NetworkTable(()))


EMPTY = Latency()


def build(sites: Iterable[SiteLatency]) -> Latency:
    """The matrix of ``sites`` (see the module docstring); :data:`EMPTY` when nothing is measured."""
    sites = list(sites)
    rows: dict[str, dict[str, float]] = {}
    to_sites: dict[str, dict[str, float]] = {}
    for site in sites:
        for key, ms in site.latency:
            if key.startswith(SITE_PREFIX):
                to_sites.setdefault(site.name, {})[key[len(SITE_PREFIX) :]] = ms
            else:
                rows.setdefault(key, {})[site.name] = ms
    networks = NetworkTable(sorted(rows))
    rows = {network: rows[network] for network in networks.networks}
    names = [site.name for site in sites]
    for region in sorted({site.region for site in sites}):
        members = [site.name for site in sites if site.region == region]
        if not any(member in to_sites for member in members):
            continue
        rows[region] = _region_row(members, names, to_sites)
    if not rows:
        return EMPTY
    return Latency(rows, networks)


def _region_row(members: list[str], names: list[str], to_sites: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    row = {}
    for target in names:
        values = [0.0 if member == target else to_sites.get(member, {}).get(target) for member in members]
        measured = [value for value in values if value is not None]
        if measured:
            row[target] = round(statistics.median(measured), 1)
    return row
