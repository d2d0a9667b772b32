"""Edge rules through the real API app (SQLite store): bad rules are refused with field paths, good ones stored."""

from __future__ import annotations

from typing import Any

import httpx

from edgefleet.api.rules import MAX_RULES

from .conftest import API

Document = dict[str, Any]


def domain(rules: list[Document], name: str = "shop") -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {"hostnames": [f"{name}.example.com"], "origins": [{"url": "http://o.example"}], "rules": rules},
    }


def causes_of(response: httpx.Response) -> dict[str, str]:
    return {cause["field"]: cause["message"] for cause in response.json()["details"]["causes"]}


async def test_bad_rules_are_refused_with_their_field_paths_and_nothing_is_stored(api: httpx.AsyncClient) -> None:
    refused = await api.post(
        f"{API}/domains",
        json=domain(
            [
                {"match": {"path": {"prefix": "/"}, "colour": "red"}, "actions": [{"deny": {}}]},
                {"match": {"path": {"regex": "(a+)+$"}}, "actions": [{"deny": {}}]},
                {"match": {"path": {"regex": "^/a/(.*)"}}, "actions": [{"redirect": {"location": "/b/${3}"}}]},
                {"match": {"clientIp": {"cidrs": ["10.0.0.0/33"]}}, "actions": [{"deny": {}}]},
            ]
        ),
    )
    assert refused.status_code == 422, refused.text
    causes = causes_of(refused)
    assert causes["spec.rules[0].match.colour"] == "unknown field"
    assert "nested quantifiers" in causes["spec.rules[1].match.path.regex"]
    assert "1 group(s)" in causes["spec.rules[2].actions[0].redirect.location"]
    assert "not an IP address or CIDR" in causes["spec.rules[3].match.clientIp.cidrs[0]"]
    assert (await api.get(f"{API}/domains/shop")).status_code == 404
    refused = await api.post(f"{API}/domains", json=domain([{"actions": [{"deny": {}}]}] * (MAX_RULES + 1)))
    assert refused.status_code == 422
    assert f"at most {MAX_RULES} items" in causes_of(refused)["spec.rules"]


async def test_good_rules_are_stored_and_a_bad_update_keeps_them(api: httpx.AsyncClient) -> None:
    rules: list[Document] = [
        {
            "name": "signed-video",
            "match": {"path": {"prefix": "/video/"}},
            "actions": [{"tokenAuth": {"keys": [{"secret": "video-keys", "key": "current"}]}}],
        }
    ]
    created = await api.post(f"{API}/domains", json=domain(rules))
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["rules"][0]["name"] == "signed-video"
    patched = await api.patch(
        f"{API}/domains/shop",
        json={"spec": {"rules": [{"actions": [{"tokenAuth": {"keys": [{"secret": "Not A Name", "key": "k"}]}}]}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422
    assert "spec.rules[0].actions[0].tokenAuth.keys[0].secret" in causes_of(patched)
    kept = (await api.get(f"{API}/domains/shop")).json()
    assert kept["spec"]["rules"][0]["name"] == "signed-video"
