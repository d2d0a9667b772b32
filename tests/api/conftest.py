"""Fixtures for the api tests: a fresh valid manifest per kind (see helpers)."""

from __future__ import annotations

import pytest

from . import helpers
from .helpers import Doc


@pytest.fixture
def site_doc() -> Doc:
    return helpers.site()


@pytest.fixture
def node_doc() -> Doc:
    return helpers.node()


@pytest.fixture
def domain_doc() -> Doc:
    return helpers.domain()


@pytest.fixture
def workload_doc() -> Doc:
    return helpers.workload()
