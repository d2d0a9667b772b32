"""Schemathesis against the served OpenAPI document of a real cloud process.

Bounded: a fixed number of generated requests per operation. It asserts no
5xx, every response conforms to its documented schema, status code and
content type. Watches are capped at one second so a generated watch request
cannot hang the run.

Where the time goes (profiled): most of it is schemathesis' coverage phase
(boundary and negative values for every field, not bounded by
``max_examples``: about 27,000 requests, 2,500 for each operation that takes
a Domain), the rest is the fuzzing phase (12 random cases per operation) and
the HTTP round trips. So:

- the coverage phase runs on ``POST`` (create) and every other operation,
  but not on the two ``PUT`` of a kind (``/{name}`` and ``/{name}/status``):
  the server parses their body with the same ``parse`` as create before it
  looks at the name or the stored object (cloud/registry.py ``replace``), so
  the same boundary bodies would only meet the same validation three times.
  Both ``PUT`` still get the fuzzing phase (valid and invalid bodies) and
  the coverage phase of their path parameter runs on ``GET``/``PATCH``/
  ``DELETE`` of the same path;
- the list operation (``GET`` of a kind's collection, with its selectors,
  paging and watch parameters) gets the coverage phase for Sites only: every
  kind's list is the same generic route with the same query parameters
  (cloud/server.py ``_add_kind_routes``), and the coverage phase's watch
  cases wait a second each; the other kinds' lists get the fuzzing phase;
- every request goes over one keep-alive session that ignores proxy
  variables (schemathesis otherwise opens a new session, a new connection
  and reads the proxy environment for each of the 27,000 requests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import coverage
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.requests import ManagedCookiesSession

from tests.cloudproc import CloudProcess, running_cloud

MAX_EXAMPLES = 12
"""Per operation. 25 made this one of the suite's longest modules once Secrets and more operations came;
15 took 135 s alone and over 300 s beside the rest of the suite once Certificates came (131 operations)."""
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {  # the replace and status-replace of every kind: their bodies meet create's parser (see above)
                "include-name-regex": r"^PUT /apis/edgefleet\.io/v1/[a-z]+/\{name\}(/status)?$",
                "phases": {"coverage": {"enabled": False}},
            },
            {  # the list (and watch) of every kind but Sites: one generic route with the same parameters
                "include-name-regex": r"^GET /apis/edgefleet\.io/v1/(?!sites$)[a-z]+$",
                "phases": {"coverage": {"enabled": False}},
            },
        ]
    }
)


@pytest.fixture(scope="module", autouse=True)
def coverage_paused() -> Iterator[None]:
    """No coverage tracing in this module: its pytest side is schemathesis and hypothesis generating
    requests (the cloud under test is a child process, which coverage does not trace), and tracing them
    cost about half again the module's CPU for no line of edgefleet."""
    current = coverage.Coverage.current()
    if current is None:
        yield
        return
    current.stop()
    try:
        yield
    finally:
        current.start()


@pytest.fixture(scope="module")
def fuzzed_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    with running_cloud(f"sqlite:///{data}/store.db", data) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def api_schema(fuzzed_cloud: CloudProcess) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_cloud.url}/openapi.json", config=CONFIG)


@pytest.fixture(scope="module")
def session() -> Iterator[ManagedCookiesSession]:
    """One keep-alive session for every request; no proxy from the environment (a loopback cloud)."""
    with ManagedCookiesSession() as kept:
        kept.trust_env = False
        yield kept


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@pytest.mark.timeout(600)  # one test for every operation: the suite's 300 s per test is too tight on 2 busy cores
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_openapi_document(
    case: Any, fuzzed_cloud: CloudProcess, session: ManagedCookiesSession
) -> None:
    if isinstance(case.query, dict) and case.query.get("watch") not in (None, False, "false"):
        case.query["timeoutSeconds"] = 1
    if case.path == "/apis/edgefleet.io/v1/watch" and isinstance(case.query, dict):  # the multiplexed watch
        case.query["timeoutSeconds"] = 1
    case.call_and_validate(
        session=session,
        base_url=fuzzed_cloud.url,
        headers={"Authorization": f"Bearer {fuzzed_cloud.token}"},
        checks=CHECKS,
        timeout=15,
    )
