#!/usr/bin/env bash
# Print a Python of version $1 (e.g. 3.12) that can make a virtualenv, or exit 1: `python$1`, then pyenv's.
# Each candidate is run, not just found: a pyenv shim for a version that is not selected exists but fails,
# and a Debian python3.12 without python3.12-venv cannot make a venv.
set -uo pipefail
want=${1:?usage: scripts/find-python.sh 3.12}
works() {
  "$1" -c "import ensurepip, sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" \
    >/dev/null 2>&1
}
candidates=("python$want")
if command -v pyenv >/dev/null 2>&1; then
  candidates+=("$(pyenv root)"/versions/"$want".*/bin/python3)
fi
for candidate in "${candidates[@]}"; do
  if works "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done
exit 1
