"""Object metadata, the resource base class and the kind registry.

How: every resource is a pydantic model ``{apiVersion, kind, metadata, spec,
status}``. Models forbid unknown fields, use camelCase on the wire and
snake_case in Python, and report errors by field path
(``spec.origins[0].url: ...``) through :func:`parse`.

Adding a kind is cheap: define ``FooSpec``, ``FooStatus`` and
``class Foo(Resource)`` with ``kind: Literal["Foo"]``, then call
:func:`register` with its plural, short names and table columns, and add
its names and module to :data:`edgefleet.api.kindtable.KIND_NAMES`. The API
server, the OpenAPI document and the CLI pick it up from the registry, which
imports a kind's module the first time the kind is asked for: a process
that handles only Nodes never loads the other models.

Server-owned metadata (uid, resourceVersion, generation,
creationTimestamp) is accepted on input but replaced by the server; see
:mod:`edgefleet.api.lifecycle`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from edgefleet.api.doccolumns import DocColumn
from edgefleet.api.documents import JSONObject
from edgefleet.api.errors import (
    FieldError,
    FieldValueError,
    UnknownKind,
    ValidationFailed,
    format_path,
)
from edgefleet.api.kindtable import API_VERSION as API_VERSION  # re-exported: the models' default
from edgefleet.api.kindtable import KIND_NAMES, KindName, by_kind, find, plurals

API_GROUP = "edgefleet.io"
MAX_NAME_LENGTH = 253
MAX_LABEL_VALUE_LENGTH = 63
MAX_ANNOTATIONS_BYTES = 256 * 1024

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def check_dns1123_subdomain(value: str) -> str:
    """A lowercase DNS name: ``a-z0-9``, ``-`` and ``.``, at most 253 characters."""
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters (got {len(value)})")
    if not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 name: use lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_dns1123_label(value: str, max_length: int = MAX_LABEL_VALUE_LENGTH) -> str:
    """One lowercase DNS label: ``a-z0-9`` and ``-``, at most ``max_length`` characters."""
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters (got {len(value)})")
    if not _DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def check_label_key(key: str) -> str:
    """``[prefix/]name``: prefix a DNS subdomain, name at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        check_dns1123_subdomain(prefix)
    if not name or len(name) > MAX_LABEL_VALUE_LENGTH or not _LABEL_NAME.match(name):
        raise ValueError(
            f"label key {key!r}: the name part must be 1-63 characters of letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return key


def check_label_value(value: str) -> str:
    """Empty, or at most 63 characters of letters, digits, ``-_.``."""
    if value and (len(value) > MAX_LABEL_VALUE_LENGTH or not _LABEL_NAME.match(value)):
        raise ValueError(
            f"label value {value!r} must be at most 63 characters of letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return value


class Model(BaseModel):
    """Base of every wire model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_assignment=False,
        # NaN and infinities are never meaningful in a manifest (and ``inf``
        # would pass every ``gt=0`` bound), so YAML's ``.inf``/``.nan`` are refused.
        allow_inf_nan=False,
    )


class ObjectMeta(Model):
    """Identity and bookkeeping every object carries; the server owns the last four."""

    name: str = Field(description="DNS-1123 name, unique per kind")
    labels: dict[str, str] = Field(default_factory=dict, description="Key/value pairs that selectors match")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Free-form notes for tools and people, not selectable"
    )
    uid: str | None = Field(default=None, description="set by the server")
    resource_version: str | None = Field(
        default=None, description="store revision of the last change; set by the server"
    )
    generation: int | None = Field(default=None, description="bumped by the server on every spec change")
    creation_timestamp: str | None = Field(default=None, description="RFC 3339, set by the server")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_dns1123_subdomain(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label_value in value.items():
            check_label_key(key)
            check_label_value(label_value)
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        size = sum(len(k) + len(v) for k, v in value.items())
        if size > MAX_ANNOTATIONS_BYTES:
            raise ValueError(f"annotations total {size} bytes; the limit is {MAX_ANNOTATIONS_BYTES}")
        for key in value:
            check_label_key(key)
        return value


class Resource(Model):
    """Base of every kind. Subclasses narrow ``kind``, ``spec`` and ``status``."""

    api_version: str = Field(default=API_VERSION, description="always edgefleet.io/v1")
    kind: str
    metadata: ObjectMeta
    spec: Any
    status: Any = None

    KIND: ClassVar[str] = ""

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value != API_VERSION:
            raise ValueError(f"must be {API_VERSION!r} (got {value!r})")
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _null_status(cls, value: Any) -> Any:
        # ``status:`` with nothing after it (YAML null) means "no status yet":
        # the kind's default, as if the key were absent.
        if value is None:
            return cls.model_fields["status"].get_default(call_default_factory=True)
        return value

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_dict(self) -> JSONObject:
        """The wire form (camelCase, ``None`` fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Getter = Callable[[Resource], str]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column for ``edgefleet get``; ``wide`` columns show with ``-o wide``.

    A kind's ``columns`` come in display order between NAME and AGE, which
    ``edgefleet get`` adds itself from the metadata.
    """

    header: str
    value: Getter
    wide: bool = False


def document_columns(columns: tuple[DocColumn, ...]) -> tuple[Column, ...]:
    """Columns read from the wire document (:mod:`edgefleet.api.doccolumns`) as columns of a model:
    each reads the model's wire form (``to_dict``), so the CLI, which reads the document the server
    sends, and a model's ``KindInfo.columns`` show the same cells from one definition."""
    return tuple(Column(c.header, _through_document(c.value), c.wide) for c in columns)


def _through_document(value: Callable[[JSONObject], str]) -> Getter:
    return lambda obj: value(obj.to_dict())


@dataclass(frozen=True, slots=True)
class KindInfo:
    """What the API server, the CLI and the docs need to know about one kind."""

    kind: str
    plural: str
    model: type[Resource]
    short_names: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()


_KINDS: dict[str, KindInfo] = {}


def register(info: KindInfo) -> KindInfo:
    """Add a kind to the registry (done at import time by each kind module)."""
    _KINDS[info.kind] = info
    return info


def _loaded(name: KindName) -> KindInfo | None:
    """The registered info of a kind in the table, importing its module the first time."""
    if name.kind not in _KINDS:
        importlib.import_module(name.module)
    return _KINDS.get(name.kind)


def all_kinds() -> list[KindInfo]:
    """Every kind, in table order (this imports every kind module), then any registered elsewhere."""
    listed = [info for info in map(_loaded, KIND_NAMES) if info is not None]
    return listed + [info for kind, info in _KINDS.items() if by_kind(kind) is None]


def kind_info(kind: str) -> KindInfo:
    """The info of ``kind`` (exact spelling); imports only the module that defines it."""
    name = by_kind(kind)
    info = _loaded(name) if name is not None else _KINDS.get(kind)
    if info is None:
        known = sorted({entry.kind for entry in KIND_NAMES} | set(_KINDS))
        raise UnknownKind(f"unknown kind {kind!r}; known kinds: {', '.join(known)}")
    return info


def lookup(name: str) -> KindInfo:
    """Find a kind by kind, singular, plural or short name, case-insensitively.

    Only the module of the kind found is imported (see :mod:`edgefleet.api.kindtable`).
    """
    entry = find(name)
    if entry is not None:
        return kind_info(entry.kind)
    wanted = name.lower()
    for info in _KINDS.values():
        if wanted in (info.kind.lower(), info.plural, info.singular, *info.short_names):
            return info
    known = ", ".join(sorted({*plurals(), *(i.plural for i in _KINDS.values())}))
    raise UnknownKind(f"unknown resource type {name!r}; known: {known}")


MAX_FIELD_ERRORS = 50
"""Field errors reported for one document; the rest are counted in one last entry, so a large invalid
document (a Workload status with one entry per site) cannot make an answer many times its own size."""


def validation_errors(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[FieldError]:
    """Translate pydantic's errors into field-path errors (at most :data:`MAX_FIELD_ERRORS`, then a count).

    A :class:`FieldValueError` raised by a validator extends the location
    with its own ``loc``, so cross-field checks blame the exact sub-field.
    """
    out: list[FieldError] = []
    items = error.errors(include_url=False)
    for item in items[:MAX_FIELD_ERRORS]:
        loc = prefix + tuple(item["loc"])
        message = str(item["msg"])
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldValueError):
            loc += cause.loc
            message = cause.message
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        out.append(FieldError(format_path(loc), message))
    if len(items) > MAX_FIELD_ERRORS:
        out.append(FieldError("", f"... and {len(items) - MAX_FIELD_ERRORS} more errors like these"))
    return out


def parse(document: object, *, expected_kind: str | None = None) -> Resource:
    """Validate a decoded YAML/JSON document into its kind's model.

    Raises UnknownKind for a missing or unknown ``kind``/``apiVersion`` and
    ValidationFailed with field paths for everything else.
    """
    if not isinstance(document, dict):
        raise ValidationFailed([FieldError("", "a resource must be a mapping (object)")])
    kind = document.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValidationFailed([FieldError("kind", "field required")])
    if expected_kind is not None and kind != expected_kind:
        raise ValidationFailed([FieldError("kind", f"must be {expected_kind!r} here (got {kind!r})")])
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise UnknownKind(f"apiVersion {api_version!r} is not served; use {API_VERSION!r}")
    info = kind_info(kind)
    try:
        return info.model.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None
