#!/bin/bash
# A soak of five local daemons for MINUTES (default 60): a submission every ~10 s from a
# rotating node, a disruption every DISRUPT_EVERY s (kill -9, SIGTERM, restart of the next
# submitter, in turn), samples of each daemon every minute; then the checks. See README.md.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export SOAK_DIR=${SOAK_DIR:-/tmp/directord-soak}
MINUTES=${1:-60}
BIN=${DIRECTORD_MESH_BIN:-$HERE/../../target/release/directord-mesh}
if [ ! -x "$BIN" ]; then
  echo "no directord-mesh binary at $BIN: run 'cargo build --release -p directord-mesh' or set DIRECTORD_MESH_BIN" >&2
  exit 2
fi
if [ -e "$SOAK_DIR" ]; then
  echo "$SOAK_DIR exists (an earlier soak?): remove it or set SOAK_DIR" >&2
  exit 2
fi
mkdir -p "$SOAK_DIR"/{logs,runs,subs,samples,payload,dest}
cp "$BIN" "$SOAK_DIR/directord-mesh"
cp "$HERE"/*.sh "$HERE"/*.py "$SOAK_DIR/"
cd "$SOAK_DIR" || exit 2
./start-node.sh 1 > /dev/null
for _ in $(seq 1 100); do [ -s n1/join-token ] && break; sleep 0.1; done
for n in 2 3 4 5; do ./start-node.sh $n > /dev/null; done
sleep 5
nohup ./sampler.sh > /dev/null 2>&1 &
nohup ./soak-loop.sh > logs/loop.out 2>&1 &
loop=$!
echo "soaking for $MINUTES min in $SOAK_DIR (submissions.csv, samples/, logs/)"
sleep $((MINUTES * 60))
touch STOP STOP_SAMPLER
wait $loop 2> /dev/null
while pgrep -f "$SOAK_DIR/soak-loop.sh" > /dev/null; do sleep 1; done
# Results owed by nodes restarted lately come within a few seconds.
sleep 20
./check-results.py
./dups.sh
./logsummary.sh
./trend.py
for n in 1 2 3 4 5; do kill -TERM "$(cat n$n.pid)" 2> /dev/null; done
sleep 3
echo "daemons stopped; exits in logs/n*.exits"
