"""Operating the cache server: admin endpoint, purge and prefetch, SIGHUP reload, workers, SIGTERM, disk tier.

Every test drives real processes: the programmable origin and ``edgefleet
cache`` (master plus workers). One origin serves the module; caches are
started per group of tests, since some tests stop, kill or break them.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cache.figures import FRESH, fresh_metric, fresh_status
from tests.cacheproc import ADMIN_TOKEN, CacheProcess, OriginProcess, cache_config, http_request, started
from tests.waiting import wait_until

NODE = "ops"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops")


@pytest.fixture(scope="module")
def cache(origin: OriginProcess, data_dir: Path) -> Iterator[CacheProcess]:
    """One worker, a 4 MiB memory tier (so that 1 MiB objects get evicted from it) and a disk tier."""
    config = cache_config(origin.url, data_dir, node=NODE)
    config["storage"]["memoryBytes"] = 4 * 2**20
    with started(CacheProcess(config, data_dir)) as proc:
        yield proc


@pytest.fixture(scope="module")
def two_workers(origin: OriginProcess, data_dir: Path) -> Iterator[CacheProcess]:
    with started(CacheProcess(cache_config(origin.url, data_dir, node="duo", workers=2), data_dir)) as proc:
        yield proc


def x_cache(response: httpx.Response) -> str:
    return response.headers["x-cache"].split(" from ")[0]


def purge(cache: CacheProcess, **body: Any) -> httpx.Response:
    return cache.admin("POST", "/purge", json=body)


# --- the admin endpoint ----------------------------------------------------------------------


def test_healthz_is_200_while_the_worker_is_up(cache: CacheProcess) -> None:
    response = httpx.get(f"{cache.admin_url}/healthz", timeout=5)
    assert (response.status_code, response.text) == (200, "ok\n")


def test_status_reports_requests_hits_bytes_and_objects(cache: CacheProcess) -> None:
    before = fresh_status(cache)
    for _ in range(3):
        assert cache.get("/bytes/1000/status").status_code == 200
    after = fresh_status(cache)  # Cache-Control: no-cache, not the master's 0.2 s snapshot
    assert {"requests", "hits", "hitRatio", "bytesServed", "bytesStored", "objects", "workers", "node"} <= set(after)
    assert after["requests"] - before["requests"] == 3
    assert after["hits"] - before["hits"] == 2
    assert after["bytesServed"] - before["bytesServed"] == 3000
    assert after["objects"] >= 1 and after["bytesStored"] >= 1000
    assert 0 < after["hitRatio"] <= 1 and after["hitRatio"] == round(after["hits"] / after["requests"], 4)
    assert (after["workers"], after["node"]) == (1, NODE)


def test_metrics_expose_counters_gauges_and_the_upstream_histogram(cache: CacheProcess) -> None:
    for index in range(6):  # 6 MiB through a 4 MiB memory tier: evictions
        assert cache.get(f"/bytes/1048576/evict-{index}").status_code == 200
    assert cache.get("/bytes/1048576/evict-5").headers["x-cache"] == f"HIT from {NODE}"
    # The last disk store may still be in its thread: wait for it, not for a duration.
    wait_until(lambda: fresh_metric(cache, "edgefleet_cache_disk_bytes") >= 6 * 2**20, what="six objects on disk")
    text = httpx.get(f"{cache.admin_url}/metrics", headers=FRESH, timeout=5).text
    for name in (
        "edgefleet_cache_hits_total",
        "edgefleet_cache_requests_total",
        "edgefleet_cache_evictions_total",
        "edgefleet_cache_memory_bytes",
        "edgefleet_cache_disk_bytes",
        'edgefleet_cache_upstream_seconds_bucket{le="+Inf"}',
        "edgefleet_cache_upstream_seconds_count",
        "edgefleet_cache_upstream_seconds_sum",
    ):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
    assert fresh_metric(cache, "edgefleet_cache_requests_total") >= 7
    assert fresh_metric(cache, "edgefleet_cache_hits_total") >= 1
    assert fresh_metric(cache, "edgefleet_cache_evictions_total") >= 2
    assert 0 < fresh_metric(cache, "edgefleet_cache_memory_bytes") <= 4 * 2**20
    assert fresh_metric(cache, "edgefleet_cache_upstream_seconds_count") >= 6
    assert fresh_metric(cache, 'edgefleet_cache_upstream_seconds_bucket{le="+Inf"}') == fresh_metric(
        cache, "edgefleet_cache_upstream_seconds_count"
    )


# --- purge and prefetch ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"], ids=["missing", "wrong"])
def test_purge_without_the_right_token_is_401_and_purges_nothing(
    cache: CacheProcess, origin: OriginProcess, token: str | None
) -> None:
    path = f"/bytes/100/auth-{token is None}"
    cache.get(path)
    response = cache.admin("POST", "/purge", token=token, json={"urls": [path]})
    assert response.status_code == 401
    assert "bearer token" in response.json()["error"]
    assert x_cache(cache.get(path)) == "HIT" and origin.count(path) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'["/bytes/100/bad"]',
        b'{"urls": ["/bytes/100/bad"], "purgeEverything": true}',
        b'{"urls": "/bytes/100/bad"}',
        b'{"urls": ["/bytes/100/bad", ""]}',
        b'{"urls": ["/bytes/100/bad"], "soft": "yes"}',
        b'{"urls": ["/bytes/100/bad"], "domain": 7}',
        b"{}",
    ],
    ids=[
        "not-json",
        "not-object",
        "unknown-field",
        "not-list",
        "empty-url",
        "soft-not-bool",
        "domain-not-str",
        "nothing",
    ],
)
def test_bad_purge_bodies_are_400_and_purge_nothing(cache: CacheProcess, origin: OriginProcess, body: bytes) -> None:
    cache.get("/bytes/100/bad")
    count = origin.count("/bytes/100/bad")
    response = cache.admin("POST", "/purge", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    assert x_cache(cache.get("/bytes/100/bad")) == "HIT" and origin.count("/bytes/100/bad") == count


def test_hard_purge_by_url_path_and_absolute_url(cache: CacheProcess, origin: OriginProcess) -> None:
    for path in ("/bytes/100/purge-a", "/bytes/100/purge-b", "/bytes/100/purge-keep"):
        cache.get(path)
    response = purge(cache, urls=["/bytes/100/purge-a", "http://demo.test/bytes/100/purge-b"])
    assert response.status_code == 200 and response.json()["purged"] >= 2
    assert [x_cache(cache.get(p)) for p in ("/bytes/100/purge-a", "/bytes/100/purge-b", "/bytes/100/purge-keep")] == [
        "MISS",
        "MISS",
        "HIT",
    ]
    assert origin.count("/bytes/100/purge-a") == origin.count("/bytes/100/purge-b") == 2


def test_hard_purge_by_prefix(cache: CacheProcess, origin: OriginProcess) -> None:
    inside = ["/bytes/100/pfx/one", "/bytes/100/pfx/two?x=1"]
    outside = "/bytes/100/pfxnot/three"
    for path in [*inside, outside]:
        cache.get(path)
    assert purge(cache, prefixes=["/bytes/100/pfx/"]).status_code == 200
    assert [x_cache(cache.get(p)) for p in [*inside, outside]] == ["MISS", "MISS", "HIT"]


def test_hard_purge_by_tag(cache: CacheProcess, origin: OriginProcess) -> None:
    tagged, other = "/bytes/100/tagged?tags=red,blue", "/bytes/100/other?tags=green"
    assert cache.get(tagged).headers["cache-tag"] == "red,blue"
    cache.get(other)
    assert purge(cache, tags=["blue"]).json()["purged"] >= 1
    assert x_cache(cache.get(tagged)) == "MISS"
    assert x_cache(cache.get(other)) == "HIT"
    assert origin.count(tagged) == 2 and origin.count(other) == 1


def test_soft_purge_makes_the_next_get_revalidate(cache: CacheProcess, origin: OriginProcess) -> None:
    path = "/bytes/2000/soft"
    first = cache.get(path)
    assert purge(cache, urls=[path], soft=True).status_code == 200
    conditional_before = origin.stats()["conditional"]
    again = cache.get(path)
    assert x_cache(again) == "REVALIDATED"
    assert again.content == first.content
    assert origin.stats()["conditional"] == conditional_before + 1
    assert x_cache(cache.get(path)) == "HIT"
    assert origin.count(path) == 2


def test_prefetch_makes_the_next_get_a_hit_without_an_origin_request(
    cache: CacheProcess, origin: OriginProcess
) -> None:
    paths = ["/bytes/3000/prefetched-1", "/bytes/300000/prefetched-2"]
    response = cache.admin("POST", "/prefetch", json={"domain": "demo", "urls": paths})
    assert response.status_code == 200, response.text
    assert response.json() == {"fetched": 2, "failed": []}
    assert [origin.count(p) for p in paths] == [1, 1]
    for path in paths:
        hit = cache.get(path)
        assert x_cache(hit) == "HIT" and hit.content == httpx.get(origin.url + path).content
    assert [origin.count(p) for p in paths] == [2, 2]  # the two direct origin reads above, nothing from the cache


def test_prefetch_of_an_unknown_domain_or_without_token_is_refused(cache: CacheProcess) -> None:
    assert cache.admin("POST", "/prefetch", token=None, json={"domain": "demo", "urls": ["/x"]}).status_code == 401
    assert cache.admin("POST", "/prefetch", json={"urls": ["/x"]}).status_code == 400
    failed = cache.admin("POST", "/prefetch", json={"domain": "nope", "urls": ["/x"]})
    assert failed.status_code == 200 and failed.json()["fetched"] == 0


# --- SIGHUP reload -------------------------------------------------------------------------------


def test_sighup_adds_a_hostname_without_a_restart(origin: OriginProcess, data_dir: Path) -> None:
    config = cache_config(origin.url, data_dir, node="hup")
    with started(CacheProcess(config, data_dir)) as proc:
        pids = (proc.master_pid, proc.worker_pids())
        assert proc.get("/bytes/100/hup").status_code == 200
        assert proc.get("/bytes/100/hup", host="new.test").status_code == 421
        with proc.connect() as conn:
            conn.send(http_request("GET", "/bytes/100/hup"))
            assert conn.read_response().status == 200
            new = copy.deepcopy(config)
            new["domains"][0]["hostnames"].append("new.test")
            proc.reload(new)
            wait_until(lambda: proc.get("/bytes/100/hup", host="new.test").status_code == 200)
            conn.send(http_request("GET", "/bytes/100/hup"))  # the connection opened before the reload
            kept = conn.read_response()
            assert kept.status == 200 and kept.header("x-cache") == "HIT from hup"
        assert x_cache(proc.get("/bytes/100/hup")) == "HIT"
        assert (proc.master_pid, proc.worker_pids()) == pids
        assert proc.proc is not None and proc.proc.poll() is None
        assert "reloaded" in proc.log()


def test_sighup_with_an_invalid_file_is_logged_and_the_old_config_stays(origin: OriginProcess, data_dir: Path) -> None:
    config = cache_config(origin.url, data_dir, node="badhup")
    with started(CacheProcess(config, data_dir)) as proc:
        assert proc.get("/bytes/100/badhup").status_code == 200
        broken = copy.deepcopy(config)
        broken["domains"][0]["hostnames"] = ["new.test"]
        broken["workers"] = "many"
        proc.reload(broken)
        log = proc.wait_log("reload refused")
        assert "workers" in log.split("reload refused")[1]
        proc.config_path.write_text("domains: [unclosed\n")
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: proc.log().count("reload refused") == 2)
        assert x_cache(proc.get("/bytes/100/badhup")) == "HIT"
        assert proc.get("/bytes/100/badhup", host="new.test").status_code == 421
        assert proc.proc.poll() is None


# --- two workers ----------------------------------------------------------------------------------


def established_sockets(port: int) -> set[str]:
    """Inodes of established TCP sockets whose local port is ``port`` (the server ends)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            next(file)
            for line in file:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def test_two_workers_share_the_port_and_both_serve(two_workers: CacheProcess) -> None:
    assert two_workers.status()["workers"] == 2
    workers = two_workers.worker_pids()
    assert len(workers) == 2
    conns = [two_workers.connect() for _ in range(24)]
    try:
        for conn in conns:
            conn.send(http_request("GET", "/bytes/100/duo"))
            assert conn.read_response().status == 200
        served = established_sockets(two_workers.address[1])
        per_worker = [len(socket_inodes(pid) & served) for pid in workers]
    finally:
        for conn in conns:
            conn.close()
    assert sum(per_worker) == 24 and min(per_worker) > 0, per_worker


def test_purge_applies_to_every_worker(two_workers: CacheProcess, origin: OriginProcess) -> None:
    path = "/bytes/5000/duo-purge"
    old = two_workers.get(path).content
    for _ in range(16):  # new connections: both workers answer and keep the object in memory
        assert two_workers.get(path).content == old
    origin.bump(path)
    new = httpx.get(origin.url + path).content
    assert new != old
    requests_before = origin.count(path)
    assert purge(two_workers, urls=[path]).status_code == 200
    bodies = [two_workers.get(path).content for _ in range(16)]
    assert all(body == new for body in bodies)
    assert origin.count(path) == requests_before + 1  # one miss refilled the shared disk tier; no stale copy


def test_killed_worker_is_restarted_and_serving_continues(two_workers: CacheProcess) -> None:
    first, second = two_workers.worker_pids()
    os.kill(first, signal.SIGKILL)
    for index in range(20):  # the other worker keeps serving meanwhile (new connections may hit either)
        response = httpx.get(
            f"{two_workers.url}/bytes/100/during-restart-{index}", headers={"Host": "demo.test"}, timeout=10
        )
        assert response.status_code == 200
    wait_until(lambda: len(two_workers.worker_pids()) == 2 and first not in two_workers.worker_pids())
    two_workers.wait_healthy()
    assert second in two_workers.worker_pids()
    assert "worker 0 exited" in two_workers.log() or "worker 1 exited" in two_workers.log()
    assert two_workers.status()["workers"] == 2
    assert all(two_workers.get(f"/bytes/100/after-restart-{i}").status_code == 200 for i in range(8))


# --- SIGTERM ------------------------------------------------------------------------------------------


def test_sigterm_finishes_the_request_in_flight_and_exits_0(origin: OriginProcess, data_dir: Path) -> None:
    with started(CacheProcess(cache_config(origin.url, data_dir, node="term", workers=2), data_dir)) as proc:
        workers = proc.worker_pids()
        result: dict[str, Any] = {}

        def slow_get() -> None:
            result["response"] = proc.get("/bytes/20000/in-flight?delay=1000")

        thread = threading.Thread(target=slow_get)
        thread.start()
        wait_until(lambda: origin.count("/bytes/20000/in-flight?delay=1000") == 1)
        stopping = time.monotonic()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)  # the master only; it stops its workers
        assert proc.proc.wait(timeout=8) == 0
        assert time.monotonic() - stopping < 5
        thread.join(5)
        response = result["response"]
        assert response.status_code == 200 and len(response.content) == 20000
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


# --- the disk tier ---------------------------------------------------------------------------------------


def object_file(disk: Path, key: str) -> Path:
    """The object file whose meta names ``key``."""
    files = [path for path in (disk / "objects").rglob("*") if path.is_file()]
    found = [path for path in files if key.encode() in path.read_bytes()[:4096]]
    assert len(found) == 1, found
    return found[0]


def test_restart_serves_objects_from_disk_and_corrupt_objects_are_misses(origin: OriginProcess, data_dir: Path) -> None:
    config = cache_config(origin.url, data_dir, node="disk")
    paths = ["/bytes/3000/kept", "/bytes/12000000/kept-large", "/bytes/3000/corrupted", "/bytes/3000/truncated"]
    with started(CacheProcess(config, data_dir)) as proc:
        bodies = {path: proc.get(path).content for path in paths}
        proc.stop()
        disk = data_dir / "disk-disk"
        flip = object_file(disk, "http://demo.test/bytes/3000/corrupted")
        data = bytearray(flip.read_bytes())
        data[60:64] = bytes(b ^ 0xFF for b in data[60:64])  # inside the meta, after the 48-byte header
        flip.write_bytes(bytes(data))
        cut = object_file(disk, "http://demo.test/bytes/3000/truncated")
        cut.write_bytes(cut.read_bytes()[:-100])
        proc.start()
        kept, large = proc.get(paths[0]), proc.get(paths[1])
        assert (x_cache(kept), x_cache(large)) == ("HIT", "HIT")
        assert kept.content == bodies[paths[0]] and large.content == bodies[paths[1]]
        assert origin.count(paths[0]) == origin.count(paths[1]) == 1
        for path in paths[2:]:
            again = proc.get(path)
            assert x_cache(again) == "MISS" and again.content == bodies[path]
            assert origin.count(path) == 2
            assert x_cache(proc.get(path)) == "HIT"


@pytest.fixture
def small_tmpfs(data_dir: Path) -> Iterator[Path]:
    mount = data_dir / "tmpfs"
    mount.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_tier_does_not_stop_serving(origin: OriginProcess, data_dir: Path, small_tmpfs: Path) -> None:
    """A 3 MiB filesystem under a tier that believes it may use 64 MiB: writes fail with ENOSPC."""
    config = cache_config(origin.url, data_dir, node="full")
    config["storage"]["disk"] = {"path": str(small_tmpfs / "cache"), "maxBytes": 64 * 2**20}
    with started(CacheProcess(config, data_dir)) as proc:
        for round_ in range(2):
            for index in range(3):
                path = f"/bytes/{10 * 2**20 + index}/full"  # larger than memoryObjectBytes: only the disk could keep it
                response = proc.get(path)
                assert response.status_code == 200
                assert response.content == httpx.get(origin.url + path).content
                assert x_cache(response) == "MISS", (round_, index)
        small = proc.get("/bytes/1000/small-on-full")
        assert small.status_code == 200 and x_cache(proc.get("/bytes/1000/small-on-full")) == "HIT"
        assert httpx.get(f"{proc.admin_url}/healthz").status_code == 200
        wait_until(lambda: fresh_metric(proc, "edgefleet_cache_store_failures_total") >= 1, what="a failed store")


def test_a_disk_tier_smaller_than_the_object_does_not_stop_serving(origin: OriginProcess, data_dir: Path) -> None:
    config = cache_config(origin.url, data_dir, node="tiny")
    config["storage"]["disk"]["maxBytes"] = 2**20
    with started(CacheProcess(config, data_dir)) as proc:
        path = f"/bytes/{9 * 2**20}/too-big"
        expected = httpx.get(origin.url + path).content
        for _ in range(2):
            response = proc.get(path)
            assert response.status_code == 200 and response.content == expected
        assert origin.count(path) == 3  # both cache requests went to the origin (plus the direct read)
        assert x_cache(proc.get("/bytes/1000/fits")) == "MISS" and x_cache(proc.get("/bytes/1000/fits")) == "HIT"


def test_admin_token_constant_is_what_the_caches_use(cache: CacheProcess) -> None:
    assert cache.config["admin"]["token"] == ADMIN_TOKEN
