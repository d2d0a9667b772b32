#!/usr/bin/env bash
# Install everything edgefleet and its tests need on a fresh Debian machine:
# Debian packages (etcd for the store tests, nginx and wrk for the cache
# benchmark, knot and dnsperf for the DNS benchmark, dig (bind9-dnsutils) and curl for
# the commands `edgefleet up` prints, prometheus for the fleet-metrics e2e test, docker-registry and skopeo
# for the OCI pull-through mirror e2e test) and a virtualenv in .venv with
# edgefleet and its development tools. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(etcd-server etcd-client nginx wrk knot dnsperf chromium chromium-driver bind9-dnsutils curl prometheus docker-registry skopeo)

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

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "==> installing edgefleet into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "==> installed: $(.venv/bin/edgefleet version --client)"
