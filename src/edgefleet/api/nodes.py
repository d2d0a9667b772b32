"""Node: one edge server, its site, addresses and scheduling switches.

How: an operator (or ``edgefleet edge join``) creates a Node naming its Site
and the addresses users reach it at; its labels (in ``metadata.labels``) are
what Workload selectors match. ``unschedulable`` keeps new workloads off the
node; ``draining`` takes it out of GSLB answers so traffic leaves it before
maintenance. Neither stops what already runs: only the operator removes
workloads (edge autonomy: a quiet node is marked NotReady or Unknown, never
emptied).

Every status field is bounded (:data:`MAX_WORKLOAD_INSTANCES`,
:data:`MAX_PEER_VOTES`, :data:`MAX_TASK_REPORTS`, :data:`MAX_STATUS_TEXT`,
:data:`MAX_FIGURE`, names as DNS-1123 names): a node's report is validated
with this model by the hub, and one out of bounds closes its session with
the field and the limit in the close reason; nothing of it is stored.

The node's agent writes ``status`` through the status path: heartbeat, the
hub replica it is connected to, the store revision and epoch it has synced,
its workload instances, cache statistics (polled from the built-in cache's
admin endpoint), how it did the open Purges and Prefetches of its view, and
its health votes about the other nodes of its site (the GSLB trusts peers'
votes over the cloud link).

Addresses are normalised (``2001:DB8::1`` is stored as ``2001:db8::1``) so
that equal addresses compare equal; unspecified, multicast and zoned
addresses are refused because they can never be put in a DNS answer.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from edgefleet.api import doccolumns
from edgefleet.api.common import Condition, Count, Name, Ratio, Timestamp, check_unique
from edgefleet.api.instances import InstanceStatus
from edgefleet.api.latency import MAX_LATENCY_ENTRIES, LatencyKey, Milliseconds
from edgefleet.api.meta import KindInfo, Model, Resource, document_columns, register


def check_address(text: str) -> str:
    """A unicast IPv4 or IPv6 address, returned in its canonical form."""
    if "%" in text:
        raise ValueError(f"{text!r}: zoned IPv6 addresses cannot be served in DNS answers")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid IPv4 or IPv6 address") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text!r} is not a unicast address")
    return str(address)


Address = Annotated[str, AfterValidator(check_address)]


class NodeSpec(Model):
    """Desired state of a Node."""

    site: Name = Field(description="Name of the Site the node belongs to.")
    addresses: list[Address] = Field(
        default_factory=list,
        max_length=16,
        description="IPv4/IPv6 addresses users reach the node at, put in GSLB answers; "
        "a node without addresses gets no user traffic.",
    )
    unschedulable: bool = Field(default=False, description="Place no new workloads on the node; running ones stay.")
    draining: bool = Field(
        default=False,
        description="Leave the node out of GSLB answers so user traffic moves away "
        "(e.g. before maintenance); workloads keep running.",
    )

    @field_validator("addresses")
    @classmethod
    def _unique_addresses(cls, addresses: list[str]) -> list[str]:
        return check_unique(addresses, "address")


MAX_FIGURE = 2**63 - 1
"""Security limit: the largest counter a status may carry (a 64-bit counter; huge integers cost CPU to parse)."""

Figure = Annotated[int, Field(ge=0, le=MAX_FIGURE)]
# Defined before the models that use it: a forward reference would lose the camelCase aliases on rebuild.


MAX_NODE_DOMAINS = 50
"""Security limit: Domains one node reports figures for (the cache sends its busiest ones)."""


class DomainTraffic(Model):
    """One Domain's traffic at one node over the cache's window (``windowSeconds``).

    ``requests`` and ``bytes`` are client requests (those from other caches of the fleet are ``tierRequests``,
    so a sum over nodes counts each user request once); ``local``/``peer``/``parent``/``origin`` count every
    request the node answered (client and tier) by where its body came from; ``originRequests`` and
    ``originBytes`` are what this node fetched from origins.
    """

    requests: Figure | None = Field(default=None, description="Client requests answered.")
    tier_requests: Figure | None = Field(default=None, description="Requests from other caches of the fleet.")
    bytes: Figure | None = Field(default=None, description="Response body bytes sent to clients.")
    origin_requests: Figure | None = Field(default=None, description="Requests this node sent to an origin.")
    origin_bytes: Figure | None = Field(default=None, description="Body bytes this node received from origins.")
    local: Figure | None = Field(default=None, description="Requests answered from this node's storage.")
    peer: Figure | None = Field(default=None, description="Requests answered with a body relayed from a site peer.")
    parent: Figure | None = Field(default=None, description="Requests answered with a body relayed from a parent site.")
    origin: Figure | None = Field(
        default=None, description="Requests answered with a body this node fetched from an origin."
    )


class CacheStats(Model):
    """Cache server counters since it started, and where answers came from over a recent window.

    The counters (requests, hits, bytesServed, ...) count since the cache started. The traffic figures
    (windowSeconds onwards) cover the last ``windowSeconds``: they do not drop to zero when a cache
    restarts (a restart loses at most one window) and sum across nodes into current Domain figures.
    """

    requests: Figure | None = Field(default=None, description="Requests served.")
    hits: Figure | None = Field(default=None, description="Requests served from the cache.")
    hit_ratio: Ratio | None = Field(default=None, description="hits / requests, 0 to 1.")
    bytes_served: Figure | None = Field(default=None, description="Response bytes sent.")
    bytes_stored: Figure | None = Field(default=None, description="Bytes held in the cache.")
    objects: Figure | None = Field(default=None, description="Objects held in the cache.")
    server_errors: Figure | None = Field(default=None, description="Responses with a 5xx status.")
    upstream_errors: Figure | None = Field(
        default=None, description="Origin or parent fetches that failed (connection, timeout, 5xx)."
    )
    latency_p99_ms: float | None = Field(
        default=None, ge=0, le=1e9, description="99th percentile response time over the last minute, milliseconds."
    )
    window_seconds: int | None = Field(default=None, ge=0, le=86400, description="The window of the figures below.")
    client_requests: Figure | None = Field(default=None, description="Client requests answered (not other caches').")
    tier_requests: Figure | None = Field(
        default=None, description="Requests from other caches of the fleet (site peers, child sites)."
    )
    served_local: Figure | None = Field(default=None, description="Requests answered from this node's storage.")
    served_peer: Figure | None = Field(default=None, description="Requests answered with a site peer's body.")
    served_parent: Figure | None = Field(default=None, description="Requests answered with a parent site's body.")
    served_origin: Figure | None = Field(default=None, description="Requests answered with a body from an origin.")
    client_bytes: Figure | None = Field(default=None, description="Body bytes sent to clients.")
    origin_requests: Figure | None = Field(default=None, description="Requests this node sent to origins.")
    origin_bytes: Figure | None = Field(default=None, description="Body bytes this node received from origins.")
    local_ratio: Ratio | None = Field(
        default=None, description="Share of the requests it answered that came from this node's storage."
    )
    offload: Ratio | None = Field(
        default=None, description="1 - originRequests / requests answered (client and tier): what it shielded."
    )
    byte_offload: Ratio | None = Field(default=None, description="1 - originBytes / bytes sent (clients and tiers).")
    domains: dict[Name, DomainTraffic] | None = Field(
        default=None, max_length=MAX_NODE_DOMAINS, description="Traffic of the busiest Domains, by Domain name."
    )
    load_window_seconds: float | None = Field(
        default=None, ge=0, le=86400, description="The window of the load figures below (about a minute)."
    )
    requests_per_second: float | None = Field(
        default=None, ge=0, le=1e9, description="Requests answered per second (clients and other caches)."
    )
    egress_gbps: float | None = Field(
        default=None, ge=0, le=1e6, description="Body bytes sent per second (clients and other caches), in Gbit/s."
    )
    client_gbps: float | None = Field(
        default=None, ge=0, le=1e6, description="Body bytes sent to clients per second, in Gbit/s."
    )


class PeerVote(Model):
    """This node's verdict on a peer in its site, from its own probes."""

    healthy: bool = Field(description="Whether the peer answered its last probes.")
    at: Timestamp | None = Field(default=None, description="When the verdict was reached.")


MAX_TASK_REPORTS = 256
"""Security limit: Purges (and, separately, Prefetches) one status report may describe."""
MAX_WORKLOAD_INSTANCES = 256
"""Security limit: workload instances one node may report."""
MAX_PEER_VOTES = 512
"""Security limit: peers one node may vote about (the nodes of one site)."""
MAX_CONDITIONS = 8
"""Security limit: conditions in one Node status."""
MAX_STATUS_TEXT = 4096
"""Security limit: characters of a status message (the node's, or one instance's)."""
ShortText = Annotated[str, Field(max_length=253)]


class TaskReport(Model):
    """How this node did one Purge or Prefetch of its view (one-shot, by uid)."""

    name: Name = Field(description="Name of the Purge or Prefetch.")
    uid: str = Field(min_length=1, max_length=64, description="Its metadata.uid: a re-created one is new work.")
    state: Literal["Pending", "Done", "Failed"] = Field(
        description="Pending: not done yet (waiting for the cache, or retrying after an error); "
        "Done: the cache accepted it; Failed: given up (the message says why)."
    )
    message: str | None = Field(default=None, max_length=512, description="Details: counts, or the last error.")


class NodeStatus(Model):
    """Observed state of a Node, written by its agent and the node lifecycle controller."""

    phase: Literal["Ready", "NotReady", "Unknown"] | None = Field(
        default=None,
        description="Ready: heartbeats arrive; NotReady: late; Unknown: silent for long.",
    )
    last_heartbeat: Timestamp | None = Field(default=None, description="When the agent last reported (RFC 3339).")
    hub: ShortText | None = Field(default=None, description="Hub replica the node is connected to.")
    synced_revision: Count | None = Field(
        default=None, description="Store revision the node's local copy is complete up to."
    )
    synced_epoch: ShortText | None = Field(default=None, description="Store epoch syncedRevision belongs to.")
    agent_version: str | None = Field(default=None, max_length=64, description="edgefleet version of the agent.")
    workloads: dict[Name, InstanceStatus] | None = Field(
        default=None,
        max_length=MAX_WORKLOAD_INSTANCES,
        description="Workload instances on the node, by workload name.",
    )
    cache: CacheStats | None = Field(default=None, description="Cache server statistics.")
    purges: list[TaskReport] | None = Field(
        default=None,
        max_length=MAX_TASK_REPORTS,
        description="The open Purges of this node's view and how it did them (a list, so each report "
        "replaces the last one whole).",
    )
    prefetches: list[TaskReport] | None = Field(
        default=None, max_length=MAX_TASK_REPORTS, description="The open Prefetches of this node's view, likewise."
    )
    peer_votes: dict[Name, PeerVote] | None = Field(
        default=None,
        max_length=MAX_PEER_VOTES,
        description="This node's health votes about its site peers, by node name.",
    )
    message: str | None = Field(default=None, max_length=MAX_STATUS_TEXT, description="Why the node is in this phase.")
    latency: dict[LatencyKey, Milliseconds] | None = Field(
        default=None,
        max_length=MAX_LATENCY_ENTRIES,
        description="Round-trip times this node measured to the probe targets of its view (ProbeTargets), in ms: "
        "the median of its recent samples, by client network (CIDR) or site/<name>.",
    )
    drains: dict[ShortText, Timestamp] | None = Field(
        default=None,
        description="Drains the cloud holds on the node (e.g. 'workload/cache' during its rollout step), with "
        "when each began: the GSLB leaves a node with any drain out of its answers, as for spec.draining.",
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=MAX_CONDITIONS,
        description="Facts the agent reports, Kubernetes style; RulesReady: False (reason SecretMissing) while "
        "a Secret or key the edge rules of a Domain it serves name is missing, so their token checks deny "
        "(lastTransitionTime is the cloud's).",
    )

    @field_validator("workloads")
    @classmethod
    def _bounded_instances(cls, workloads: dict[str, InstanceStatus] | None) -> dict[str, InstanceStatus] | None:
        for name, instance in (workloads or {}).items():
            for what, text in (("message", instance.message), ("revision", instance.revision)):
                if text is not None and len(text) > MAX_STATUS_TEXT:
                    raise ValueError(f"workloads.{name}.{what}: at most {MAX_STATUS_TEXT} characters (got {len(text)})")
        return workloads


class Node(Resource):
    """One edge server in a site."""

    KIND: ClassVar[str] = "Node"
    kind: Literal["Node"] = "Node"
    spec: NodeSpec
    status: NodeStatus = Field(default_factory=NodeStatus)


INFO = register(
    KindInfo(
        kind="Node",
        plural="nodes",
        model=Node,
        short_names=("no",),
        description="An edge server: its site, addresses and scheduling switches.",
        # Read from the wire document, so that `edgefleet get nodes` needs no model (module doccolumns).
        columns=document_columns(doccolumns.NODE_COLUMNS),
    )
)
