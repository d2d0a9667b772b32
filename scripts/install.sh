#!/usr/bin/env bash
# Install everything edgefleet and its tests need on a fresh Debian machine:
# Debian packages (etcd for the store tests, nginx and wrk for the cache
# benchmark, knot and dnsperf for the DNS benchmark, dig (bind9-dnsutils) and curl for
# the commands `edgefleet up` prints, prometheus for the fleet-metrics e2e test, docker-registry and skopeo
# for the OCI pull-through mirror e2e test, gcc and python3-dev to build the GSLB's batched datagram I/O
# extension, src/edgefleet/gslb/_dgram.c) and a virtualenv in .venv with edgefleet and its development tools.
# Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(etcd-server etcd-client nginx wrk knot dnsperf chromium chromium-driver bind9-dnsutils curl prometheus docker-registry skopeo gcc python3-dev)

need_apt=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "==> installing Debian packages: ${need_apt[*]}"
  # The nginx package starts a system nginx on port 80 from its postinst, and
  # the knot package a system knotd on port 53. The benchmarks run their own
  # nginx and knotd (config in a temporary directory) on free ports, so a
  # policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d and
  # deb-systemd-invoke from starting services during this install. An existing policy-rc.d (Docker images ship one) is left as is.
  policy_rc=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
    $SUDO chmod 755 "$policy_rc"
    added_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null \
    || { [ -z "$added_policy" ] || $SUDO rm -f "$policy_rc"; exit 1; }
  [ -z "$added_policy" ] || $SUDO rm -f "$policy_rc"
  # Belt and braces: if a system nginx got started anyway, stop it (it would hold port 80).
  if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    echo "==> stopping the system nginx started by the package"
    $SUDO nginx -s stop || true
  fi
  # Likewise a system knotd (it would hold port 53); knotc asks it to stop through its control socket.
  if [ -S /run/knot/knot.sock ] && command -v knotc >/dev/null; then
    echo "==> stopping the system knotd started by the package"
    $SUDO knotc -s /run/knot/knot.sock stop >/dev/null 2>&1 || true
  fi
fi
# The policy-rc.d above also keeps a fresh etcd-server from starting a system
# etcd on 2379; one already running is left alone: edgefleet's tests and demo
# start their own etcd and nginx on free ports.

# The virtualenv: $EDGEFLEET_VENV (default .venv), made with $PYTHON (default python3; 3.11 or later).
# The product's .venv stays on python3: measured on this VM, the cache's hit path and the DNS server run
# 7-13% slower on 3.12.1 than on 3.11.7. scripts/test.sh makes a second one, .venv-test, with 3.12 when the
# machine has it (scripts/find-python.sh), because coverage is much cheaper there.
VENV=${EDGEFLEET_VENV:-.venv}
PYTHON=${PYTHON:-python3}
version_of() { "$1" -c 'import platform; print(platform.python_version())'; }
if [ -x "$VENV/bin/python" ] && [ "${EDGEFLEET_RECREATE_VENV:-}" = 1 ]; then
  echo "==> EDGEFLEET_RECREATE_VENV=1: removing $VENV (Python $(version_of "$VENV/bin/python"))"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with Python $(version_of "$PYTHON") ($PYTHON)"
  "$PYTHON" -m venv "$VENV"
elif [ "$(version_of "$VENV/bin/python")" != "$(version_of "$PYTHON")" ]; then
  # A developer's venv is never replaced behind their back; CI starts from a fresh clone.
  echo "==> keeping $VENV (Python $(version_of "$VENV/bin/python")); EDGEFLEET_RECREATE_VENV=1 rebuilds it" \
    "with Python $(version_of "$PYTHON") ($PYTHON)"
else
  echo "==> using $VENV (Python $(version_of "$VENV/bin/python"))"
fi
echo "==> installing edgefleet into $VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[dev]'
# The extension is optional in pyproject.toml (the DNS server falls back to one datagram per system call),
# so a failed build does not stop the install: say so here, where it can be fixed.
"$VENV/bin/python" -c 'import edgefleet.gslb._dgram' 2>/dev/null \
  || echo "==> warning: edgefleet.gslb._dgram was not built (gcc and the Python headers?): DNS runs without batched I/O" >&2
# Byte-compile the package (an editable install leaves it as source): every cloud, agent and cache process
# the tests and `edgefleet up` start imports it, and where PYTHONDONTWRITEBYTECODE is set (CI's image sets it)
# each would compile it again, about 0.3 CPU-seconds per process. compileall writes the files regardless.
"$VENV/bin/python" -m compileall -q src/edgefleet >/dev/null
echo "==> installed in $VENV: $("$VENV/bin/edgefleet" version --client)"
