#!/bin/bash
# usage: gen-orch.sh I  -> writes subs/orch-I.yaml (34 jobs, 37 when I is a multiple of 3) and payload/f-I.txt
I=$1; S=${SOAK_DIR:-/tmp/directord-soak}; T="S$I"
printf 'soak payload %s %s\n' "$I" "$(date -u +%FT%T)" > $S/payload/f-$I.txt
printf 'soak_cf_%s: %s\nsoak_cf_last: %s\n' "$I" "$I" "$I" > $S/payload/cachefile.yaml
# the 3 s job, and its fingerprint (for the JOB_WAIT below)
D7="  - RUN: 'echo $T-d7start \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log; sleep 3; echo $T-d7 \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log'"
printf -- '- jobs:\n%s\n' "$D7" > $S/subs/probe-$I.yaml
D7FP=$($S/directord-mesh orchestrate $S/subs/probe-$I.yaml --finger-print | grep d7start | awk '{print $NF}')
[ -n "$D7FP" ] || { echo "gen-orch.sh: no fingerprint for the 3 s job" >&2; exit 1; }
# the RUN line that records a unique token per job per node
r() { echo "  - RUN: 'echo $T-$1 \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log; echo $T-$1'"; }
{
echo "---"
echo "- name: sync-a"
echo "  jobs:"
echo "  - RUN: --skip-cache --stdout-arg me echo \$SOAK_NODE"
echo "  - QUERY: --skip-cache me --timeout 300"
echo "  - RUN: 'echo $T-q{{ query | length }} \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log'"
# Every third orchestration also a QUERY of a 250 KB value per node: a set over gossip's 1 MiB
# (gossiped in parts), logged as the number of nodes whose value it held (Sn-bq5: all five).
if [ $((I % 3)) -eq 0 ]; then
  for n in 1 2 3 4 5; do
    f=$S/payload/big-n$n.yaml
    [ -s "$f" ] || printf 'soak_big: n%s-%s\n' "$n" "$(head -c 250000 /dev/zero | tr '\0' x)" > "$f"
  done
  echo "  - CACHEFILE: --skip-cache $S/payload/big-{{ me }}.yaml"
  echo "  - QUERY: --skip-cache soak_big --timeout 300"
  echo "  - RUN: 'echo $T-bq{{ query.values() | selectattr(\"soak_big\", \"defined\") | list | length }} \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log'"
fi
echo "  - ARG: soakid $T"
echo "  - ECHO: soak echo $T"
echo "  - CACHEFILE: --skip-cache $S/payload/cachefile.yaml"
echo "  - WORKDIR: --skip-cache $S/dest/{{ me }}"
echo "  - ADD: $S/payload/f-$I.txt $S/dest/{{ me }}/"
echo "  - RUN: 'echo {{ soakid }}-tmpl-{{ soak_cf_last }} $T \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log'"
for k in 1 2 3 4 5 6; do r a$k; done
echo "- name: async-b"
echo "  async: true"
echo "  jobs:"
for k in 1 2 3 4 5; do r b$k; done
echo "- name: sync-c"
echo "  jobs:"
for k in 1 2 3 4 5 6; do r c$k; done
echo "- name: async-d"
echo "  async: true"
echo "  jobs:"
for k in 1 2 3 4 5; do r d$k; done
echo "$D7"
# A JOB_WAIT on every node for the run's own 3 s job on all five (a disruption lands while it
# runs), then a RUN that logs Sn-w.
echo "- name: wait-e"
echo "  async: true"
echo "  jobs:"
echo "  - JOB_WAIT: $D7FP --identity n1 n2 n3 n4 n5 --timeout 150"
echo "  - RUN: 'echo $T-w \$SOAK_NODE >> $S/runs/\$SOAK_NODE.log'"
} > $S/subs/orch-$I.yaml
