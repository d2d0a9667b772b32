"""Certificates through the real API app: admission parses the PEM, viewers never see the key, deletes in use.

The warnings about Domains (a certificate that does not exist yet, one that
does not cover the hostnames) are headers on an accepted write: apply order
is free.
"""

from __future__ import annotations

from typing import Any

import httpx

from edgefleet.cli.client import parse_warning
from edgefleet.store.interface import Store
from tests.pemfiles import certificate_manifest, issue

from .conftest import API, VIEWER

CERTS, DOMAINS = f"{API}/certificates", f"{API}/domains"
VIEWER_HEADERS = {"Authorization": f"Bearer {VIEWER}"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def domain(name: str, certificate: str, *hostnames: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {
            "hostnames": list(hostnames) or [f"www.{name}.example"],
            "origins": [{"url": "http://127.0.0.1:8080"}],
            "tls": {"certificate": certificate},
        },
    }


def warnings_of(response: httpx.Response) -> list[str]:
    return [parse_warning(value) for value in response.headers.get_list("warning")]


def causes_of(response: httpx.Response) -> dict[str, str]:
    return {cause["field"]: cause["message"] for cause in response.json()["details"]["causes"]}


async def test_a_key_that_does_not_match_is_refused_with_its_field_and_nothing_is_stored(
    api: httpx.AsyncClient, store: Store
) -> None:
    manifest: Any = certificate_manifest("shop", issue(["www.shop.example"]))
    manifest["spec"]["key"] = issue(["www.shop.example"]).key
    refused = await api.post(CERTS, json=manifest)
    assert refused.status_code == 422
    assert causes_of(refused) == {"spec.key": "does not match the leaf certificate (the first one of spec.certificate)"}
    assert (await api.get(f"{CERTS}/shop")).status_code == 404
    # A PATCH that would break a stored certificate is refused too.
    assert (await api.post(CERTS, json=certificate_manifest("shop", issue(["www.shop.example"])))).status_code == 201
    patch = {"spec": {"key": issue(["x.example"]).key}}
    assert (await api.patch(f"{CERTS}/shop", json=patch, headers=MERGE)).status_code == 422


async def test_viewers_see_the_key_redacted_in_get_list_and_watch(api: httpx.AsyncClient) -> None:
    issued = issue(["www.shop.example"])
    assert (await api.post(CERTS, json=certificate_manifest("shop", issued))).status_code == 201
    assert (await api.get(f"{CERTS}/shop")).json()["spec"]["key"] == issued.key, "admins read it"
    one = (await api.get(f"{CERTS}/shop", headers=VIEWER_HEADERS)).json()
    assert one["spec"] == {"certificate": issued.chain, "key": "<redacted>"}
    listed = (await api.get(CERTS, headers=VIEWER_HEADERS)).json()["items"]
    assert [item["spec"]["key"] for item in listed] == ["<redacted>"]
    watched = await api.get(CERTS, params={"watch": "true", "timeoutSeconds": "1"}, headers=VIEWER_HEADERS)
    assert issued.key.splitlines()[1] not in watched.text and "<redacted>" in watched.text


async def test_domains_naming_a_missing_or_mismatched_certificate_are_accepted_with_a_warning(
    api: httpx.AsyncClient,
) -> None:
    early = await api.post(DOMAINS, json=domain("shop", "shop-cert"))
    assert early.status_code == 201
    assert warnings_of(early)[0].startswith('spec.tls.certificate: certificate "shop-cert" does not exist (yet)')
    created = await api.post(CERTS, json=certificate_manifest("shop-cert", issue(["www.shop.example"])))
    assert created.status_code == 201
    # Once the controller wrote the DNS names, a Domain with a hostname outside them is warned about.
    status = {"status": {"dnsNames": ["www.shop.example"]}}
    assert (await api.patch(f"{CERTS}/shop-cert/status", json=status, headers=MERGE)).status_code == 200
    blog = await api.post(DOMAINS, json=domain("blog", "shop-cert", "blog.example"))
    assert blog.status_code == 201
    assert warnings_of(blog) == ['spec.tls.certificate: certificate "shop-cert" does not cover blog.example']


async def test_a_certificate_in_use_cannot_be_deleted_unless_forced(api: httpx.AsyncClient) -> None:
    assert (await api.post(CERTS, json=certificate_manifest("shop", issue(["www.shop.example"])))).status_code == 201
    assert (await api.post(DOMAINS, json=domain("shop", "shop"))).status_code == 201
    refused = await api.delete(f"{CERTS}/shop")
    assert refused.status_code == 409
    assert 'certificate "shop" is used by 1 domain(s) (shop)' in refused.json()["message"]
    assert (await api.delete(f"{CERTS}/shop", params={"force": "true"})).status_code == 200
