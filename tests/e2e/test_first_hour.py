"""An operator's first hour with ``edgefleet up``, done as a user would, with real processes only.

``edgefleet up --detach`` starts the whole CDN (cloud with its GSLB, origin, a
parent and two edge sites of two nodes, each an agent running its cache).
Then, as a user: resolve the demo name through the GSLB (a Paris client
subnet); fetch through the node it returned (MISS, then HIT); kill the cloud
and keep fetching (no failure); restart one agent while the cloud is down
(serving goes on); bring the cloud back (the node turns Ready again); purge
an object (the next fetch is a MISS); open ``/ui`` in headless Chromium, log
in with the viewer token ``up`` printed, and check that the sites and nodes
are shown; a screenshot is saved (``test-artifacts/first-hour-dashboard.png``
and the test's tmp dir). ``edgefleet down`` ends it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
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

from tests.cloudproc import EDGEFLEET
from tests.e2e.test_ui_browser import browser, log_in, missing, save_screenshot  # noqa: F401 - fixture
from tests.e2e.test_up import Lab, printed, processes_naming
from tests.e2e.test_up import lab as lab  # the fixture, used by name
from tests.waiting import hold, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (scripts/install.sh installs them)"),
]

API = "/apis/edgefleet.io/v1"
PARIS_SUBNET = "127.0.1.0"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def resolve(lab: Lab, name: str = "demo.edgefleet.test") -> list[str]:
    query = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(PARIS_SUBNET, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=lab.ports["dns"], timeout=2)
    return [item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset]


def fetch(lab: Lab, address: str, path: str = "/static/app.js") -> httpx.Response:
    url = f"http://{address}:{lab.ports['cache']}{path}"
    return httpx.get(url, headers={"Host": "demo.edgefleet.test"}, timeout=5)


def x_cache(response: httpx.Response) -> str:
    header: str = response.headers.get("x-cache", "")
    return header.split(",")[0]


def process(record: dict[str, Any], role: str, name: str | None = None) -> dict[str, Any]:
    for entry in record["processes"]:
        if entry["role"] == role and (name is None or entry["name"] == name):
            return dict(entry)
    raise AssertionError(f"no {role} {name or ''} in up.json")


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return not Path(f"/proc/{pid}").exists()

    with contextlib.suppress(AssertionError):
        wait_until(gone, 10, what=f"process {pid} gone")


@contextlib.contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def node_status(server: str, token: str, name: str, verify: ssl.SSLContext) -> dict[str, Any]:
    response = httpx.get(
        f"{server}{API}/nodes/{name}", headers={"Authorization": f"Bearer {token}"}, timeout=5, verify=verify
    )
    response.raise_for_status()
    status: dict[str, Any] = response.json().get("status") or {}
    return status


def keep_fetching(lab: Lab, address: str, seconds: float, at_least: int = 6) -> int:
    """Fetch for ``seconds`` and at least ``at_least`` times; every answer must be a 200.

    The count is a floor, not a speed: on a loaded 2-core CI machine one fetch can take a
    second, so the loop runs on (up to 30 s more) until it has seen ``at_least`` answers.
    """
    count, started_at, took = 0, time.monotonic(), []
    while count < 200 and time.monotonic() < started_at + seconds + 30:
        if count >= at_least and time.monotonic() >= started_at + seconds:
            break
        began = time.monotonic()
        response = fetch(lab, address)
        took.append(round(time.monotonic() - began, 3))
        assert response.status_code == 200, f"{response.status_code} while the cloud is down: {response.text[:200]}"
        count += 1
        time.sleep(0.05)
    assert count >= at_least, f"only {count} answers in {seconds + 30} s; seconds per fetch: {took}"
    return count


def test_first_hour(lab: Lab, browser: Any, tmp_path: Path) -> None:  # noqa: F811 - fixtures
    up = lab.edgefleet("up", *lab.options, "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    output = up.stdout
    viewer = printed(output, "viewer token:").split(":", 1)[1].strip()
    admin = (lab.data / "admin-token").read_text().strip()
    record: dict[str, Any] = lab.record()
    server = str(record["server"])

    # 1. the GSLB sends a Paris client to a Paris node, which misses then hits
    answers = resolve(lab)
    assert answers and all(address.startswith("127.0.1.") for address in answers), answers
    node_address = answers[0]
    node_name = next(name for name, address in record["nodes"].items() if address == node_address)
    first, second = fetch(lab, node_address), fetch(lab, node_address)
    assert first.status_code == second.status_code == 200
    assert x_cache(first).startswith("MISS") and "HIT" in second.headers.get("x-cache", "")

    # 2. the cloud dies: serving goes on, and an agent restarted meanwhile brings nothing down
    cloud = process(record, "cloud")
    cloud_argv = command_line(cloud["pid"])
    kill(cloud["pid"])
    keep_fetching(lab, node_address, 2.0)
    agent = process(record, "agent", node_name)
    agent_argv = command_line(agent["pid"])
    kill(agent["pid"])
    with started(agent_argv, tmp_path / "agent-restarted.log"):
        keep_fetching(lab, node_address, 3.0)  # the cloud still down; the new agent adopted its cache

        # 3. the cloud comes back: the node reports in and is Ready again
        with started(cloud_argv, tmp_path / "cloud-restarted.log"):
            steps_with_the_cloud_back(lab, browser, server, viewer, admin, record, node_name, node_address, tmp_path)
    # the restarted agent and cloud are stopped (the agent leaves its cache running); down stops the rest
    down = lab.edgefleet("down", "--data", str(lab.data))
    assert down.returncode == 0, down.stdout + down.stderr
    wait_until(lambda: not processes_naming(str(lab.data)), 10, what="no process of the fleet left")


def steps_with_the_cloud_back(
    lab: Lab,
    driver: Any,
    server: str,
    viewer: str,
    admin: str,
    record: dict[str, Any],
    node_name: str,
    node_address: str,
    tmp_path: Path,
) -> None:
    verify = lab.verify()  # the fleet's own CA (edgefleet up serves TLS)
    wait_until(
        lambda: httpx.get(server + "/readyz", timeout=2, verify=verify).status_code == 200, 30, what="cloud back"
    )
    restarted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    wait_until(
        lambda: (
            node_status(server, viewer, node_name, verify).get("phase") == "Ready"
            and node_status(server, viewer, node_name, verify).get("lastHeartbeat", "") >= restarted
        ),
        60,
        what=f"{node_name} Ready again",
    )

    # 4. a purge through the cloud: the next fetch misses
    env = {**lab.env, "EDGEFLEET_SERVER": server, "EDGEFLEET_TOKEN": admin, "EDGEFLEET_CA_FILE": str(lab.ca)}
    purge = lab.run(EDGEFLEET, "purge", "demo", "/static/app.js", "--wait", env=env)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    after = fetch(lab, node_address)
    assert after.status_code == 200 and x_cache(after).startswith("MISS"), after.headers.get("x-cache")

    # 5. the dashboard, as the viewer token's holder sees it
    check_dashboard(driver, server, viewer, record, node_name, tmp_path)


def check_dashboard(
    driver: Any, server: str, viewer: str, record: dict[str, Any], node_name: str, tmp_path: Path
) -> None:
    driver.get(f"{server}/ui")
    log_in(driver, viewer)
    sites = {"fra-parent", "par-edge", "ams-edge"}
    wait_until(
        lambda: (
            {e.get_attribute("data-site") for e in driver.find_elements("css selector", "#map circle[data-site]")}
            >= sites
        ),
        20,
        what="every site on the map",
    )
    wait_until(
        lambda: (
            {e.get_attribute("data-node") for e in driver.find_elements("css selector", "#nodes tr[data-node]")}
            >= set(record["nodes"])
        ),
        20,
        what="every node in the table",
    )
    wait_until(
        lambda: (
            driver.find_element("css selector", f'#nodes tr[data-node="{node_name}"]').get_attribute("data-phase")
            == "Ready"
        ),
        20,
        what="the node Ready in the table",
    )
    hold(1.0)  # let the map and tables settle before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    for path in (tmp_path / "first-hour-dashboard.png", ARTIFACTS / "first-hour-dashboard.png"):
        save_screenshot(driver, path)
    print(f"dashboard screenshot: {ARTIFACTS / 'first-hour-dashboard.png'}")
    assert (ARTIFACTS / "first-hour-dashboard.png").stat().st_size > 10_000
