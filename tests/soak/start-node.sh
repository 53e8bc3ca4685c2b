#!/bin/bash
# usage: start-node.sh N   -- start daemon nN (state $SOAK_DIR/nN, port 1741N, log logs/nN.log)
# Wrapper records daemon pid in nN.pid and each exit (code) in logs/nN.exits
N=$1; S=${SOAK_DIR:-/tmp/directord-soak}
BIN=$S/directord-mesh
ARGS=(join --name n$N --state-dir $S/n$N --listen 127.0.0.1:1741$N)
if [ "$N" != 1 ]; then
  export DIRECTORD_MESH_TOKEN="$(cat $S/n1/join-token)"
  ARGS+=(--peer 127.0.0.1:17411)
fi
export SOAK_NODE=n$N
mkdir -p $S/n$N
echo "$(date -u +%FT%T) START n$N" >> $S/logs/n$N.log
nohup bash -c '
  "$@" >>'"$S/logs/n$N.log"' 2>&1 < /dev/null &
  pid=$!; echo $pid > '"$S/n$N.pid"'
  wait $pid; rc=$?
  echo "$(date -u +%FT%T) n'"$N"' pid=$pid rc=$rc" >> '"$S/logs/n$N.exits"'
' _ "$BIN" "${ARGS[@]}" >/dev/null 2>&1 &
sleep 0.3
cat $S/n$N.pid
