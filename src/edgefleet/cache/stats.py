"""Counters a cache worker keeps, and their Prometheus exposition in the master.

How: each worker counts in plain integer attributes of :class:`Stats` (a hit
costs one ``+= 1``) and times every response in ``response_times``, a
histogram of the last minute (:mod:`edgefleet.cache.latency`); the master
asks every worker for ``snapshot()`` over its control channel, sums the
snapshots (:func:`merge`) and renders them: :func:`summary` for the admin
``/status`` (what the agent reports in ``Node.status.cache``) and
:class:`StatsCollector` for Prometheus at scrape time. Per Domain, each
worker also counts where answers came from (``accounts``, see
:mod:`edgefleet.cache.accounting`): summed by :func:`merge`, exposed per
Domain and source in Prometheus, and over a recent window in ``/status``.

What the figures rollout analysis reads count, exactly:

- ``server_errors`` (``serverErrors``): responses sent with a 5xx status,
  whether the cache made them (502/504 for a failed upstream, 501, 505) or
  relayed them from upstream (an origin's 500 passed through or streamed
  from a fill).
- ``upstream_failures`` (``upstreamErrors``): requests to a parent site or
  an origin that failed: no connection, no response head in time, a 5xx
  head, or a body that stalled or broke off (a request counts once). Each
  tier asked counts: a parent that fails and then an origin that fails are
  two. Requests to site peers are counted apart, in ``peer_failures``: a
  peer failing is its own problem, and the next tier is asked at once.
- ``latencyP99Ms``: the 99th percentile of the response times of the last
  minute, in ms (None: no response in it). A response time runs from when
  the cache could start on the request (it was read, and the requests before
  it on its connection were answered) until its last byte was handed to the
  connection; requests the cache could not parse are not timed.

Why not prometheus-client counters in the worker: ``Counter.inc`` takes a lock
and costs about 1 µs, a measurable share of a 20 µs hit. prometheus-client
still renders the exposition (through a custom collector), so the format is
the library's.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edgefleet.cache import accounting
from edgefleet.cache.latency import RecentLatency, percentile

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upstream response-head latency buckets, seconds."""

COUNTERS = {
    "requests": "Requests answered.",
    "hits": "Requests answered from the cache without asking upstream.",
    "misses": "Requests that needed an upstream fetch.",
    "revalidated": "Stored responses revalidated upstream (304 or new response).",
    "stale_served": "Requests answered with a stale response (stale-while-revalidate or stale-if-error).",
    "not_modified": "Requests answered 304 from the cache.",
    "bypass": "Requests passed to the origin without caching.",
    "collapsed": "Requests that waited for another request's upstream fetch instead of their own.",
    "errors": "Requests answered with a 4xx/5xx the cache generated itself.",
    "bytes_served": "Response body bytes sent to clients.",
    "bytes_upstream": "Response body bytes received from peers, parents and origins.",
    "upstream_requests": "Requests sent upstream.",
    "upstream_failures": "Parent and origin requests that failed (connect, timeout, 5xx, broken body).",
    "peer_failures": "Site-peer requests that failed (connect, timeout, 5xx, broken body).",
    "server_errors": "Responses sent with a 5xx status (made by the cache or relayed from upstream).",
    "stored": "Responses stored.",
    "store_failures": "Responses that could not be stored (disk full, write error).",
    "purged": "Objects removed or invalidated by purges.",
    "evictions": "Objects evicted to stay within storage limits.",
    "connections_refused": "Client connections refused with 503 (maxConnections or maxConnectionsPerClient).",
    "tier_fields_stripped": "Requests whose tier header fields were stripped (not from a trusted fleet address).",
    "rule_answers": "Requests an edge rule answered itself (redirect, deny, failed token, rate limit, CORS preflight).",
    "rate_limited": "Requests a rate-limit rule refused (429 or its status), of rule_answers.",
    "rate_limit_evictions": "Buckets evicted from the node's full rate-limit table to make room (rateLimit.slots).",
    "tls_handshakes": "TLS handshakes completed.",
    "tls_resumed": "TLS handshakes that resumed a session (ticket or session ID), of tls_handshakes.",
    "tls_handshake_failures": "TLS connections closed without a completed handshake (bad or unsupported "
    "ClientHello, no shared version or cipher, timeout, client gone).",
    "certificate_load_failures": "Certificate loads that failed (the previous certificate of that name stays).",
    "access_log_lines": "Access log lines written to the log file.",
    "access_log_bytes": "Access log bytes written to the log file.",
    "access_log_flush_errors": "Access log batches that could not be written (their lines are lost).",
    "access_log_batches_shipped": "Access log batches POSTed to accessLog.sink.",
    "access_log_ship_errors": "Failed POSTs to accessLog.sink (the lines stay queued).",
    "access_log_batches_dropped": "Access log batches dropped from the full sink queue (still in the file).",
    "access_log_lines_dropped": "Access log lines dropped from the full sink queue (still in the file).",
}
GAUGES = {
    "memory_bytes": "Bytes held in the memory tier.",
    "memory_objects": "Objects in the memory tier.",
    "disk_bytes": "Bytes held in the disk tier.",
    "disk_objects": "Objects in the disk tier.",
    "hot_bytes": "Bytes held as hot objects (small objects relayed from the owner peer, kept a few seconds).",
    "hot_objects": "Hot objects held.",
    "connections": "Open client connections.",
}


class Stats:
    """One worker's counters (plain attributes, see the module docstring)."""

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.connections = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.response_times = RecentLatency()
        self.certificates = {}
        self.accounts = accounting.Accounts()  # per Domain, by source (module edgefleet.cache.accounting)

    requests: int
    hits: int
    misses: int
    revalidated: int
    stale_served: int
    not_modified: int
    bypass: int
    collapsed: int
    errors: int
    bytes_served: int
    bytes_upstream: int
    upstream_requests: int
    upstream_failures: int
    peer_failures: int
    server_errors: int
    stored: int
    store_failures: int
    purged: int
    evictions: int
    connections_refused: int
    tier_fields_stripped: int
    rule_answers: int
    rate_limited: int  # counted by the rate-limit table (storage.ratetable), given to snapshot()
    rate_limit_evictions: int
    tls_handshakes: int
    tls_resumed: int
    tls_handshake_failures: int
    certificate_load_failures: int
    access_log_lines: int
    access_log_bytes: int
    access_log_flush_errors: int
    access_log_batches_shipped: int
    access_log_ship_errors: int
    access_log_batches_dropped: int
    access_log_lines_dropped: int
    certificates: dict[str, dict[str, Any]]
    """Certificates served by the TLS listener: name -> {notAfter (POSIX seconds), serial (hex)}."""

    def observe_upstream(self, seconds: float) -> None:
        index = 0
        for index, bound in enumerate(LATENCY_BUCKETS):  # noqa: B007 - index used after the loop
            if seconds <= bound:
                break
        else:
            index = len(LATENCY_BUCKETS)
        self.latency_buckets[index] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def upstream_failed(self, kind: str) -> None:
        """Count a failed upstream request to a tier of ``kind`` (peer, parent or origin)."""
        if kind == "peer":
            self.peer_failures += 1
        else:
            self.upstream_failures += 1

    def snapshot(self, storage: Mapping[str, int]) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        data.update(storage)
        data["connections"] = self.connections
        data["latency_buckets"] = list(self.latency_buckets)
        data["latency_sum"] = self.latency_sum
        data["latency_count"] = self.latency_count
        data["response_buckets"] = self.response_times.counts()
        data["certificates"] = dict(self.certificates)
        data["accounts"] = self.accounts.snapshot()
        return data


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum worker snapshots (disk gauges are shared: take the maximum)."""
    total: dict[str, Any] = {}
    for snap in snapshots:
        for name, value in snap.items():
            if name == "certificates":  # the same files in every worker: name -> expiry and serial
                total[name] = {**total.get(name, {}), **value}
            elif isinstance(value, dict):  # accounts: Domain -> counters
                total[name] = accounting.merge_accounts(total.get(name, {}), value)
            elif isinstance(value, list):
                old = total.get(name, [0] * len(value))
                total[name] = [a + b for a, b in zip(old, value, strict=True)]
            elif name.startswith("disk_"):
                total[name] = max(total.get(name, 0), value)
            else:
                total[name] = total.get(name, 0) + value
    return total


def summary(total: Mapping[str, Any], recent: accounting.RecentAccounts | None = None) -> dict[str, Any]:
    """The admin ``/status`` document (field names as Node.status.cache); ``recent``: the windowed figures."""
    requests = int(total.get("requests", 0))
    hits = int(total.get("hits", 0)) + int(total.get("stale_served", 0)) + int(total.get("not_modified", 0))
    return {
        "requests": requests,
        "hits": hits,
        "hitRatio": round(hits / requests, 4) if requests else None,
        "bytesServed": int(total.get("bytes_served", 0)),
        "bytesStored": int(total.get("memory_bytes", 0)) + int(total.get("disk_bytes", 0)),
        "objects": int(total.get("disk_objects", 0)) or int(total.get("memory_objects", 0)),
        "serverErrors": int(total.get("server_errors", 0)),
        "upstreamErrors": int(total.get("upstream_failures", 0)),
        "latencyP99Ms": _milliseconds(response_p99(total)),
        "certificates": certificate_list(total.get("certificates") or {}),
    } | (_windowed(recent) if recent is not None else {})


def _windowed(recent: accounting.RecentAccounts) -> dict[str, Any]:
    """The traffic window's figures and the load figures of its latest slots (:mod:`edgefleet.cache.accounting`)."""
    return accounting.node_figures(recent.figures(), recent.window) | accounting.load_figures(*recent.recent())


def certificate_list(certificates: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The certificates the TLS listener serves, for ``/status``: name, notAfter (RFC 3339 UTC), serial."""
    return [
        {"name": name, "notAfter": _rfc3339(float(info["notAfter"])), "serial": info["serial"]}
        for name, info in sorted(certificates.items())
    ]


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def response_p99(total: Mapping[str, Any]) -> float | None:
    """Seconds: the 99th percentile response time of the last minute in a merged snapshot (None: no response)."""
    return percentile(total.get("response_buckets") or [], 0.99)


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class StatsCollector(Collector):
    """Prometheus collector over the merged snapshot that ``fetch`` returns."""

    def __init__(self, fetch: Callable[[], Mapping[str, Any]]) -> None:
        self._fetch = fetch

    def collect(self) -> Iterable[Any]:
        total = self._fetch()
        for name, doc in COUNTERS.items():
            yield CounterMetricFamily(f"edgefleet_cache_{name}", doc, value=float(total.get(name, 0)))
        for name, doc in GAUGES.items():
            yield GaugeMetricFamily(f"edgefleet_cache_{name}", doc, value=float(total.get(name, 0)))
        yield self._latency(total)
        yield certificate_family(total.get("certificates") or {})
        yield from domain_families(total.get("accounts") or {})
        p99 = response_p99(total)
        if p99 is not None:
            yield GaugeMetricFamily(
                "edgefleet_cache_response_p99_seconds", "99th percentile response time over the last minute.", value=p99
            )

    @staticmethod
    def _latency(total: Mapping[str, Any]) -> HistogramMetricFamily:
        counts = total.get("latency_buckets") or [0] * (len(LATENCY_BUCKETS) + 1)
        buckets, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return HistogramMetricFamily(
            "edgefleet_cache_upstream_seconds",
            "Seconds from sending an upstream request to its response head.",
            buckets=buckets,
            sum_value=float(total.get("latency_sum", 0.0)),
        )


def domain_families(accounts: Mapping[str, list[int]]) -> Iterable[CounterMetricFamily]:
    """Per-Domain counters (labels bounded by the config's Domains and the five sources)."""
    requests = CounterMetricFamily(
        "edgefleet_cache_domain_requests",
        "Requests answered, by Domain and by where the body came from (local, peer, parent, origin, error).",
        labels=["domain", "source"],
    )
    others = {
        field: CounterMetricFamily(f"edgefleet_cache_domain_{field}", doc, labels=["domain"])
        for field, doc in (
            ("bytes", "Response body bytes sent, by Domain."),
            ("tier_requests", "Requests from other caches of the fleet (site peers, child sites), by Domain."),
            ("tier_bytes", "Response body bytes sent to other caches of the fleet, by Domain."),
            ("origin_requests", "Requests this node sent to an origin, by Domain."),
            ("origin_bytes", "Response body bytes received from origins, by Domain."),
        )
    }
    for domain, values in sorted(accounts.items()):
        counts = dict(zip(accounting.FIELDS, values, strict=True))
        for source in accounting.SOURCES:
            requests.add_metric([domain, source], float(counts[source]))
        for field, family in others.items():
            family.add_metric([domain], float(counts[field]))
    yield requests
    yield from others.values()


def certificate_family(certificates: Mapping[str, Mapping[str, Any]]) -> GaugeMetricFamily:
    """``edgefleet_cache_certificate_not_after_seconds{certificate}``: when each served certificate expires."""
    family = GaugeMetricFamily(
        "edgefleet_cache_certificate_not_after_seconds",
        "Expiry (notAfter, POSIX seconds) of each certificate the TLS listener serves.",
        labels=["certificate"],
    )
    for name, info in sorted(certificates.items()):
        family.add_metric([name], float(info["notAfter"]))
    return family
