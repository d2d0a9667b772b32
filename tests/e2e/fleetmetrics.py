"""Checks of the fleet metrics path on a running ``edgefleet up`` fleet (used by tests/e2e/test_up.py).

:func:`check_fleet_metrics` makes a metrics-reader token with the CLI, checks
that every metric name the Grafana dashboard (docs/grafana/edgefleet-fleet.json)
queries is in the real output of the cloud, an agent and a cache (the last
two fetched through the relay), that the cloud counted DNS answers per site
(the caller asked its GSLB before), then starts a real Prometheus with HTTP
service discovery against the cloud and waits until every node's agent and
cache targets are up and a known agent and cache metric has a sample per
node. :func:`check_status_columns` checks that ``get sites`` and ``get
domains`` show no ``<none>`` for a running fleet.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests import promproc
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "edgefleet-fleet.json"
RELAY = "/edge/v1/nodes/{node}/metrics"
Cli = Callable[..., subprocess.CompletedProcess[str]]
# PromQL words that are not metric names: functions, aggregations, keywords, label names in by/without.
_NOT_METRICS = {
    "sum",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "clamp_min",
    "clamp_max",
    "on",
    "ignoring",
    "group_left",
    "bool",
    "or",
    "and",
    "unless",
    "vector",
    "histogram_quantile",
    "label_replace",
}


def dashboard_metric_names(dashboard: Path = DASHBOARD) -> set[str]:
    """Every metric name the dashboard's PromQL expressions use."""
    document = json.loads(dashboard.read_text())
    names: set[str] = set()
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            expression = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", target["expr"])
            expression = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][-+]?\d+)?", " ", expression)
            expression = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expression)
            names.update(w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression) if w not in _NOT_METRICS)
    return names


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exposed_names(text: str) -> set[str]:
    """Sample names of Prometheus text, and those its ``# TYPE`` lines declare (families with no sample yet)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update([name, *(name + suffix for suffix in SUFFIXES.get(kind.strip(), ()))])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def check_fleet_metrics(directory: Path, server: str, ca: Path, cli: Cli, nodes: list[str]) -> None:
    created = cli("token", "create", "--role", "metrics-reader", "--description", "prometheus")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(
        base_url=server, headers=headers, verify=ssl.create_default_context(cafile=str(ca)), timeout=15
    ) as client:
        exposed: set[str] = set()
        for target in ("agent", "cache"):
            relayed = client.get(RELAY.format(node=nodes[0]), params={"target": target})
            assert relayed.status_code == 200, relayed.text
            exposed |= exposed_names(relayed.text)
        cloud_metrics = client.get("/metrics").text
        exposed |= exposed_names(cloud_metrics)
        assert re.search(r'^edgefleet_gslb_answers_total\{site="[^"]+"\} [1-9]', cloud_metrics, re.M), (
            "the GSLB's answers per site (the caller asked it for a client before)"
        )
        refused = client.get("/apis/edgefleet.io/v1/nodes")
        assert refused.status_code == 403, "a metrics-reader token reads metrics only"
    missing = dashboard_metric_names() - exposed
    assert not missing, f"the Grafana dashboard queries metrics nothing exposes: {sorted(missing)}"

    assert promproc.available(), "prometheus is not installed: run scripts/install.sh"
    with promproc.running_prometheus(directory, server, ca, token) as prometheus:

        def every_target_up() -> bool:
            up = prometheus.query('up{job="edgefleet-fleet"}')
            seen = {(s["metric"]["node"], s["metric"]["component"]) for s in up if s["value"][1] == "1"}
            return seen == {(node, component) for node in nodes for component in ("agent", "cache")}

        try:
            wait_until(every_target_up, 30, interval=0.25, what="prometheus scraping every node through the cloud")
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{prometheus.diagnosis()}") from None
        for metric in ("edgefleet_agent_connected", "edgefleet_cache_requests_total"):
            series = prometheus.query(metric)
            assert sorted(s["metric"]["node"] for s in series) == sorted(nodes), (metric, series)
        sites = prometheus.query('edgefleet_site_nodes{job="edgefleet-cloud"}')
        assert {s["metric"]["site"] for s in sites}, "the cloud's fleet gauges are scraped too"
        answers = prometheus.query('edgefleet_gslb_answers_total{job="edgefleet-cloud"}')
        assert {s["metric"]["site"] for s in answers}, "and the DNS answers per site"


def check_status_columns(cli: Cli) -> None:
    """``get sites`` and ``get domains`` show real figures (no ``<none>``, every site's LOAD a share of its
    capacity: its caches reported) once the controllers wrote them."""

    def no_none() -> bool:
        outputs = [cli("get", kind) for kind in ("sites", "domains")]
        assert all(output.returncode == 0 for output in outputs), [o.stderr for o in outputs]
        header, *rows = outputs[0].stdout.splitlines()
        load = header.index("LOAD")
        measured = all(re.match(r"\d+\.\d%", row[load:]) for row in rows if row[:1].isalnum())
        return measured and not any("<none>" in output.stdout for output in outputs)

    wait_until(no_none, 40, interval=1.0, what="get sites and get domains without <none>")
