#!/usr/bin/env bash
# Install what the tests need, then run the formatters and linters, the import contracts, the type checker
# and the test suite with coverage. Extra arguments go to pytest, e.g. scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
echo "==> ruff (lint and format)"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "==> import contracts (lint-imports; docs/architecture.md, \"Layering\")"
.venv/bin/lint-imports --no-cache
echo "==> mypy (strict: src/ and tests/)"
.venv/bin/mypy
echo "==> pytest"
# Two workers (the CI machine has 2 cores; most e2e time is waiting on real processes), whole modules
# per worker so module-scoped fleets are built once; tests/conftest.py starts the longest modules first.
# Coverage is measured in the pytest processes (unit tests and in-process servers), not in the
# cloud, agent and cache processes the end-to-end tests start; the floor holds that figure.
# The floor applies to the whole suite only (a subset covers less).
coverage=(--cov=edgefleet --cov-report=)
[ $# -gt 0 ] || coverage+=(--cov-fail-under="${COVERAGE_FLOOR:-80}")
.venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder "${coverage[@]}" "$@"
echo "==> coverage (pytest processes; weakest modules first)"
.venv/bin/coverage report --skip-covered --sort=cover 2>/dev/null | head -n 15 || true
echo "total coverage: $(.venv/bin/coverage report --format=total)%"
