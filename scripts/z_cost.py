"""Mean cost of the part of a .pic every prefix needs (header + z stream), per model, over a
folder: the lowest rate a model can decode at. Files are encoded without refinement bits
(`refine=0`, format version 1 or 2), so "whole file" is the whole latent, as in the figures
recorded before format version 3.

    python scripts/z_cost.py ../shared/data/kodak progcodec-v1 runs/abl-scale/checkpoint.pt
"""
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import progcodec
from progcodec import ablation, container
from progcodec.train import list_images


def main():
    folder, models = Path(sys.argv[1]), sys.argv[2:]
    torch.set_grad_enabled(False)
    loaded = [ablation.load_any(name) for name in models]
    base = [[] for _ in loaded]    # per model, per image
    whole = [[] for _ in loaded]
    for f in list_images(folder):   # each image read once, encoded by every model
        rgb = np.asarray(Image.open(f).convert("RGB"))
        px = rgb.shape[0] * rgb.shape[1]
        for m, b, w in zip(loaded, base, whole):
            data = progcodec.encode(rgb, model=m, refine=0)  # the base file, as before version 3
            b.append(8 * container.parse_header(data).min_length / px)
            w.append(8 * len(data) / px)
    print("| model | mean header+z bpp | max | whole file bpp |")
    print("|---|---|---|---|")
    for m, b, w in zip(loaded, base, whole):
        print(f"| {m.name} | {statistics.mean(b):.4f} | {max(b):.4f} | {statistics.mean(w):.3f} |")


if __name__ == "__main__":
    main()
