"""Workload isolation and secrets (issue 12, item 5 and the Low items on Secrets and logs), as an attacker tries them.

- A workload on a node whose agent runs as root tries to read the node
  credential, the view store and the cache's admin token, by relative and
  absolute paths: it runs as the unprivileged workload user and every read
  fails; its files are its own; it gets the Secret value it references.
- A viewer reads Secrets (get, list, watch), Workloads and workload logs:
  no Secret value, and logs are 403; an admin sees both.
- An agent that is not root cannot honour ``runAsUser``: the start fails
  with a message saying so, and the agent keeps working.

The end-to-end test starts the real cloud, agent and workload processes
(tests/fleet.py); it needs root, which tests and CI have.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.cloud.auth import Authenticator
from edgefleet.cloud.hub import Hub
from edgefleet.cloud.identity import Identity
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import ServerSettings, create_app
from edgefleet.edge.supervisor import Supervisor
from edgefleet.edge.users import DEFAULT_WORKLOAD_USER, Account, UserPolicy
from edgefleet.store import open_store
from tests.cloud.conftest import ADMIN, VIEWER, static_tokens
from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, site_doc
from tests.waiting import eventually, wait_until

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (tests and CI run as root)")

SECRET_VALUE = "s3cret-value-8f2a"

SNOOP = """
echo "uid=$(id -u)"
echo "secret=$DB_PASSWORD"
for f in ../../../credential ../../../view.db "$TOKEN_PATH" "$EDGEFLEET_WORKDIR/../../../credential"; do
  if cat "$f" >/dev/null 2>&1; then echo "LEAK $f"; else echo "denied $f"; fi
done
for d in ../../../workloads ../../../logs; do
  if ls "$d" >/dev/null 2>&1; then echo "LEAK $d"; else echo "denied $d"; fi
done
touch made-by-me
test -r "$EDGEFLEET_WORKDIR/given.txt" && echo "abs-path-ok"
echo "dir-owner=$(stat -c %u .) file-owner=$(stat -c %u made-by-me) given-owner=$(stat -c %u given.txt)"
echo snoop-done
exec sleep 600
"""


def secret_doc(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"data": data}}


def snoop_workload(node: str, token_path: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "snoop"},
        "spec": {
            "nodeSelector": f"edgefleet.io/node={node}",
            "template": {
                "command": ["/bin/sh", "-c", SNOOP],
                "env": [
                    {"name": "DB_PASSWORD", "valueFrom": {"secretRef": {"name": "db", "key": "password"}}},
                    {"name": "TOKEN_PATH", "value": token_path},
                ],
                "files": [{"path": "given.txt", "content": "from the template\n"}],
                "terminationGracePeriodSeconds": 1,
            },
        },
    }


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    # Not under tmp_path (its ancestors are 0700): the node's data directory must be reachable by path, so
    # that what stops the workload is the agent's own protection, not an accident of where tests live.
    root = Path(tempfile.mkdtemp(prefix="edgefleet-isolation-"))
    root.chmod(0o711)
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root).start()
    proxy = FaultProxy("127.0.0.1", cloud.port).start()
    fleet = Fleet(root, cloud, proxy)
    try:
        yield fleet
    finally:
        fleet.close()
        shutil.rmtree(root, ignore_errors=True)


@root_only
def test_a_workload_cannot_read_the_agents_secrets_and_viewers_see_no_values(fleet: Fleet) -> None:
    http_port, admin_port = free_port(), free_port()
    with fleet.api() as api:
        assert api.post(f"{API}/sites", json=site_doc("lab")).status_code == 201
        assert api.post(f"{API}/secrets", json=secret_doc("db", password=SECRET_VALUE)).status_code == 201
        assert api.post(f"{API}/workloads", json=cache_workload(http_port, admin_port)).status_code == 201
    agent = fleet.join("n1", "lab", address="127.0.0.1", agent_args=["--workload-user", DEFAULT_WORKLOAD_USER]).start()
    fleet.wait_ready(["n1"], "cache", timeout=60)
    token_file = next((agent.data_dir / "workloads" / "cache").glob("*/admin.token"))
    with fleet.api() as api:  # the snoop is told where the token is: it cannot list directories to find it
        assert api.post(f"{API}/workloads", json=snoop_workload("n1", str(token_file))).status_code == 201

    logs_path = "/edge/v1/nodes/n1/logs/snoop"
    with fleet.api() as api:
        text = wait_until(
            lambda: (r := api.get(logs_path)).status_code == 200 and "snoop-done" in r.text and r.text,
            30,
            what="the snoop workload's log",
        )
    workload_uid = pwd.getpwnam(DEFAULT_WORKLOAD_USER).pw_uid
    assert workload_uid != 0 and f"uid={workload_uid}" in text
    assert "LEAK" not in text, text
    assert text.count("denied ") == 6 and f"denied {token_file}" in text, text
    assert f"secret={SECRET_VALUE}" in text, "the Secret value reaches the process"
    assert "abs-path-ok" in text, "the working directory is reachable by its absolute path"
    assert f"dir-owner={workload_uid} file-owner={workload_uid} given-owner={workload_uid}" in text

    # The agent's files: 0600, not the workload user's.
    data_dir = agent.data_dir
    for name in ("credential", "view.db"):
        info = (data_dir / name).stat()
        assert info.st_uid == 0 and info.st_mode & 0o077 == 0, name
    assert token_file.stat().st_uid == 0 and token_file.stat().st_mode & 0o077 == 0

    viewer = fleet.cli("token", "create", "--role", "viewer").stdout.strip().split()[-1]
    with fleet.cloud.client(token=viewer) as api:
        assert api.get(logs_path).status_code == 403
        shown = api.get(f"{API}/secrets/db").json()
        assert shown["spec"]["data"] == {"password": "<redacted>"}
        listed = api.get(f"{API}/secrets").json()["items"]
        by_name = {item["metadata"]["name"]: item["spec"]["data"] for item in listed}
        assert by_name["db"] == {"password": "<redacted>"}  # beside it the cloud's own edgefleet-artifacts
        assert all(set(data.values()) == {"<redacted>"} for data in by_name.values()), by_name
        assert SECRET_VALUE not in api.get(f"{API}/workloads/snoop").text
    with fleet.api() as api:
        assert api.get(f"{API}/secrets/db").json()["spec"]["data"] == {"password": SECRET_VALUE}


# --- in process: the API's redaction and the logs route -----------------------------------------------


@pytest.fixture
async def api_and_hub(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    registry = Registry(store)
    authenticator = Authenticator(store, static_tokens=static_tokens())
    hub = Hub(registry, hub_id="test", authenticate=Identity(registry, authenticator).authenticate_node)
    app = create_app(registry, authenticator, ServerSettings(), hub=hub)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as client:
        yield client
    await store.close()


async def test_viewers_watch_secrets_redacted_and_cannot_read_logs(api_and_hub: httpx.AsyncClient) -> None:
    api = api_and_hub
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    assert (await api.post(f"{API}/secrets", json=secret_doc("tls", key=SECRET_VALUE))).status_code == 201
    watched = await api.get(f"{API}/secrets", params={"watch": "true", "timeoutSeconds": 1}, headers=viewer)
    events = [json.loads(line) for line in watched.text.splitlines()]
    assert events and all(SECRET_VALUE not in json.dumps(event) for event in events)
    assert events[0]["object"]["spec"]["data"] == {"key": "<redacted>"}
    status = await api.get(f"{API}/secrets/tls/status", headers=viewer)
    assert SECRET_VALUE not in status.text
    admin_watch = await api.get(f"{API}/secrets", params={"watch": "true", "timeoutSeconds": 1})
    assert SECRET_VALUE in admin_watch.text
    assert (await api.get("/edge/v1/nodes/n1/logs/web", headers=viewer)).status_code == 403
    assert (await api.get("/edge/v1/nodes/n1/logs/web")).status_code == 409, "admins pass (the node is not connected)"


async def test_secrets_are_bounded_and_a_workload_env_takes_value_or_secret_not_both(
    api_and_hub: httpx.AsyncClient,
) -> None:
    api = api_and_hub
    too_big = secret_doc("big", **{f"k{i}": "x" * 8192 for i in range(40)})
    assert (await api.post(f"{API}/secrets", json=too_big)).status_code == 422
    assert (await api.post(f"{API}/secrets", json=secret_doc("nul", k="a\0b"))).status_code == 422
    both = snoop_workload("n1")
    both["spec"]["template"]["env"][0]["value"] = "inline"
    answer = await api.post(f"{API}/workloads", json=both)
    assert answer.status_code == 422 and "valueFrom" in answer.text


# --- an agent that is not root ---------------------------------------------------------------------------


async def test_an_agent_that_is_not_root_refuses_run_as_user_and_runs_the_rest(tmp_path: Path) -> None:
    me = Account(os.geteuid(), os.getegid(), "agent-user")
    policy = UserPolicy(me, switch=False)
    supervisor = Supervisor(tmp_path, node_name="n1", users=policy)
    other = WorkloadTemplate.model_validate({"command": ["sleep", "60"], "runAsUser": "nobody"})
    plain = WorkloadTemplate.model_validate({"command": ["sleep", "60"]})
    try:
        await supervisor.apply({"other": other, "plain": plain})
        await eventually(lambda: supervisor.statuses()["other"].state == "Failed" and "plain" in supervisor.pids())
        status = supervisor.statuses()["other"]
        assert status.state == "Failed" and "needs an agent running as root" in (status.message or "")
        assert "plain" in supervisor.pids(), "the other workloads run (as the agent's user)"
    finally:
        await supervisor.stop_all()
        await supervisor.close()


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@root_only
async def test_run_as_user_covers_the_process_its_hooks_and_probes(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    supervisor = Supervisor(tmp_path, node_name="n1", users=UserPolicy.for_agent())
    template = WorkloadTemplate.model_validate(
        {
            "command": ["sleep", "60"],
            "runAsUser": "nobody",
            "files": [{"path": "conf/app.conf", "content": "x\n"}],
            "postStart": {"exec": {"command": ["/bin/sh", "-c", "id -u > hook-uid"]}},
            "healthProbe": {"exec": {"command": ["/bin/sh", "-c", "id -u > probe-uid"]}, "periodSeconds": 1},
            "terminationGracePeriodSeconds": 1,
        }
    )
    try:
        await supervisor.apply({"app": template})
        await eventually(lambda: supervisor.statuses()["app"].ready)
        pid = supervisor.pids()["app"]
        workdir = supervisor.running()["app"].workdir
        assert uid_of(pid) == nobody.pw_uid
        assert (workdir / "hook-uid").read_text().strip() == str(nobody.pw_uid)
        assert (workdir / "probe-uid").read_text().strip() == str(nobody.pw_uid)
        for path in (workdir, workdir / "conf", workdir / "conf" / "app.conf"):
            assert path.stat().st_uid == nobody.pw_uid, path
        assert workdir.stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "workloads" / "app" / "state.json").stat().st_mode & 0o077 == 0
        assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    finally:
        await supervisor.stop_all()
        await supervisor.close()
