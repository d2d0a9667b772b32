"""Rollouts end to end: 3 sites x 3 nodes of the real cache, clients resolving through the GSLB every request.

One cloud (its embedded DNS, the example geo table), a real origin, nine
agents (three in Paris, New York and Tokyo) each running the built-in cache
on its own loopback address. Client threads ask the cloud's DNS for the
Domain before every request, as a user placed in one of the three cities
(EDNS Client Subnet), and fetch a cached object from the answered node.
Two watches record every change of the Workload and of the Nodes, in store
order, so budgets are checked on the real timeline, not by sampling.

- A good revision rolls out: a canary first, verified, then the rest; no
  site ever has more than one node drained or not ready; no request fails.
- A bad revision (its probe fails a few seconds after start) is caught on
  the canary and rolled back; only the canary ever ran it; no request fails.
- A bad revision that answers 5xx for some paths (it fetches misses from a
  dead origin) is caught on the canary by the error-rate analysis, from the
  figures the real cache reports, and rolled back; only the canary ever ran
  it; the users' requests (hits) never fail, while a monitor's requests for
  uncached paths saw the 5xx on the canary and nowhere else.
- A pin holds a node on its revision through a rollout; a node whose agent
  goes down during the rollout waits (holding its site's budget, so the rest
  of its site waits too) and is updated when it returns;
  a cloud restart mid-rollout resumes from the store; unpinning moves the
  pinned node.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from tests.cacheproc import OriginProcess
from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, BackgroundLoop, Fleet, cache_workload, replace_object
from tests.waiting import hold, wait_until

pytestmark = pytest.mark.slow

GEO = Path(__file__).resolve().parents[2] / "examples" / "geo.csv"
SITES = {
    "par": ("FR", 48.86, 2.35, "127.0.1.0"),
    "nyc": ("US", 40.71, -74.0, "127.0.5.0"),
    "tyo": ("JP", 35.68, 139.65, "127.0.7.0"),
}
NODES = {f"{site}-{i}": (site, f"127.0.{20 + s}.{i}") for s, site in enumerate(SITES) for i in (1, 2, 3)}
NAME = "demo.cdn.edgefleet.test"
PATH = "/bytes/2048/rollout"
STRATEGY = {
    "maxUnavailable": 3,
    "maxUnavailablePerSite": 1,
    "steps": [{"nodes": 1}],
    "drain": {"seconds": 1},
    "settleSeconds": 1,
    "progressDeadlineSeconds": 60,
    "analysis": {"intervalSeconds": 5, "metrics": [{"metric": "restarts", "max": 0}]},
}
# Started, then its probe fails 5 s later: a build that breaks once it has served a while.
BAD_PROBE = {
    "http": None,
    "exec": {
        "command": ["python3", "-c", "import os, sys, time; sys.exit(time.time() - os.path.getmtime('started') > 5)"]
    },
    "periodSeconds": 1,
    "failureThreshold": 1,
}
BAD_HOOK = {"exec": {"command": ["touch", "started"]}}
# A build that breaks its origin fetches: it serves from cache as before, but every miss it must fetch
# itself answers 502 (the origin becomes a closed port). The agent appends "--config cache.yaml".
BREAK_ORIGIN = (
    "import sys, yaml; config = yaml.safe_load(open(sys.argv[2])); "
    "[origin.update(url='http://127.0.0.1:1') for d in config['domains'] for origin in d['origins']]; "
    "yaml.safe_dump(config, open('broken.yaml', 'w'))"
)
BAD_5XX_COMMAND = [
    "sh",
    "-c",
    f'{sys.executable} -c "{BREAK_ORIGIN}" "$@" && exec {sys.executable} -m edgefleet cache --config broken.yaml',
    "bad-build",
]
ERROR_RATE_ANALYSIS = {
    "intervalSeconds": 15,  # three times the cache figures' reporting interval
    "metrics": [{"metric": "errorRate", "maxIncrease": 0.01, "minRequests": 20}],
}


def site(name: str) -> dict[str, Any]:
    country, lat, lon, _ = SITES[name]
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"tier": "edge"}},
        "spec": {
            "region": name,
            "tier": "edge",
            "location": {"lat": lat, "lon": lon, "country": country},
            "capacityGbps": 10,
        },
    }


def domain(origin: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "demo"},
        "spec": {"hostnames": ["demo.test"], "origins": [{"url": origin}], "routing": {"answers": 1, "ttl": 1}},
    }


class Recorder:
    """Every watch event of one kind, with its store revision, in a thread."""

    def __init__(self, cloud: CloudProcess, plural: str, since: str) -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cloud, plural, since), daemon=True)
        self._thread.start()

    def _run(self, cloud: CloudProcess, plural: str, since: str) -> None:
        headers = {"Authorization": f"Bearer {cloud.token}"}
        params = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "false"}
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with httpx.stream(
                    "GET",
                    f"{cloud.url}{API}/{plural}",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(5, read=None),
                ) as response:
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if line:
                            obj = json.loads(line)["object"]
                            revision = int(obj["metadata"]["resourceVersion"])
                            self.events.append((revision, obj))
                            params["resourceVersion"] = str(revision)
            except httpx.HTTPError:
                time.sleep(0.2)  # the cloud restarted: resume after the last event seen

    def stop(self) -> None:
        self._stop.set()


class Clients:
    """Users in the three cities: resolve, then fetch, in a loop (bounded in count and time)."""

    def __init__(self, fleet: Fleet, http_port: int, max_seconds: float = 240) -> None:
        self.fleet, self.http_port, self.max_seconds = fleet, http_port, max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self.served_by: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(subnet,), daemon=True) for _, _, _, subnet in SITES.values()
        ]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _resolve(self, subnet: str, last: str | None) -> str | None:
        query = dns.message.make_query(NAME, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)])
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=self.fleet.cloud.dns_port, timeout=1)
        except (OSError, dns.exception.DNSException):
            return last  # the cloud is restarting: a resolver serves what it had
        records = [item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset]
        return records[0] if records else last

    def _run(self, subnet: str) -> None:
        deadline = time.monotonic() + self.max_seconds
        address: str | None = None
        with httpx.Client(timeout=3.0) as client:
            for _ in range(20_000):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                address = self._resolve(subnet, address)
                if address is not None:
                    self._fetch(client, address)
                time.sleep(0.05)

    def _fetch(self, client: httpx.Client, address: str) -> None:
        try:
            response = client.get(f"http://{address}:{self.http_port}{PATH}", headers={"Host": "demo.test"})
            if response.status_code == 200 and len(response.content) == 2048:
                self.ok += 1
                self.served_by[address] = self.served_by.get(address, 0) + 1
            else:
                self.failures.append(f"{address}: HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            self.failures.append(f"{address}: {exc.__class__.__name__}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, int]]:
    root = tmp_path_factory.mktemp("rollouts")
    cloud = CloudProcess(
        f"sqlite:///{root}/store.db",
        root,
        extra_args=["--geo", str(GEO), "--node-not-ready-after", "3", "--node-monitor-period", "0.5"],
    ).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    origin = OriginProcess(root).start()
    http_port, admin_port = free_port(), free_port()
    workload = cache_workload(http_port, admin_port, node_selector="")
    workload["spec"]["strategy"] = STRATEGY
    workload["spec"]["template"]["env"] = [{"name": "BUILD", "value": "1"}]
    try:
        with fleet.api() as api:
            for name in SITES:
                assert api.post(f"{API}/sites", json=site(name)).status_code == 201
            assert api.post(f"{API}/domains", json=domain(origin.url)).status_code == 201
            assert api.post(f"{API}/workloads", json=workload).status_code == 201
        for name, (site_name, address) in NODES.items():
            fleet.join(name, site_name, address=address, agent_args=["--peer-probe-period", "0.5"]).start()
        fleet.wait_ready(list(NODES), timeout=120)
        for _, address in NODES.values():  # warm every cache
            httpx.get(f"http://{address}:{http_port}{PATH}", headers={"Host": "demo.test"}, timeout=10)
        wait_until(lambda: workload_status(fleet).get("currentRevisionNumber") == 1, 20, what="revision 1")
        yield fleet, http_port
    finally:
        fleet.close()
        origin.stop()


def workload_status(fleet: Fleet) -> dict[str, Any]:
    with fleet.api() as api:
        return api.get(f"{API}/workloads/cache").json().get("status") or {}


def change_template(fleet: Fleet, **template: Any) -> str:
    """Patch the template; returns the resourceVersion to watch from."""
    with fleet.api() as api:
        response = api.patch(
            f"{API}/workloads/cache",
            json={"spec": {"template": template}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code == 200, response.text
        return str(int(response.json()["metadata"]["resourceVersion"]) - 1)


def finished(fleet: Fleet, phase: str, number: int | None = None) -> bool:
    rollout = workload_status(fleet).get("rollout") or {}
    return rollout.get("phase") == phase and (number is None or rollout.get("targetNumber") == number)


def worst_site_unavailability(nodes: Recorder) -> int:
    """Replay the Node events in store order: the most nodes of one site drained or not ready at once."""
    state: dict[str, bool] = {}
    worst = 0
    for _, node in sorted(nodes.events, key=lambda item: item[0]):
        status = node.get("status") or {}
        instance = (status.get("workloads") or {}).get("cache") or {}
        state[node["metadata"]["name"]] = bool(status.get("drains")) or not instance.get("ready", True)
        for site_name in SITES:
            worst = max(worst, sum(1 for name, down in state.items() if down and name.startswith(site_name)))
    return worst


def ever_assigned(workloads: Recorder, revision: str) -> set[str]:
    return {
        node
        for _, wl in workloads.events
        for node, rev in ((wl.get("status") or {}).get("nodeRevisions") or {}).items()
        if rev == revision
    }


def running(fleet: Fleet, node: str) -> str | None:
    workloads = (fleet.node(node).get("status") or {}).get("workloads") or {}
    revision: str | None = workloads.get("cache", {}).get("revision")
    return revision


def test_a_good_revision_rolls_out_in_batches_without_a_failed_request(world: tuple[Fleet, int]) -> None:
    fleet, http_port = world
    with Clients(fleet, http_port) as clients:
        hold(1)  # clients running on the old revision first
        since = change_template(fleet, env=[{"name": "BUILD", "value": "2"}])
        workloads, nodes = Recorder(fleet.cloud, "workloads", since), Recorder(fleet.cloud, "nodes", since)
        wait_until(lambda: finished(fleet, "Completed", 2), 150, interval=0.5, what="rollout of revision 2")
        workloads.stop()
        nodes.stop()
    status = workload_status(fleet)
    assert status["currentRevisionNumber"] == 2 and status["updatedCount"] == 9, status
    assert {running(fleet, node) for node in NODES} == {status["currentRevision"]}
    assert worst_site_unavailability(nodes) == 1
    moving = [set((wl.get("status", {}).get("rollout") or {}).get("nodes") or {}) for _, wl in workloads.events]
    first = next(m for m in moving if m)
    assert len(first) == 1, "the canary moves alone"
    canary = next(iter(first))
    before_canary_done = moving[: next(i for i, m in enumerate(moving) if m and canary not in m)]
    assert all(m <= {canary} for m in before_canary_done), "nobody else moves before the canary is verified"
    assert any((wl.get("status", {}).get("rollout") or {}).get("phase") == "Analyzing" for _, wl in workloads.events)
    assert clients.failures == [] and clients.ok > 100, (clients.failures[:10], clients.ok)


def test_a_bad_revision_fails_on_the_canary_and_rolls_back(world: tuple[Fleet, int]) -> None:
    fleet, http_port = world
    good = workload_status(fleet)["currentRevision"]
    with Clients(fleet, http_port) as clients:
        since = change_template(fleet, healthProbe=BAD_PROBE, postStart=BAD_HOOK)
        workloads = Recorder(fleet.cloud, "workloads", since)
        wait_until(lambda: finished(fleet, "Failed"), 120, interval=0.5, what="the bad rollout to fail")
        workloads.stop()
    status = workload_status(fleet)
    bad = status["updateRevision"]
    assert status["currentRevision"] == good and status["rollout"]["failedRevision"] == bad
    assert "not ready" in status["rollout"]["message"] or "restarts" in status["rollout"]["message"]
    assert len(ever_assigned(workloads, bad)) == 1, "only the canary ever ran the bad revision"
    wait_until(lambda: {running(fleet, node) for node in NODES} == {good}, 30, what="every node back on good")
    assert clients.failures == [] and clients.ok > 50, (clients.failures[:10], clients.ok)
    with fleet.api() as api:  # put the good template back, as `rollout undo` would
        revisions = api.get(f"{API}/workloadrevisions").json()["items"]
        template = next(r["spec"]["template"] for r in revisions if r["spec"]["revision"] == good)
        replace_object(api, f"{API}/workloads/cache", lambda current: current["spec"].update(template=template))
    wait_until(lambda: workload_status(fleet).get("updateRevision") == good, 10, what="the template back")


class Monitor(BackgroundLoop):
    """Requests for never-fetched paths at every node, straight to its address: misses, so origin fetches."""

    def __init__(self, http_port: int) -> None:
        super().__init__()
        self.http_port = http_port
        self.failures: dict[str, int] = {}
        self.ok = 0

    def _run(self) -> None:
        deadline = time.monotonic() + 180
        with httpx.Client(timeout=3.0) as client:
            for n in itertools.count():
                if n >= 20_000 or self._stop.is_set() or time.monotonic() > deadline:
                    return
                for _, address in NODES.values():
                    self._fetch(client, address, n)
                time.sleep(0.2)

    def _fetch(self, client: httpx.Client, address: str, n: int) -> None:
        try:
            response = client.get(
                f"http://{address}:{self.http_port}/bytes/64/monitor-{n}", headers={"Host": "demo.test"}
            )
            if response.status_code < 500:
                self.ok += 1
                return
        except httpx.HTTPError:
            pass
        self.failures[address] = self.failures.get(address, 0) + 1


def test_a_revision_answering_5xx_fails_its_error_rate_analysis_and_rolls_back(world: tuple[Fleet, int]) -> None:
    fleet, http_port = world
    good = workload_status(fleet)["currentRevision"]
    with Clients(fleet, http_port) as clients, Monitor(http_port) as monitor:
        with fleet.api() as api:
            response = api.patch(
                f"{API}/workloads/cache",
                json={
                    "spec": {"strategy": {"analysis": ERROR_RATE_ANALYSIS}, "template": {"command": BAD_5XX_COMMAND}}
                },
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert response.status_code == 200, response.text
            since = str(int(response.json()["metadata"]["resourceVersion"]) - 1)
        workloads = Recorder(fleet.cloud, "workloads", since)
        try:
            wait_until(lambda: finished(fleet, "Failed"), 150, interval=0.5, what="the 5xx rollout to fail")
        except AssertionError:
            raise AssertionError(
                json.dumps(
                    {"workload": workload_status(fleet), "monitor": monitor.failures, "clients": clients.served_by},
                    indent=1,
                )[:6000]
            ) from None
        workloads.stop()
        wait_until(lambda: {running(fleet, node) for node in NODES} == {good}, 30, what="every node back on good")
    status = workload_status(fleet)
    bad = status["updateRevision"]
    assert status["currentRevision"] == good and status["rollout"]["failedRevision"] == bad
    assert "errorRate" in status["rollout"]["message"], status["rollout"]["message"]
    canaries = ever_assigned(workloads, bad)
    assert len(canaries) == 1, "only the canary ever ran the bad revision"
    canary_address = NODES[next(iter(canaries))][1]
    assert set(monitor.failures) == {canary_address}, ("only the canary answered 5xx", monitor.failures)
    assert monitor.ok > 100
    assert clients.failures == [] and clients.ok > 50, (clients.failures[:10], clients.ok)
    with fleet.api() as api:  # the good template and the usual analysis back
        revisions = api.get(f"{API}/workloadrevisions").json()["items"]
        template = next(r["spec"]["template"] for r in revisions if r["spec"]["revision"] == good)

        def restore(current: dict[str, Any]) -> None:
            current["spec"].update(template=template, strategy=STRATEGY)

        replace_object(api, f"{API}/workloads/cache", restore)
    wait_until(lambda: workload_status(fleet).get("updateRevision") == good, 10, what="the template back")


def test_pins_absent_nodes_and_a_cloud_restart(world: tuple[Fleet, int]) -> None:
    fleet, http_port = world
    old = workload_status(fleet)["currentRevisionNumber"]
    with fleet.api() as api:
        response = api.patch(
            f"{API}/workloads/cache",
            json={
                "spec": {
                    "pins": [{"selector": "edgefleet.io/node=par-2", "revision": old}],
                    "strategy": {**STRATEGY, "steps": [], "analysis": None},
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code == 200, response.text
    absent = fleet.agents["nyc-3"]
    with Clients(fleet, http_port) as clients:
        change_template(fleet, env=[{"name": "BUILD", "value": "3"}])
        absent.kill()  # during the rollout: its cache keeps serving; the cloud marks it NotReady
        wait_until(
            lambda: (workload_status(fleet).get("rollout") or {}).get("waiting") == ["nyc-3"],
            30,
            what="nyc-3 listed as waiting",
        )
        wait_until(
            lambda: running(fleet, "tyo-1") == workload_status(fleet).get("updateRevision"), 60, what="tyo moving"
        )
        fleet.cloud.kill()
        fleet.cloud.start()
        wait_until(
            lambda: all(
                running(fleet, f"{s}-{i}") == workload_status(fleet)["updateRevision"]
                for s in ("par", "tyo")
                for i in (1, 3)
            ),
            120,
            what="par and tyo updated",
        )
        status = workload_status(fleet)
        assert running(fleet, "nyc-2") != status["updateRevision"], "nyc is held by its absent node"
        assert running(fleet, "par-2") == status["currentRevision"] != status["updateRevision"], "par-2 is pinned"
        absent.start()
        try:
            target = workload_status(fleet)["updateRevisionNumber"]
            wait_until(lambda: finished(fleet, "Completed", target), 120, interval=0.5, what="the rollout to complete")
        except AssertionError:
            nodes = {n: (fleet.node(n).get("status") or {}) for n in NODES}
            raise AssertionError(
                json.dumps(
                    {
                        "workload": workload_status(fleet),
                        "nodes": {n: {k: s.get(k) for k in ("phase", "workloads", "drains")} for n, s in nodes.items()},
                    },
                    indent=1,
                )[:6000]
            ) from None
    status = workload_status(fleet)
    assert status["nodeRevisions"] == {"par-2": next(iter(status["nodeRevisions"].values()))}
    assert running(fleet, "nyc-3") == status["currentRevision"]
    with fleet.api() as api:
        api.patch(
            f"{API}/workloads/cache",
            json={"spec": {"pins": []}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    wait_until(
        lambda: running(fleet, "par-2") == workload_status(fleet)["currentRevision"],
        60,
        what="par-2 moves once unpinned",
    )
    assert clients.failures == [], clients.failures[:10]
