"""Rollout analysis: figures per group over a window, checks, and the webhook against a real local server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from edgefleet.api.documents import StoredDocument
from edgefleet.api.rollouts import MetricCheck, WebhookCheck
from edgefleet.api.workloads import Workload
from edgefleet.cloud.analysis import Sample, evaluate, figure, sample_of
from edgefleet.cloud.controllers.workloads import WorkloadController, _ask_webhook
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.rollouts import Verdict
from edgefleet.store.interface import Store


def check(metric: str, **bounds: Any) -> MetricCheck:
    return MetricCheck.model_validate({"metric": metric, **bounds})


START = {
    "u1": Sample(requests=100, server_errors=0),
    "u2": Sample(requests=100),
    "b1": Sample(requests=100, server_errors=1),
    "b2": Sample(requests=100),
}
END = {
    "u1": Sample(requests=200, server_errors=10, latency_p99_ms=80.0),
    "u2": Sample(requests=200, latency_p99_ms=40.0),
    "b1": Sample(requests=300, server_errors=2, latency_p99_ms=20.0),
    "b2": Sample(requests=300, latency_p99_ms=20.0),
}


def test_rates_are_over_the_window_and_the_group() -> None:
    assert figure(check("errorRate", max=1), ["u1", "u2"], START, END) == pytest.approx(10 / 200)
    assert figure(check("errorRate", max=1), ["b1", "b2"], START, END) == pytest.approx(1 / 400)
    assert figure(check("latencyP99Ms", max=1), ["u1", "u2"], START, END) == pytest.approx(60.0)
    assert figure(check("errorRate", max=1, minRequests=500), ["u1", "u2"], START, END) is None


def test_max_and_max_increase_decide() -> None:
    verdict = evaluate([check("errorRate", max=0.01)], START, END, ["u1", "u2"], ["b1", "b2"])
    assert verdict == Verdict(False, "errorRate of the updated nodes is 0.05, above max 0.01")
    verdict = evaluate([check("latencyP99Ms", maxIncrease=30)], START, END, ["u1", "u2"], ["b1", "b2"])
    assert verdict.passed is False and "40 above the others' 20" in verdict.message
    verdict = evaluate(
        [check("latencyP99Ms", maxIncrease=50), check("errorRate", max=0.1)], START, END, ["u1", "u2"], ["b1", "b2"]
    )
    assert verdict.passed is True and "latencyP99Ms 60 (others 20)" in verdict.message


def test_a_quiet_canary_is_inconclusive_and_passes() -> None:
    quiet = {"u1": Sample(requests=5)}
    verdict = evaluate([check("errorRate", max=0.0)], {"u1": Sample(requests=3)}, quiet, ["u1"], [])
    assert verdict.passed is True and verdict.inconclusive and "inconclusive" in verdict.message
    assert not evaluate([check("errorRate", max=1.0)], START, END, ["u1", "u2"], ["b1", "b2"]).inconclusive


async def test_an_inconclusive_window_is_watched_again_twice_then_passes(store: Store) -> None:
    """Counters reach Node.status lazily: a window without figures from the canary is extended, not trusted."""
    workload = Workload.model_validate(
        {
            "metadata": {"name": "cache"},
            "spec": {
                "template": {"command": ["x"]},
                "strategy": {
                    "analysis": {
                        "intervalSeconds": 5,
                        "metrics": [{"metric": "errorRate", "maxIncrease": 0.01, "minRequests": 20}],
                    }
                },
            },
            "status": {
                "currentRevision": "old",
                "rollout": {
                    "phase": "Analyzing",
                    "target": "new",
                    "step": 0,
                    "analysisStartedAt": "2026-12-01T00:00:00Z",
                },
            },
        }
    )
    node: StoredDocument = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"site": "s"},
        "status": {"cache": {"requests": 5}},
    }
    controller = WorkloadController(Registry(store), lambda _: [])
    controller._windows[("cache", "2026-12-01T00:00:00Z")] = {"n1": Sample(requests=3)}
    now = datetime(2026, 12, 1, tzinfo=UTC)
    verdicts = [await controller._verdict(workload, [node], now) for _ in range(3)]
    assert [v.passed for v in verdicts] == [None, None, True], verdicts
    assert "watching another window" in verdicts[0].message and "inconclusive" in verdicts[2].message


def test_counters_restart_with_a_new_revision_or_when_they_fall() -> None:
    start = {"n": Sample(restarts=3, probe_failures=2, revision="old")}
    assert figure(check("restarts", max=0), ["n"], start, {"n": Sample(restarts=4, revision="new")}) == 4
    assert figure(check("probeFailures", max=0), ["n"], start, {"n": Sample(probe_failures=1, revision="old")}) == 1
    assert figure(check("restarts", max=0), ["n"], start, {"n": Sample(restarts=5, revision="old")}) == 2


def test_sample_of_reads_the_node_status() -> None:
    node = {
        "status": {
            "cache": {"requests": 9, "serverErrors": 2, "upstreamErrors": 1, "latencyP99Ms": 3.5},
            "workloads": {"cache": {"revision": "r", "restarts": 1, "probeFailures": 4}},
        }
    }
    assert sample_of(node, "cache") == Sample(9, 2, 1, 3.5, 1, 4, "r")
    assert sample_of({}, "cache") == Sample()


@pytest.fixture
async def checker() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        received.append(await request.json())
        mode = request.match_info["mode"]
        if mode == "slow":
            await asyncio.sleep(3)
        if mode == "huge":
            return web.Response(body=b"x" * 100_000)
        return web.Response(status=200 if mode in ("pass", "slow") else 500, text="{}")

    app = web.Application()
    app.router.add_post("/{mode}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


async def test_the_webhook_decides_after_the_metrics(checker: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = checker
    workload = Workload.model_validate(
        {"metadata": {"name": "cache"}, "spec": {"template": {"command": ["x"]}}, "status": {"updateRevisionNumber": 2}}
    )
    now = datetime(2026, 12, 1, tzinfo=UTC)
    passed = Verdict(True, "errorRate 0")

    async def ask(mode: str, policy: str = "Fail") -> Verdict:
        hook = WebhookCheck.model_validate({"url": f"{url}/{mode}", "timeoutSeconds": 1, "failurePolicy": policy})
        return await _ask_webhook(hook, workload, "rev-b", ["n1"], passed, now)

    assert (await ask("pass")).passed is True
    assert json.loads(json.dumps(received[0])) == {
        "workload": "cache",
        "revision": "rev-b",
        "revisionNumber": 2,
        "updatedNodes": ["n1"],
        "metrics": "errorRate 0",
        "at": "2026-12-01T00:00:00Z",
    }
    assert (await ask("fail")) == Verdict(False, f"webhook {url}/fail answered 500")
    assert (await ask("slow")).passed is False
    slow_ignored = await ask("slow", "Ignore")
    assert slow_ignored.passed is True and "ignored" in slow_ignored.message
    assert (await ask("huge")).passed is False
