#!/bin/bash
# Soak loop: every ~10 s one submission from a rotating node (exec or 30-job orchestration, --poll);
# every 600 s a disruption (kill9 / term / restart-next-submitter, in turn).
S=${SOAK_DIR:-/tmp/directord-soak}; B=$S/directord-mesh; CSV=$S/submissions.csv
cd $S
[ -f $CSV ] || echo "i,start_utc,submitter,kind,rc,secs,run_id,summary,disruption" > $CSV
i=${START_I:-10}; t0=$(date +%s); nd=0; DISRUPT_EVERY=${DISRUPT_EVERY:-600}
kinds=(kill9 term restart)
while [ ! -f $S/STOP ]; do
  sub=$(( i % 5 + 1 )); next=$(( (i+1) % 5 + 1 ))
  dis=""
  now=$(date +%s)
  if [ $(( now - t0 )) -ge $(( (nd+1) * DISRUPT_EVERY )) ]; then
    kind=${kinds[$(( nd % 3 ))]}
    if [ $kind = restart ]; then v=$next
    else  # a node that submits neither now nor next, rotating
      cands=(); for n in 1 2 3 4 5; do [ $n != $sub ] && [ $n != $next ] && cands+=($n); done
      v=${cands[$(( nd % ${#cands[@]} ))]}
    fi
    nohup $S/disrupt.sh $kind $v >/dev/null 2>&1 &
    dis="$kind:n$v"; nd=$((nd+1))
    sleep 1
  fi
  # wait (up to 90 s) for the submitter's daemon to answer, e.g. right after it was restarted
  w=0; while ! $B status --state-dir $S/n$sub >/dev/null 2>&1 && [ $w -lt 90 ]; do sleep 1; w=$((w+1)); done
  [ $w -gt 0 ] && dis="$dis waited${w}s"
  ts=$(date -u +%FT%T); st=$(date +%s.%N)
  if [ $(( i % 2 )) -eq 0 ]; then
    kind=exec
    timeout 900 $B exec --state-dir $S/n$sub --verb RUN "echo soak $i; echo E$i \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log" --poll > $S/subs/out-$i.txt 2>&1
    rc=$?
  else
    kind=orch
    $S/gen-orch.sh $i
    timeout 900 $B orchestrate --state-dir $S/n$sub $S/subs/orch-$i.yaml --poll > $S/subs/out-$i.txt 2>&1
    rc=$?
  fi
  secs=$(echo "$(date +%s.%N) - $st" | bc)
  run=$(grep -o -m1 '^run [0-9a-f-]*' $S/subs/out-$i.txt | cut -d' ' -f2)
  summ=$(grep -m1 '^jobs: ' $S/subs/out-$i.txt | tr ',' ';')
  echo "$i,$ts,n$sub,$kind,$rc,$secs,$run,$summ,$dis" >> $CSV
  i=$((i+1))
  rest=$(echo "10 - $secs" | bc | cut -d. -f1); [ -z "$rest" ] || [ "$rest" -lt 1 ] && rest=1
  sleep $rest
done
echo "$(date -u +%FT%T) loop stopped at i=$i" >> $S/logs/disruptions.log
