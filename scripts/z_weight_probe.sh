#!/usr/bin/env bash
# Paired comparison of two training runs at the same step (docs/ablation.md, "a heavier weight on
# z bits"): export each run's stepNNNNNN.pt, evaluate on Kodak and the validation photos, print
# BD-rates between them and the header + z bytes. Runs from the repository root with progcodec
# installed and the v15 baselines evaluated (runs/eval-{kodak,val}-v15, with --against jpeg2000).
#
#   bash scripts/z_weight_probe.sh [RUN_A] [RUN_B] [STEP]   # default: v18c v18z 002000
# The exports are named RUN-2k whatever STEP is: the model name is written into every file's
# header, so a longer name adds bytes to every prefix and moves the figures docs/ablation.md gives.
set -euo pipefail
A="${1:-v18c}"; B="${2:-v18z}"; STEP="${3:-002000}"
KODAK="${PROGCODEC_KODAK:-../shared/data/kodak}"
TRAIN="${PROGCODEC_TRAIN:-../shared/data/train}"
for r in "$A" "$B"; do
  python -m progcodec.export "runs/$r/step$STEP.pt" "runs/$r-2k.safetensors" --name "$r-2k" \
      --order-images "$TRAIN" --gain-power 0
done
for set in kodak val; do
  data="$KODAK"; [ "$set" = val ] && data=runs/val-heldout
  for r in "$A" "$B"; do
    progcodec eval "$data" -o "runs/eval-$set-$r-2k" -m "runs/$r-2k.safetensors" \
        --reference "runs/eval-$set-v15/jpeg2000.json" --quiet
  done
  python scripts/bd_between.py "runs/eval-$set-$A-2k/results.json" "runs/eval-$set-$B-2k/results.json"
  python scripts/prefix_floor.py "runs/eval-$set-v15/results.json" "runs/eval-$set-$A-2k/results.json" \
      "runs/eval-$set-$B-2k/results.json"
done
