"""The names of every kind and the module that defines it, without importing any model.

How: one :class:`KindName` per kind (kind, plural, short names, defining
module), in the order the API serves and documents them.
:func:`edgefleet.api.meta.kind_info`, :func:`~edgefleet.api.meta.lookup`
and :func:`~edgefleet.api.meta.all_kinds` use it to import a kind's module
(which registers its :class:`~edgefleet.api.meta.KindInfo`) the first time
that kind is asked for.

Why: the models are most of the start-up time of a short-lived process.
``edgefleet get nodes`` needs the Node model and its base, not the other
eleven kinds, and ``edgefleet get --help`` needs only the plurals listed
here. The names are written twice, here and in each module's ``register``
call; ``tests/api/test_kindtable.py`` holds the two equal. This module is
pure and imports nothing from the package (docs/architecture.md,
"Resources").
"""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "edgefleet.io/v1"
"""The one API group and version every kind is served under (``apiVersion`` of every document)."""


@dataclass(frozen=True, slots=True)
class KindName:
    """How users name one kind, and which module defines its model."""

    kind: str
    plural: str
    module: str
    short_names: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def answers_to(self, wanted: str) -> bool:
        """Whether ``wanted`` (already lowercase) is this kind's kind, singular, plural or short name."""
        return wanted in (self.kind.lower(), self.plural, self.singular, *self.short_names)


def _name(kind: str, plural: str, module: str, *short_names: str) -> KindName:
    return KindName(kind, plural, f"edgefleet.api.{module}", short_names)


KIND_NAMES: tuple[KindName, ...] = (
    _name("Domain", "domains", "domains", "dom"),
    _name("AdmissionWebhook", "admissionwebhooks", "admissionwebhooks", "awh"),
    _name("ClusterInfo", "clusterinfos", "clusterinfo", "ci"),
    _name("Event", "events", "events", "ev"),
    _name("Hub", "hubs", "hubs"),
    _name("Workload", "workloads", "workloads", "wl"),
    _name("Node", "nodes", "nodes", "no"),
    _name("Purge", "purges", "purges", "pg"),
    _name("Prefetch", "prefetches", "purges", "pf"),
    _name("WorkloadRevision", "workloadrevisions", "revisions", "wlrev"),
    _name("Secret", "secrets", "secrets", "sec"),
    _name("Certificate", "certificates", "certificates", "cert"),
    _name("Artifact", "artifacts", "artifacts", "art"),
    _name("ProbeTargets", "probetargets", "probetargets", "pt"),
    _name("Site", "sites", "sites", "pop"),
)
"""Every kind, in the order the API serves and docs/manifests.md lists them."""

_BY_KIND = {name.kind: name for name in KIND_NAMES}


def by_kind(kind: str) -> KindName | None:
    """The entry of ``kind`` (exact spelling, as in a manifest's ``kind:``)."""
    return _BY_KIND.get(kind)


def find(name: str) -> KindName | None:
    """The kind ``name`` means: its kind, singular, plural or short name, case-insensitively."""
    wanted = name.lower()
    return next((entry for entry in KIND_NAMES if entry.answers_to(wanted)), None)


def plurals() -> list[str]:
    """Every kind's plural, sorted (for help texts and error messages)."""
    return sorted(entry.plural for entry in KIND_NAMES)
