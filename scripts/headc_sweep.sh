#!/bin/bash
# head -c N for N from the minimum length to the file length, through the installed CLI.
# Usage: bash scripts/headc_sweep.sh [IMAGE]   (default: ../shared/data/kodak/kodim19.png)
IMG=$(realpath "${1:-../shared/data/kodak/kodim19.png}"); work=$(mktemp -d); cd "$work"
progcodec encode "$IMG" -o k19.pic --quiet
MIN=$(progcodec info k19.pic --json | python3 -c "import json,sys; print(json.load(sys.stdin)['min_decodable_bytes'])")
LEN=$(stat -c %s k19.pic)
fails=0; n=0
for N in $MIN $((MIN+1)) $((MIN+2)) $((MIN+3)) $(python3 -c "import random; random.seed(1); print(' '.join(str(random.randint($MIN,$LEN)) for _ in range(24)))") $((LEN-3)) $((LEN-1)) $LEN; do
  head -c $N k19.pic > cut.pic
  if progcodec decode cut.pic -o cut.png --quiet; then n=$((n+1)); else fails=$((fails+1)); echo "FAILED at N=$N"; fi
done
head -c $((MIN-1)) k19.pic > short.pic; progcodec decode short.pic -o short.png; echo "exit for N=MIN-1: $?"
echo "min $MIN len $LEN: $n cuts decoded, $fails failed"
