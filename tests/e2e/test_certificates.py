"""Certificates from the cloud to the caches' TLS listeners, end to end, with real processes only.

One cloud; site ``lab`` (nodes c1, c2) serves Domain ``shop`` with
``tls.certificate: shop``; site ``far`` (node f1) runs the same cache
Workload but serves no Domain. Each agent starts the real cache with the
config it renders from its view, and the demo origin sits behind them.

- The Certificate reaches every node of the serving site (the agent writes
  the key 0600 in the cache's working directory and the cache serves it) and
  no node of the other site (no certificate file, no TLS listener there).
- An HTTPS GET trusting the test CA alone, with SNI and Host
  ``www.shop.test``, gets the page.
- Rotation: a new certificate under the same name is presented to new
  connections, while a connection kept alive from before goes on serving
  requests (the same TLS session: it still shows the old certificate).
"""

from __future__ import annotations

import hashlib
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cacheproc import OriginProcess
from tests.cloudproc import CloudProcess, free_port
from tests.faultproxy import FaultProxy
from tests.fleet import API, Fleet, cache_workload, replace_object, site_doc
from tests.pemfiles import Issued, certificate_manifest, issue
from tests.waiting import wait_until

CLOUD_FLAGS = ["--heartbeat", "1", "--node-monitor-period", "0.5"]
ADDRESSES = {"c1": "127.0.0.22", "c2": "127.0.0.23", "f1": "127.0.0.24"}
SITES = {"c1": "lab", "c2": "lab", "f1": "far"}
HOST = "www.shop.test"
PATH = "/bytes/512/page"


@dataclass
class World:
    fleet: Fleet
    origin: OriginProcess
    https_port: int
    first: Issued


def domain_doc(origin: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": "shop"},
        "spec": {
            "hostnames": [HOST],
            "origins": [{"url": origin}],
            "sites": "edgefleet.io/site=lab",
            "tls": {"certificate": "shop"},
        },
    }


def tls_cache_workload(http_port: int, admin_port: int, https_port: int) -> dict[str, Any]:
    workload = cache_workload(http_port, admin_port, node_selector="")
    workload["spec"]["template"]["ports"].append({"name": "https", "port": https_port})
    return workload


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("certs")
    cloud = CloudProcess(f"sqlite:///{root}/store.db", root, extra_args=CLOUD_FLAGS).start()
    fleet = Fleet(root, cloud, FaultProxy("127.0.0.1", cloud.port).start())
    origin = OriginProcess(root).start()
    ports = free_port(), free_port(), free_port()  # free on 127.0.0.1, so almost surely on .22-.24
    first = issue([HOST])
    try:
        with fleet.api() as api:
            for site in ("lab", "far"):
                assert api.post(f"{API}/sites", json=site_doc(site)).status_code == 201
            assert api.post(f"{API}/certificates", json=certificate_manifest("shop", first)).status_code == 201
            assert api.post(f"{API}/domains", json=domain_doc(origin.url)).status_code == 201
            assert api.post(f"{API}/workloads", json=tls_cache_workload(*ports)).status_code == 201
        for name, address in ADDRESSES.items():
            fleet.join(name, SITES[name], address=address).start()
        fleet.wait_ready(list(ADDRESSES))
        yield World(fleet, origin, ports[2], first)
    finally:
        fleet.close()
        origin.stop()


def key_files(world: World, node: str) -> list[Path]:
    return sorted(world.fleet.agents[node].data_dir.glob("workloads/cache/*/certs/*.key"))


def fingerprint(der: bytes | None) -> str:
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def leaf_der(issued: Issued) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.chain)


def https_client(world: World, node: str) -> httpx.Client:
    """A client of ``node``'s TLS listener trusting the test CA alone; SNI and Host are the Domain's name."""
    context = ssl.create_default_context(cadata=world.first.ca.cert_pem.decode())
    return httpx.Client(
        base_url=f"https://{ADDRESSES[node]}:{world.https_port}",
        verify=context,
        headers={"Host": HOST},
        timeout=10,
    )


def get(client: httpx.Client) -> tuple[httpx.Response, bytes | None]:
    """GET the page; the response and the DER certificate of the connection it came on."""
    response = client.get(PATH, extensions={"sni_hostname": HOST})
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return response, ssl_object.getpeercert(True)


def presented(world: World, node: str) -> str | None:
    """The fingerprint of the certificate a new connection to ``node`` gets, or None while it fails."""
    try:
        with https_client(world, node) as client:
            response, der = get(client)
    except httpx.HTTPError:
        return None
    return fingerprint(der) if response.status_code == 200 else None


def presents(world: World, node: str, expected: str) -> bool:
    return presented(world, node) == expected


def test_the_certificate_reaches_the_serving_site_only_and_https_gets_the_page(world: World) -> None:
    for node in ("c1", "c2"):
        wait_until(partial(key_files, world, node), 30, what=f"the certificate key on {node}")
        [key] = key_files(world, node)
        assert key.read_text() == world.first.key and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key_files(world, "f1") == [], "a site that serves no Domain using it never receives the key"
    config = (world.fleet.agents["f1"].data_dir / "workloads" / "cache").glob("*/cache.yaml")
    assert all("tlsListen" not in path.read_text() for path in config)

    expected = fingerprint(leaf_der(world.first))
    for node in ("c1", "c2"):
        wait_until(partial(presents, world, node, expected), 30, what=f"HTTPS on {node}")
    with https_client(world, "c1") as client:
        response, _ = get(client)
    assert response.status_code == 200 and len(response.content) == 512
    assert response.headers["X-Cache"]


def test_a_rotation_reaches_new_connections_while_a_kept_alive_one_goes_on(world: World) -> None:
    old = fingerprint(leaf_der(world.first))
    wait_until(partial(presents, world, "c1", old), 30, what="HTTPS on c1 with the first certificate")
    with https_client(world, "c1") as kept:
        before, der = get(kept)
        assert before.status_code == 200 and fingerprint(der) == old
        second = issue([HOST])

        def rotate(document: dict[str, Any]) -> None:
            document["spec"] = {"certificate": second.chain, "key": second.key}

        with world.fleet.api() as api:
            replace_object(api, f"{API}/certificates/shop", rotate)
        new = fingerprint(leaf_der(second))
        for node in ("c1", "c2"):
            wait_until(partial(presents, world, node, new), 30, what=f"{node} presenting the new certificate")
        after, der = get(kept)
        assert after.status_code == 200 and fingerprint(der) == old, "the same connection, still open"
        assert after.extensions["network_stream"] is before.extensions["network_stream"]
