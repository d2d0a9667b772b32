"""Purge and Prefetch: validation with field paths, limits, table columns; Node task reports; builtin templates."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.api import parse
from edgefleet.api.meta import kind_info, lookup
from edgefleet.api.nodes import MAX_TASK_REPORTS, NodeStatus
from edgefleet.api.purges import MAX_TAGS, MAX_URLS, Prefetch, Purge
from edgefleet.api.workloads import WorkloadTemplate, template_revision

from .helpers import errors_of as error_lines
from .helpers import make

Doc = dict[str, Any]


def errors_of(document: Doc) -> dict[str, str]:
    """Field path -> message of the validation errors of ``document``."""
    return dict(line.split(": ", 1) for line in error_lines(document))


def purge(**spec: Any) -> Doc:
    return make("Purge", "purge-1", {"domain": "shop", **spec})


def prefetch(**spec: Any) -> Doc:
    return make("Prefetch", "warm-1", {"domain": "shop", **spec})


def test_a_purge_with_urls_prefixes_and_tags() -> None:
    obj = parse(
        purge(
            urls=["/a/b.js?v=1", "https://www.shop.example:8443/c?x"],
            prefixes=["/img/"],
            tags=["product-42"],
            mode="soft",
        )
    )
    assert isinstance(obj, Purge)
    assert obj.spec.mode == "soft" and obj.spec.tags == ["product-42"]
    assert parse(obj.to_dict()) == obj
    assert parse(purge(tags=["t"])).spec.mode == "hard"


def test_a_purge_needs_something_to_purge() -> None:
    assert errors_of(purge()) == {"spec": "set at least one of urls, prefixes or tags"}
    assert "spec.domain" in errors_of(make("Purge", "p", {"urls": ["/a"]}))


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("a/b", "neither a path"),
        ("ftp://www.shop.example/a", "neither a path"),
        ("/a b", "spaces"),
        ("/a#frag", "fragment"),
        ("//evil.example/a", "'//'"),
        ("http://user:pw@www.shop.example/a", "credentials"),
        ("http://www.shop.example:99999/a", "port"),
        ("http://10.0.0.1/a", "IP address"),
        ("http://*.shop.example/a", "wildcard"),
        ("http://www.shop.example/a#x", "fragment"),
        ("/" + "a" * 9000, "at most 8192"),
    ],
)
def test_bad_urls_are_named_by_index(url: str, fragment: str) -> None:
    errors = errors_of(purge(urls=["/fine", url]))
    assert list(errors) == ["spec.urls[1]"]
    assert fragment in errors["spec.urls[1]"]


def test_prefixes_tags_mode_and_duplicates() -> None:
    assert "spec.prefixes[0]" in errors_of(purge(prefixes=["img/"]))
    assert "spec.tags[0]" in errors_of(purge(tags=["a,b"]))
    assert "spec.tags[0]" in errors_of(purge(tags=["a b"]))
    assert "spec.tags[0]" in errors_of(purge(tags=[""]))
    assert "spec.mode" in errors_of(purge(tags=["a"], mode="nuke"))
    assert errors_of(purge(urls=["/a", "/a"])) == {"spec.urls[1]": "duplicate entry '/a'"}


def test_list_sizes_are_bounded() -> None:
    assert "spec.urls" in errors_of(purge(urls=[f"/{i}" for i in range(MAX_URLS + 1)]))
    assert "spec.tags" in errors_of(purge(tags=[f"t{i}" for i in range(MAX_TAGS + 1)]))
    assert isinstance(parse(purge(urls=[f"/{i}" for i in range(MAX_URLS)])), Purge)


def test_a_prefetch_needs_urls() -> None:
    obj = parse(prefetch(urls=["/video/seg-1.ts", "http://www.shop.example/app.js"]))
    assert isinstance(obj, Prefetch) and len(obj.spec.urls) == 2
    assert "spec.urls" in errors_of(prefetch(urls=[]))
    assert "spec.tags" in errors_of(prefetch(urls=["/a"], tags=["x"]))  # prefetch has no tags


def test_status_is_counts_and_a_completion_time() -> None:
    doc = purge(tags=["a"])
    doc["status"] = {"targetNodes": 3, "completedNodes": 2, "failedNodes": 1, "completedAt": "2026-05-01T12:00:00Z"}
    assert parse(doc).status.completed_nodes == 2
    doc["status"]["completedAt"] = "yesterday"
    assert "status.completedAt" in errors_of(doc)


def test_kinds_are_registered_with_table_columns() -> None:
    assert lookup("purges").kind == "Purge" and lookup("pg").kind == "Purge"
    assert lookup("prefetch").kind == "Prefetch" and lookup("prefetches").kind == "Prefetch"
    obj = parse(purge(urls=["/a", "/b"], prefixes=["/p/"], tags=["t"]))
    obj.status.target_nodes, obj.status.completed_nodes = 4, 3
    cells = {column.header: column.value(obj) for column in kind_info("Purge").columns}
    assert cells["DOMAIN"] == "shop" and cells["MODE"] == "hard"
    assert cells["WHAT"] == "2 urls,1 prefix,1 tag"
    assert cells["COMPLETED"] == "3/4"
    pending = parse(prefetch(urls=["/a"]))
    cells = {column.header: column.value(pending) for column in kind_info("Prefetch").columns}
    assert cells["URLS"] == "1" and cells["COMPLETED"] == "<none>"


def test_node_status_reports_tasks_within_limits() -> None:
    report = {"name": "purge-1", "uid": "u-1", "state": "Done", "message": "purged 3"}
    status = NodeStatus.model_validate({"purges": [report], "prefetches": []})
    assert status.purges is not None and status.purges[0].state == "Done"
    with pytest.raises(ValueError, match="state"):
        NodeStatus.model_validate({"purges": [{**report, "state": "Maybe"}]})
    with pytest.raises(ValueError, match="purges"):
        NodeStatus.model_validate({"purges": [report] * (MAX_TASK_REPORTS + 1)})


def test_builtin_cache_template_and_revision_stability() -> None:
    plain = {"command": ["python3", "-m", "http.server"]}
    # The field did not exist before: an unset builtin must not change existing revisions.
    assert template_revision(WorkloadTemplate.model_validate(plain)) == "e5d481576a0e3d8f"
    builtin = WorkloadTemplate.model_validate({**plain, "builtin": "cache"})
    assert builtin.builtin == "cache"
    assert template_revision(builtin) != template_revision(WorkloadTemplate.model_validate(plain))
    with pytest.raises(ValueError, match="builtin"):
        WorkloadTemplate.model_validate({**plain, "builtin": "dns"})
