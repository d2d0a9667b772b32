#!/usr/bin/env bash
# Install what the tests need, then run the linters, the type checker and the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
echo "==> ruff"
.venv/bin/ruff check src tests bench
echo "==> mypy (strict, src/)"
.venv/bin/mypy
echo "==> pytest"
# Two workers (the CI machine has 2 cores; most e2e time is waiting on real processes), whole modules
# per worker so module-scoped fleets are built once.
exec .venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
