#!/usr/bin/env bash
# Install what the tests need, then run the formatters and linters, the import contracts, the type checker
# and the test suite with coverage. Extra arguments go to pytest, e.g. scripts/test.sh -k store -x
#
# Which Python: the product's .venv is made with python3 (scripts/install.sh). When the machine also has
# Python 3.12, the checks and tests run in a second virtualenv, .venv-test, made with it: there coverage
# listens through sys.monitoring (PEP 669, COVERAGE_CORE=sysmon) instead of a trace function, which cost
# 46-77% more CPU in the pytest processes on 3.11 and about 2% on 3.12. mypy and ruff check against 3.11
# (pyproject.toml), so code that needs 3.12 is refused. EDGEFLEET_TEST_PYTHON=python3 runs them in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
venv=.venv
test_python=${EDGEFLEET_TEST_PYTHON:-$(scripts/find-python.sh 3.12 || true)}
if [ -n "$test_python" ] && [ "$test_python" != python3 ]; then
  venv=.venv-test
  EDGEFLEET_VENV=$venv PYTHON=$test_python scripts/install.sh
fi
echo "==> ruff (lint and format)"
"$venv/bin/ruff" check src tests bench
"$venv/bin/ruff" format --check src tests bench
echo "==> import contracts (lint-imports; docs/architecture.md, \"Layering\")"
"$venv/bin/lint-imports" --no-cache
echo "==> mypy (strict: src/ and tests/)"
"$venv/bin/mypy"
echo "==> pytest"
# Two workers (the CI machine has 2 cores; most e2e time is waiting on real processes), whole modules
# per worker so module-scoped fleets are built once; tests/conftest.py starts the longest modules first.
# Coverage is measured in the pytest processes (unit tests and in-process servers), not in the
# cloud, agent and cache processes the end-to-end tests start; the floor holds that figure.
# The floor applies to the whole suite only (a subset covers less).
coverage=(--cov=edgefleet --cov-report=)
if "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  export COVERAGE_CORE=${COVERAGE_CORE:-sysmon}  # line coverage only (branch = false in pyproject.toml)
fi
echo "python $("$venv/bin/python" -c 'import platform; print(platform.python_version())') ($venv)," \
  "coverage core: ${COVERAGE_CORE:-default (trace function)}"
[ $# -gt 0 ] || coverage+=(--cov-fail-under="${COVERAGE_FLOOR:-80}")
"$venv/bin/pytest" -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder "${coverage[@]}" "$@"
echo "==> coverage (pytest processes; weakest modules first)"
"$venv/bin/coverage" report --skip-covered --sort=cover 2>/dev/null | head -n 15 || true
echo "total coverage: $("$venv/bin/coverage" report --format=total)%"
