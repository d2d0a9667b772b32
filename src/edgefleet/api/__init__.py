"""Resources of edgefleet: kinds, validation, selectors, patches, lifecycle rules.

How: pure data and rules, no I/O. :mod:`meta` is the base (models, the kind
registry, :func:`meta.parse`); one module per kind (:mod:`sites`,
:mod:`nodes`, :mod:`domains`, :mod:`workloads`, ...); :mod:`kindtable`
names every kind and its module without importing any; :mod:`kinds`
imports them all and re-exports their classes; :mod:`selectors` parses
label selectors; :mod:`patches` applies JSON merge patches;
:mod:`lifecycle` sets server-owned metadata on create and update.

Importing the package (or any module of it) imports no kind: the registry
imports a kind's module the first time that kind is looked up
(:func:`meta.kind_info`, :func:`meta.lookup`, :func:`meta.all_kinds`), so
``edgefleet get nodes`` loads the Node model and not the other eleven. The
names below are resolved on first use, as attributes of the package
(docs/architecture.md, "Resources").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgefleet.api import kinds as kinds
    from edgefleet.api.domains import Domain
    from edgefleet.api.meta import Resource, parse
    from edgefleet.api.nodes import Node
    from edgefleet.api.sites import Site
    from edgefleet.api.workloads import Workload

_HOMES = {
    "Domain": "edgefleet.api.domains",
    "Node": "edgefleet.api.nodes",
    "Resource": "edgefleet.api.meta",
    "Site": "edgefleet.api.sites",
    "Workload": "edgefleet.api.workloads",
    "kinds": "edgefleet.api.kinds",
    "parse": "edgefleet.api.meta",
}

__all__ = ["Domain", "Node", "Resource", "Site", "Workload", "kinds", "parse"]


def __getattr__(name: str) -> object:
    """``edgefleet.api.Node`` and the like: import the defining module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    return module if name == "kinds" else getattr(module, name)
