"""Schemathesis against the served OpenAPI document of a real cloud process.

Bounded: a fixed number of generated requests per operation. It asserts no
5xx, every response conforms to its documented schema, status code and
content type. Watches are capped at one second so a generated watch request
cannot hang the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.cloudproc import CloudProcess, running_cloud

MAX_EXAMPLES = 12
"""Per operation. 25 made this one of the suite's longest modules once Secrets and more operations came;
15 took 135 s alone and over 300 s beside the rest of the suite once Certificates came (131 operations)."""
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzzed_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    with running_cloud(f"sqlite:///{data}/store.db", data) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def api_schema(fuzzed_cloud: CloudProcess) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_cloud.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@pytest.mark.timeout(600)  # one test for every operation: the suite's 300 s per test is too tight on 2 busy cores
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_openapi_document(case: Any, fuzzed_cloud: CloudProcess) -> None:
    if isinstance(case.query, dict) and case.query.get("watch") not in (None, False, "false"):
        case.query["timeoutSeconds"] = 1
    case.call_and_validate(
        base_url=fuzzed_cloud.url,
        headers={"Authorization": f"Bearer {fuzzed_cloud.token}"},
        checks=CHECKS,
        timeout=15,
    )
