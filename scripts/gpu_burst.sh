#!/bin/bash
# One GPU training burst, run on the device machine by the device tool (each model card trained
# this way gives its exact call). Continues the model file INIT on the crops that
# scripts/make_crops.py wrote to .gpudata, for MINUTES minutes of cosine schedule (peak LR, BATCH,
# SEED), and leaves the model in shards (scripts/gpu_state.py) and the log in $OUT.
#   carry: .gpudata .whl (constriction's wheel for the machine's Python 3.12: progcodec imports it)
#   A call carries at most 64 MiB: move the other shipped weights out of models/ for the call.
#   PREC=bf16 or fp32 skips the smoke run that otherwise picks the precision.
#   ZW=1.5 weighs z bits 1.5 times in the loss (train --z-weight; docs/ablation.md); default 1.
#   QONE=0.15 QLOW=0.4: train --q-one / --q-low, the keep-fraction mix of v19 and later
#   (models/progcodec-v19.md); unset: train's defaults.
set -u
MINUTES=${MINUTES:-8}; INIT=${INIT:-models/progcodec-v9.safetensors}; DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-16}; LR=${LR:-2e-4}; SEED=${SEED:-71}; OUT=${OUT:-/tmp/out}; RUN=${RUN:-/tmp/g}
ZW=${ZW:-1}
. scripts/device_env.sh
export OUT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, PIL.features as f; print('torch', torch.__version__, 'webp', f.check('webp'))"
common=(.gpudata --init "$INIT" --batch "$BATCH" --patch 256 --lr "$LR" --warmup 300
        --lambda-min 0.0015 --lambda-max 0.025 --seed "$SEED" --device "$DEVICE" --z-weight "$ZW"
        ${QONE:+--q-one "$QONE"} ${QLOW:+--q-low "$QLOW"})
# A few steps first: fall back to fp32 where bf16 autocast fails on the machine's torch.
if [ -z "${PREC:-}" ]; then
  PREC=bf16
  python3 -m progcodec.train "${common[@]}" --out /tmp/smoke --steps 20 --log-every 10 --precision bf16 \
    || PREC=fp32
  tail -2 /tmp/smoke/train.log
fi
echo "precision $PREC"
rm -rf "$RUN"
timeout -s TERM "$(awk "BEGIN{print int($MINUTES * 60 + 45)}")" python3 -m progcodec.train "${common[@]}" --out "$RUN" \
  --steps 1000 --minutes "$MINUTES" --ckpt-minutes 2 --log-every 250 --precision "$PREC"
echo "train exit $?"
cp "$RUN/train.log" "$OUT/train.log"
python3 scripts/gpu_state.py split "$RUN/checkpoint.pt" "$OUT"
