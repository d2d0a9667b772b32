"""Elastic workloads: which of a node's workloads its Site holds at zero (pure).

The rule (:func:`scaled_down`): while the node's own Site is in phase
``Inactive`` and not ``alwaysOn``, every *elastic* workload of the node (a
``builtin: cache`` template) is scaled to zero: the supervisor stops it
gracefully (preStop, SIGTERM so the cache finishes its in-flight requests,
the template's grace period), keeps its template and its disk tier
(``<data>/cache-data/<name>``, outside the working directory), and reports
the instance as ``ScaledDown``: not a failure, not restarted by its restart
policy (see :mod:`edgefleet.edge.lifecycle`). In every other phase
(``Active``, ``Draining``: the caches serve the users whose resolvers still
hold an answer; ``Activating``: the caches start on their warm disk tier
before the site is announced) and when the phase is unknown, they run.

Why the agent decides from its view: the Site, with ``status.phase``, is in
the node's view (:func:`edgefleet.sync.views.project_site`), so a node cut
off from the cloud keeps acting on its last known phase (edge autonomy): it
neither starts caches for a site nobody routes to nor stops the caches of
an active site because the link is down. The cloud's side of the cycle
(when a site drains, deactivates, activates, and when its caches count as
ready) is :mod:`edgefleet.cloud.controllers.siteactivation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefleet.api.workloads import WorkloadTemplate

ELASTIC_BUILTINS = frozenset({"cache"})
"""Built-in workloads that scale with their site."""
INACTIVE = "Inactive"


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def is_elastic(template: WorkloadTemplate) -> bool:
    """Whether the workload scales with its site (the built-in cache)."""
    return template.builtin in ELASTIC_BUILTINS


def site_phase(site: Mapping[str, Any] | None) -> str | None:
    """The phase of a Site document of the view (None: unknown, or an always-on site)."""
    document = _dict(site)
    if _dict(document.get("spec")).get("alwaysOn", True) is not False:
        return None
    phase = _dict(document.get("status")).get("phase")
    return phase if isinstance(phase, str) else None


def scaled_down(
    site_name: str, site: Mapping[str, Any] | None, desired: Mapping[str, WorkloadTemplate]
) -> dict[str, str]:
    """The desired workloads to hold at zero, with the reason the node reports (empty: run them all)."""
    if site_phase(site) != INACTIVE:
        return {}
    reason = f"scaled to zero: site {site_name} is Inactive (disk tier kept; starts when the site activates)"
    return {name: reason for name, template in desired.items() if is_elastic(template)}
