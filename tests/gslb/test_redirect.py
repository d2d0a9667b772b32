"""The HTTP 302 redirector: the pure core (no sockets), then the aiohttp app through aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edgefleet.gslb import policy
from edgefleet.gslb.fleet import FleetState
from edgefleet.gslb.geo import GeoDatabase, GeoTable
from edgefleet.gslb.redirect import (
    Redirect,
    cache_key,
    client_address,
    client_subnet,
    host_name,
    parse_trusted,
    redirect_app,
    redirect_target,
    split_target,
)
from tests.gslb.test_zone import GEO_CSV, SITES, T0, ask, fleet_documents, make_resolver, node_document

ZONE = "cdn.edgefleet.test"
TOKYO, NEW_YORK, PARIS = "127.0.7.9", "127.0.5.20", "127.0.1.30"
GEO = GeoDatabase.from_table(GeoTable.from_csv(GEO_CSV))


def make_fleet(documents: list[dict[str, Any]] | None = None) -> FleetState:
    fleet = FleetState()
    assert fleet.load(fleet_documents() if documents is None else documents) == []
    return fleet


def redirect(
    fleet: FleetState,
    target: str = "/",
    *,
    host: str = "www.customer.example",
    client: str = TOKYO,
    method: str = "GET",
    **options: Any,
) -> Redirect:
    return redirect_target(
        fleet, GEO, method=method, host=host, target=target, client=client, zone=ZONE, now=T0, **options
    )


def node_of(location: str | None) -> str:
    """``http://tyo-edge-1.demo.cdn.edgefleet.test:8081/x`` -> ``tyo-edge-1``."""
    assert location is not None
    return location.split("://", 1)[1].split(".", 1)[0]


# --- the pure core ----------------------------------------------------------------------------------


def test_get_redirects_to_the_owner_node_of_the_nearest_site_keeping_path_and_query() -> None:
    fleet = make_fleet()
    target = "/video/Seg%2F1.ts;v=2?token=a%2Fb+c&x=%E2%82%AC&&y"
    status, location, explanation = redirect(fleet, target)
    assert status == 302
    tokyo_nodes = fleet.sites_for("demo", T0)[2].nodes
    owner = policy.rank_nodes(tokyo_nodes, f"http://www.customer.example{target}")[0].name
    assert location == f"http://{owner}.demo.{ZONE}{target}"
    assert explanation.startswith(f"{TOKYO} (JP ap-northeast, geo prefix /24) -> site tyo-edge, node {owner}")
    assert "geo: nearest site" in explanation


def test_the_client_decides_the_site() -> None:
    fleet = make_fleet()
    assert node_of(redirect(fleet, client=NEW_YORK).location).startswith("nyc-edge-")
    assert node_of(redirect(fleet, client=PARIS).location).startswith("par-edge-")
    assert node_of(redirect(fleet, client="192.0.2.1").location).startswith("par-edge-")  # Frankfurt -> Paris
    assert node_of(redirect(fleet, client="2001:db8:3::1").location).startswith("tyo-edge-")


def test_objects_spread_over_the_sites_nodes_and_each_sticks_to_one() -> None:
    fleet = make_fleet()
    nodes = [node_of(redirect(fleet, f"/objects/{i}.bin").location) for i in range(40)]
    assert set(nodes) == {"tyo-edge-1", "tyo-edge-2"}
    assert nodes == [node_of(redirect(fleet, f"/objects/{i}.bin").location) for i in range(40)]
    # The key is the cache key: the host's case and port do not move an object.
    assert all(
        node_of(redirect(fleet, f"/objects/{i}.bin", host="WWW.Customer.Example:8080").location) == node
        for i, node in enumerate(nodes)
    )


def test_zone_names_wildcards_and_absolute_targets_are_served() -> None:
    fleet = make_fleet()
    for host, target, path in (
        (f"demo.{ZONE}", "/a?b", "/a?b"),
        ("x.img.customer.example.", "/i.png", "/i.png"),
        ("ignored", "http://www.customer.example/abs?q=1#frag", "/abs?q=1"),
        ("ignored", "HTTPS://www.customer.example?q", "/?q"),
        ("ignored", "http://www.customer.example", "/"),
    ):
        status, location, _ = redirect(fleet, target, host=host)
        assert status == 302 and location is not None and location.endswith(f".demo.{ZONE}{path}"), (host, target)


def test_node_port_and_scheme_shape_the_location() -> None:
    fleet = make_fleet()
    assert ".test:8081/p" in str(redirect(fleet, "/p", node_port=8081).location)
    assert str(redirect(fleet, "/p", node_port=80).location).endswith(f".demo.{ZONE}/p")
    secure = redirect(fleet, "/p", node_port=443, scheme="https").location
    assert str(secure).startswith("https://") and str(secure).endswith(f"{ZONE}/p")


def test_draining_and_unhealthy_nodes_are_never_redirected_to() -> None:
    documents = fleet_documents()
    documents[7] = node_document("tyo-edge-1", "tyo-edge", ["127.0.7.1"], draining=True)
    assert documents[7]["spec"]["site"] == "tyo-edge"
    fleet = make_fleet(documents)
    assert {node_of(redirect(fleet, f"/o/{i}").location) for i in range(20)} == {"tyo-edge-2"}
    documents[8] = node_document("tyo-edge-2", "tyo-edge", ["127.0.7.2"], phase="NotReady")
    fleet = make_fleet(documents)
    status, location, explanation = redirect(fleet)
    assert status == 302 and node_of(location).startswith("par-edge-")  # the next site in Japan's order
    assert "tyo-edge" not in explanation
    assert "tyo-edge" not in str(location)


def test_errors_say_what_is_wrong() -> None:
    fleet = make_fleet()
    assert redirect(fleet, host="unknown.example")[:2] == (404, None)
    assert "no Domain serves host 'unknown.example'" in redirect(fleet, host="unknown.example").explanation
    assert redirect(fleet, host=f"tyo-edge-1.demo.{ZONE}").status == 404  # a node's name is the node's to serve
    post = redirect(fleet, method="POST")
    assert (post.status, post.location) == (405, None) and "GET and HEAD" in post.explanation
    assert redirect(fleet, host="").explanation == "bad request: no Host header"
    assert redirect(fleet, "*").status == 400
    assert redirect(fleet, "ftp://www.customer.example/").status == 400
    no_nodes = make_fleet([d for d in fleet_documents() if d["kind"] != "Node"])
    status, location, explanation = redirect(no_nodes)
    assert (status, location) == (503, None)
    assert explanation.startswith(f"no healthy node serves domain demo for {TOKYO}")
    assert "no eligible site" in explanation


def test_the_redirector_draws_like_dns_with_a_client_subnet() -> None:
    """Under a weighted policy the site depends on a hash of the client's subnet: the redirector must hash
    the /24 the way a resolver's Client Subnet is hashed, or users would get one site by DNS and another by 302."""
    weights = {"par-edge": 1, "nyc-edge": 1, "tyo-edge": 1}
    documents = fleet_documents(policy="weighted", weights=weights)
    fleet, resolver = make_fleet(documents), make_resolver(documents)
    sites = set()
    for i in range(30):
        client = f"198.51.{i}.77"
        site = node_of(redirect(fleet, client=client).location).rsplit("-", 1)[0]
        by_dns = ask(resolver, "demo.cdn.edgefleet.test", ecs=(f"198.51.{i}.0", 24))
        prefix = SITES[site][3]
        assert all(rrset[0].address.startswith(prefix) for rrset in by_dns.answer), (client, site)
        sites.add(site)
    assert sites == set(weights)


# --- client addresses and URLs --------------------------------------------------------------------------

PROXIES = parse_trusted(["10.0.0.0/8", "2001:db8:ff::/48", "192.0.2.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),  # not a proxy: its header is ignored
        ("10.1.1.1", ["203.0.113.9"], "203.0.113.9"),
        ("10.1.1.1", ["1.1.1.1, 203.0.113.9, 10.2.2.2"], "203.0.113.9"),  # skips trusted hops, stops at the first other
        ("10.1.1.1", ["1.1.1.1", "203.0.113.9, 10.2.2.2"], "203.0.113.9"),  # repeated headers are one list
        ("10.1.1.1", ["10.9.9.9, 10.2.2.2"], "10.9.9.9"),  # all trusted: the left-most
        ("10.1.1.1", ["1.1.1.1, garbage, 10.2.2.2"], "10.2.2.2"),  # unreadable: stop at the last address read
        ("10.1.1.1", ["203.0.113.9:5678"], "203.0.113.9"),
        ("10.1.1.1", ["[2001:db8:3::1]:443"], "2001:db8:3::1"),
        ("10.1.1.1", [" , 2001:db8:3::1 ,"], "2001:db8:3::1"),
        ("2001:db8:ff::1", ["203.0.113.9"], "203.0.113.9"),
        ("::ffff:192.0.2.1", ["203.0.113.9"], "203.0.113.9"),  # an IPv4 peer on a dual-stack socket
        ("::ffff:198.51.100.7", [], "198.51.100.7"),
        ("10.1.1.1", [], "10.1.1.1"),
        (None, ["203.0.113.9"], ""),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_only_the_last_hops_of_a_long_header_are_read() -> None:
    header = ", ".join(["203.0.113.1"] + ["10.0.0.1"] * 100)
    assert client_address("10.1.1.1", [header], PROXIES) == "10.0.0.1"


def test_bad_trusted_proxy_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP network"):
        parse_trusted(["10.0.0.0/8", "10.0.0.0/33"])


def test_client_subnet_is_written_as_a_client_subnet() -> None:
    assert client_subnet("203.0.113.77") == "203.0.113.0/24"
    assert client_subnet("2001:db8:3:1:2::1") == "2001:db8:3::/56"
    assert client_subnet("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert client_subnet("") == ""


def test_host_names_and_targets() -> None:
    assert host_name("WWW.Example.COM.:8080") == "www.example.com"
    assert host_name("[2001:db8::1]:80") == "2001:db8::1"
    assert [host_name(bad) for bad in ("", ":80", "a:b", "[::1", "[::1]x")] == [None] * 5
    assert split_target("/a?b#c", "h") == ("h", "/a?b")
    assert split_target("http://x.example:81/p?q", "h") == ("x.example:81", "/p?q")
    assert split_target("http://x.example#f", "h") == ("x.example", "/")
    assert split_target("example.com:443", "h") is None
    assert cache_key("www.example.com", "/a?b") == "http://www.example.com/a?b"


# --- the aiohttp application ----------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = redirect_app(
        make_fleet(), GEO, zone=ZONE + ".", trusted_proxies=["127.0.0.1/32"], node_port=8081, clock=lambda: T0
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_app_redirects_with_private_caching(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/v/seg%2F1.ts?a=1&b=%20",
        allow_redirects=False,
        headers={"Host": "www.customer.example", "X-Forwarded-For": NEW_YORK},
    )
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith("http://nyc-edge-") and location.endswith(f".demo.{ZONE}:8081/v/seg%2F1.ts?a=1&b=%20")
    assert response.headers["Cache-Control"] == "private, max-age=30"
    assert await response.text() == f"Found: {location}\n"
    head = await client.head("/x", allow_redirects=False, headers={"Host": f"demo.{ZONE}"})
    assert head.status == 302 and await head.read() == b""
    # Without a forwarded address the peer (127.0.0.1: Paris in this table) is the client.
    here = await client.get("/x", allow_redirects=False, headers={"Host": "www.customer.example"})
    assert here.headers["Location"].startswith("http://par-edge-")


async def test_app_errors(client: TestClient[Any, Any]) -> None:
    unknown = await client.get("/x", allow_redirects=False, headers={"Host": "nobody.example"})
    assert unknown.status == 404 and "no Domain serves host 'nobody.example'" in await unknown.text()
    assert unknown.headers["Cache-Control"] == "no-store"
    post = await client.post("/x", headers={"Host": "www.customer.example"})
    assert post.status == 405 and post.headers["Allow"] == "GET, HEAD"


async def test_route_endpoint_explains_the_decision(client: TestClient[Any, Any]) -> None:
    response = await client.get("/_route", params={"name": "www.customer.example", "client": TOKYO, "path": "/v"})
    assert response.status == 200
    document = await response.json()
    assert (document["domain"], document["via"], document["site"]) == ("demo", "hostname", "tyo-edge")
    assert document["client"] == {
        "address": TOKYO,
        "subnet": "127.0.7.0/24",
        "geoPrefix": 24,
        "location": {"country": "JP", "region": "ap-northeast", "lat": 35.6762, "lon": 139.6503},
    }
    assert [c["site"] for c in document["candidates"]] == ["tyo-edge", "par-edge", "nyc-edge"]
    assert document["candidates"][0]["score"] == 0.0 and document["candidates"][1]["score"] > 9000
    assert document["key"] == "http://www.customer.example/v"
    assert document["location"] == f"http://{document['nodes'][0]['name']}.demo.{ZONE}:8081/v"
    assert document["status"] == 302 and "geo: nearest site" in document["reason"]
    assert sorted(n["name"] for n in document["nodes"]) == ["tyo-edge-1", "tyo-edge-2"]


async def test_route_endpoint_bad_input(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/_route")).status == 400
    assert (await client.get("/_route", params={"name": "nobody.example"})).status == 404
    bad_client = await client.get("/_route", params={"name": "www.customer.example", "client": "x"})
    assert bad_client.status == 400 and "not an IP address" in (await bad_client.json())["error"]
    # On a host a Domain serves, /_route is the customer's path: redirected like any other.
    served = await client.get("/_route?name=x", allow_redirects=False, headers={"Host": "www.customer.example"})
    assert served.status == 302 and served.headers["Location"].endswith("/_route?name=x")


async def test_route_endpoint_with_unknown_location_scores_null() -> None:
    unplaced = GeoDatabase.from_table(GeoTable.empty())
    app = redirect_app(make_fleet(), unplaced, zone=ZONE, clock=lambda: T0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        response = await test_client.get("/_route", params={"name": f"demo.{ZONE}"})
        document = await response.json()
    assert document["client"]["location"] is None and document["client"]["address"] == "127.0.0.1"
    assert {c["score"] for c in document["candidates"]} == {None}
    assert "client location unknown" in document["reason"]


def test_app_options_are_checked() -> None:
    with pytest.raises(ValueError, match="zone"):
        redirect_app(make_fleet(), GEO, zone="other.example")
    with pytest.raises(ValueError, match="scheme"):
        redirect_app(make_fleet(), GEO, zone=ZONE, scheme="ftp")
    with pytest.raises(ValueError, match="node port"):
        redirect_app(make_fleet(), GEO, zone=ZONE, node_port=70000)
    with pytest.raises(ValueError, match="trusted proxy"):
        redirect_app(make_fleet(), GEO, zone=ZONE, trusted_proxies=["nonsense"])
