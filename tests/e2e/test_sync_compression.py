"""Large sync batches travel compressed, one frame at a time (no per-connection deflate context), with real processes.

A real cloud holds 400 Domains (about 100 KB of view); a real agent joins
through a counting TCP proxy and syncs them. The bytes the proxy carried to
the agent must be a fraction of the JSON the view is made of, and the agent
must hold every object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloudproc import CloudProcess
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, site_doc
from tests.waiting import wait_until

DOMAINS = 400


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    cloud = CloudProcess(f"sqlite:///{tmp_path}/store.db", tmp_path, extra_args=["--heartbeat", "1"]).start()
    fleet = Fleet(tmp_path, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    try:
        yield fleet
    finally:
        fleet.close()


def domain(i: int) -> dict[str, object]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": f"shop-{i:04d}"},
        "spec": {
            "hostnames": [f"shop-{i:04d}.customer.example.com", f"static-{i:04d}.customer.example.com"],
            "origins": [{"url": f"https://origin-{i % 7}.customer.example.com/"}],
        },
    }


def test_a_large_view_syncs_compressed(fleet: Fleet) -> None:
    view_bytes = 0
    with fleet.api() as api:
        assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
        for i in range(DOMAINS):
            created = api.post(f"{API}/domains", json=domain(i))
            assert created.status_code == 201, created.text
            view_bytes += len(json.dumps(created.json()))
    agent = fleet.join("big", "lab")
    fleet.proxy.reset_counters()
    agent.start()
    wait_until(lambda: agent.status()["objects"] >= DOMAINS + 2, 30, what="the whole view synced")
    carried = fleet.proxy.reset_counters().to_client
    assert carried < view_bytes / 3, f"{carried} bytes on the wire for {view_bytes} bytes of objects"
