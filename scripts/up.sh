#!/usr/bin/env bash
# The main job: install edgefleet, start the cloud on SQLite, apply examples/ and
# show what is there. The cloud keeps running until Ctrl-C.
#   DATA=./edgefleet-data LISTEN=127.0.0.1:7440 scripts/up.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
DATA=${DATA:-./edgefleet-data}
LISTEN=${LISTEN:-127.0.0.1:7440}
mkdir -p "$DATA"
export EDGEFLEET_SERVER="http://$LISTEN"
ef=.venv/bin/edgefleet

echo "==> starting the cloud on $LISTEN (store: sqlite:///$DATA/store.db)"
$ef cloud --listen "$LISTEN" --store "sqlite:///$DATA/store.db" --admin-token-file "$DATA/admin-token" &
cloud_pid=$!
trap 'kill $cloud_pid 2>/dev/null; wait $cloud_pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS "http://$LISTEN/readyz" >/dev/null 2>&1 && break
  kill -0 $cloud_pid 2>/dev/null || { echo "the cloud exited; see the error above" >&2; exit 1; }
  sleep 0.1
done
if [ ! -s "$DATA/admin-token" ]; then
  echo "no admin token in $DATA/admin-token (the store existed before); export EDGEFLEET_TOKEN yourself" >&2
fi
export EDGEFLEET_TOKEN=${EDGEFLEET_TOKEN:-$(cat "$DATA/admin-token" 2>/dev/null || true)}

echo "==> applying examples/"
$ef apply -f examples/
for kind in sites nodes domains workloads; do
  echo; echo "==> edgefleet get $kind"; $ef get "$kind" -o wide
done
cat <<MSG

The cloud is running at http://$LISTEN (Ctrl-C stops it). In another shell:

  export EDGEFLEET_SERVER=http://$LISTEN EDGEFLEET_TOKEN=\$(cat $DATA/admin-token)
  .venv/bin/edgefleet get sites -w
  .venv/bin/edgefleet describe site par-edge
  curl -s http://$LISTEN/metrics | grep edgefleet_

MSG
wait $cloud_pid
