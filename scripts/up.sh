#!/usr/bin/env bash
# The main job: install edgefleet, then run a whole CDN on this machine with `edgefleet up`:
# the cloud (SQLite store, API, dashboard, GSLB DNS), a demo origin, a parent site and two
# edge sites of two nodes, every node an agent running its cache on its own 127.0.x.y
# address. It waits until all is ready, prints how to try it, and Ctrl-C stops everything.
#   scripts/up.sh                         # data in ./edgefleet-up (DATA=dir to change it)
#   scripts/up.sh --sites 3 --nodes 3     # any `edgefleet up` option (see --help)
#   scripts/up.sh --detach                # leave it running; .venv/bin/edgefleet down stops it
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/edgefleet up --data "${DATA:-./edgefleet-up}" "$@"
