"""No acknowledged write is lost when the cloud is killed with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from tests.cloudproc import CloudProcess
from tests.fleet import site_doc as site

SITES = "/apis/edgefleet.io/v1/sites"


async def write_until_killed(cloud: CloudProcess, writers: int, acknowledged: list[str]) -> None:
    headers = {"Authorization": f"Bearer {cloud.token}"}
    deadline = time.monotonic() + 20

    async def writer(index: int) -> None:
        async with httpx.AsyncClient(base_url=cloud.url, headers=headers, timeout=5) as client:
            for n in range(100_000):
                if time.monotonic() > deadline:
                    return
                name = f"w{index}-{n}"
                try:
                    response = await client.post(SITES, json=site(name))
                except httpx.TransportError:
                    return  # the server is gone: this write was never acknowledged
                if response.status_code == 201:
                    acknowledged.append(name)

    async def killer() -> None:
        while len(acknowledged) < 300 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        cloud.kill(signal.SIGKILL)

    await asyncio.gather(killer(), *(writer(i) for i in range(writers)))


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    cloud = CloudProcess(f"sqlite:///{tmp_path}/store.db", tmp_path).start()
    acknowledged: list[str] = []
    try:
        asyncio.run(write_until_killed(cloud, 8, acknowledged))
        assert cloud.proc is not None and cloud.proc.returncode == -signal.SIGKILL
        assert len(acknowledged) >= 300
        restarted = CloudProcess(cloud.store_url, tmp_path, port=cloud.port)
        restarted.token = cloud.token
        restarted.start()
        try:
            with restarted.client() as api:
                stored = {d["metadata"]["name"] for d in api.get(SITES).json()["items"]}
            lost = [name for name in acknowledged if name not in stored]
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        finally:
            restarted.stop()
    finally:
        cloud.stop()


def test_admin_token_is_printed_once(tmp_path: Path) -> None:
    cloud = CloudProcess(f"sqlite:///{tmp_path}/store.db", tmp_path).start()
    cloud.stop()
    assert cloud.token and cloud.token in cloud.log()
    (tmp_path / "admin-token").unlink()
    again = CloudProcess(cloud.store_url, tmp_path).start()
    again.stop()
    assert not (tmp_path / "admin-token").exists()
    assert "admin token was created" not in again.log()
    third = CloudProcess(cloud.store_url, tmp_path).start()
    try:
        with third.client(cloud.token) as api:
            assert api.get(SITES).status_code == 200, "the first token still works after restarts"
    finally:
        third.stop()
