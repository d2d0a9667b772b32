"""A resourceVersion from a query string is a decimal store revision or a 422, never a crash.

Found by tests/e2e/test_openapi_fuzz.py: ``DELETE .../nodes/x?resourceVersion=¹``
answered 500, because ``str.isdigit()`` accepts superscript digits that
``int()`` refuses.
"""

from __future__ import annotations

import pytest

from edgefleet.api.errors import ValidationFailed
from edgefleet.cloud.registry import parse_resource_version


def test_decimal_revisions_and_no_precondition() -> None:
    assert parse_resource_version("0042") == 42
    assert parse_resource_version("") == 0
    assert parse_resource_version(None) == 0


@pytest.mark.parametrize("bad", ["¹", "²3", "٣", "-1", "1.0", " 1", "x"])
def test_anything_else_is_a_validation_failure(bad: str) -> None:
    with pytest.raises(ValidationFailed, match="resourceVersion"):
        parse_resource_version(bad, field="resourceVersion")
