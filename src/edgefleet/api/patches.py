"""JSON merge patch (RFC 7386): ``edgefleet patch`` and ``PATCH`` requests.

How: :func:`merge_patch` follows the RFC's pseudo-code. A patch that is an
object is merged member by member into the target (made an object if it is
not one): ``null`` removes a member, anything else replaces it, recursively.
Any other patch (array, string, number...) replaces the target whole, so
arrays cannot be patched element-wise; send the whole array.
:func:`make_merge_patch` computes the patch that turns one document into
another, for ``apply`` and ``edit``.

Why pure: the result is a fresh document that shares nothing with either
input, so the caller may keep, mutate or cache all three. Resources are
re-validated after patching (:func:`patch_resource`), so a patch can never
produce an object the schema refuses.

Security limit: documents nested deeper than :data:`MAX_DEPTH` are refused
with :class:`PatchError` instead of exhausting the stack.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from edgefleet.api.documents import JSONObject
from edgefleet.api.errors import PatchError
from edgefleet.api.meta import Resource, parse

MAX_DEPTH = 64
"""Security limit on the nesting depth of patches and documents."""

R = TypeVar("R", bound=Resource)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply RFC 7386 ``patch`` to ``target`` and return the new document."""
    _check_depth(target, "document")
    _check_depth(patch, "patch")
    # Work on a private copy of the target; patch values are copied as inserted.
    return _merge(copy.deepcopy(target), patch)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JSONObject = target if isinstance(target, dict) else {}
    for name, value in patch.items():
        if not isinstance(name, str):
            raise PatchError(f"patch member names must be strings (got {name!r})")
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge(result.get(name), value)
    return result


def _check_depth(value: Any, what: str) -> None:
    """Refuse values nested past MAX_DEPTH, without recursing."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            raise PatchError(f"{what} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)


def make_merge_patch(source: Any, target: Any) -> Any:
    """The merge patch that turns ``source`` into ``target``.

    ``merge_patch(source, make_merge_patch(source, target)) == target``
    holds whenever ``target`` contains no ``null`` inside an object, which
    merge patch cannot express (RFC 7386, section 1).
    """
    _check_depth(source, "document")
    _check_depth(target, "document")
    return _diff(source, target)


def _diff(source: Any, target: Any) -> Any:
    if not isinstance(source, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    patch: JSONObject = {name: None for name in source if name not in target}
    for name, value in target.items():
        if name not in source:
            patch[name] = copy.deepcopy(value)
        elif source[name] != value:
            patch[name] = _diff(source[name], value)
    return patch


def patch_resource(obj: R, patch: Any) -> R:
    """Apply a merge patch to a resource and validate the result as the same kind.

    Raises PatchError when the patch is not an object, ValidationFailed when
    the patched document is invalid. Server-owned fields are handled later by
    :func:`edgefleet.api.lifecycle.prepare_update`.
    """
    if not isinstance(patch, dict):
        raise PatchError("a resource merge patch must be a JSON object")
    document = merge_patch(obj.to_dict(), patch)
    result = parse(document, expected_kind=obj.kind)
    if not isinstance(result, type(obj)):
        raise PatchError(f"patched object is a {type(result).__name__}, not {obj.kind}")
    return result
