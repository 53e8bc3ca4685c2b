#!/bin/bash
# every 60 s: per daemon RSS, fds, threads, state dir size, CPU time -> samples/nN.csv
S=${SOAK_DIR:-/tmp/directord-soak}; HZ=$(getconf CLK_TCK)
for n in 1 2 3 4 5; do f=$S/samples/n$n.csv; [ -f $f ] || echo "utc,epoch,pid,rss_kb,fds,threads,state_kb,redb_kb,blobs_kb,cpu_s,loadavg1" > $f; done
while [ ! -f $S/STOP_SAMPLER ]; do
  for n in 1 2 3 4 5; do
    pid=$(cat $S/n$n.pid 2>/dev/null)
    if [ -n "$pid" ] && [ -d /proc/$pid ]; then
      rss=$(awk '/^VmRSS/{print $2}' /proc/$pid/status); thr=$(awk '/^Threads/{print $2}' /proc/$pid/status)
      fds=$(ls /proc/$pid/fd | wc -l)
      cpu=$(awk -v hz=$HZ '{sub(/^.*\) /,""); printf "%.2f", ($12+$13)/hz}' /proc/$pid/stat)
    else rss=;thr=;fds=;cpu=; fi
    sk=$(du -sk $S/n$n | cut -f1); rk=$(du -k $S/n$n/node.redb 2>/dev/null | cut -f1); bk=$(du -sk $S/n$n/blobs 2>/dev/null | cut -f1)
    echo "$(date -u +%FT%T),$(date +%s),$pid,$rss,$fds,$thr,$sk,$rk,$bk,$cpu,$(cut -d' ' -f1 /proc/loadavg)" >> $S/samples/n$n.csv
  done
  sleep 60
done
