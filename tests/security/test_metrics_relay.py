"""The fleet metrics relay against a real cloud, with scripted (and hostile) nodes.

One ``edgefleet cloud`` process (relay timeout 1 s, answers reused for 30 s)
and five nodes holding real hub sessions over raw WebSockets
(:class:`ScriptedAgent`: the sync protocol spoken by hand, each node
answering metrics requests as its script says): an honest node, a node
that answers far more than the relay's size limit, one that never answers,
one that answers with a malformed message, and one whose hello predates the
feature. Tokens of every role check who may scrape (admin and
metrics-reader) and that a metrics-reader token reads nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from edgefleet.sync.agent import AgentEvent, ApplyBatch, MetricsRequested
from edgefleet.sync.messages import FEATURE_METRICS
from tests.fleet import API, site_doc
from tests.rawagents import EDGE, HubCloud, RawAgent
from tests.waiting import wait_until

HONEST_TEXT = "# TYPE edgefleet_agent_connected gauge\nedgefleet_agent_connected 1\n"
Script = Callable[["ScriptedAgent", MetricsRequested], None]


class ScriptedAgent(RawAgent):
    """A raw hub session (:mod:`tests.rawagents`); each metrics request goes to its node's script."""

    def __init__(self, url: str, node: str, credential: str) -> None:
        self.script = SCRIPTS[node]
        self.requests: list[MetricsRequested] = []
        super().__init__(url, node, credential, features=(FEATURE_METRICS,) if node != "old" else ())

    def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, ApplyBatch):
            self.session.applied(event.seq)
        elif isinstance(event, MetricsRequested):
            self.requests.append(event)
            self.script(self, event)


def honest(agent: ScriptedAgent, event: MetricsRequested) -> None:
    agent.session.metrics_reply(event.id, HONEST_TEXT if event.target == "agent" else "", None)


def huge(agent: ScriptedAgent, event: MetricsRequested) -> None:
    """Ignores the asked bound: 700 KiB of samples (within the 1 MiB frame), sent raw (the session would cut)."""
    lines = "".join(f'flood{{n="{n:08d}"}} 1\n' for n in range(700 * 1024 // 22))
    reply = {"type": "metrics", "id": event.id, "data": lines, "truncated": False, "error": None}
    agent.send(json.dumps(reply))


def silent(agent: ScriptedAgent, event: MetricsRequested) -> None:
    """Never answers."""


def malformed(agent: ScriptedAgent, event: MetricsRequested) -> None:
    agent.send(json.dumps({"type": "metrics", "id": event.id, "data": 7}))


SCRIPTS: dict[str, Script] = {"good": honest, "huge": huge, "silent": silent, "broken": malformed, "old": honest}


class Cloud(HubCloud[ScriptedAgent]):
    def __init__(self, root: Path) -> None:
        flags = ["--metrics-timeout", "1", "--metrics-min-interval", "30", "--dns-listen", "off"]
        flags += ["--node-monitor-period", "0.2"]  # nodes Ready soon after they connect (the default looks every 5 s)
        super().__init__(root, flags, ScriptedAgent)
        self.tokens: dict[str, str] = {}

    def scrape(self, node: str, token: str | None = None, target: str = "agent") -> httpx.Response:
        with self.api(token or self.tokens["metrics-reader"]) as api:
            return api.get(f"{EDGE}/nodes/{node}/metrics", params={"target": target})


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cloud = Cloud(tmp_path_factory.mktemp("relay"))
    try:
        with cloud.api() as api:
            assert api.post(f"{API}/sites", json=site_doc("par", region="eu-west")).status_code == 201
        for role in ("metrics-reader", "viewer"):
            cloud.tokens[role] = cloud.token(role)
        for name in SCRIPTS:
            cloud.join(name, "par", ["127.0.0.9"])
            cloud.connect(name)
        with cloud.api() as api:
            wait_until(
                lambda: all(
                    (api.get(f"{API}/nodes/{n}").json().get("status") or {}).get("phase") == "Ready" for n in SCRIPTS
                ),
                20,
                what="every node Ready",
            )
        yield cloud
    finally:
        cloud.close()


def test_a_node_s_metrics_come_through_its_link_once_per_interval(cloud: Cloud) -> None:
    first = cloud.scrape("good")
    assert first.status_code == 200, first.text
    assert first.text == HONEST_TEXT and first.headers["content-type"].startswith("text/plain")
    again = cloud.scrape("good", cloud.process.token)  # admin may scrape too; within the interval: reused
    assert again.status_code == 200 and again.text == HONEST_TEXT
    assert len(cloud.agents["good"].requests) == 1


def test_prometheus_discovery_lists_every_connected_node_with_its_labels(cloud: Cloud) -> None:
    with cloud.api(cloud.tokens["metrics-reader"]) as api:
        groups = api.get(f"{EDGE}/prometheus/targets").json()
    agents = {group["labels"]["node"]: group for group in groups if group["labels"]["component"] == "agent"}
    assert set(agents) == set(SCRIPTS)
    good = agents["good"]
    assert good["targets"] == [f"127.0.0.1:{cloud.process.port}"]
    assert good["labels"] == {
        "__metrics_path__": f"{EDGE}/nodes/good/metrics",
        "__param_target": "agent",
        "node": "good",
        "site": "par",
        "region": "eu-west",
        "component": "agent",
    }


def test_only_admin_and_metrics_reader_tokens_scrape_and_a_metrics_reader_reads_nothing_else(cloud: Cloud) -> None:
    assert cloud.scrape("good", cloud.tokens["viewer"]).status_code == 403
    assert cloud.scrape("good", cloud.credentials["good"]).status_code == 403
    with cloud.api(cloud.tokens["viewer"]) as api:
        assert api.get(f"{EDGE}/prometheus/targets").status_code == 403
    with httpx.Client(base_url=cloud.process.url) as anonymous:
        assert anonymous.get(f"{EDGE}/nodes/good/metrics").status_code == 401
    with cloud.api(cloud.tokens["metrics-reader"]) as reader:
        for path in (f"{API}/nodes", f"{API}/nodes/good", f"{API}/secrets", f"{API}/sites?watch=true", API):
            refused = reader.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert "metrics-reader" in refused.json()["message"]
        assert reader.post(f"{API}/sites", json=site_doc("x")).status_code == 403
        assert reader.get(f"{EDGE}/nodes/good/logs/cache").status_code == 403
        assert reader.get(f"{EDGE}/bootstrap-tokens").status_code == 403
    bad = cloud.scrape("good", target="../../apis")
    assert bad.status_code == 400


def test_an_answer_over_the_size_limit_is_cut_at_a_line_and_marked(cloud: Cloud) -> None:
    answer = cloud.scrape("huge")
    assert answer.status_code == 200
    assert len(answer.content) <= 512 * 1024 + 300
    body = answer.text
    assert body.endswith("edgefleet_relay_truncated 1\n")
    samples = body.split("# HELP edgefleet_relay_truncated")[0]
    assert samples.endswith("} 1\n") and all(line.startswith("flood{") for line in samples.splitlines())
    metrics = httpx.get(f"{cloud.process.url}/metrics").text
    assert "edgefleet_hub_metrics_relay_truncated_total 1.0" in metrics


def test_a_silent_node_gets_504_quickly_and_an_old_agent_501(cloud: Cloud) -> None:
    started = time.monotonic()
    silent_answer = cloud.scrape("silent")
    assert silent_answer.status_code == 504 and "did not answer" in silent_answer.json()["message"]
    assert time.monotonic() - started < 5
    asked = len(cloud.agents["silent"].requests)
    with ThreadPoolExecutor(3) as pool:  # concurrent scrapes of one target share one request
        shared = list(pool.map(lambda _: cloud.scrape("silent", target="cache").status_code, range(3)))
    assert shared == [504, 504, 504]
    assert len(cloud.agents["silent"].requests) == asked + 1
    old = cloud.scrape("old")
    assert old.status_code == 501 and "upgrade" in old.json()["message"]
    assert cloud.agents["old"].requests == []  # never sent a message it does not know


def test_a_malformed_answer_closes_that_session_only(cloud: Cloud) -> None:
    broken = cloud.scrape("broken")
    assert broken.status_code in (409, 504), broken.text
    wait_until(lambda: cloud.agents["broken"].ws.close_code == 1008, 10, what="the broken node's session closed")
    assert cloud.scrape("good").status_code == 200
    assert cloud.scrape("broken").status_code == 409  # not connected anywhere now
    assert cloud.scrape("nosuch").status_code == 409
    with cloud.api() as api:
        assert api.get("/readyz").status_code == 200
