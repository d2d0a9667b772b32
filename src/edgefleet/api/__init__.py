"""Resources of edgefleet: kinds, validation, selectors, patches, lifecycle rules.

How: pure data and rules, no I/O. :mod:`meta` is the base (models, the kind
registry, :func:`meta.parse`); one module per kind (:mod:`sites`,
:mod:`nodes`, :mod:`domains`, :mod:`workloads`), gathered by :mod:`kinds`;
:mod:`selectors` parses label selectors; :mod:`patches` applies JSON merge
patches; :mod:`lifecycle` sets server-owned metadata on create and update.

Importing the package imports every kind, so the registry is always full.
"""

from edgefleet.api import kinds as kinds
from edgefleet.api.kinds import Domain, Node, Site, Workload
from edgefleet.api.meta import Resource, parse

__all__ = ["Domain", "Node", "Resource", "Site", "Workload", "kinds", "parse"]
