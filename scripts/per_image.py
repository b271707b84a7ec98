"""Per-image diagnosis of one or more models: prefix PSNR at a few ideal-rate targets (the
ordering ablation's measurement) and how many y symbols the encoder had to clamp to their
table's support (an element whose predicted scale is far too small for its residual).

    python scripts/per_image.py ../shared/data/kodak/kodim02.png ... --model progcodec-v1 \
        --model runs/v3/checkpoint.pt [--targets 0.05,0.1,0.3]
"""
import argparse

import numpy as np
import torch
from PIL import Image

from progcodec import ablation, codec, entropy


def clamped_symbols(rt, rgb: np.ndarray) -> tuple[int, int]:
    """(count, largest excess) of y symbols outside their table's support, as the encoder sees them."""
    _, levels, sym, _ = codec.encoder_symbols(rt, codec._analysis(rt, rgb))
    excess = np.abs(sym - entropy.clamp_y_symbols(sym, levels, rt.models))
    return int((excess > 0).sum()), int(excess.max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--model", action="append", required=True,
                    help="a model name, .safetensors file or training checkpoint.pt (repeatable)")
    ap.add_argument("--targets", default="0.05,0.1,0.3")
    ap.add_argument("--order", default="scale", help="element order (ablation.py's ORDERS)")
    args = ap.parse_args()
    targets = tuple(float(t) for t in args.targets.split(","))
    torch.set_grad_enabled(False)
    print("| image | model | " + " | ".join(f"{t:g} bpp" for t in targets)
          + " | whole latent | clamped y symbols (max excess) |")
    print("|---|---|" + "---|" * (len(targets) + 2))
    models = [ablation.load_any(name) for name in args.model]
    for f in args.images:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        for loaded in models:
            pts = ablation.measure_image(rgb, loaded, args.order, targets=targets)
            at = {round(p["target"], 6): p["psnr"] for p in pts if not p["whole"]}
            whole = pts[-1]
            n, mx = clamped_symbols(codec.runtime(loaded, "cpu"), rgb)
            print(f"| {f.rsplit('/', 1)[-1]} | {loaded.name} | "
                  + " | ".join(f"{at[round(t, 6)]:.2f}" if round(t, 6) in at else "-" for t in targets)
                  + f" | {whole['bpp']:.3f} bpp / {whole['psnr']:.2f} dB | {n} ({mx}) |")


if __name__ == "__main__":
    main()
