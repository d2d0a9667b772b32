"""Suite-wide hooks: the slowest modules start first, and no workload process outlives its module.

Order: with ``pytest -n 2 --dist loadfile --no-loadscope-reorder`` every
module runs whole on one worker, and xdist hands modules out in collection
order (without ``--no-loadscope-reorder`` it would order them by their
number of tests, whatever they cost). A long module
collected last becomes the tail of the run, with the other worker idle; so
the modules known to be long (:data:`LONG_MODULES`, measured seconds on the
2-core VM, longest first) are collected first and the short ones fill in
around them. A module missing from the table keeps its place after them.

Leaks: the workload supervisor, run in-process by the edge tests, keeps its
children in ``edgefleet.edge.processes._children``. A module that left one
running would leave a real process behind and make the interpreter warn
(``ResourceWarning: subprocess N is still running``) when the worker exits;
so after each module any such child is killed and reaped, and the module
fails with the command line of what it leaked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

LONG_MODULES: dict[str, float] = {
    # Seconds on the 2-core VM, summed per module from a whole run (setup, call and teardown of each test).
    "tests/e2e/test_rollouts.py": 155,
    "tests/e2e/test_openapi_fuzz.py": 85,  # estimated: 0.5x the CPU of the 145 s version (no coverage phase on PUT)
    "tests/e2e/test_autonomy.py": 66,
    "tests/e2e/test_edge_ops.py": 43,
    "tests/e2e/test_first_hour.py": 41,
    "tests/e2e/test_hub_replicas.py": 41,
    "tests/e2e/test_cli.py": 22,  # estimated: one cloud per module now, not one per test
    "tests/e2e/test_up.py": 35,
    "tests/e2e/test_disaster_recovery.py": 35,  # estimated (measured 84-154 s on a machine at load 7-15)
    "tests/e2e/test_gslb.py": 30,
    "tests/e2e/test_artifacts.py": 40,  # 40-55 s measured at load 8-10
    "tests/e2e/test_elastic_caches.py": 30,  # 32 s measured at load 2, 42-53 s at load 5-9
    "tests/e2e/test_join.py": 25,
    "tests/security/test_malicious_node.py": 18,  # measured 17.9 s at load 6 (raw agents close in 1 s at most)
    "tests/cache/test_fuzz_http.py": 25,
    "tests/cloud/test_identity.py": 23,
    "tests/cache/test_operations.py": 22,
    "tests/cache/test_ratelimit_workers.py": 15,  # estimated: two real caches with 2 workers each
    "tests/e2e/test_hub_direct_lane.py": 14,
    "tests/e2e/test_peer_votes.py": 21,
    "tests/cloud/test_admission_api.py": 18,
    "tests/cache/test_collapsing.py": 17,
    "tests/security/test_tls.py": 17,
    "tests/cloud/test_nodeauth.py": 17,
    "tests/e2e/test_cache_workload.py": 16,
    "tests/e2e/test_elastic_sites.py": 15,
    "tests/security/test_cache_attacks.py": 14,
    "tests/e2e/test_watch.py": 7,  # estimated: one cloud per module now
    "tests/cloud/test_api.py": 14,
    "tests/cache/test_tiers.py": 13,
    "tests/cache/test_front_end.py": 13,
    "tests/store/test_conformance.py": 13,
    "tests/security/test_workload_isolation.py": 11,
    "tests/e2e/test_durability.py": 11,
    "tests/cache/test_uploads.py": 9,
    "tests/cloud/test_lifecycle_leader.py": 9,
    "tests/e2e/test_route_cli.py": 8,
    "tests/e2e/test_dns_alone.py": 8,
    "tests/cloud/test_ui.py": 8,
}


def _expected_seconds(item: pytest.Item) -> float:
    return LONG_MODULES.get(item.nodeid.split("::", 1)[0], 0.0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first; a stable sort keeps the order inside modules and among the rest."""
    items.sort(key=lambda item: -_expected_seconds(item))


def _live_children() -> dict[int, subprocess.Popen[bytes]]:
    processes = sys.modules.get("edgefleet.edge.processes")
    if processes is None:  # nothing in this worker ran a supervisor
        return {}
    children: dict[int, subprocess.Popen[bytes]] = processes._children
    return {pid: child for pid, child in list(children.items()) if child.poll() is None}


def _kill(pid: int, child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.wait(10)


@pytest.fixture(autouse=True, scope="module")
def _no_workload_outlives_its_module() -> Iterator[None]:
    yield
    leaked = _live_children()
    for pid, child in leaked.items():
        _kill(pid, child)
    assert not leaked, "workload processes left running by this module (killed now): " + "; ".join(
        f"pid {pid}: {child.args!r}" for pid, child in leaked.items()
    )


def _is_running_popen(obj: object) -> bool:
    """True for a live ``subprocess.Popen``; False for anything else, dead weak proxies included."""
    try:
        return isinstance(obj, subprocess.Popen) and obj.poll() is None
    except ReferenceError:  # a weakref.proxy whose referent is gone
        return False


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Any process a test started with ``subprocess.Popen`` and left running is named, killed and reaped.

    (Otherwise the interpreter warns "subprocess N is still running" at exit without saying whose.)
    """
    import gc

    leaked = [obj for obj in gc.get_objects() if _is_running_popen(obj)]
    for child in leaked:
        sys.stderr.write(f"\nleaked process {child.pid}, killed at the end of the session: {child.args!r}\n")
        _kill(child.pid, child)
