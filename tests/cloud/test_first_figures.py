"""A cache's first figures reach Node.status at once, so ``get sites`` shows load right after ``up`` (pure, fake clock).

Only the *first* appearance of a lazy field skips the lazy wait: later
changes of the same figures still wait the lazy interval and its jitter
(``tests/cloud/test_statuswrites.py``).
"""

from __future__ import annotations

from typing import Any

from edgefleet.api import parse
from tests.api.helpers import row
from tests.cloud.test_statuswrites import connected, report, writes


def test_the_first_cache_figures_are_written_without_the_lazy_wait_and_later_ones_wait() -> None:
    w = writes()  # lazy interval 30 s, min interval 1 s
    connected(w, {"agentVersion": "1", "workloads": {}})
    report(w, {"agentVersion": "1", "workloads": {}, "cache": {"clientGbps": 0.0}}, 0.2)
    assert w.next_deadline() == 1.0, "one min_interval after the last write, not a lazy interval"
    assert [x.status["cache"] for x in w.due(1.0)] == [{"clientGbps": 0.0}]
    report(w, {"agentVersion": "1", "workloads": {}, "cache": {"clientGbps": 0.5}}, 2)
    deadline = w.next_deadline()
    assert deadline is not None and deadline >= 30, "a change of figures already written waits"
    assert w.due(29) == []


def test_figures_back_after_a_gap_in_reports_are_not_first_figures() -> None:
    w = writes()
    connected(w, {"agentVersion": "1", "cache": {"clientGbps": 0.0}})
    report(w, {"agentVersion": "1"}, 1)  # not polled this time: the stored figures stay
    report(w, {"agentVersion": "1", "cache": {"clientGbps": 0.1}}, 2)
    deadline = w.next_deadline()
    assert deadline is not None and deadline >= 30


def test_get_sites_shows_a_dash_not_none_while_no_cache_reported() -> None:
    site: dict[str, Any] = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": "par"},
        "spec": {"region": "eu-west", "location": {"lat": 48.86, "lon": 2.35, "country": "FR"}, "capacityGbps": 10},
    }
    assert row(parse(site))["LOAD"] == "<none>", "the site status controller wrote nothing yet"
    site["status"] = {"healthyNodes": 2, "totalNodes": 2, "loadGbps": None, "load": None}
    assert row(parse(site))["LOAD"] == "-", "nodes known, no cache figures yet"
    site["status"] |= {"loadGbps": 0.0, "load": 0.0}
    assert row(parse(site))["LOAD"] == "0.0% (0bps)"
