"""The REST API in process: CRUD, preconditions, status path, patch, lists, auth, bad input.

Every bad-input test also checks that the store revision did not move:
a rejected request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from edgefleet.store.interface import Store

from .conftest import API, MAX_BODY, VIEWER, site

SITES = f"{API}/sites"


async def revision(store: Store) -> int:
    return await store.current_revision()


async def create(api: httpx.AsyncClient, doc: Mapping[str, Any]) -> dict[str, Any]:
    response = await api.post(SITES, json=doc)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_sets_server_metadata(api: httpx.AsyncClient) -> None:
    created = await create(api, site())
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    fetched = (await api.get(f"{SITES}/paris")).json()
    assert fetched == created


async def test_create_twice_is_409_already_exists(api: httpx.AsyncClient, store: Store) -> None:
    await create(api, site())
    before = await revision(store)
    response = await api.post(SITES, json=site())
    assert response.status_code == 409
    assert response.json()["reason"] == "AlreadyExists"
    assert await revision(store) == before


async def test_get_missing_is_404_status(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{SITES}/nowhere")
    assert response.status_code == 404
    body = response.json()
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and "nowhere" in body["message"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["spec"].__setitem__("colour", "blue"), "spec.colour"),
        (lambda d: d["metadata"].__setitem__("nme", "x"), "metadata.nme"),
        (lambda d: d["spec"]["location"].__setitem__("lat", "north"), "spec.location.lat"),
        (lambda d: d["metadata"].__setitem__("name", "a" * 254), "metadata.name"),
        (lambda d: d["metadata"].__setitem__("name", "Not_A_Name"), "metadata.name"),
        (lambda d: d.__setitem__("kind", "Node"), "kind"),
    ],
)
async def test_invalid_object_is_422_with_field_path(
    api: httpx.AsyncClient, store: Store, mutate: Any, field: str
) -> None:
    doc = site()
    mutate(doc)
    before = await revision(store)
    response = await api.post(SITES, json=doc)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "Invalid"
    assert field in [cause["field"] for cause in body["details"]["causes"]], body
    assert await revision(store) == before


async def test_unknown_api_version_is_400(api: httpx.AsyncClient, store: Store) -> None:
    doc = site()
    doc["apiVersion"] = "edgefleet.io/v2"
    before = await revision(store)
    response = await api.post(SITES, json=doc)
    assert response.status_code == 400
    assert "edgefleet.io/v1" in response.json()["message"]
    assert await revision(store) == before


async def test_malformed_json_is_400(api: httpx.AsyncClient, store: Store) -> None:
    before = await revision(store)
    response = await api.post(SITES, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]
    assert await revision(store) == before


async def test_wrong_content_type_is_415(api: httpx.AsyncClient) -> None:
    response = await api.post(SITES, content=b"kind: Site", headers={"Content-Type": "application/yaml"})
    assert response.status_code == 415


async def test_body_over_limit_is_413_and_changes_nothing(api: httpx.AsyncClient, store: Store) -> None:
    doc = site()
    doc["metadata"]["annotations"] = {"big": "x" * (MAX_BODY + 10)}
    before = await revision(store)
    response = await api.post(SITES, json=doc)
    assert response.status_code == 413
    assert response.json()["reason"] == "RequestEntityTooLarge"

    async def chunks() -> Any:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    response = await api.post(SITES, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert await revision(store) == before


async def test_auth_401_and_403_are_distinct(api: httpx.AsyncClient, store: Store) -> None:
    no_token = await api.get(SITES, headers={"Authorization": ""})
    assert no_token.status_code == 401
    wrong = await api.get(SITES, headers={"Authorization": "Bearer admin1.cccccccccccccccccccccccccccccccc"})
    assert wrong.status_code == 401
    malformed = await api.get(SITES, headers={"Authorization": "Bearer nope"})
    assert malformed.status_code == 401
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    assert (await api.get(SITES, headers=viewer)).status_code == 200
    before = await revision(store)
    forbidden = await api.post(SITES, json=site(), headers=viewer)
    assert forbidden.status_code == 403
    assert forbidden.json()["reason"] == "Forbidden"
    assert await revision(store) == before


async def test_replace_with_precondition(api: httpx.AsyncClient, store: Store) -> None:
    created = await create(api, site())
    stale = json.loads(json.dumps(created))
    created["spec"]["capacityGbps"] = 80
    response = await api.put(f"{SITES}/paris", json=created)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(updated["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])
    before = await revision(store)
    stale["spec"]["capacityGbps"] = 10
    conflict = await api.put(f"{SITES}/paris", json=stale)
    assert conflict.status_code == 409 and conflict.json()["reason"] == "Conflict"
    assert await revision(store) == before
    assert (await api.get(f"{SITES}/paris")).json()["spec"]["capacityGbps"] == 80


async def test_label_change_does_not_bump_generation(api: httpx.AsyncClient) -> None:
    created = await create(api, site())
    created["metadata"]["labels"] = {"tier": "gold"}
    updated = (await api.put(f"{SITES}/paris", json=created)).json()
    assert updated["metadata"]["generation"] == 1
    assert updated["metadata"]["labels"] == {"tier": "gold"}


async def test_replace_name_mismatch_is_422(api: httpx.AsyncClient) -> None:
    await create(api, site())
    response = await api.put(f"{SITES}/paris", json=site("lyon"))
    assert response.status_code == 422


async def test_unchanged_replace_makes_no_revision(api: httpx.AsyncClient, store: Store) -> None:
    created = await create(api, site())
    before = await revision(store)
    same = (await api.put(f"{SITES}/paris", json=created)).json()
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert await revision(store) == before


async def test_status_only_through_status_path(api: httpx.AsyncClient) -> None:
    created = await create(api, site())
    created["status"] = {"active": True, "healthyNodes": 3}
    main_path = (await api.put(f"{SITES}/paris", json=created)).json()
    assert not main_path.get("status") or main_path["status"].get("healthyNodes") is None
    status_path = await api.put(f"{SITES}/paris/status", json=created)
    assert status_path.status_code == 200, status_path.text
    assert status_path.json()["status"]["healthyNodes"] == 3
    assert status_path.json()["metadata"]["generation"] == 1
    created["spec"]["capacityGbps"] = 999
    created["metadata"]["resourceVersion"] = status_path.json()["metadata"]["resourceVersion"]
    after = (await api.put(f"{SITES}/paris/status", json=created)).json()
    assert after["spec"]["capacityGbps"] == 40, "the status path must not change spec"


async def test_merge_patch(api: httpx.AsyncClient) -> None:
    await create(api, site(env="prod", team="cdn"))
    headers = {"Content-Type": "application/merge-patch+json"}
    patch = {"metadata": {"labels": {"team": None, "zone": "a"}}, "spec": {"capacityGbps": 100}}
    response = await api.patch(f"{SITES}/paris", content=json.dumps(patch), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["labels"] == {"env": "prod", "zone": "a"}
    assert body["spec"]["capacityGbps"] == 100
    assert body["metadata"]["generation"] == 2
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"capacityGbps": 1}}
    conflict = await api.patch(f"{SITES}/paris", content=json.dumps(stale), headers=headers)
    assert conflict.status_code == 409
    invalid = await api.patch(f"{SITES}/paris", content=json.dumps({"spec": {"capacityGbps": "lots"}}), headers=headers)
    assert invalid.status_code == 422
    assert "spec.capacityGbps" in invalid.text
    missing = await api.patch(f"{SITES}/gone", content="{}", headers=headers)
    assert missing.status_code == 404


async def test_delete_with_and_without_precondition(api: httpx.AsyncClient) -> None:
    created = await create(api, site())
    wrong = await api.delete(f"{SITES}/paris", params={"resourceVersion": "999"})
    assert wrong.status_code == 409
    rv = created["metadata"]["resourceVersion"]
    deleted = await api.delete(f"{SITES}/paris", params={"resourceVersion": rv})
    assert deleted.status_code == 200
    assert deleted.json()["metadata"]["name"] == "paris"
    assert (await api.get(f"{SITES}/paris")).status_code == 404
    assert (await api.delete(f"{SITES}/paris")).status_code == 404


async def test_list_with_selector_and_pages(api: httpx.AsyncClient) -> None:
    for i in range(7):
        await create(api, site(f"site-{i}", parity="even" if i % 2 == 0 else "odd"))
    everything = (await api.get(SITES)).json()
    assert everything["kind"] == "SiteList"
    assert [d["metadata"]["name"] for d in everything["items"]] == [f"site-{i}" for i in range(7)]
    even = (await api.get(SITES, params={"labelSelector": "parity=even"})).json()
    assert [d["metadata"]["name"] for d in even["items"]] == ["site-0", "site-2", "site-4", "site-6"]
    names: list[str] = []
    params: dict[str, Any] = {"limit": 2, "labelSelector": "parity in (even,odd)"}
    first_rv = None
    while True:
        page = (await api.get(SITES, params=params)).json()
        first_rv = first_rv or page["metadata"]["resourceVersion"]
        assert page["metadata"]["resourceVersion"] == first_rv
        names += [d["metadata"]["name"] for d in page["items"]]
        if not page["metadata"].get("continue"):
            break
        params["continue"] = page["metadata"]["continue"]
        await create(api, site(f"late-{len(names)}", parity="even"))  # not in this snapshot
    assert names == [f"site-{i}" for i in range(7)]


@pytest.mark.parametrize(
    "params",
    [{"labelSelector": "a in (b"}, {"continue": "%%%"}, {"limit": "-1"}, {"limit": "many"}],
)
async def test_bad_list_parameters_are_400(api: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await api.get(SITES, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["kind"] == "Status"


async def test_system_endpoints(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).text == "ok"
    assert (await api.get("/readyz")).status_code == 200
    await create(api, site())
    metrics = (await api.get("/metrics")).text
    assert 'edgefleet_api_requests_total{code="201",method="POST",route="/apis/edgefleet.io/v1/sites"}' in metrics
    assert "edgefleet_store_revision" in metrics
    assert "edgefleet_api_request_duration_seconds_bucket" in metrics
    discovery = (await api.get(API)).json()
    assert {r["name"] for r in discovery["resources"]} >= {"sites", "nodes", "domains", "workloads"}
    openapi = (await api.get("/openapi.json")).json()
    assert f"{API}/sites/{{name}}/status" in openapi["paths"]
    assert "Site" in openapi["components"]["schemas"]


async def test_unknown_path_is_404_status(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{API}/gadgets")
    assert response.status_code == 404
    assert response.json()["kind"] == "Status"
