"""Hub: one cloud replica's hub, as it publishes itself for the others and for operators.

How: every ``edgefleet cloud`` process writes one Hub object about itself,
bound to a store lease it keeps alive, so the object disappears within the
lease's TTL when the replica dies (``edgefleet get hubs`` lists the live
replicas). Nobody but the replica writes it; operators only read it.

What it carries, and who reads it:

- ``spec.hubId`` (the id agents see in ``welcome`` and in ``Node.status.hub``)
  and ``spec.url``, the base URL agents and the other replicas reach this
  replica at (``--advertise-url``);
- ``status.connections`` and ``status.nodes``, the names of the nodes with a
  live session here. This is node *liveness*: the node lifecycle
  controller reads it instead of a heartbeat time written per node, so idle
  nodes cost no store writes (Kubernetes moved node heartbeats to Leases for
  the same reason). The list is rewritten when it changes, at most every
  couple of seconds;
- ``status.demand``: the DNS queries per second this replica's GSLB answered,
  by client region; the site activation controller sums every replica's;
- ``status.maxConnections``: the replica's limit, for balancing.

The replicas balance their connections from these objects: each computes
its expected share (total connections / live replicas) and releases the
excess (:mod:`edgefleet.cloud.balance`).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from edgefleet.api.common import Count, Timestamp, cell
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

MAX_HUB_NODES = 1_000_000
"""The most node names one Hub's status may list."""

MAX_DEMAND_REGIONS = 4096
"""Security limit: regions in one Hub's demand map."""


def hub_object_name(hub_id: str) -> str:
    """The object name of a hub id: ``host:7440`` -> ``host-7440`` (a DNS-1123 name)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", hub_id.lower()).strip("-.")
    return name[:253] or "hub"


class HubSpec(Model):
    """Who the replica is and where it is reached."""

    hub_id: str = Field(min_length=1, max_length=256, description="The hub id agents see (welcome, Node.status.hub).")
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="Base URL agents and other replicas reach this replica at (edgefleet cloud --advertise-url).",
    )


class HubStatus(Model):
    """The replica's live sessions and the load it reports."""

    connections: Count = Field(default=0, description="Live agent sessions on this replica.")
    max_connections: Count | None = Field(default=None, description="Sessions the replica accepts at most.")
    nodes: list[str] = Field(
        default_factory=list,
        max_length=MAX_HUB_NODES,
        description="Names of the nodes with a live session here (node liveness), sorted.",
    )
    demand: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_DEMAND_REGIONS,
        description="DNS queries per second this replica's GSLB answered, by client region.",
    )
    started: Timestamp | None = Field(default=None, description="When the replica started (RFC 3339).")
    updated: Timestamp | None = Field(default=None, description="When this status was last written.")


class Hub(Resource):
    """One cloud replica's hub."""

    KIND: ClassVar[str] = "Hub"
    kind: Literal["Hub"] = "Hub"
    spec: HubSpec
    status: HubStatus = Field(default_factory=HubStatus)


def _hub(obj: Resource) -> Hub:
    assert isinstance(obj, Hub)
    return obj


INFO = register(
    KindInfo(
        kind="Hub",
        plural="hubs",
        model=Hub,
        description="A live cloud replica's hub: its URL, connected nodes and reported load (written by the replica).",
        columns=(
            Column("HUB-ID", lambda o: _hub(o).spec.hub_id),
            Column("CONNECTIONS", lambda o: str(_hub(o).status.connections)),
            Column("MAX", lambda o: cell(_hub(o).status.max_connections)),
            Column("URL", lambda o: cell(_hub(o).spec.url)),
            Column("STARTED", lambda o: cell(_hub(o).status.started)),
            Column("DNS-QPS", lambda o: f"{sum(_hub(o).status.demand.values()):.1f}", wide=True),
        ),
    )
)
