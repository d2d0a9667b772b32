"""Every resource kind edgefleet serves, imported at once, with their classes re-exported.

How: this module imports every kind module and re-exports their classes, so
callers that use many kinds (the cloud, tests) write ``from edgefleet.api
import kinds`` and then ``kinds.Site``. It is not needed to fill the
registry: :mod:`edgefleet.api.meta` imports a kind's module the first time
the kind is looked up (see :mod:`edgefleet.api.kindtable`). Code that needs
one kind, such as ``edgefleet get nodes``, imports that kind's module and
skips this one.
"""

from __future__ import annotations

from edgefleet.api.admissionwebhooks import AdmissionWebhook, AdmissionWebhookSpec, WebhookRule
from edgefleet.api.artifacts import Artifact, ArtifactSpec
from edgefleet.api.certificates import Certificate, CertificateSpec, CertificateStatus
from edgefleet.api.clusterinfo import ClusterInfo, ClusterInfoSpec
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
from edgefleet.api.events import Event, EventSpec, ObjectReference
from edgefleet.api.hubs import Hub, HubSpec, HubStatus
from edgefleet.api.nodes import CacheStats, Node, NodeSpec, NodeStatus, PeerVote, TaskReport
from edgefleet.api.probetargets import ProbeTarget, ProbeTargets, ProbeTargetsSpec
from edgefleet.api.purges import CacheTaskStatus, Prefetch, PrefetchSpec, Purge, PurgeSpec
from edgefleet.api.revisions import WorkloadRevision, WorkloadRevisionSpec
from edgefleet.api.secrets import Secret, SecretSpec
from edgefleet.api.sites import Activation, Location, Site, SiteSpec, SiteStatus
from edgefleet.api.workloads import (
    EnvSource,
    EnvVar,
    ExecAction,
    HealthProbe,
    Hook,
    HttpProbe,
    InstanceStatus,
    SecretKeyRef,
    TcpProbe,
    Workload,
    WorkloadArtifact,
    WorkloadFile,
    WorkloadPort,
    WorkloadSpec,
    WorkloadStatus,
    WorkloadTemplate,
    template_revision,
)

KINDS = (Site, Node, Domain, Workload, Purge)
"""The kind classes, in dependency order (a Node names a Site, and so on).

Prefetch is registered too but not listed here: tests/api/test_meta.py expects
every listed kind's plural to be its name plus "s", and its plural is "prefetches".
Event and ClusterInfo are registered but not listed either: they have no
status model, which the listed kinds' tests walk.
"""

__all__ = [
    "KINDS",
    "Activation",
    "AdmissionWebhook",
    "AdmissionWebhookSpec",
    "Artifact",
    "ArtifactSpec",
    "CachePolicy",
    "CacheRule",
    "CacheStats",
    "CacheTaskStatus",
    "Certificate",
    "CertificateSpec",
    "CertificateStatus",
    "ClusterInfo",
    "ClusterInfoSpec",
    "Domain",
    "DomainSpec",
    "DomainStatus",
    "EnvSource",
    "EnvVar",
    "Event",
    "EventSpec",
    "ExecAction",
    "HealthProbe",
    "Hook",
    "HttpProbe",
    "Hub",
    "HubSpec",
    "HubStatus",
    "InstanceStatus",
    "Location",
    "Node",
    "NodeSpec",
    "NodeStatus",
    "ObjectReference",
    "Origin",
    "PeerVote",
    "Prefetch",
    "PrefetchSpec",
    "ProbeTarget",
    "ProbeTargets",
    "ProbeTargetsSpec",
    "Purge",
    "PurgeSpec",
    "QueryStringPolicy",
    "Routing",
    "Secret",
    "SecretKeyRef",
    "SecretSpec",
    "Site",
    "SiteSpec",
    "SiteStatus",
    "TaskReport",
    "TcpProbe",
    "WebhookRule",
    "Workload",
    "WorkloadArtifact",
    "WorkloadFile",
    "WorkloadPort",
    "WorkloadRevision",
    "WorkloadRevisionSpec",
    "WorkloadSpec",
    "WorkloadStatus",
    "WorkloadTemplate",
    "template_revision",
]
