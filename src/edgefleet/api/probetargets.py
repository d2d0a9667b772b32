"""ProbeTargets: what edge agents measure round-trip times to, for the GSLB's ``latency`` policy.

How: every ProbeTargets object is in every node's view (like ClusterInfo,
see :mod:`edgefleet.sync.views`), projected without status. Each lists up
to :data:`MAX_TARGETS` targets; a target is either a *client network*
(``network``: CIDR, probed at ``address[:port]``, e.g. a resolver or a
host the operator knows answers there) or a *site* (``site``: probed at one
of its nodes, on the cache's admin port when ``port`` is left out). Agents
probe them (:mod:`edgefleet.edge.latency`), report the median RTT of each in
``Node.status.latency`` (keys: the network, or ``site/<name>``), the latency
controller aggregates per Site into ``Site.status.latency``
(:mod:`edgefleet.cloud.controllers.latency`), and the GSLB builds its
matrix from that.

Who writes them: operators (any name; ``edgefleet apply``), and the cloud,
which keeps two objects of its own up to date: ``gslb-resolvers`` (the
busiest resolver networks its DNS server sees, probed at a resolver on port
53, and the busiest EDNS Client Subnets, probed at their first host on port
443; each a bounded top-N with decay, ``edgefleet cloud --probe-networks``
and ``--probe-min-queries``, see :mod:`edgefleet.gslb.networks`) and
``fleet-sites`` (one address of each site). An operator's object with
either name is overwritten. An operator's target for a network wins over a
discovered one (agents take operators' targets first, one per network), so
a client network whose first host does not answer can be given a host that
does.

Methods: ``tcp`` measures the TCP handshake (an answer from the kernel of
the target); ``http`` sends ``HEAD <path>`` on an open connection and
measures until the status line (one round trip plus the server's time;
what a proxy or an application in the path adds shows too).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from edgefleet.api.common import Name, cell
from edgefleet.api.errors import FieldValueError
from edgefleet.api.latency import (
    MAX_LATENCY_ENTRIES,
    MAX_RTT_MS,
    SITE_PREFIX,
    LatencyKey,
    Milliseconds,
    Network,
    ProbeAddress,
)
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

__all__ = ["MAX_LATENCY_ENTRIES", "MAX_RTT_MS", "SITE_PREFIX", "LatencyKey", "Milliseconds"]

MAX_TARGETS = 256
"""Security limit: targets of one ProbeTargets object."""
RESOLVERS_NAME = "gslb-resolvers"
"""The ProbeTargets object the cloud writes from the DNS queries it sees."""
SITES_NAME = "fleet-sites"
"""The ProbeTargets object the cloud writes with one address per site."""


class ProbeTarget(Model):
    """One thing to measure the RTT to: a client network or a site."""

    network: Network | None = Field(default=None, description="The client network this target stands for (CIDR).")
    site: Name | None = Field(default=None, description="The site this target stands for.")
    address: ProbeAddress = Field(description="The address probed (IPv4 or IPv6).")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The port probed; left out: 53 for a network, the cache's admin port for a site.",
    )
    method: Literal["tcp", "http"] = Field(
        default="tcp", description="tcp: time of the TCP handshake; http: time from HEAD to the status line."
    )
    path: str = Field(default="/", max_length=256, pattern=r"^/[!-~]*$", description="The path of an http probe.")

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeTarget:
        if (self.network is None) == (self.site is None):
            raise FieldValueError(("network",), "give exactly one of network and site")
        return self

    @property
    def key(self) -> str:
        """The key of this target's RTT in Node.status.latency and Site.status.latency."""
        return self.network if self.network is not None else f"{SITE_PREFIX}{self.site}"


class ProbeTargetsSpec(Model):
    """Targets every edge agent measures."""

    targets: list[ProbeTarget] = Field(
        default_factory=list, max_length=MAX_TARGETS, description="What to probe (client networks and sites)."
    )


class ProbeTargets(Resource):
    """Latency probe targets, sent to every edge agent."""

    KIND: ClassVar[str] = "ProbeTargets"
    kind: Literal["ProbeTargets"] = "ProbeTargets"
    spec: ProbeTargetsSpec
    status: None = Field(default=None, description="ProbeTargets has no status.")


def _targets(obj: Resource) -> str:
    assert isinstance(obj, ProbeTargets)
    return cell(len(obj.spec.targets))


def _first(obj: Resource) -> str:
    assert isinstance(obj, ProbeTargets)
    return cell([target.key for target in obj.spec.targets[:4]])


INFO = register(
    KindInfo(
        kind="ProbeTargets",
        plural="probetargets",
        model=ProbeTargets,
        short_names=("pt",),
        description="Latency probe targets (client networks, sites) every edge agent measures for the GSLB.",
        columns=(
            Column("TARGETS", _targets),
            Column("FIRST", _first, wide=True),
        ),
    )
)
