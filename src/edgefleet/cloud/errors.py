"""The error body every API failure returns, and the mapping from exceptions.

How: every error is a ``Status`` document (the Kubernetes shape): a reason
word, the HTTP code, a message that says what to do next and, for invalid
objects, one cause per field path. Exceptions of the lower layers (api,
registry, auth, store) are mapped here once, so handlers never build error
responses by hand.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from edgefleet.api.documents import JSONObject
from edgefleet.api.errors import PatchError, SelectorError, UnknownKind, ValidationFailed
from edgefleet.api.meta import API_VERSION
from edgefleet.cloud.auth import Forbidden, Unauthorized
from edgefleet.cloud.registry import RegistryError
from edgefleet.store.interface import Unavailable


class StatusCause(BaseModel):
    field: str = Field(description="field path, such as spec.origins[0].url")
    message: str


class StatusDetails(BaseModel):
    causes: list[StatusCause] = Field(default_factory=list)


class Status(BaseModel):
    """The body of every error response."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = "Status"
    status: str = "Failure"
    reason: str
    code: int
    message: str
    details: StatusDetails | None = None

    model_config = {"populate_by_name": True}


def status_body(code: int, reason: str, message: str, causes: list[StatusCause] | None = None) -> JSONObject:
    details = StatusDetails(causes=causes) if causes else None
    status = Status(reason=reason, code=code, message=message, details=details)
    return status.model_dump(by_alias=True, exclude_none=True)


def from_exception(exc: Exception) -> JSONObject | None:
    """The Status body for a known exception, or None for a bug (-> 500)."""
    if isinstance(exc, ValidationFailed):
        causes = [StatusCause(field=e.path, message=e.message) for e in exc.errors]
        return status_body(422, "Invalid", f"invalid object: {exc}", causes)
    if isinstance(exc, UnknownKind | SelectorError | PatchError):
        return status_body(400, "BadRequest", str(exc))
    if isinstance(exc, RegistryError):
        return status_body(exc.status, exc.reason, str(exc))
    if isinstance(exc, Unauthorized):
        return status_body(401, "Unauthorized", str(exc))
    if isinstance(exc, Forbidden):
        return status_body(403, "Forbidden", str(exc))
    if isinstance(exc, Unavailable):
        return status_body(503, "ServiceUnavailable", f"the store is unavailable: {exc}; retry later")
    return None
