"""Every wire model field has its camelCase alias (a forward-referenced Annotated type once silently lost them)."""

from __future__ import annotations

import importlib
import pkgutil

from pydantic.alias_generators import to_camel

import edgefleet.api
from edgefleet.api.meta import Model


def all_models() -> list[type[Model]]:
    for module in pkgutil.iter_modules(edgefleet.api.__path__):
        importlib.import_module(f"edgefleet.api.{module.name}")
    found: list[type[Model]] = []
    pending: list[type[Model]] = [Model]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


def test_every_field_of_every_model_has_its_camel_case_alias() -> None:
    models = all_models()
    assert len(models) > 50
    wrong = [
        f"{model.__module__}.{model.__name__}.{name}: alias {info.alias!r}"
        for model in models
        for name, info in model.model_fields.items()
        if (info.alias or name) != to_camel(name) and info.alias is None
    ]
    assert wrong == []
