#!/bin/bash
# usage: disrupt.sh KIND NODE   KIND: kill9 | term | restart
S=${SOAK_DIR:-/tmp/directord-soak}; K=$1; N=$2; L=$S/logs/disruptions.log
log() { echo "$(date -u +%FT%T) $K n$N: $*" >> $L; }
# wait until the next orchestration is submitted, then act 1 s into it, while its 3 s job runs
last=$(ls -t $S/subs/orch-*.yaml | head -1)
for t in $(seq 1 60); do cur=$(ls -t $S/subs/orch-*.yaml | head -1); [ "$cur" != "$last" ] && break; sleep 0.5; done
sleep 1; log "acting 1 s after $(basename $cur) was written"
pid=$(cat $S/n$N.pid)
case $K in
  kill9) log "kill -9 pid $pid"; kill -9 $pid; sleep 20 ;;
  term|restart) log "kill -TERM pid $pid"; kill -TERM $pid
     for t in $(seq 1 120); do kill -0 $pid 2>/dev/null || break; sleep 0.5; done
     if kill -0 $pid 2>/dev/null; then log "STILL RUNNING 60s after SIGTERM"; else log "exited after ~$((t/2))s"; fi
     [ $K = term ] && sleep 5 ;;
esac
new=$($S/start-node.sh $N); log "restarted pid $new"
for t in $(seq 1 60); do $S/directord-mesh status --state-dir $S/n$N >/dev/null 2>&1 && break; sleep 1; done
log "status answers after ~${t}s"
