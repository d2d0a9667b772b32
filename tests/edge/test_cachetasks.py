"""Purges and Prefetches on a node: due tasks, retries, final results, the ledger file, the admin client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edgefleet.api.nodes import NodeStatus
from edgefleet.edge.cacheconfig import AdminEndpoint
from edgefleet.edge.cachetasks import (
    MAX_ATTEMPTS,
    MAX_RECORDS,
    CacheAdmin,
    CacheTask,
    CacheTasks,
    TaskLedger,
    cache_stats,
    judge,
    tasks_from_view,
)

Doc = dict[str, Any]


def purge_doc(name: str, created: str = "2026-05-01T12:00:00Z", **spec: Any) -> Doc:
    return {
        "kind": "Purge",
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": {"domain": "shop", **(spec or {"urls": ["/a"]})},
    }


def prefetch_doc(name: str, created: str = "2026-05-01T12:00:00Z") -> Doc:
    return {
        "kind": "Prefetch",
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": {"domain": "shop", "urls": ["/x", "/y"]},
    }


def test_tasks_from_view_build_the_admin_bodies_oldest_first() -> None:
    tasks = tasks_from_view(
        [
            purge_doc("late", "2026-05-01T12:00:05Z", prefixes=["/img/"], mode="soft"),
            purge_doc("early"),
            {"kind": "Purge", "metadata": {"name": "no-uid"}, "spec": {"domain": "shop"}},
        ],
        [prefetch_doc("warm", "2026-05-01T12:00:01Z")],
    )
    assert [t.name for t in tasks] == ["early", "warm", "late"]
    assert tasks[0].path == "/purge" and tasks[1].path == "/prefetch"
    assert tasks[2].body == {"domain": "shop", "urls": [], "prefixes": ["/img/"], "tags": [], "soft": True}
    assert tasks[1].body == {"domain": "shop", "urls": ["/x", "/y"]}


def test_judge_answers() -> None:
    prefetch, purge = tasks_from_view([purge_doc("p")], [prefetch_doc("w")])  # same time: by kind
    assert (prefetch.kind, purge.kind) == ("Prefetch", "Purge")
    assert judge(purge, 200, {"purged": 3}).state == "Done"
    assert judge(purge, 200, {"purged": 3}).message == "purged 3"
    assert judge(purge, 503, {"error": "worker down"}).state == "Retry"
    assert "worker down" in judge(purge, 503, {"error": "worker down"}).message
    assert judge(purge, 200, None).state == "Retry"
    assert judge(prefetch, 200, {"fetched": 2, "failed": []}).state == "Done"
    partial = judge(prefetch, 200, {"fetched": 1, "failed": [{"url": "/y", "error": "HTTP 404"}]})
    assert partial.state == "Failed" and "1 of 2" in partial.message and "/y: HTTP 404" in partial.message


def test_retries_back_off_then_give_up_and_finals_are_never_due_again() -> None:
    ledger = TaskLedger()
    (task,) = tasks_from_view([purge_doc("p")], [])
    now = 1000.0
    for attempt in range(1, MAX_ATTEMPTS):
        assert ledger.due([task], now) == [task]
        assert not ledger.failed_attempt(task, "HTTP 503", now)
        assert ledger.due([task], now) == []
        assert ledger.report([task])["purges"][0]["state"] == "Pending"
        wait = ledger.next_due([task])
        assert wait is not None and wait - now == min(60.0, 2.0 ** (attempt - 1))
        now = wait
    assert ledger.failed_attempt(task, "HTTP 503", now), "the last attempt gives up"
    assert ledger.due([task], now + 3600) == [] and ledger.next_due([task]) is None
    final = ledger.report([task])["purges"][0]
    assert final["state"] == "Failed" and "gave up after 8 attempts" in final["message"]


def test_report_lists_the_view_tasks_newest_first_and_is_a_valid_node_status() -> None:
    ledger = TaskLedger()
    tasks = tasks_from_view(
        [purge_doc("a", "2026-05-01T12:00:00Z"), purge_doc("b", "2026-05-01T12:00:09Z")],
        [prefetch_doc("w", "2026-05-01T11:00:00Z")],
    )
    assert [t.name for t in tasks] == ["w", "a", "b"]
    ledger.finish(tasks[1], "Done", "purged 1", 5.0)
    ledger.waiting(tasks[2], "waiting for the cache workload to be ready")
    report = ledger.report(tasks)
    assert [r["name"] for r in report["purges"]] == ["b", "a"]
    assert report["purges"][1] == {"name": "a", "uid": "uid-a", "state": "Done", "message": "purged 1"}
    assert report["prefetches"][0]["message"] == "not done yet"
    assert report["purges"][0]["message"] == "waiting for the cache workload to be ready"
    NodeStatus.model_validate(report)


def test_ledger_round_trips_and_stays_bounded() -> None:
    ledger = TaskLedger()
    tasks = [CacheTask("Purge", f"p{i}", f"u{i}", "", {}) for i in range(MAX_RECORDS + 5)]
    for i, task in enumerate(tasks):
        ledger.finish(task, "Done", "ok", float(i))
    ledger.forget_absent(tasks[:2])  # only p0 and p1 are still in the view
    assert len(ledger.records) == MAX_RECORDS
    assert {"u0", "u1"} <= set(ledger.records) and "u2" not in ledger.records, "oldest absent ones go first"
    again = TaskLedger.loads(ledger.dumps())
    assert again.records == ledger.records
    with pytest.raises(ValueError):
        TaskLedger.loads('{"records": 3}')


def test_cache_stats_keeps_known_fields_only() -> None:
    answer = {
        "requests": 10,
        "hits": 7,
        "hitRatio": 0.7,
        "bytesServed": 100,
        "bytesStored": 50,
        "objects": 3,
        "serverErrors": 2,
        "upstreamErrors": 1,
        "latencyP99Ms": 12.5,
        "node": "n1",
        "workers": 2,
    }
    assert cache_stats(answer) == {k: v for k, v in answer.items() if k not in ("node", "workers")}
    assert cache_stats({"requests": -1}) is None
    assert cache_stats("nope") is None


def test_cache_stats_drop_per_domain_figures_they_cannot_carry_and_keep_the_rest() -> None:
    answer = {"requests": 10, "offload": 0.5, "domains": {"Not_A_Name": {"requests": 3}}}
    assert cache_stats(answer) == {"requests": 10, "offload": 0.5}
    good = {"requests": 10, "domains": {"shop": {"requests": 3, "originRequests": 1}}}
    assert cache_stats(good) == good


def test_cache_stats_leave_out_a_p99_of_a_quiet_minute() -> None:
    assert cache_stats({"requests": 10, "serverErrors": 0, "upstreamErrors": 0, "latencyP99Ms": None}) == {
        "requests": 10,
        "serverErrors": 0,
        "upstreamErrors": 0,
    }


# -- against an admin endpoint (a stand-in of the cache's, per its contract) --------------------


class FakeAdmin:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Doc, str]] = []
        self.fail_next = 0

    async def purge(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((request.path, body, request.headers.get("Authorization", "")))
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": "reloading"}, status=503)
        return web.json_response({"purged": len(body["urls"])})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": 4, "hits": 3, "hitRatio": 0.75, "node": "n"})


@pytest.fixture
async def admin() -> AsyncIterator[tuple[FakeAdmin, AdminEndpoint]]:
    fake = FakeAdmin()
    app = web.Application()
    app.router.add_post("/purge", fake.purge)
    app.router.add_get("/status", fake.status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, AdminEndpoint(f"http://127.0.0.1:{port}", "secret-token")
    await runner.cleanup()


async def test_runner_purges_once_retries_and_remembers_across_restarts(
    tmp_path: Path, admin: tuple[FakeAdmin, AdminEndpoint]
) -> None:
    fake, endpoint = admin
    fake.fail_next = 1
    client = CacheAdmin()
    runner = CacheTasks(tmp_path / "cache-tasks.json", client)
    tasks = tasks_from_view([purge_doc("p")], [])
    assert not await runner.run(tasks, endpoint, cache_expected=True, now=100.0)
    assert fake.calls == [("/purge", tasks[0].body, "Bearer secret-token")]
    assert not await runner.run(tasks, endpoint, cache_expected=True, now=100.5), "not due before the backoff"
    assert await runner.run(tasks, endpoint, cache_expected=True, now=101.0)
    assert len(fake.calls) == 2 and runner.ledger.report(tasks)["purges"][0]["message"] == "purged 1"
    assert await client.status(endpoint) == {"requests": 4, "hits": 3, "hitRatio": 0.75}
    await client.close()

    restarted = CacheTasks(tmp_path / "cache-tasks.json", CacheAdmin())
    await restarted.run(tasks, endpoint, cache_expected=True, now=200.0)
    assert len(fake.calls) == 2, "done once, remembered in the ledger file"
    assert json.loads((tmp_path / "cache-tasks.json").read_text())["records"]["uid-p"][2] == "Done"


async def test_runner_waits_for_the_cache_or_skips_a_node_without_one(tmp_path: Path) -> None:
    runner = CacheTasks(tmp_path / "cache-tasks.json", CacheAdmin())
    tasks = tasks_from_view([purge_doc("p")], [])
    assert not await runner.run(tasks, None, cache_expected=True, now=1.0)
    assert runner.ledger.report(tasks)["purges"][0]["state"] == "Pending"
    assert runner.ledger.due(tasks, 1.0) == tasks, "waiting spends no attempt"
    assert await runner.run(tasks, None, cache_expected=False, now=2.0)
    assert runner.ledger.report(tasks)["purges"][0]["state"] == "Done"


async def test_an_unreachable_cache_is_a_retry_not_an_error(tmp_path: Path) -> None:
    runner = CacheTasks(tmp_path / "cache-tasks.json", CacheAdmin())
    tasks = tasks_from_view([purge_doc("p")], [])
    await runner.run(tasks, AdminEndpoint("http://127.0.0.1:9", "t"), cache_expected=True, now=1.0)
    pending = runner.ledger.report(tasks)["purges"][0]
    assert pending["state"] == "Pending" and "cannot reach" in pending["message"]
    await runner.admin.close()
