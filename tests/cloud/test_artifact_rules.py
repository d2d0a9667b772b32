"""The Artifact kind, template.artifacts, its admission rules, its place in views and in the cache config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edgefleet.api.artifacts import Artifact, object_name
from edgefleet.api.documents import StoredDocument
from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.cloud.admission import AdmissionRequest, Operation, check
from edgefleet.edge.artifacts import ARTIFACT_DOMAIN, ARTIFACT_HOST, internal_domain
from edgefleet.edge.cacheconfig import render_cache_config
from tests.sync.fleet import Cloud, key, small_fleet

DIGEST = "ab" * 32


def artifact(name: str = "tool", version: str = "1.0", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Artifact",
        "metadata": {"name": object_name(name, version)},
        "spec": {"name": name, "version": version, "sha256": DIGEST, "size": 10, **spec},
    }


def test_a_valid_artifact_and_its_defaults() -> None:
    parsed = Artifact.model_validate(artifact(sha256="sha256:" + DIGEST))
    assert parsed.spec.sha256 == DIGEST and parsed.spec.source == "upload"
    assert parsed.spec.media_type == "application/octet-stream"
    url = Artifact.model_validate(artifact(source="url", url="https://releases.example/tool-1.0.tgz"))
    assert url.spec.url == "https://releases.example/tool-1.0.tgz"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sha256": "xyz"}, "sha256"),
        ({"version": "1.0/../x"}, "version"),
        ({"version": "V1"}, "version"),
        ({"size": -1}, "size"),
        ({"mediaType": "not a type"}, "mediaType"),
        ({"source": "url"}, "url"),
        ({"url": "https://x.example/a"}, "url"),
        ({"source": "url", "url": "https://user:pw@x.example/a"}, "url"),
        ({"source": "url", "url": "file:///etc/passwd"}, "url"),
    ],
)
def test_bad_fields_are_refused_with_their_path(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Artifact.model_validate(artifact(**change))
    assert field in str(info.value)


def test_the_object_is_named_after_name_and_version() -> None:
    document = artifact()
    document["metadata"]["name"] = "other"
    with pytest.raises(ValidationError, match=r"tool-1\.0"):
        Artifact.model_validate(document)


def test_template_artifacts_are_checked() -> None:
    ok = WorkloadTemplate.model_validate(
        {"command": ["x"], "artifacts": [{"name": "tool", "version": "1.0", "path": "bin/tool", "mode": "0755"}]}
    )
    assert ok.artifacts[0].mode == 0o755 and ok.artifacts[0].extract == "none"
    for bad in ({"path": "../x"}, {"path": "/abs"}, {"extract": "zip"}, {"version": "A B"}):
        with pytest.raises(ValidationError):
            WorkloadTemplate.model_validate(
                {"command": ["x"], "artifacts": [{"name": "tool", "version": "1.0", "path": "p", **bad}]}
            )
    with pytest.raises(ValidationError, match="path"):
        WorkloadTemplate.model_validate(
            {"command": ["x"], "artifacts": [{"name": "a", "version": "1", "path": "p"}] * 2}
        )


class Lookup:
    may_lag = False

    def __init__(self, workloads: list[StoredDocument]) -> None:
        self.workloads = workloads

    async def get(self, plural: str, name: str) -> StoredDocument | None:
        return None

    async def documents(self, plural: str, *, fresh: bool = False) -> Sequence[StoredDocument]:
        return self.workloads if plural == "workloads" else []


def using(name: str, version: str) -> StoredDocument:
    template = {"command": ["x"], "artifacts": [{"name": name, "version": version, "path": "p"}]}
    return {"apiVersion": "edgefleet.io/v1", "kind": "Workload", "metadata": {"name": "app"},
            "spec": {"template": template}}  # fmt: skip


async def test_admission_keeps_the_spec_immutable_and_refuses_deleting_one_in_use() -> None:
    old: Any = artifact()
    edited: Any = artifact(size=11)
    relabelled: Any = {**artifact(), "metadata": {"name": "tool-1.0", "annotations": {"a": "b"}}}
    verdict = await check(AdmissionRequest.of("Artifact", edited, old), Lookup([]))
    assert verdict.errors and "immutable" in verdict.errors[0].message
    assert not (await check(AdmissionRequest.of("Artifact", relabelled, old), Lookup([]))).errors
    delete = AdmissionRequest.of("Artifact", None, old)
    assert delete.operation is Operation.DELETE
    assert "app" in (await check(delete, Lookup([using("tool", "1.0")]))).conflict
    assert not (await check(delete, Lookup([using("tool", "2.0")]))).conflict
    forced = AdmissionRequest.of("Artifact", None, old, force=True)
    assert not (await check(forced, Lookup([using("tool", "1.0")]))).conflict


def test_artifacts_and_the_fleet_key_are_in_every_view_other_secrets_are_not() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    index = cloud.index
    everyone = ["par-1", "par-2", "lyo-1", "fra-1"]
    for name in everyone:
        index.register(name)
    art = key("artifacts", "tool-1.0")
    changes = index.apply(art, 100, artifact())  # type: ignore[arg-type]
    assert set(changes) == set(everyone)
    fleet_key: Any = {"apiVersion": "edgefleet.io/v1", "kind": "Secret", "metadata": {"name": "edgefleet-artifacts"},
                      "spec": {"data": {"key": "k"}}}  # fmt: skip
    secret = key("secrets", "edgefleet-artifacts")
    assert set(index.apply(secret, 101, fleet_key)) == set(everyone)
    other: Any = {**fleet_key, "metadata": {"name": "db"}}
    assert index.apply(key("secrets", "db"), 102, other) == {}
    for name in everyone:
        view = index.view(name)
        assert art in view and secret in view and key("secrets", "db") not in view


def cache_view() -> list[dict[str, Any]]:
    return [
        {"kind": "Node", "metadata": {"name": "n1"}, "spec": {"site": "s", "addresses": ["127.0.0.1"]}},
        {"kind": "Site", "metadata": {"name": "s"}, "spec": {}},
        {"kind": "Domain", "metadata": {"name": "shop"},
         "spec": {"hostnames": ["www.shop.example"], "origins": [{"url": "http://o.example"}]}},
        {"kind": "Domain", "metadata": {"name": "sneaky"},
         "spec": {"hostnames": [ARTIFACT_HOST], "origins": [{"url": "http://evil.example"}]}},
    ]  # fmt: skip


def test_the_cache_config_serves_the_internal_artifact_domain_first_and_no_impostor() -> None:
    template = WorkloadTemplate.model_validate({"builtin": "cache", "command": ["edgefleet", "cache"]})
    origin = "http://127.0.0.1:7441/artifact-origin"
    config = render_cache_config(
        "n1", cache_view(), template, Path("/d/workloads/cache/r"), internal_domains=[internal_domain(origin)]
    )
    names = [domain.name for domain in config.domains]
    assert names == [ARTIFACT_DOMAIN, "shop"], "a view Domain claiming the internal host is left out"
    assert config.domains[0].origins[0].url == origin
    plain = render_cache_config("n1", cache_view()[:3], template, Path("/d/workloads/cache/r"))
    assert [domain.name for domain in plain.domains] == ["shop"]
