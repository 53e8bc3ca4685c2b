#!/bin/bash
# count tokens that appear more than once in a node's runs log (a job that ran twice there)
for f in ${SOAK_DIR:-/tmp/directord-soak}/runs/n?.log; do
  echo "$f lines=$(wc -l < $f) distinct=$(awk '{print $1}' $f | sort -u | wc -l) dups=$(awk '{print $1}' $f | sort | uniq -d | wc -l)"
  awk '{print $1}' $f | sort | uniq -d | head -5
done
