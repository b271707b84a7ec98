#!/usr/bin/env bash
# Regenerate docs/results.md and docs/rd.png: progcodec on Kodak beside JPEG, progressive JPEG,
# JPEG 2000 (needs opj_compress/opj_decompress, Debian: libopenjp2-tools), WebP and CompressAI's
# published curves. Run from anywhere with progcodec installed, with the 'eval' extra for the
# plot (pip install '.[eval]').
#
#   scripts/results.sh [OUT_DIR]          # default OUT_DIR: runs/eval-kodak (git-ignored)
#   PROGCODEC_KODAK=/data/kodak scripts/results.sh   # relative paths: from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
KODAK="${PROGCODEC_KODAK:-../shared/data/kodak}"
ANCHORS="${PROGCODEC_ANCHORS:-../shared/anchors/compressai_kodak}"
OUT="${1:-runs/eval-kodak}"
PROGCODEC="${PROGCODEC:-progcodec}"   # e.g. PROGCODEC="python -m progcodec"

$PROGCODEC eval "$KODAK" -o "$OUT" --against jpeg,jpeg-progressive,jpeg2000,webp --anchors "$ANCHORS"
cp "$OUT/results.md" docs/results.md
if [ -f "$OUT/rd.png" ]; then
    cp "$OUT/rd.png" docs/rd.png
else
    echo "results.sh: no $OUT/rd.png (matplotlib missing?): docs/rd.png not updated" >&2
fi
echo "results.sh: wrote docs/results.md$( [ -f "$OUT/rd.png" ] && echo ' and docs/rd.png')" >&2
