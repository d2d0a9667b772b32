"""The web dashboard in a real headless Chromium, against a real cloud process.

The test starts ``edgefleet cloud``, applies ``examples/`` with the CLI, opens
``/ui`` in Debian's Chromium driven by Selenium through Debian's
chromedriver (no browser download), is refused with a wrong token, logs in
with the admin token, finds a map circle for every site and a row for every
node, then changes node status through the API and sees the table and the
map follow within seconds (the watch stream). It shows two real
Certificates, the one expiring soon first, and proves the dashboard holds
ONE request open for all its kinds (the browser's network log, and the
cloud's watch gauges), with a fetch still answered while it streams: a
browser keeps six HTTP/1.1 connections per host, and a dashboard with one
watch per kind once waited forever for a seventh. It saves a full-page
screenshot under the test's tmp dir and prints where.

Skipped with a clear message when Chromium, chromedriver or selenium is
missing (scripts/install.sh installs them).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.cloudproc import EDGEFLEET, CloudProcess, running_cloud
from tests.pemfiles import certificate_manifest, issue

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API = "/apis/edgefleet.io/v1"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
LIVE_SECONDS = 3.0
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
    "--ignore-certificate-errors",
)  # `edgefleet up` serves TLS with its own CA (tests/security/test_tls.py)

missing = [
    what
    for what, present in (
        (CHROMIUM, os.path.exists(CHROMIUM)),
        (CHROMEDRIVER, os.path.exists(CHROMEDRIVER)),
        ("the selenium package", importlib.util.find_spec("selenium") is not None),
    )
    if not present
]
pytestmark = pytest.mark.skipif(
    bool(missing),
    reason=f"needs {', '.join(missing)} (Debian chromium and chromium-driver, pip selenium; "
    "scripts/install.sh installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options
    )
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    try:
        yield driver
    finally:
        driver.quit()


def apply_examples(cloud: CloudProcess, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        **cloud.cli_env,
    }
    result = subprocess.run(
        [EDGEFLEET, "apply", "-f", str(EXAMPLES)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def wait_for(driver: Any, condition: Callable[[Any], Any], seconds: float, what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # an element found just before the page re-rendered it is stale: look again at the next poll
        return WebDriverWait(
            driver, seconds, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        ).until(condition)
    except TimeoutException:
        pytest.fail(f"{what} within {seconds}s; page:\n{driver.find_element('tag name', 'body').text}")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report_status(cloud: CloudProcess, name: str, phase: str) -> None:
    """What a node's heartbeat writes (a fresh heartbeat keeps the lifecycle controller away)."""
    status = {
        "phase": phase,
        "lastHeartbeat": now(),
        "hub": "test-hub",
        "workloads": {"cache": {"state": "Running", "ready": phase == "Ready"}},
        "cache": {"requests": 200, "hits": 150, "hitRatio": 0.75, "bytesServed": 1_000_000, "offload": 0.75},
    }
    with cloud.client() as api:
        response = api.patch(f"{API}/nodes/{name}/status", json={"status": status}, headers=MERGE_PATCH)
        assert response.status_code == 200, response.text


def add_certificate(cloud: CloudProcess, name: str, issued_days_ago: int) -> None:
    """A Certificate for the demo host, issued ``issued_days_ago`` days ago (they last 397 days)."""
    issued = issue(["demo.cdn.edgefleet.test"], now=datetime.now(UTC) - timedelta(days=issued_days_ago))
    with cloud.client() as api:
        response = api.post(f"{API}/certificates", json=certificate_manifest(name, issued))
    assert response.status_code == 201, response.text


def open_api_requests(driver: Any) -> list[str]:
    """URLs of the API requests the page has open now (sent, neither finished nor failed: streams)."""
    open_now: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent" and f"{API}" in params["request"]["url"]:
            open_now[params["requestId"]] = params["request"]["url"]
        elif message["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
            open_now.pop(params.get("requestId"), None)
    return sorted(open_now.values())


def dashboard_kinds() -> list[str]:
    """The kinds app.js watches (its KINDS list)."""
    source = (Path(__file__).resolve().parents[2] / "src/edgefleet/cloud/ui/app.js").read_text()
    listed = re.search(r"const KINDS = \[([^\]]*)\]", source)
    assert listed is not None, "app.js has no KINDS list"
    return re.findall(r'"([a-z]+)"', listed.group(1))


def cloud_gauges(cloud: CloudProcess) -> tuple[float, float]:
    """(open multiplexed watches, open watches of any kind, multiplexed or not) from the cloud's /metrics."""
    with cloud.client() as api:
        text = api.get("/metrics").text
    values = [line.split() for line in text.splitlines() if not line.startswith("#")]
    multiplexed = sum(float(v[-1]) for v in values if v[0] == "edgefleet_api_multiplexed_watches")
    kinds = sum(float(v[-1]) for v in values if v[0].startswith("edgefleet_api_watchers{"))
    return multiplexed, kinds


def check_one_watch_request(driver: Any, cloud: CloudProcess) -> None:
    """Every kind the dashboard shows streams over ONE open request, and another fetch still gets through."""
    kinds = dashboard_kinds()
    assert "certificates" in kinds and len(kinds) > 6  # more kinds than a browser has connections per host
    streams = open_api_requests(driver)
    assert len(streams) == 1 and "/watch?kinds=" in streams[0], streams
    assert all(kind in streams[0] for kind in kinds), streams
    assert cloud_gauges(cloud) == (1, len(kinds))  # and nothing else: no watch of its own for any kind
    answer = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const token = sessionStorage.getItem("edgefleet.token");
        fetch("/apis/edgefleet.io/v1", { headers: { Authorization: `Bearer ${token}` } })
          .then((r) => done(r.status), (e) => done(String(e)));"""
    )
    assert answer == 200  # a connection is free while the watch streams


def post_event(cloud: CloudProcess, reason: str, message: str) -> None:
    event = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Event",
        "metadata": {"name": f"par-edge.{reason.lower()}"},
        "spec": {
            "involvedObject": {"kind": "Site", "name": "par-edge"},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "source": "ui-test",
        },
    }
    with cloud.client() as api:
        response = api.post(f"{API}/events", json=event)
        assert response.status_code == 201, response.text


def elements(driver: Any, css: str) -> list[Any]:
    found: list[Any] = driver.find_elements("css selector", css)
    return found


def attribute(driver: Any, css: str, name: str) -> str | None:
    found = elements(driver, css)
    return found[0].get_attribute(name) if found else None


def log_in(driver: Any, token: str) -> None:
    field = driver.find_element("id", "login-token")
    field.clear()
    field.send_keys(token)
    driver.find_element("id", "login-button").click()


def save_screenshot(driver: Any, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}},
    )
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def live_cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    """A cloud whose site status controller looks every 0.5 s: the map's health comes from Site.status."""
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path, "--site-status-interval", "1") as proc:
        yield proc


def test_dashboard_shows_the_fleet_and_follows_it_live(live_cloud: CloudProcess, browser: Any, tmp_path: Path) -> None:
    cloud = live_cloud
    apply_examples(cloud, tmp_path)
    with cloud.client() as api:
        sites = [s["metadata"]["name"] for s in api.get(f"{API}/sites").json()["items"]]
        nodes = [n["metadata"]["name"] for n in api.get(f"{API}/nodes").json()["items"]]
    assert len(sites) == 3 and len(nodes) == 4
    add_certificate(cloud, "fresh-cert", issued_days_ago=0)  # early: the certificate controller reads every 5 s
    add_certificate(cloud, "old-cert", issued_days_ago=390)  # expires in about 7 days

    browser.get(cloud.url + "/ui")
    log_in(browser, "wrong0.00000000000000000000000000000000")
    error = wait_for(
        browser,
        lambda d: d.find_element("id", "login-error").is_displayed() and d.find_element("id", "login-error"),
        5,
        "an error for a wrong token",
    )
    assert "not accepted" in error.text
    assert not browser.find_element("id", "dashboard").is_displayed()

    log_in(browser, cloud.token)
    for site in sites:
        wait_for(
            browser,
            partial(attribute, css=f'#map circle[data-site="{site}"]', name="data-health"),
            10,
            f"a map circle for site {site}",
        )
    for node in nodes:
        wait_for(browser, partial(elements, css=f'#nodes tr[data-node="{node}"]'), 5, f"a table row for node {node}")
    wait_for(
        browser, lambda d: d.find_elements("css selector", '#domains tr[data-domain="demo"]'), 5, "the demo domain"
    )
    assert attribute(browser, '#map circle[data-site="fra-parent"]', "data-tier") == "parent"
    assert attribute(browser, '#map circle[data-site="par-edge"]', "data-health") == "down"  # no node Ready yet

    report_status(cloud, "par-edge-1", "Ready")
    wait_for(
        browser,
        lambda d: attribute(d, '#nodes tr[data-node="par-edge-1"]', "data-phase") == "Ready",
        LIVE_SECONDS,
        "par-edge-1's row turning Ready",
    )
    wait_for(
        browser,
        lambda d: attribute(d, '#map circle[data-site="par-edge"]', "data-health") == "degraded",
        LIVE_SECONDS,
        "par-edge turning amber (one of two nodes Ready)",
    )
    report_status(cloud, "par-edge-2", "Ready")
    wait_for(
        browser,
        lambda d: attribute(d, '#map circle[data-site="par-edge"]', "data-health") == "healthy",
        LIVE_SECONDS,
        "par-edge turning green (every node Ready and fit)",
    )
    report_status(cloud, "ams-edge-1", "NotReady")
    wait_for(
        browser,
        lambda d: attribute(d, '#nodes tr[data-node="ams-edge-1"]', "data-phase") == "NotReady",
        LIVE_SECONDS,
        "ams-edge-1's row turning NotReady",
    )
    post_event(cloud, "UiTestPoked", "poked by the dashboard test")
    item = wait_for(
        browser,
        lambda d: d.find_elements("css selector", '#events li[data-reason="UiTestPoked"]'),
        LIVE_SECONDS,
        "the new event in the list",
    )
    assert "site/par-edge" in item[0].text and "poked by the dashboard test" in item[0].text
    assert browser.find_elements("css selector", "#events li")[0].get_attribute("data-reason") == "UiTestPoked"
    wait_for(
        browser,
        lambda d: attribute(d, '#certificates tr[data-certificate="old-cert"]', "data-state") == "expiring",
        LIVE_SECONDS + 5,  # the certificate controller reads new Certificates every 5 s
        "old-cert shown as expiring",
    )
    wait_for(
        browser,
        lambda d: attribute(d, '#certificates tr[data-certificate="fresh-cert"]', "data-state") == "ok",
        LIVE_SECONDS,
        "fresh-cert shown as ok",
    )
    cert_rows = browser.find_elements("css selector", "#certificates tbody tr")
    assert [r.get_attribute("data-certificate") for r in cert_rows] == ["old-cert", "fresh-cert"]  # most urgent first
    assert "demo.cdn.edgefleet.test" in cert_rows[0].text and "in 6 days" in cert_rows[0].text
    assert "redacted" not in browser.page_source and "PRIVATE KEY" not in browser.page_source
    check_one_watch_request(browser, cloud)
    row = browser.find_element("css selector", '#nodes tr[data-node="par-edge-1"]').text
    assert "test-hub" in row and "75.0%" in row and "cache: Running" in row
    assert "draining" in browser.find_element("css selector", '#nodes tr[data-node="ams-edge-2"]').text

    screenshot = tmp_path / "dashboard.png"
    save_screenshot(browser, screenshot)
    print(f"dashboard screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    errors = [
        entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE" and "401" not in entry["message"]
    ]  # the wrong token's refused check is expected
    assert errors == []

    browser.find_element("id", "logout-button").click()
    wait_for(browser, lambda d: d.find_element("id", "login-token").is_displayed(), 3, "the login view after logout")
    assert browser.execute_script("return sessionStorage.length") == 0
