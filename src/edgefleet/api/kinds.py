"""Every resource kind edgefleet serves, imported so the registry is full.

How: importing a kind module registers it (:func:`edgefleet.api.meta.register`);
this module imports them all and re-exports their classes, so callers write
``from edgefleet.api import kinds`` and then ``kinds.Site``. The package's
``__init__`` imports this module, so ``meta.all_kinds()`` is complete as
soon as anything under ``edgefleet.api`` is imported.
"""

from __future__ import annotations

from edgefleet.api.domains import (
    CachePolicy,
    CacheRule,
    Domain,
    DomainSpec,
    DomainStatus,
    Origin,
    QueryStringPolicy,
    Routing,
)
from edgefleet.api.nodes import CacheStats, Node, NodeSpec, NodeStatus, PeerVote
from edgefleet.api.sites import Location, Site, SiteSpec, SiteStatus
from edgefleet.api.workloads import (
    EnvVar,
    ExecAction,
    HealthProbe,
    Hook,
    HttpProbe,
    InstanceStatus,
    TcpProbe,
    Workload,
    WorkloadFile,
    WorkloadPort,
    WorkloadSpec,
    WorkloadStatus,
    WorkloadTemplate,
    template_revision,
)

KINDS = (Site, Node, Domain, Workload)
"""The kind classes, in dependency order (a Node names a Site, and so on)."""

__all__ = [
    "KINDS",
    "CachePolicy",
    "CacheRule",
    "CacheStats",
    "Domain",
    "DomainSpec",
    "DomainStatus",
    "EnvVar",
    "ExecAction",
    "HealthProbe",
    "Hook",
    "HttpProbe",
    "InstanceStatus",
    "Location",
    "Node",
    "NodeSpec",
    "NodeStatus",
    "Origin",
    "PeerVote",
    "QueryStringPolicy",
    "Routing",
    "Site",
    "SiteSpec",
    "SiteStatus",
    "TcpProbe",
    "Workload",
    "WorkloadFile",
    "WorkloadPort",
    "WorkloadSpec",
    "WorkloadStatus",
    "WorkloadTemplate",
    "template_revision",
]
