#!/bin/bash
# CPU vs CUDA agreement on the device machine (DESIGN.md 3): the CUDA tests, which CI (no GPU)
# skips, and the default model's bytes on a few whole photos carried in .gpucheck.
#   carry: .whl (constriction for python 3.12) .gpucheck (a few PNGs)
#   A call carries at most 64 MiB: leave in models/ only the weights to check (the test takes
#   every shipped model there; the photo loop, the default one).
set -u
. scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/test_exactness.py -k cuda -rA 2>&1 | tail -8
python3 - <<'PY'
import glob, time, numpy as np, torch
from PIL import Image
import progcodec
from progcodec.weights import DEFAULT_MODEL
print("torch", torch.__version__, "model", DEFAULT_MODEL)
for f in sorted(glob.glob(".gpucheck/*.png")):
    img = np.asarray(Image.open(f).convert("RGB"))
    t = time.time(); cpu = progcodec.encode(img, device="cpu"); tc = time.time() - t
    t = time.time(); gpu = progcodec.encode(img, device="cuda"); tg = time.time() - t
    line = f"{f}: {len(cpu)} bytes, cpu==cuda {cpu == gpu}, encode cpu {tc:.2f}s cuda {tg:.2f}s"
    for cut in (len(cpu) // 10, len(cpu)):
        a = np.asarray(progcodec.decode(cpu[:cut], device="cpu"), dtype=np.int16)
        b = np.asarray(progcodec.decode(cpu[:cut], device="cuda"), dtype=np.int16)
        line += f" | cut {cut}: max diff {np.abs(a - b).max()}, pixels differing {(a != b).mean():.2e}"
    print(line)
PY
