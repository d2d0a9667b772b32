"""Rollout at scale: one Workload's template change over 1,000 simulated nodes in 20 sites.

    .venv/bin/python bench/rollout_scale.py [--nodes 1000] [--sites 20] [--settle-seconds 0]
        [--drain-seconds 0] [--restart-seconds 0] [--state DIR] [--json FILE]

What it measures: the workload controller's own cost and the rollout's pace. With
``maxUnavailablePerSite: 1`` the sites roll in parallel and each site's nodes one after the other,
so the least a rollout can take is ``ceil(nodes / sites)`` node steps, each at least the drain
(``drain.seconds`` plus the DNS TTL, 0 here: there is no Domain), the process restart and
``settleSeconds``. Targets (issue "controlled rollouts"): the controller's CPU under 10 ms per node
step, and the rollout limited only by the settle and drain times. There is no peer tool to compare
with: nginx and Knot have no notion of a fleet rollout (the closest, Kubernetes' Deployment
controller, needs a cluster and kubelets).

The fleet is :mod:`bench.fleet_sim`'s (read its docstring): the REAL HubClient and AgentSession over
real WebSockets in worker processes, against a real ``edgefleet cloud`` on SQLite (node credentials
cached in ``--state``). Here the agents also *run* the Workload ``sim-probe``: each keeps the
document its view carries and reports ``{revision: template_revision(template), ready: true, state:
Running}`` as soon as a new revision arrives (``--restart-seconds``: ``Starting``, not ready, that
long first, like a process restart), through the HubClient's real report loop.

The run: the sites and ``sim-probe`` (selecting every node; strategy ``maxUnavailablePerSite``
1, ``maxUnavailable`` 100%, drain enabled, settle and drain seconds from the options, no steps)
are created, the agents join and connect; once every agent runs the current revision ready and the
controller says so (``status.currentRevision`` is it, ``updatedCount`` and ``availableCount`` are
the node count), the template changes (an environment variable) and the tool polls the Workload
(``--poll`` s) until ``status.rollout.phase`` is Completed (or Failed, or ``--timeout``).

Figures: total time (the change to Completed seen); node steps (the increase of
``edgefleet_workload_controller_node_steps_total``, expected: the node count); the controller's CPU
per node step (``decide_seconds`` increase / node steps) against the target; the cloud process's
CPU (utime+stime from /proc: hub, controller, store, this tool's polls) per node step; controller
rounds and status writes; the ideal time and the time per node step (total / steps per site), and
where a step's time goes, from the agents' clocks (one machine, one clock): the agent's part
(new revision received -> report with it ready built) and the cloud's part (that report -> the next
node of the same site receives its new revision: hub status write, controller round, Workload
status write, view push), plus the first step (change -> first node) and the last (last report ->
Completed seen). Then, for ``--idle-seconds`` (default 10), what the controller costs while
nothing moves (rounds/s, its CPU). ``--json FILE`` keeps every figure. Everything is bounded by
timeouts, loopback only; the bench never fails on its targets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench/ and tests/

from bench.fleet_sim import (
    API,
    MULTI_SERVER,
    PROBE,
    WORKLOAD,
    CredentialCache,
    FleetOptions,
    SimFleet,
    WorkerError,
    add_fleet_arguments,
    fmt,
    percentile,
    proc_cpu_seconds,
    progress,
    run_tool,
    scrape,
    start_cloud,
    verdict,
    write_json,
)

from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.cloud.rollouts import FINISHED_PHASES

TARGET_CPU_MS_PER_STEP = 10.0
CONTROLLER = "edgefleet_workload_controller_"
COUNTERS = {  # figure -> /metrics series (increase over the rollout)
    "node_steps": CONTROLLER + "node_steps_total",
    "decide_seconds": CONTROLLER + "decide_seconds_total",
    "rounds": CONTROLLER + "rounds_total",
    "status_writes": CONTROLLER + "status_writes_total",
    "hub_status_writes": "edgefleet_hub_status_writes_total",
    "hub_status_reports": "edgefleet_hub_status_reports_total",
    "store_writes": "edgefleet_store_revision",
}


def strategy(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "maxUnavailablePerSite": args.max_unavailable_per_site,
        "maxUnavailable": args.max_unavailable,
        "settleSeconds": args.settle_seconds,
        "drain": {"enabled": True, "seconds": args.drain_seconds},
        "progressDeadlineSeconds": args.progress_deadline,
    }


def revision_of(document: dict[str, Any]) -> str:
    return template_revision(WorkloadTemplate.model_validate(document["spec"]["template"]))


async def get_workload(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(f"{API}/workloads/{PROBE}")
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


async def patch_workload(http: httpx.AsyncClient, patch: dict[str, Any]) -> dict[str, Any]:
    response = await http.patch(
        f"{API}/workloads/{PROBE}", json=patch, headers={"Content-Type": "application/merge-patch+json"}
    )
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


async def wait_baseline(fleet: SimFleet, n: int, within: float) -> dict[str, Any]:
    """Every agent runs the current template ready, and the controller's status says so."""
    started = time.monotonic()
    last_print = started
    while True:
        document = await get_workload(fleet.http)
        revision = revision_of(document)
        status = document.get("status") or {}
        phase = (status.get("rollout") or {}).get("phase")
        running, _ = await fleet.tracked()
        state = (
            f"{running.get(revision, 0)}/{n} agents run revision {revision[:8]}; controller: current "
            f"revision {status.get('currentRevisionNumber')}, updated {status.get('updatedCount')}, "
            f"available {status.get('availableCount')}, rollout {phase}"
        )
        if (
            running.get(revision, 0) >= n
            and status.get("currentRevision") == revision
            and status.get("updatedCount") == n
            and status.get("availableCount") == n
            and (phase is None or phase in FINISHED_PHASES)
        ):
            return {
                "revision": revision,
                "number": status.get("currentRevisionNumber"),
                "seconds": round(time.monotonic() - started, 2),
            }
        now = time.monotonic()
        if now - started > within:
            raise TimeoutError(f"baseline not reached after {within:.0f} s: {state}")
        if now - last_print >= 10:
            progress(f"waiting for the baseline: {state}")
            last_print = now
        await asyncio.sleep(0.5)


async def follow(fleet: SimFleet, target: str, poll: float, within: float) -> tuple[dict[str, Any], list[Any]]:
    """Poll the Workload until the rollout to ``target`` is finished (or ``within`` s): last document, samples."""
    started = time.monotonic()
    last_print = started
    samples: list[Any] = []  # (seconds, updated, moving)
    while True:
        document = await get_workload(fleet.http)
        status = document.get("status") or {}
        rollout = status.get("rollout") or {}
        now = time.monotonic()
        ours = rollout.get("target") == target
        samples.append(
            (round(now - started, 3), status.get("updatedCount") or 0, len(rollout.get("nodes") or {}) if ours else 0)
        )
        if ours and rollout.get("phase") in FINISHED_PHASES:
            return document, samples
        if now - started > within:
            return document, samples
        if now - last_print >= 10:
            progress(
                f"rollout: {rollout.get('phase')}, {status.get('updatedCount')} updated, "
                f"{len(rollout.get('nodes') or {})} moving, {now - started:.0f} s"
            )
            last_print = now
        await asyncio.sleep(poll)


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": statistics.median(values),
        "p90": percentile(values, 0.9),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def step_times(steps: dict[str, list[float]], sent: float, done: float) -> dict[str, Any]:
    """Where a step's time goes, from the agents' [received, ready, reported] times (see the docstring)."""
    by_site: dict[str, list[list[float]]] = {}
    for name, times in steps.items():
        by_site.setdefault(name.rpartition("-")[0], []).append(times)  # sim-0007-n3 is in sim-0007
    agent, cloud, gaps = [], [], []
    for members in by_site.values():
        members.sort(key=lambda t: t[0])
        for i, (received, _ready, reported) in enumerate(members):
            if reported:
                agent.append(reported - received)
            if i + 1 < len(members):
                gaps.append(members[i + 1][0] - received)
                if reported:
                    cloud.append(members[i + 1][0] - reported)
    received_all = [t[0] for t in steps.values()]
    reported_all = [t[2] for t in steps.values() if t[2]]
    return {
        "steps_seen": len(steps),
        "first_step_s": min(received_all) - sent if received_all else None,
        "last_step_s": done - max(reported_all) if reported_all else None,
        "agent_s": summary(agent),
        "cloud_s": summary(cloud),
        "step_gap_s": summary(gaps),
    }


async def run_rollout(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    count, sites = args.nodes, args.sites
    per_site = math.ceil(count / sites)
    state = Path(args.state) / f"rollout-{count}x{sites}" if args.state else workdir / "rollout"
    state.mkdir(parents=True, exist_ok=True)
    progress(f"starting a cloud on sqlite:///{state}/store.db")
    cloud = await start_cloud(f"sqlite:///{state}/store.db", state, args.cloud_arg)
    if not cloud.token:
        raise RuntimeError(f"no admin token in {state}/admin-token (a store of another run? remove {state})")
    pid = cloud.proc.pid if cloud.proc else None
    workers = args.workers or min(8, max(2, math.ceil(count / 2500)))
    options = FleetOptions(
        count,
        per_site,
        workers,
        args.connect_rate,
        args.join_concurrency,
        args.ping_interval,
        args.trace_memory,
        track={"workload": PROBE, "restart_seconds": args.restart_seconds},
    )
    fleet = SimFleet(options, cloud.url, cloud.token, [cloud.url], workdir, CredentialCache(state / "credentials.json"))
    result: dict[str, Any] = {
        "scenario": "rollout",
        "nodes": count,
        "sites": math.ceil(count / per_site),
        "nodes_per_site": per_site,
        "strategy": strategy(args),
        "restart_seconds": args.restart_seconds,
        "multi_server_hubclient": MULTI_SERVER,
        "load_avg_start": os.getloadavg(),
    }
    try:
        workload = {**WORKLOAD, "spec": {**WORKLOAD["spec"], "strategy": strategy(args)}}
        bootstrap = await fleet.prepare(workload)
        await patch_workload(fleet.http, {"spec": {"strategy": strategy(args)}})  # also a Workload of a past run
        await fleet.spawn()
        result["workers"] = len(fleet.workers)
        result["join"] = await fleet.join(bootstrap, [cloud.url], args.join_timeout)
        n = fleet.joined
        if n == 0:
            raise RuntimeError("no node could join; see the worker logs")
        rate = 0.0 if args.storm else args.connect_rate
        await fleet.connect(rate)
        result["connect_seconds"] = round(
            await fleet.wait_connected(n, (n / rate if rate else 0) + args.connect_timeout, f"{n} nodes"), 2
        )
        baseline = await wait_baseline(fleet, n, args.ready_timeout)
        result["baseline"] = baseline
        progress(
            f"{n} agents run revision {baseline['number']} ({baseline['seconds']:.1f} s after connecting); "
            f"changing the template"
        )
        result.update(await measure_rollout(fleet, args, n, cloud.url, pid, baseline))
        result["connected_end"] = (await fleet.stats())["connected"]
    finally:
        await fleet.close()
        await asyncio.to_thread(cloud.stop)
        result["cloud_log_tail"] = "\n".join(cloud.log().splitlines()[-5:])
    return result


async def measure_rollout(
    fleet: SimFleet, args: argparse.Namespace, n: int, url: str, pid: int | None, baseline: dict[str, Any]
) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as http:
        before = await scrape(http, url) or {}
        cpu0, sim0, load0 = (proc_cpu_seconds(pid) if pid else None), fleet.cpu_seconds(), os.getloadavg()
        t0, sent = time.monotonic(), time.time()
        changed = await patch_workload(
            fleet.http,
            {"spec": {"template": {"env": [{"name": "SIM_ROLLOUT", "value": f"{os.getpid()}-{int(sent)}"}]}}},
        )
        target = revision_of(changed)
        document, samples = await follow(fleet, target, args.poll, args.timeout)
        total, done = time.monotonic() - t0, time.time()
        cpu1, sim1 = (proc_cpu_seconds(pid) if pid else None), fleet.cpu_seconds()
        after = await scrape(http, url) or {}
    status = document.get("status") or {}
    rollout = status.get("rollout") or {}
    running, steps = await fleet.tracked(target)
    out: dict[str, Any] = {
        "from_revision": baseline["number"],
        "to_revision": status.get("updateRevisionNumber"),
        "phase": rollout.get("phase") if rollout.get("target") == target else None,
        "message": rollout.get("message"),
        "agents_on_target": running.get(target, 0),
        "total_seconds": round(total, 3),
        "load_avg_during": load0,
        "load_avg_end": os.getloadavg(),
        "polls": len(samples),
    }
    for figure, series in COUNTERS.items():
        out[figure] = after[series] - before[series] if series in after and series in before else None
    node_steps = out["node_steps"] or 0
    if node_steps:
        if out["decide_seconds"] is not None:
            out["controller_cpu_ms_per_step"] = out["decide_seconds"] / node_steps * 1000
        if cpu0 is not None and cpu1 is not None:
            out["cloud_cpu_ms_per_step"] = (cpu1 - cpu0) / node_steps * 1000
    if out["rounds"]:
        out["decide_ms_per_round"] = (out["decide_seconds"] or 0) / out["rounds"] * 1000
    out["cloud_cpu_seconds"] = None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2)
    out["cloud_cpu_pct"] = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / total * 100
    out["sim_cpu_pct"] = (sim1 - sim0) / total * 100
    steps_per_site = min(fleet.options.per_site, n)  # the first site is full: its nodes move one at a time
    per_step_min = args.drain_seconds + args.restart_seconds + args.settle_seconds  # + the DNS TTL: no Domain
    out.update(
        steps_per_site=steps_per_site,
        per_step_min_seconds=per_step_min,
        ideal_seconds=steps_per_site * per_step_min,
        seconds_per_step=total / steps_per_site if steps_per_site else None,
        overhead_per_step_seconds=(total - steps_per_site * per_step_min) / steps_per_site if steps_per_site else None,
        moving_mean=statistics.fmean(s[2] for s in samples) if samples else None,
        moving_max=max((s[2] for s in samples), default=0),
    )
    out["breakdown"] = step_times(steps, sent, done)
    out["timeline"] = samples
    if args.idle_seconds > 0:
        out.update(await measure_idle(url, pid, args.idle_seconds))
    return out


async def measure_idle(url: str, pid: int | None, seconds: float) -> dict[str, Any]:
    """After the rollout: what the controller costs when nothing moves (its rounds still pass over the index)."""
    async with httpx.AsyncClient(trust_env=False) as http:
        before = await scrape(http, url) or {}
        cpu0, t0 = (proc_cpu_seconds(pid) if pid else None), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, elapsed = (proc_cpu_seconds(pid) if pid else None), time.monotonic() - t0
        after = await scrape(http, url) or {}
    delta = {
        figure: after[series] - before[series]
        for figure, series in COUNTERS.items()
        if series in after and series in before
    }
    return {
        "idle_seconds": round(elapsed, 1),
        "idle_rounds_per_s": delta["rounds"] / elapsed if "rounds" in delta else None,
        "idle_decide_pct": delta["decide_seconds"] / elapsed * 100 if "decide_seconds" in delta else None,
        "idle_node_writes_per_s": delta["hub_status_writes"] / elapsed if "hub_status_writes" in delta else None,
        "idle_cloud_cpu_pct": None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / elapsed * 100,
    }


def ms(part: dict[str, float] | None) -> str:
    if part is None:
        return "n/a"
    return f"p50 {part['p50'] * 1000:.0f} / p90 {part['p90'] * 1000:.0f} / max {part['max'] * 1000:.0f} ms"


def print_result(r: dict[str, Any]) -> None:
    strategy_text = (
        f"maxUnavailablePerSite {r['strategy']['maxUnavailablePerSite']}, settle "
        f"{r['strategy']['settleSeconds']} s, drain {r['strategy']['drain']['seconds']} s, restart "
        f"{r['restart_seconds']:g} s"
    )
    if "error" in r:
        print(f"rollout {r['nodes']} nodes in {r['sites']} sites ({strategy_text}): FAILED: {r['error'][:2000]}")
        return
    b = r["breakdown"]
    load = r["load_avg_during"]
    cpu = r.get("controller_cpu_ms_per_step")
    rows = [
        ("rollout", f"{r['nodes']} nodes in {r['sites']} sites ({r['nodes_per_site']} per site), {strategy_text}"),
        ("outcome", f"{r['phase']} revision {r['from_revision']} -> {r['to_revision']}: {r['message']}"),
        (
            "total time",
            f"{r['total_seconds']:.1f} s (ideal {r['ideal_seconds']:.1f} s = {r['steps_per_site']} steps "
            f"per site x {r['per_step_min_seconds']:g} s)",
        ),
        (
            "time per node step",
            f"{fmt(r['seconds_per_step'], '.3f')} s (overhead over the ideal "
            f"{fmt(r['overhead_per_step_seconds'], '.3f')} s)",
        ),
        (
            "node steps",
            f"{fmt(r['node_steps'], '.0f')} (expected {r['nodes']}); agents on the new revision "
            f"{r['agents_on_target']}",
        ),
        (
            "controller CPU / step",
            f"{fmt(cpu, '.2f')} ms (target <= {TARGET_CPU_MS_PER_STEP:.0f} ms: "
            f"{verdict(cpu, TARGET_CPU_MS_PER_STEP)}); {fmt(r.get('decide_ms_per_round'), '.1f')}"
            f" ms per round",
        ),
        (
            "cloud CPU / step",
            f"{fmt(r.get('cloud_cpu_ms_per_step'), '.1f')} ms ({fmt(r['cloud_cpu_seconds'], '.1f')} s "
            f"in all, {fmt(r['cloud_cpu_pct'], '.0f', '%')} of a core; simulated agents "
            f"{r['sim_cpu_pct']:.0f}%)",
        ),
        (
            "controller",
            f"{fmt(r['rounds'], '.0f')} rounds, {fmt(r['status_writes'], '.0f')} status writes; nodes "
            f"moving at once: mean {fmt(r['moving_mean'], '.1f')}, max {r['moving_max']}",
        ),
        (
            "hub",
            f"{fmt(r['hub_status_reports'], '.0f')} status reports, {fmt(r['hub_status_writes'], '.0f')} "
            f"Node.status writes; {fmt(r['store_writes'], '.0f')} store writes",
        ),
        ("step: agent part", f"{ms(b['agent_s'])} (new revision received -> its ready report built)"),
        ("step: cloud part", f"{ms(b['cloud_s'])} (report -> next node of the site receives its revision)"),
        ("step: gap in a site", ms(b["step_gap_s"])),
        (
            "first / last step",
            f"{fmt(b['first_step_s'], '.3f')} s (change -> first node) / "
            f"{fmt(b['last_step_s'], '.3f')} s (last report -> Completed seen)",
        ),
        (
            "after, idle",
            f"{fmt(r.get('idle_rounds_per_s'), '.1f')} rounds/s, controller CPU "
            f"{fmt(r.get('idle_decide_pct'), '.1f', '%')} of a core "
            f"(cloud {fmt(r.get('idle_cloud_cpu_pct'), '.0f', '%')}); "
            f"{fmt(r.get('idle_node_writes_per_s'), '.1f')} Node.status writes/s wake it",
        ),
        (
            "load average",
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start, "
            f"{r['load_avg_end'][0]:.2f} at the end ({os.cpu_count()} CPUs)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollout_scale.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes (default 1000)")
    parser.add_argument("--sites", type=int, default=20, help="sites they are spread over (default 20)")
    parser.add_argument("--settle-seconds", type=int, default=0, help="strategy.settleSeconds (default 0)")
    parser.add_argument("--drain-seconds", type=int, default=0, help="strategy.drain.seconds (default 0)")
    parser.add_argument(
        "--max-unavailable-per-site", default=1, type=lambda v: v if v.endswith("%") else int(v), help="default 1"
    )
    parser.add_argument(
        "--max-unavailable", default="100%", type=lambda v: v if v.endswith("%") else int(v), help="default 100%%"
    )
    parser.add_argument("--progress-deadline", type=int, default=600, help="strategy.progressDeadlineSeconds")
    parser.add_argument(
        "--restart-seconds",
        type=float,
        default=0.0,
        help="the agents report the new revision Starting this long before Running, ready (default 0)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for the rollout (default 900)")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds allowed, once connected, for every node to run the first revision",
    )
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between two reads of the Workload")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="then measure the controller's idle cost this long (0: not; default 10)",
    )
    add_fleet_arguments(parser, "keep the store, admin token and node credentials here; a second run reuses them")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.nodes < 1 or not 1 <= args.sites <= args.nodes:
        raise SystemExit("expected --nodes >= 1 and 1 <= --sites <= --nodes")

    async def scenario(workdir: Path) -> None:
        try:
            result = await run_rollout(args, workdir)
        except (RuntimeError, TimeoutError, WorkerError, httpx.HTTPError, OSError) as exc:
            result = {
                "nodes": args.nodes,
                "sites": args.sites,
                "strategy": strategy(args),
                "restart_seconds": args.restart_seconds,
                "error": f"{exc.__class__.__name__}: {exc}",
            }
        print_result(result)
        if args.json:
            write_json(args.json, result)

    run_tool(scenario, args.keep)


if __name__ == "__main__":
    main()
