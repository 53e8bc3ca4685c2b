#!/bin/bash
# group WARN/ERROR/panic lines in daemon logs (message text without timestamps/ids)
for f in ${SOAK_DIR:-/tmp/directord-soak}/logs/n?.log; do
  echo "== $f: $(grep -c . $f) lines; panics=$(grep -ci panic $f)"
  grep -E ' (WARN|ERROR) |panic' $f | sed -E 's/^[0-9T:.-]+Z +//; s/12D3KooW[A-Za-z0-9]+/PEER/g; s/[0-9a-f]{8}-[0-9a-f-]{27}/UUID/g; s/[0-9]+(\.[0-9]+)?(ms|s)\b/N\2/g' | cut -c1-160 | sort | uniq -c | sort -rn | head -15
done
