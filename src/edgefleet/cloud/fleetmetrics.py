"""The fleet's status fields as Prometheus gauges on the cloud's ``/metrics``.

How: a custom collector reads, when Prometheus scrapes, what the status
controllers already wrote into the store (the hub's in-memory index holds
every object): ``Site.status`` (healthy and total nodes, load, active, phase),
``Domain.status`` (windowed requests, origin requests, offload, serving
sites), the Nodes by phase, and the DNS demand by client region that the hub
replicas publish. Nothing is counted twice and nothing is computed here that
a controller did not decide, so Grafana, ``edgefleet get`` and the dashboard
show the same figures. Labels are resource names (bounded by the fleet's
objects, never by traffic).

Why on the cloud and not on each node: these are fleet-wide decisions (the
GSLB's health rule, the site status controller's sums); the per-node
counters (requests, bytes, hits) come through the relay
(:mod:`edgefleet.cloud.metricsrelay`).
"""

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgefleet.api.documents import StoredDocument
from edgefleet.sync.views import FleetIndex

SITE_GAUGES = {
    "healthyNodes": ("edgefleet_site_healthy_nodes", "Healthy nodes of the site (Site.status.healthyNodes)."),
    "totalNodes": ("edgefleet_site_nodes", "Nodes assigned to the site (Site.status.totalNodes)."),
    "loadGbps": ("edgefleet_site_load_gbps", "Traffic the site sends, Gbit/s over about a minute (Site.status)."),
    "load": ("edgefleet_site_load_ratio", "loadGbps / capacityGbps (Site.status.load)."),
}
DOMAIN_GAUGES = {
    "requests": ("edgefleet_domain_window_requests", "User requests over the window (Domain.status.requests)."),
    "originRequests": (
        "edgefleet_domain_window_origin_requests",
        "Requests the fleet sent to the origins over the window (Domain.status.originRequests).",
    ),
    "bytes": ("edgefleet_domain_window_bytes", "Body bytes sent to users over the window (Domain.status.bytes)."),
    "windowSeconds": ("edgefleet_domain_window_seconds", "The window the Domain figures cover, in seconds."),
    "offload": ("edgefleet_domain_offload_ratio", "Origin offload: 1 - originRequests / requests (Domain.status)."),
    "byteOffload": ("edgefleet_domain_byte_offload_ratio", "1 - originBytes / bytes (Domain.status.byteOffload)."),
}


class FleetCollector(Collector):
    """Gauges from the status fields of the index's objects (see the module docstring)."""

    def __init__(self, index: Callable[[], FleetIndex], demand: Callable[[], Mapping[str, float]]) -> None:
        self._index = index
        self._demand = demand

    def collect(self) -> Iterable[GaugeMetricFamily]:
        index = self._index()
        yield from _sites([document for _, document in index.documents("sites")])
        yield from _domains([document for _, document in index.documents("domains")])
        yield _nodes([document for _, document in index.documents("nodes")])
        demand = GaugeMetricFamily(
            "edgefleet_dns_demand_queries_per_second",
            "DNS queries a second by client region, summed over the hub replicas' GSLBs.",
            labels=["region"],
        )
        for region, rate in sorted(self._demand().items()):
            demand.add_metric([region], rate)
        yield demand


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


SITE_PHASES = ("Active", "Draining", "Inactive", "Activating")


def _sites(sites: list[StoredDocument]) -> Iterable[GaugeMetricFamily]:
    families = {
        field: GaugeMetricFamily(name, doc, labels=["site", "region"]) for field, (name, doc) in SITE_GAUGES.items()
    }
    active = GaugeMetricFamily(
        "edgefleet_site_active", "1 while the GSLB sends users to the site.", labels=["site", "region"]
    )
    phase = GaugeMetricFamily(
        "edgefleet_site_phase",
        "1 for the site's phase (Site.status.phase: Active, Draining, Inactive, Activating), 0 for the others.",
        labels=["site", "region", "phase"],
    )
    for site in sites:
        labels = [site["metadata"]["name"], str((site.get("spec") or {}).get("region") or "")]
        status = site.get("status") or {}
        for field, family in families.items():
            value = _number(status.get(field))
            if value is not None:
                family.add_metric(labels, value)
        if isinstance(status.get("active"), bool):
            active.add_metric(labels, 1.0 if status["active"] else 0.0)
        if status.get("phase") in SITE_PHASES:
            for name in SITE_PHASES:
                phase.add_metric([*labels, name], 1.0 if status["phase"] == name else 0.0)
    yield from families.values()
    yield active
    yield phase


def _domains(domains: list[StoredDocument]) -> Iterable[GaugeMetricFamily]:
    families = {field: GaugeMetricFamily(name, doc, labels=["domain"]) for field, (name, doc) in DOMAIN_GAUGES.items()}
    serving = GaugeMetricFamily(
        "edgefleet_domain_serving_sites", "Sites serving the Domain (Domain.status.servingSites).", labels=["domain"]
    )
    for domain in domains:
        labels = [domain["metadata"]["name"]]
        status = domain.get("status") or {}
        for field, family in families.items():
            value = _number(status.get(field))
            if value is not None:
                family.add_metric(labels, value)
        if isinstance(status.get("servingSites"), list):
            serving.add_metric(labels, float(len(status["servingSites"])))
    yield from families.values()
    yield serving


def _nodes(nodes: list[StoredDocument]) -> GaugeMetricFamily:
    family = GaugeMetricFamily("edgefleet_nodes", "Nodes by phase (Node.status.phase).", labels=["phase"])
    phases: dict[str, int] = {}
    for node in nodes:
        phase = str((node.get("status") or {}).get("phase") or "Pending")
        phases[phase] = phases.get(phase, 0) + 1
    for phase, count in sorted(phases.items()):
        family.add_metric([phase], float(count))
    return family


__all__ = ["DOMAIN_GAUGES", "SITE_GAUGES", "FleetCollector"]
