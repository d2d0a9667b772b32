"""The embedded GSLB's DNS counters on the cloud's ``/metrics``: answers per site, queries, caches, RRL.

How: a custom collector reads the DNS server's counters when Prometheus
scrapes. The server counts on its own thread with plain integer increments
(an answer per site is one list increment at a slot precomputed with the
answer: :attr:`edgefleet.gslb.dns.DnsServer.site_answers`), so the hot path
pays no label lookup and no lock; the scrape only reads ints and copies two
lists, which the interpreter lock makes safe from the API's thread. Every
cloud replica counts its own answers: a query sums them over ``instance``.

Labels: ``site`` is a Site's name, bounded by the operators' objects (and by
:data:`edgefleet.gslb.dns.MAX_SITE_SLOTS`), never by traffic; ``rcode`` is
one of a handful of numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgefleet.gslb.dns import DnsServer

COUNTERS = {
    "queries": ("edgefleet_gslb_queries", "DNS messages received, UDP and TCP, well-formed or not."),
    "cache_hits": ("edgefleet_gslb_packet_cache_hits", "Queries answered from the packet cache."),
    "shape_hits": (
        "edgefleet_gslb_shape_hits",
        "Packet cache misses answered from a known query shape (a new subnet: no parse, no decision).",
    ),
    "formerr": ("edgefleet_gslb_formerr", "Malformed queries answered FORMERR."),
    "rrl_dropped": ("edgefleet_gslb_rrl_dropped", "UDP answers dropped by response rate limiting."),
    "rrl_slipped": ("edgefleet_gslb_rrl_slipped", "UDP answers over the rate replaced by a truncated reply."),
    "errors": ("edgefleet_gslb_errors", "Resolver failures answered SERVFAIL (bugs: see the log)."),
    "udp_batches": ("edgefleet_gslb_udp_reads", "UDP reads that returned datagrams (UDP queries / this: batch size)."),
}
"""DnsMetrics field -> (metric family, help)."""


class GslbCollector(Collector):
    """Counters of one DNS server (see the module docstring)."""

    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        server = self._server
        answers = CounterMetricFamily(
            "edgefleet_gslb_answers",
            "DNS answers sent naming a site's nodes, by site (routed A/AAAA answers; rate limited ones excluded).",
            labels=["site"],
        )
        for site, count in sorted(server.answers_by_site().items()):
            answers.add_metric([site], float(count))
        yield answers
        metrics = server.metrics
        for field, (name, documentation) in COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=float(getattr(metrics, field)))
        by_rcode = CounterMetricFamily("edgefleet_gslb_responses", "DNS responses by rcode.", labels=["rcode"])
        for rcode, count in sorted(dict(metrics.by_rcode).items()):
            by_rcode.add_metric([str(rcode)], float(count))
        yield by_rcode
        yield GaugeMetricFamily(
            "edgefleet_gslb_batched_udp_io",
            "1 when DNS reads and sends UDP in batches (recvmmsg/sendmmsg, edgefleet.gslb._dgram), 0 when one "
            "datagram per system call (the extension is not built: see the log).",
            value=1.0 if server.udp_io.path == "recvmmsg" else 0.0,
        )


__all__ = ["COUNTERS", "GslbCollector"]
