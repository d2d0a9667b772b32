"""parse(), the registry and the metadata rules shared by every kind."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from edgefleet.api import kinds, meta, parse
from edgefleet.api.errors import (
    FieldError,
    FieldValueError,
    UnknownKind,
    ValidationFailed,
    format_path,
)

from .helpers import errors_of as failures


def test_registry_holds_every_kind() -> None:
    assert {info.kind for info in meta.all_kinds()} >= {"Site", "Node", "Domain", "Workload"}
    for cls in kinds.KINDS:
        info = meta.kind_info(cls.KIND)
        assert info.model is cls
        assert info.plural == cls.KIND.lower() + "s"
        assert info.description
        assert all(column.header not in ("NAME", "AGE") for column in info.columns)
        assert any(column.wide for column in info.columns)
        assert any(not column.wide for column in info.columns)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("sites", "Site"),
        ("Site", "Site"),
        ("pop", "Site"),
        ("no", "Node"),
        ("node", "Node"),
        ("DOMAINS", "Domain"),
        ("dom", "Domain"),
        ("wl", "Workload"),
        ("workload", "Workload"),
    ],
)
def test_lookup_by_any_name(name: str, kind: str) -> None:
    assert meta.lookup(name).kind == kind


def test_lookup_unknown() -> None:
    with pytest.raises(UnknownKind, match="'gadgets'"):
        meta.lookup("gadgets")


def test_unknown_kind(site_doc: dict[str, Any]) -> None:
    site_doc["kind"] = "Gadget"
    with pytest.raises(UnknownKind, match="unknown kind 'Gadget'"):
        parse(site_doc)


@pytest.mark.parametrize("api_version", ["edgefleet.io/v2", "v1", None, 1])
def test_bad_api_version(site_doc: dict[str, Any], api_version: object) -> None:
    site_doc["apiVersion"] = api_version
    with pytest.raises(UnknownKind, match="is not served"):
        parse(site_doc)


def test_missing_api_version(site_doc: dict[str, Any]) -> None:
    del site_doc["apiVersion"]
    with pytest.raises(UnknownKind):
        parse(site_doc)


def test_missing_kind_and_not_a_mapping(site_doc: dict[str, Any]) -> None:
    del site_doc["kind"]
    assert failures(site_doc) == ["kind: field required"]
    with pytest.raises(ValidationFailed, match="must be a mapping"):
        parse(["not", "a", "resource"])


def test_expected_kind(site_doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed, match="kind: must be 'Node' here"):
        parse(site_doc, expected_kind="Node")
    assert parse(site_doc, expected_kind="Site").kind == "Site"


def test_unknown_field_named_by_path(site_doc: dict[str, Any]) -> None:
    site_doc["spec"]["location"]["altitude"] = 35
    site_doc["metadata"]["namespace"] = "default"
    site_doc["colour"] = "blue"
    assert sorted(failures(site_doc)) == [
        "colour: unknown field",
        "metadata.namespace: unknown field",
        "spec.location.altitude: unknown field",
    ]


def test_wrong_type(site_doc: dict[str, Any]) -> None:
    site_doc["spec"]["capacityGbps"] = "fast"
    site_doc["spec"]["parents"] = "fra-parent"
    assert failures(site_doc) == [
        "spec.parents: Input should be a valid list",
        "spec.capacityGbps: Input should be a valid number, unable to parse string as a number",
    ]


def test_missing_field(site_doc: dict[str, Any]) -> None:
    del site_doc["spec"]["region"]
    del site_doc["metadata"]
    assert sorted(failures(site_doc)) == ["metadata: Field required", "spec.region: Field required"]


def test_name_length(site_doc: dict[str, Any]) -> None:
    site_doc["metadata"]["name"] = "a" * 253
    assert parse(site_doc).name == "a" * 253
    site_doc["metadata"]["name"] = "a" * 254
    assert failures(site_doc) == ["metadata.name: must be at most 253 characters (got 254)"]


@pytest.mark.parametrize("name", ["Par-Edge", "-par", "par_edge", "par-", "", "a..b"])
def test_bad_names(site_doc: dict[str, Any], name: str) -> None:
    site_doc["metadata"]["name"] = name
    [error] = failures(site_doc)
    assert error.startswith("metadata.name: ")


def test_labels_and_annotations(site_doc: dict[str, Any]) -> None:
    site_doc["metadata"]["labels"] = {"edgefleet.io/role": "cache", "tier": ""}
    site_doc["metadata"]["annotations"] = {"note": "any text, even long: " + "x" * 1000}
    assert parse(site_doc).metadata.labels["tier"] == ""
    site_doc["metadata"]["labels"] = {"bad key!": "x"}
    assert failures(site_doc)[0].startswith("metadata.labels: label key 'bad key!'")
    site_doc["metadata"]["labels"] = {"ok": "v" * 64}
    assert failures(site_doc)[0].startswith("metadata.labels: label value")


def test_server_fields_accepted_on_input(site_doc: dict[str, Any]) -> None:
    site_doc["metadata"].update(uid="u-1", resourceVersion="42", generation=3, creationTimestamp="2024-01-01T00:00:00Z")
    obj = parse(site_doc)
    assert (obj.metadata.uid, obj.metadata.resource_version) == ("u-1", "42")


def test_infinity_and_nan_refused(site_doc: dict[str, Any]) -> None:
    site_doc["spec"]["capacityGbps"] = float("inf")
    site_doc["spec"]["location"]["lat"] = float("nan")
    assert failures(site_doc) == [
        "spec.location.lat: Input should be a finite number",
        "spec.capacityGbps: Input should be a finite number",
    ]


@pytest.mark.parametrize("fixture", ["site_doc", "node_doc", "domain_doc", "workload_doc"])
def test_wire_round_trip(fixture: str, request: pytest.FixtureRequest) -> None:
    obj = parse(request.getfixturevalue(fixture))
    wire = json.loads(json.dumps(obj.to_dict()))
    assert parse(wire) == obj
    assert "status" in wire and wire["status"] == {}


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """The model and every model its fields refer to."""
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        for sub in _referenced(field.annotation):
            _models(sub, seen)
    return seen


def _referenced(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _referenced(arg)]


@pytest.mark.parametrize("cls", kinds.KINDS, ids=lambda cls: cls.KIND)
def test_every_spec_and_status_field_is_described(cls: type[meta.Resource]) -> None:
    seen: set[type[BaseModel]] = set()
    for part in ("spec", "status"):
        _models(cls.model_fields[part].annotation, seen)  # type: ignore[arg-type]
    undocumented = [
        f"{model.__name__}.{name}"
        for model in seen
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []
    assert all(model.__doc__ for model in seen)


@pytest.mark.parametrize("cls", kinds.KINDS, ids=lambda cls: cls.KIND)
def test_json_schema_uses_wire_names(cls: type[meta.Resource]) -> None:
    schema = cls.model_json_schema(by_alias=True)
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(schema["properties"])
    text = json.dumps(schema)
    assert "_" not in "".join(schema["properties"])
    assert "creationTimestamp" in text


def test_field_value_error_extends_path() -> None:
    class Inner(meta.Model):
        items: list[str]

        def model_post_init(self, context: Any) -> None:
            if len(self.items) > 1:
                raise FieldValueError(("items", 1), "too many")

    class Outer(meta.Model):
        inner: Inner

    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        Outer.model_validate({"inner": {"items": ["a", "b"]}})
    assert meta.validation_errors(info.value, ("spec",)) == [FieldError("spec.inner.items[1]", "too many")]


def test_a_document_with_many_errors_gets_the_first_ones_and_a_count() -> None:
    class Many(BaseModel):
        values: list[int]

    with pytest.raises(ValidationError) as info:
        Many.model_validate({"values": ["x"] * (meta.MAX_FIELD_ERRORS + 150)})
    errors = meta.validation_errors(info.value, ("spec",))
    assert len(errors) == meta.MAX_FIELD_ERRORS + 1
    assert errors[0].path == "spec.values[0]" and errors[-2].path == f"spec.values[{meta.MAX_FIELD_ERRORS - 1}]"
    assert errors[-1] == FieldError("", "... and 150 more errors like these")


def test_format_path() -> None:
    assert format_path(("spec", "origins", 0, "url")) == "spec.origins[0].url"
    assert format_path(("spec", "weights", "X", "[key]")) == "spec.weights.X[key]"
    assert format_path(()) == ""
    assert str(FieldError("", "bad")) == "bad"


def test_null_status_is_the_default(site_doc: dict[str, Any]) -> None:
    site_doc["status"] = None
    site = parse(site_doc)
    assert isinstance(site, kinds.Site)
    assert site.status == kinds.SiteStatus()
