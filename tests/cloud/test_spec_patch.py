"""A spec PATCH keeps the stored status as stored, without reading it (issue 10: a push's PATCH).

The registry splices the stored status back instead of validating, copying and dumping it (a
Workload's status grows with the fleet); what is stored must be what the full path stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api.errors import ValidationFailed
from edgefleet.api.meta import kind_info
from edgefleet.cloud.registry import Registry
from edgefleet.store.interface import Store

WORKLOADS = kind_info("Workload")


def workload() -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "web"},
        "spec": {"nodeSelector": "role=cache", "template": {"command": ["serve"]}},
    }


async def test_a_spec_patch_keeps_the_status_bytes_and_ignores_a_status_in_the_patch(store: Store) -> None:
    registry = Registry(store)
    await registry.create(WORKLOADS, workload())
    counts = {f"s{i}": {"desired": 2, "updated": 1, "ready": 2, "available": 2, "unavailable": 0} for i in range(50)}
    status = {"currentRevision": "abc", "nodeRevisions": {"n1": "def"}, "sites": counts}
    await registry.patch(WORKLOADS, "web", {"status": status}, status=True)
    before = await store.get("/registry/workloads/web")
    assert before is not None

    patched = await registry.patch(WORKLOADS, "web", {"metadata": {"annotations": {"a": "1"}}, "status": None})
    assert patched["status"]["sites"] == counts and patched["status"]["nodeRevisions"] == {"n1": "def"}
    assert patched["metadata"]["generation"] == 1, "metadata only: same generation"
    spec = await registry.patch(WORKLOADS, "web", {"spec": {"nodeSelector": "role=edge"}, "status": {"x": 1}})
    assert spec["metadata"]["generation"] == 2 and spec["status"] == patched["status"]
    after = await store.get("/registry/workloads/web")
    assert after is not None
    assert after.value.count(b'"sites"') == 1 and b'"x"' not in after.value

    revision = await store.current_revision()
    same = await registry.patch(WORKLOADS, "web", {"spec": {"nodeSelector": "role=edge"}})
    assert await store.current_revision() == revision, "an unchanged object writes nothing"
    assert same == spec


async def test_a_spec_patch_still_validates_the_spec_and_a_status_patch_still_validates_the_status(
    store: Store,
) -> None:
    registry = Registry(store)
    await registry.create(WORKLOADS, workload())
    with pytest.raises(ValidationFailed, match=r"spec\.template\.command"):
        await registry.patch(WORKLOADS, "web", {"spec": {"template": {"command": "serve"}}})
    with pytest.raises(ValidationFailed, match=r"status\.x"):
        await registry.patch(WORKLOADS, "web", {"status": {"x": 1}}, status=True)
