"""``edgefleet route``: the GSLB's decision explained, against a real cloud process and the example geo table."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cloudproc import EDGEFLEET, CloudProcess, running_cloud

ROOT = Path(__file__).resolve().parents[2]
GEO = ROOT / "examples" / "geo.csv"
PARIS, NEW_YORK, SAN_FRANCISCO = "127.0.1.77", "127.0.5.20", "127.0.6.9"

SITES = {  # name: country, lat, lon
    "par-edge": ("FR", 48.8566, 2.3522),
    "ams-edge": ("NL", 52.3676, 4.9041),
    "nyc-edge": ("US", 40.7128, -74.0060),
    "sfo-edge": ("US", 37.7749, -122.4194),
}
NODES = {  # name: site, address, draining, phase
    "par-edge-1": ("par-edge", "127.0.1.1", False, "Ready"),
    "par-edge-2": ("par-edge", "127.0.1.2", True, "Ready"),
    "par-edge-3": ("par-edge", "127.0.1.3", False, "NotReady"),
    "ams-edge-1": ("ams-edge", "127.0.2.1", False, "Ready"),
    "nyc-edge-1": ("nyc-edge", "127.0.5.1", False, "Ready"),
    "nyc-edge-2": ("nyc-edge", "127.0.5.2", False, "Ready"),
    "sfo-edge-1": ("sfo-edge", "127.0.6.1", False, "Ready"),
}


def manifests() -> str:
    documents: list[dict[str, Any]] = []
    for name, (country, lat, lon) in SITES.items():
        documents.append(
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Site",
                "metadata": {"name": name, "labels": {"tier": "edge"}},
                "spec": {
                    "region": "r",
                    "location": {"lat": lat, "lon": lon, "country": country},
                    "tier": "edge",
                    "capacityGbps": 10,
                    "alwaysOn": True,
                },
            }
        )
    for name, (site, address, draining, _) in NODES.items():
        documents.append(
            {
                "apiVersion": "edgefleet.io/v1",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {"site": site, "addresses": [address], "draining": draining},
            }
        )
    documents.append(
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "Domain",
            "metadata": {"name": "demo"},
            "spec": {
                "hostnames": ["www.demo.example", "*.img.demo.example"],
                "origins": [{"url": "http://127.0.0.1:8080"}],
                "sites": "tier=edge",
                "routing": {"policy": "geo", "answers": 2, "ttl": 30},
            },
        }
    )
    return yaml.safe_dump_all(documents, sort_keys=False)


def run(cloud: CloudProcess, tmp_path: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EDGEFLEET_SERVER": cloud.url,
        "EDGEFLEET_TOKEN": cloud.token,
        "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"),
        "COLUMNS": "200",
        **cloud.cli_env,
    }
    return subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    """One cloud for the module (the tests only read): the four sites, their nodes (one draining, one
    NotReady) and the Domain, with the node phases reported."""
    tmp_path = tmp_path_factory.mktemp("route-cloud")
    with running_cloud(f"sqlite:///{tmp_path}/store.db", tmp_path) as cloud:
        (tmp_path / "fleet.yaml").write_text(manifests())
        ok(run(cloud, tmp_path, "apply", "-f", str(tmp_path / "fleet.yaml")))
        report_phases(cloud)
        yield cloud


def report_phases(cloud: CloudProcess) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with cloud.client() as http:
        for name, (_, _, _, phase) in NODES.items():
            response = http.patch(
                f"/apis/edgefleet.io/v1/nodes/{name}/status",
                content=json.dumps({"status": {"phase": phase, "lastHeartbeat": now}}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert response.status_code == 200, response.text


def test_a_paris_client_gets_the_paris_site_without_its_unfit_nodes(fleet: CloudProcess, tmp_path: Path) -> None:
    text = ok(run(fleet, tmp_path, "route", "demo", "--client", PARIS, "--geo", str(GEO)))
    lines = text.splitlines()
    assert (
        f"Client:   {PARIS} (resolver address, no Client Subnet): FR eu-west 48.8566,2.3522, "
        "geo prefix 127.0.1.0/24" in text
    )
    table = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in SITES}
    assert list(table) == ["par-edge", "ams-edge", "nyc-edge", "sfo-edge"]  # ranked: Paris, then abroad by distance
    assert table["par-edge"].split()[1:7] == ["r", "(FR)", "0", "km", "-", "1/3"]
    assert "outside FR: sites in FR preferred" in table["ams-edge"]
    assert "Chosen:   par-edge" in lines
    answers = [line for line in lines if ". " in line and "(" in line and ".demo.cdn.edgefleet.test)" in line]
    assert answers == ["Answers:  1. par-edge-1  127.0.1.1  (par-edge-1.demo.cdn.edgefleet.test)"]
    assert "par-edge-2 (par-edge): draining" in text
    assert "par-edge-3 (par-edge): no fresh peer votes; phase NotReady" in text
    assert "Reason:   geo: nearest site in FR to eu-west/FR -> par-edge" in text


def test_a_new_york_client_gets_a_us_site_as_json(fleet: CloudProcess, tmp_path: Path) -> None:
    document = json.loads(
        ok(run(fleet, tmp_path, "route", "www.demo.example", "--client", NEW_YORK, "--geo", str(GEO), "-o", "json"))
    )
    assert (document["domain"], document["name"], document["mode"]) == ("demo", "www.demo.example", "dns-A")
    assert document["client"]["location"]["country"] == "US"
    assert document["client"]["geoPrefix"] == "127.0.5.0/24"
    assert document["site"] == "nyc-edge"
    assert sorted((n["node"], n["ipv4"][0]) for n in document["answers"]) == [
        ("nyc-edge-1", "127.0.5.1"),
        ("nyc-edge-2", "127.0.5.2"),
    ]
    candidates = {c["site"]: c for c in document["candidates"]}
    assert [c["site"] for c in document["candidates"]][:2] == ["nyc-edge", "sfo-edge"]
    assert candidates["sfo-edge"]["eligible"] and 4000 < candidates["sfo-edge"]["distanceKm"] < 4200
    assert candidates["par-edge"]["fitNodes"] == 1 and candidates["par-edge"]["nodes"] == 3
    assert "nearest site in US" in document["reason"]
    west = json.loads(ok(run(fleet, tmp_path, "route", "demo", "--client", SAN_FRANCISCO, "-o", "json")))
    assert west["site"] == "sfo-edge" and west["name"] == "demo.cdn.edgefleet.test"  # default geo: examples/
    assert west["geoTable"] == "examples/geo.csv" and document["geoTable"] == str(GEO)
    assert west["notes"][0].startswith("the cloud publishes no geo table"), west["notes"]  # this cloud has no --geo
    assert "geo table: examples/geo.csv, a local file" in west["notes"][1]


def test_the_302_decision_names_the_location(fleet: CloudProcess, tmp_path: Path) -> None:
    document = yaml.safe_load(
        ok(
            run(
                fleet,
                tmp_path,
                "route",
                "a.img.demo.example",
                "--client",
                NEW_YORK,
                "--path",
                "/v/seg1.ts?t=1",
                "-o",
                "yaml",
            )
        )
    )
    assert document["mode"] == "redirect" and document["key"] == "http://a.img.demo.example/v/seg1.ts?t=1"
    assert document["client"]["subnet"] == "127.0.5.0/24"
    first = document["answers"][0]["node"]
    assert first.startswith("nyc-edge-")
    assert document["location"] == f"http://{first}.demo.cdn.edgefleet.test/v/seg1.ts?t=1"


def test_without_a_geo_table_the_order_is_fixed_and_said(fleet: CloudProcess, tmp_path: Path) -> None:
    text = ok(run(fleet, tmp_path, "route", "demo", "--client", PARIS, cwd=tmp_path))  # no examples/ here
    assert "location unknown (not in the geo table)" in text
    assert "client location unknown, fixed order" in text
    assert "note: no geo table: every client's location is unknown (give --geo FILE)" in text


def test_bad_input_is_an_error(fleet: CloudProcess, tmp_path: Path) -> None:
    unknown = run(fleet, tmp_path, "route", "nothing.example", "--client", PARIS)
    assert unknown.returncode == 1 and "no Domain named or serving 'nothing.example'" in unknown.stderr
    assert "Domains: demo" in unknown.stderr
    bad_client = run(fleet, tmp_path, "route", "demo", "--client", "paris")
    assert bad_client.returncode == 1 and "not an IP address" in bad_client.stderr
    subnet_302 = run(fleet, tmp_path, "route", "demo", "--client", "127.0.1.0/24", "--path", "/x")
    assert subnet_302.returncode == 1 and "give an IP, not a subnet" in subnet_302.stderr
