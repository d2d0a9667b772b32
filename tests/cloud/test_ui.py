"""The dashboard: served at /ui without a token, data still behind one, JavaScript that parses and decides right.

The pure parts of the dashboard (model.js: health, selectors, rates, ages;
api.js: the watch loop) run here in node against hand-made objects, so a
wrong colour or a lost watch event fails a test without a browser. The
browser itself is exercised by tests/e2e/test_ui_browser.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cloud import ui
from edgefleet.cloud.auth import Authenticator
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import create_app
from edgefleet.store.interface import Store
from tests.cloud.conftest import API, VIEWER, static_tokens

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
JS_FILES = sorted(name for name in ui.CONTENT_TYPES if name.endswith(".js"))


@pytest.fixture
async def anonymous(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Registry(store), Authenticator(store, static_tokens=static_tokens()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.mark.parametrize("path", ["/ui", "/ui/"])
async def test_the_page_is_served_without_a_token(anonymous: httpx.AsyncClient, path: str) -> None:
    response = await anonymous.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert 'id="login-token"' in response.text and 'id="login-button"' in response.text
    assert '<script type="module" src="/ui/app.js">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("world.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ],
)
async def test_parts_are_served_with_their_media_type(anonymous: httpx.AsyncClient, name: str, media_type: str) -> None:
    response = await anonymous.get(f"/ui/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (ui.UI_DIR / name).read_bytes()


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/__init__.py", "/ui/..%2F__init__.py", "/ui/app.js/x"])
async def test_only_the_listed_files_are_served(anonymous: httpx.AsyncClient, path: str) -> None:
    assert (await anonymous.get(path)).status_code == 404


async def test_data_still_needs_a_token(anonymous: httpx.AsyncClient) -> None:
    for plural in ("sites", "nodes", "domains", "events"):
        assert (await anonymous.get(f"{API}/{plural}")).status_code == 401
        assert (await anonymous.get(f"{API}/{plural}", params={"watch": "true"})).status_code == 401
    viewer = await anonymous.get(f"{API}/nodes", headers={"Authorization": f"Bearer {VIEWER}"})
    assert viewer.status_code == 200


async def test_every_module_a_page_imports_is_served(anonymous: httpx.AsyncClient) -> None:
    imported = {"app.js"}
    for name in JS_FILES:
        imported |= set(re.findall(r'from "\./([\w.-]+)"', (ui.UI_DIR / name).read_text()))
    assert imported <= set(JS_FILES)
    for name in sorted(imported):
        assert (await anonymous.get(f"/ui/{name}")).status_code == 200, name


def test_every_file_of_the_dashboard_is_listed_and_packaged() -> None:
    on_disk = {p.name for p in ui.UI_DIR.iterdir() if p.is_file() and p.suffix in {".html", ".js", ".css"}}
    assert on_disk == set(ui.CONTENT_TYPES)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgefleet"]
    for name in ui.CONTENT_TYPES:
        assert any(fnmatch.fnmatch(f"cloud/ui/{name}", p) for p in patterns), f"{name} is not in package-data"


def require_node() -> str:
    if NODE is None:
        pytest.skip("node is not installed: JavaScript syntax and logic checks skipped (apt-get install nodejs)")
    return NODE


@pytest.mark.parametrize("name", JS_FILES)
def test_javascript_parses(name: str, tmp_path: Path) -> None:
    node = require_node()
    module = tmp_path / (name.removesuffix(".js") + ".mjs")  # node --check takes .mjs as an ES module
    shutil.copy(ui.UI_DIR / name, module)
    result = subprocess.run([node, "--check", str(module)], capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr


def run_node(script: str) -> Any:
    """Runs an ES module script that may import from ``UI`` and prints one JSON document."""
    node = require_node()
    prelude = f"const UI = {json.dumps(ui.UI_DIR.as_uri())};\n"
    result = subprocess.run(
        [node, "--input-type=module", "-e", prelude + script], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


HEALTH_SCRIPT = """
const m = await import(UI + "/model.js");
const node = (name, phase, extra = {}) => ({ metadata: { name }, spec: { site: "s", draining: !!extra.draining },
  status: { phase, workloads: extra.workloads, peerVotes: extra.votes } });
const site = (active) => ({ metadata: { name: "s" }, spec: {}, status: { active } });
const health = (s, nodes) => m.siteHealth(s, nodes).health;
const ok = { cache: { state: "Running", ready: true } };
const sick = { cache: { state: "Running", ready: false } };
console.log(JSON.stringify({
  allFit: health(site(true), [node("a", "Ready", { workloads: ok }), node("b", "Ready")]),
  oneNotReady: health(site(true), [node("a", "Ready"), node("b", "NotReady")]),
  oneDraining: health(site(null), [node("a", "Ready"), node("b", "Ready", { draining: true })]),
  workloadNotReady: health(site(true), [node("a", "Ready", { workloads: sick }), node("b", "Ready")]),
  votedDown: health(site(true), [node("a", "Ready"), node("b", "Ready", { votes: { a: { healthy: false } } }),
                                 node("c", "Ready", { votes: { a: { healthy: false } } })]),
  noneReady: health(site(true), [node("a", "Unknown"), node("b", null)]),
  noNodes: health(site(true), []),
  inactive: health(site(false), [node("a", "Ready")]),
  counts: m.siteHealth(site(true), [node("a", "Ready"), node("b", "Ready", { draining: true }), node("c", "NotReady")]),
}));
"""


def test_site_health_follows_node_phases_fitness_and_activity() -> None:
    result = run_node(HEALTH_SCRIPT)
    assert result == {
        "allFit": "healthy",
        "oneNotReady": "degraded",
        "oneDraining": "degraded",
        "workloadNotReady": "degraded",
        "votedDown": "degraded",
        "noneReady": "down",
        "noNodes": "down",
        "inactive": "inactive",
        "counts": {
            "health": "degraded",
            "total": 3,
            "ready": 2,
            "fit": 1,
            "load": None,
            "loadGbps": None,
            "reported": False,
        },
    }


STATUS_SCRIPT = """
const m = await import(UI + "/model.js");
const node = (name, phase) => ({ metadata: { name }, spec: { site: "s" }, status: { phase } });
const site = (status) => ({ metadata: { name: "s" }, spec: {}, status });
const written = { active: true, healthyNodes: 1, totalNodes: 2, load: 0.125, loadGbps: 1.25 };
console.log(JSON.stringify({
  // The cloud's counts win over what the nodes would say (its rule is the GSLB's).
  written: m.siteHealth(site(written), [node("a", "Ready"), node("b", "Ready")]),
  allHealthy: m.siteHealth(site({ healthyNodes: 2, totalNodes: 2 }), []).health,
  noneHealthy: m.siteHealth(site({ healthyNodes: 0, totalNodes: 2 }), [node("a", "Ready")]).health,
  load: m.formatLoad(m.siteHealth(site(written), [])),
  noLoad: m.formatLoad(m.siteHealth(site({}), [])),
  bandwidth: m.domainBandwidth({ bytes: 3000, windowSeconds: 300 }),
  noBandwidth: [m.domainBandwidth({ bytes: 5 }), m.domainBandwidth(undefined), m.domainBandwidth({ windowSeconds: 0 })],
}));
"""


def test_site_health_load_and_domain_bandwidth_come_from_the_status_the_cloud_wrote() -> None:
    result = run_node(STATUS_SCRIPT)
    assert result["written"] == {
        "health": "degraded",
        "total": 2,
        "ready": 2,
        "fit": 1,
        "load": 0.125,
        "loadGbps": 1.25,
        "reported": True,
    }
    assert (result["allHealthy"], result["noneHealthy"]) == ("healthy", "down")
    assert result["load"] == "12.5% (1.3 Gbit/s)" and result["noLoad"] is None
    assert result["bandwidth"] == 10 and result["noBandwidth"] == [None, None, None]


SELECTOR_SCRIPT = """
const { selectorMatches: match, servingSites } = await import(UI + "/model.js");
const edge = { tier: "edge", region: "eu-west" };
const sites = [{ metadata: { name: "b", labels: edge } }, { metadata: { name: "a", labels: edge } },
               { metadata: { name: "p", labels: { tier: "parent" } } }];
console.log(JSON.stringify([
  match("", {}), match("tier=edge", edge), match("tier==parent", edge), match("tier!=parent", edge),
  match("region in (eu-west, us-east)", edge), match("region notin (eu-west)", edge),
  match("tier,!draining", edge), match("!tier", edge), match("tier=edge,region=us", edge),
  match("edgefleet.io/role=cache", { "edgefleet.io/role": "cache" }),
  servingSites({ spec: { sites: "tier=edge" }, status: {} }, sites),
  servingSites({ spec: { sites: "" }, status: { servingSites: ["p"] } }, sites),
]));
"""


def test_selectors_pick_the_serving_sites_the_cloud_does_not_report() -> None:
    *matches, derived, reported = run_node(SELECTOR_SCRIPT)
    assert matches == [True, True, False, True, True, False, True, False, False, True]
    assert derived == {"names": ["a", "b"], "reported": False}
    assert reported == {"names": ["p"], "reported": True}


RATE_SCRIPT = """
const m = await import(UI + "/model.js");
const t0 = Date.parse("2026-01-01T00:00:00Z");
const at = (s) => new Date(t0 + s * 1000).toISOString();
const node = (name, bytes, seconds) => ({ metadata: { name }, status: { cache: { bytesServed: bytes },
                                                                    lastHeartbeat: at(seconds) } });
const rates = new m.RateTracker();
const out = {};
rates.observe(node("a", 1000, 0), t0);
out.first = rates.rate("a", t0);
rates.observe(node("a", 11000, 10), t0 + 10000);
out.second = rates.rate("a", t0 + 10000);
rates.observe(node("a", 99999, 10), t0 + 11000);  // same heartbeat again: ignored
out.repeated = rates.rate("a", t0 + 11000);
rates.observe(node("b", 0, 0), t0);
rates.observe(node("b", 4000, 2), t0 + 2000);
out.total = rates.total(["a", "b", "nobody"], t0 + 12000);
rates.observe(node("b", 10, 4), t0 + 4000);  // counter went down: the cache restarted
out.restarted = rates.rate("b", t0 + 4000);
out.stale = rates.rate("a", t0 + 10000 + m.RATE_STALE_MS + 1);
out.ages = [m.formatAge(null, t0), m.formatAge(t0, t0 + 500), m.formatAge(t0, t0 + 3000),
            m.formatAge(t0, t0 + 300000), m.formatAge(t0 + 5000, t0)];
out.bitrates = [m.formatBitrate(null), m.formatBitrate(100), m.formatBitrate(1.5e6), m.formatBitrate(2e9)];
out.percent = [m.formatPercent(0.8734), m.formatPercent(null)];
console.log(JSON.stringify(out));
"""


def test_bandwidth_is_the_rate_of_bytes_served_between_reports() -> None:
    result = run_node(RATE_SCRIPT)
    assert result["first"] is None
    assert result["second"] == 1000
    assert result["repeated"] == 1000
    assert result["total"] == 3000
    assert result["restarted"] is None
    assert result["stale"] is None
    assert result["ages"] == ["—", "just now", "3s ago", "5m ago", "just now"]
    assert result["bitrates"] == ["—", "800 bit/s", "12.0 Mbit/s", "16.0 Gbit/s"]
    assert result["percent"] == ["87.3%", "—"]


TRAFFIC_SCRIPT = """
const m = await import(UI + "/model.js");
const cache = { windowSeconds: 300, clientRequests: 90, tierRequests: 10, servedLocal: 70, servedPeer: 25,
                servedParent: 0, servedOrigin: 5, originRequests: 5, offload: 0.95 };
console.log(JSON.stringify([
  m.nodeTrafficText(cache), m.nodeTrafficText({ requests: 3 }),
  m.domainTrafficText({ windowSeconds: 300, requests: 100, originRequests: 5, byteOffload: 0.5 }),
  m.domainTrafficText({ servingSites: ["par"] }),
]));
"""


def test_offload_hover_texts_say_where_answers_came_from() -> None:
    node, unknown, domain, empty = run_node(TRAFFIC_SCRIPT)
    assert node == (
        "last 300s: 90 client requests, 10 from other caches; served from here 70, from site peers 25, "
        "from parents 0, from the origin 5; 5 origin requests"
    )
    assert unknown == empty == "no traffic figures yet"
    assert domain == "last 300s: 100 user requests, 5 sent to the origin; byte offload 50.0%"


CERTIFICATE_SCRIPT = """
const m = await import(UI + "/model.js");
const now = Date.parse("2026-06-01T12:00:00Z");
const day = 86400000;
const cert = (name, status) => ({ metadata: { name }, spec: { key: "<redacted>" }, status });
const at = (days) => new Date(now + days * day).toISOString();
const rows = m.certificateRows([
  cert("fine", { notAfter: at(200), domains: ["b", "a"], dnsNames: ["x.test"] }),
  cert("soon", { notAfter: at(3.5) }),
  cert("gone", { notAfter: at(-2.5) }),
  cert("broken", { message: "no certificate" }),
  cert("new", {}),
  cert("edge", { notAfter: at(14) }),
  cert("hour", { notAfter: at(-1 / 24) }),
], now);
console.log(JSON.stringify(rows.map((r) => [r.name, r.state, m.expiryText(r), r.domains])));
"""


def test_certificates_show_their_expiry_most_urgent_first() -> None:
    assert run_node(CERTIFICATE_SCRIPT) == [
        ["gone", "expired", "expired 2 days ago", []],
        ["hour", "expired", "expired today", []],
        ["soon", "expiring", "in 3 days", []],
        ["edge", "expiring", "in 14 days", []],
        ["broken", "invalid", "\u2014", []],
        ["new", "unknown", "\u2014", []],
        ["fine", "ok", "in 200 days", ["a", "b"]],
    ]


EVENTS_AND_VIEW_SCRIPT = """
const m = await import(UI + "/model.js");
const ev = (name, t) => ({ metadata: { name }, spec: { lastTimestamp: `2026-01-01T00:00:${t}Z` } });
const events = Array.from({ length: 30 }, (_, i) => ev(`e${i}`, String(i).padStart(2, "0")));
const recent = m.recentEvents(events.reverse().slice().sort(() => 0), 20).map((e) => e.metadata.name);
const europe = m.fitBounds([{ lon: 2.35, lat: 48.86 }, { lon: 4.9, lat: 52.37 }, { lon: 8.68, lat: 50.11 }], 2);
console.log(JSON.stringify({ recent, europe, world: m.fitBounds([], 2),
  spread: m.fitBounds([{ lon: -170, lat: -60 }, { lon: 170, lat: 70 }], 2) }));
"""


def test_newest_events_first_and_a_map_view_that_fits_the_sites() -> None:
    result = run_node(EVENTS_AND_VIEW_SCRIPT)
    assert result["recent"] == [f"e{i}" for i in range(29, 9, -1)]
    europe = result["europe"]
    assert europe["west"] < 2.35 and europe["east"] > 8.68 and europe["south"] < 48.86 and europe["north"] > 52.37
    assert europe["east"] - europe["west"] == pytest.approx(2 * (europe["north"] - europe["south"]))
    assert europe["east"] - europe["west"] < 60  # zoomed in on Europe, not the world
    assert result["world"] == {"west": -180, "east": 180, "south": -90, "north": 90}
    spread = result["spread"]
    assert spread["east"] - spread["west"] == 360 and spread["south"] >= -90 and spread["north"] <= 90


MULTIWATCH_SCRIPT = """
const { MultiWatch } = await import(UI + "/api.js");
const obj = (name, rv) => ({ metadata: { name, resourceVersion: String(rv) } });
const end = (rv) => ({ metadata: { resourceVersion: String(rv),
                                   annotations: { "edgefleet.io/initial-events-end": "true" } } });
const line = (resource, type, object) => JSON.stringify({ type, resource, object }) + "\\n";
const encoder = new TextEncoder();
const streamed = (text) => {
  const chunks = [text.slice(0, 17), text.slice(17, 60), text.slice(60)];  // lines split across chunks
  return new Response(new ReadableStream({
    start(controller) { for (const c of chunks) controller.enqueue(encoder.encode(c)); controller.close(); },
  }), { status: 200 });
};
const json = (body, status) => new Response(JSON.stringify(body), { status });
const queries = [];
const bodies = [
  () => streamed(line("sites", "ADDED", obj("a", 4)) + line("nodes", "ADDED", obj("n0", 3))
    + line("sites", "BOOKMARK", end(5)) + line("nodes", "BOOKMARK", end(5))
    + line("sites", "MODIFIED", obj("a", 6)) + line("pods", "ADDED", obj("x", 7))),
  // nodes' revision was compacted: 410 for nodes only; sites is resumed, nodes listed again
  () => streamed(line("nodes", "ERROR", { kind: "Status", code: 410, message: "too old" })),
  () => streamed(line("nodes", "ADDED", obj("n1", 7)) + line("sites", "BOOKMARK", obj("", 9))
    + line("nodes", "BOOKMARK", end(8)) + line("sites", "DELETED", obj("a", 6))),
  () => json({ kind: "Status", code: 403, message: "may not" }, 403),
];
globalThis.fetch = async (url) => {
  queries.push(decodeURIComponent(new URL(url, "http://x").searchParams.get("kinds")));
  return bodies.shift()();
};
const seen = [];
const states = [];
const watch = new MultiWatch({ headers: () => ({}) }, ["sites", "nodes"], {
  onChange: (plural) => seen.push(`${plural}:${[...watch.objects(plural).keys()].join("+")}`),
  onState: (state) => states.push(state),
});
await watch.run(new AbortController().signal);
console.log(JSON.stringify({ queries, seen, states, sites: [...watch.objects("sites").keys()],
  nodes: [...watch.objects("nodes").keys()] }));
"""


def test_one_stream_resumes_every_kind_and_relists_only_the_kind_that_is_gone() -> None:
    result = run_node(MULTIWATCH_SCRIPT)
    assert result["queries"] == ["sites,nodes", "sites:6,nodes:5", "sites:6,nodes", "sites:9,nodes:8"]
    # a listed kind replaces its copy at its initial-events-end bookmark (n0 stays until n1's list is complete)
    assert result["seen"] == ["sites:a", "nodes:n0", "sites:a", "nodes:n1", "sites:"]
    assert (result["sites"], result["nodes"]) == ([], ["n1"])
    assert result["states"][0] == "syncing" and "live" in result["states"]
    assert result["states"][-1] == "unauthorized"  # a 403 ends the loop: the dashboard asks for a token again
