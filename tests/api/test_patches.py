"""JSON merge patch (RFC 7386): the RFC's examples, purity, limits, resources."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.api import parse
from edgefleet.api.errors import PatchError, ValidationFailed
from edgefleet.api.patches import MAX_DEPTH, make_merge_patch, merge_patch, patch_resource
from edgefleet.api.sites import Site

from .helpers import Doc

# RFC 7386, Appendix A: (original, patch, result), verbatim.
APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7386_appendix_a(original: str, patch: str, result: str) -> None:
    assert merge_patch(json.loads(original), json.loads(patch)) == json.loads(result)


def test_rfc7386_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_inputs_are_never_modified_nor_shared() -> None:
    target: dict[str, Any] = {"a": {"b": [1, 2]}, "keep": {"deep": [{"x": 1}]}}
    patch: dict[str, Any] = {"a": {"c": {"d": [3]}}, "new": [{"y": 2}]}
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert (target, patch) == (target_before, patch_before)
    result["keep"]["deep"][0]["x"] = 99
    result["a"]["c"]["d"].append(4)
    result["new"][0]["y"] = 3
    assert (target, patch) == (target_before, patch_before)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


def test_depth_limit() -> None:
    assert merge_patch({}, _nested(MAX_DEPTH)) == _nested(MAX_DEPTH)
    with pytest.raises(PatchError, match="patch is nested deeper than 64 levels"):
        merge_patch({}, _nested(MAX_DEPTH + 1))
    with pytest.raises(PatchError, match="document is nested deeper"):
        merge_patch(_nested(MAX_DEPTH + 1), {})
    with pytest.raises(PatchError, match="document is nested deeper"):
        make_merge_patch({}, [_nested(MAX_DEPTH)])


def test_member_names_must_be_strings() -> None:
    with pytest.raises(PatchError, match="member names must be strings"):
        merge_patch({}, {1: "x"})


def test_make_merge_patch() -> None:
    source = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "gone": True}
    target = {"a": 1, "b": {"c": 5, "d": 3}, "e": [1, 2], "new": {"x": None}}
    patch = make_merge_patch(source, target)
    assert patch == {"b": {"c": 5}, "e": [1, 2], "gone": None, "new": {"x": None}}
    assert make_merge_patch(source, source) == {}
    assert make_merge_patch([1], {"a": 1}) == {"a": 1}


_JSON_SCALARS = st.one_of(st.booleans(), st.integers(), st.text(max_size=5))
_KEYS = st.text(alphabet="abcde", min_size=1, max_size=2)
json_values = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=20,
)


@settings(deadline=None)
@given(st.dictionaries(_KEYS, json_values), st.dictionaries(_KEYS, json_values))
def test_made_patch_turns_source_into_target(source: Doc, target: Doc) -> None:
    assert merge_patch(source, make_merge_patch(source, target)) == target


@settings(deadline=None)
@given(json_values, json_values)
def test_merge_is_idempotent(target: Any, patch: Any) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


def _site(document: Doc) -> Site:
    obj = parse(document)
    assert isinstance(obj, Site)
    return obj


def test_patch_resource(site_doc: Doc) -> None:
    site = _site(site_doc)
    patched = patch_resource(site, {"spec": {"capacityGbps": 20, "parents": None}})
    assert (patched.spec.capacity_gbps, patched.spec.parents) == (20, [])
    assert site.spec.capacity_gbps == 10
    labelled = patch_resource(site, {"metadata": {"labels": {"tier": "edge"}}})
    assert labelled.metadata.labels == {"tier": "edge"}


def test_patch_resource_revalidates(site_doc: Doc) -> None:
    site = _site(site_doc)
    with pytest.raises(ValidationFailed) as info:
        patch_resource(site, {"spec": {"location": {"lat": 123}, "tier": None, "bogus": 1}})
    assert [str(e) for e in info.value.errors] == [
        "spec.location.lat: Input should be less than or equal to 90",
        "spec.bogus: unknown field",
    ]
    with pytest.raises(ValidationFailed, match="kind: must be 'Site' here"):
        patch_resource(site, {"kind": "Node"})
    with pytest.raises(PatchError, match="must be a JSON object"):
        patch_resource(site, ["spec"])
