"""Site: valid manifests, every rule with its exact field path, table columns."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.sites import Site, SiteStatus, bandwidth

from .helpers import DELETE, Doc, changed, errors_of, row


def test_valid_site_and_defaults(site_doc: Doc) -> None:
    del site_doc["spec"]["tier"]
    site = parse(site_doc)
    assert isinstance(site, Site)
    assert site.spec.tier == "edge"
    assert site.spec.always_on is True
    assert site.spec.capacity_gbps == 10.0
    assert site.spec.location.country == "FR"
    assert site.status == SiteStatus()


def test_parent_site_without_parents(site_doc: Doc) -> None:
    doc = changed(changed(site_doc, "spec.tier", "parent"), "spec.parents", DELETE)
    site = parse(doc)
    assert isinstance(site, Site)
    assert (site.spec.tier, site.spec.parents) == ("parent", [])


def test_country_is_case_insensitive(site_doc: Doc) -> None:
    site = parse(changed(site_doc, "spec.location.country", "nl"))
    assert isinstance(site, Site)
    assert site.spec.location.country == "NL"


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("spec.location.lat", 90.5, "spec.location.lat: Input should be less than or equal to 90"),
        (
            "spec.location.lon",
            -180.01,
            "spec.location.lon: Input should be greater than or equal to -180",
        ),
        (
            "spec.location.country",
            "XX",
            "spec.location.country: 'XX' is not an ISO 3166-1 alpha-2 country code (e.g. 'DE')",
        ),
        (
            "spec.location.country",
            "FRA",
            "spec.location.country: 'FRA' is not an ISO 3166-1 alpha-2 country code (e.g. 'DE')",
        ),
        ("spec.location", DELETE, "spec.location: Field required"),
        ("spec.tier", "core", "spec.tier: Input should be 'edge' or 'parent'"),
        (
            "spec.parents",
            ["fra-parent", "fra-parent"],
            "spec.parents[1]: duplicate parent 'fra-parent'",
        ),
        (
            "spec.parents",
            ["ok", "Bad_Name"],
            "spec.parents[1]: 'Bad_Name' is not a DNS-1123 name: use lowercase letters, digits, "
            "'-' and '.', starting and ending with a letter or digit",
        ),
        (
            "spec.parents",
            ["fra-parent", "par-edge"],
            "spec.parents[1]: a site cannot be its own parent",
        ),
        ("spec.capacityGbps", 0, "spec.capacityGbps: Input should be greater than 0"),
        ("spec.capacityGbps", -5, "spec.capacityGbps: Input should be greater than 0"),
        (
            "spec.region",
            "EU West",
            "spec.region: 'EU West' is not a DNS-1123 label: use lowercase letters, digits and "
            "'-', starting and ending with a letter or digit",
        ),
        (
            "spec.alwaysOn",
            "maybe",
            "spec.alwaysOn: Input should be a valid boolean, unable to interpret input",
        ),
        ("spec.capacity", 10, "spec.capacity: unknown field"),
    ],
)
def test_invalid_site(site_doc: Doc, path: str, value: Any, error: str) -> None:
    assert errors_of(changed(site_doc, path, value)) == [error]


def test_several_errors_reported_together(site_doc: Doc) -> None:
    doc = changed(changed(site_doc, "spec.location.lat", 100), "spec.capacityGbps", 0)
    assert errors_of(doc) == [
        "spec.location.lat: Input should be less than or equal to 90",
        "spec.capacityGbps: Input should be greater than 0",
    ]


def test_status_is_typed(site_doc: Doc) -> None:
    site_doc["status"] = {"active": True, "healthyNodes": 2, "totalNodes": 3, "load": 0.25}
    site = parse(site_doc)
    assert isinstance(site, Site)
    assert site.status.healthy_nodes == 2
    site_doc["status"] = {"healthyNodes": -1}
    assert errors_of(site_doc) == ["status.healthyNodes: Input should be greater than or equal to 0"]


def test_columns(site_doc: Doc) -> None:
    site = parse(site_doc)
    assert row(site) == {
        "REGION": "eu-west",
        "TIER": "edge",
        "COUNTRY": "FR",
        "CAPACITY": "10Gbps",
        "ACTIVE": "<none>",
        "PHASE": "<none>",
        "HEALTHY": "<none>",
        "PARENTS": "fra-parent",
        "LOAD": "<none>",
        "ALWAYS-ON": "true",
    }
    site_doc["status"] = {"active": False, "phase": "Activating", "healthyNodes": 2, "totalNodes": 3, "load": 0.5}
    cells = row(parse(site_doc))
    assert (cells["ACTIVE"], cells["PHASE"], cells["HEALTHY"], cells["LOAD"]) == ("false", "Activating", "2/3", "50.0%")
    site_doc["status"] |= {"loadGbps": 5.0}
    assert row(parse(site_doc))["LOAD"] == "50.0% (5Gbps)"


def test_bandwidth_is_shown_in_the_largest_unit_below_it() -> None:
    assert [bandwidth(g) for g in (12.5, 1.0, 0.82, 0.0081923, 9.5e-5, 0.0)] == [
        "12.5Gbps",
        "1Gbps",
        "820Mbps",
        "8.19Mbps",
        "95kbps",
        "0bps",
    ]
