"""Mean cost of the part of a .pic every prefix needs (header + z stream), per model, over a
folder: the lowest rate a model can decode at.

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
    files = list_images(folder)
    torch.set_grad_enabled(False)
    print("| model | mean header+z bpp | max | whole file bpp |")
    print("|---|---|---|---|")
    for name in models:
        loaded = ablation.load_any(name)
        base, whole = [], []
        for f in files:
            rgb = np.asarray(Image.open(f).convert("RGB"))
            data = progcodec.encode(rgb, model=loaded)
            px = rgb.shape[0] * rgb.shape[1]
            base.append(8 * container.parse_header(data).min_length / px)
            whole.append(8 * len(data) / px)
        print(f"| {loaded.name} | {statistics.mean(base):.4f} | {max(base):.4f} | {statistics.mean(whole):.3f} |")


if __name__ == "__main__":
    main()
