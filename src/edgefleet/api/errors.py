"""The errors of the ``api`` package: bad resources, named by field path."""

from __future__ import annotations

from dataclasses import dataclass


class ApiError(Exception):
    """Base of every error the ``api`` package raises."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field. ``path`` reads like ``spec.origins[0].url``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ValidationFailed(ApiError):
    """A resource (or a part of one) is invalid; ``errors`` says where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class UnknownKind(ApiError):
    """The document names a kind (or apiVersion) that edgefleet does not serve."""


class SelectorError(ApiError):
    """A label selector string that does not parse."""


class PatchError(ApiError):
    """A patch document that cannot be applied."""


def format_path(loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into ``spec.origins[0].url``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
