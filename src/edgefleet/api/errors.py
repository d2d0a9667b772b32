"""The errors of the ``api`` package: bad resources, named by field path.

How: everything the package raises derives from :class:`ApiError`. Bad input
from a client is always one of its subclasses, with a message meant for the
operator who wrote the manifest; a bug in our own code is a plain Python
exception (``TypeError``, ``ValueError``...), so callers can tell the two apart.

Validators that check several fields at once raise :class:`FieldValueError`
to blame the exact sub-field (``spec.hostnames[1]``) rather than the model
that holds it; :func:`edgefleet.api.meta.validation_errors` reads its ``loc``.
"""

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
    """A label selector string that does not parse.

    ``position`` is the 0-based character offset of the problem in the
    selector text (``None`` when it is not about one place), ``reason`` the
    message without the position.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        self.position = position
        self.reason = message
        super().__init__(message if position is None else f"position {position}: {message}")


class PatchError(ApiError):
    """A patch document that cannot be applied."""


class FieldValueError(ValueError):
    """Raised inside a pydantic validator to blame a field below the validated one.

    ``loc`` is relative to the value being validated and uses wire (camelCase)
    names, e.g. ``FieldValueError(("hostnames", 1), "duplicate hostname")``
    raised by a spec's model validator reports ``spec.hostnames[1]: ...``.
    """

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def format_path(loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into ``spec.origins[0].url``."""
    out = ""
    for part in loc:
        if isinstance(part, int) or part == "[key]":
            # "[key]" is pydantic's marker for "the key of this mapping entry".
            out += f"[{part}]" if isinstance(part, int) else part
        else:
            out += f".{part}" if out else str(part)
    return out
