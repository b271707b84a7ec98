"""Would a spatial context for z pay? The bits of z under the shipped per-channel tables,
against the same tables conditioned on how many of each element's causal neighbours (left, up,
up-left) are nonzero (0, 1, 2+): three tables per channel, fitted on training photos (counts
plus the shipped table as a prior worth PRIOR_WEIGHT symbols), scored on another folder.
Ideal code lengths (-log2 p), not real streams; header bytes not counted.

    python scripts/z_context_study.py ../shared/data/train ../shared/data/kodak 60
"""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from progcodec import codec
from progcodec.train import list_images, split_train_validation

PRIOR_WEIGHT = 20.0
CONTEXTS = 3


def z_symbols(rt, path: Path) -> np.ndarray:
    rgb = codec.to_rgb_array(Image.open(path))
    return codec.encoder_z(rt, codec._analysis(rt, rgb))  # (C, h, w), clamped


def context(z: np.ndarray) -> np.ndarray:
    nonzero = np.pad((z != 0).astype(np.int64), ((0, 0), (1, 0), (1, 0)))
    n = nonzero[:, 1:, :-1] + nonzero[:, :-1, 1:] + nonzero[:, :-1, :-1]
    return np.minimum(n, CONTEXTS - 1)


def main():
    fit_folder, score_folder, n_fit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    torch.set_grad_enabled(False)
    rt = codec.runtime()
    tables = rt.loaded.model.tables
    bits = tables.z_bits().numpy()  # (C, width), column k is symbol z_offset + k
    offset = tables.z_offset.numpy()
    prior = 2.0 ** -bits
    counts = np.zeros((CONTEXTS,) + bits.shape)
    fit = split_train_validation(list_images(fit_folder))[0][:n_fit]
    for path in fit:
        z = z_symbols(rt, path)
        k = context(z)
        for c in range(z.shape[0]):
            np.add.at(counts[:, c], (k[c].ravel(), z[c].ravel() - offset[c]), 1)
    pmf = (counts + PRIOR_WEIGHT * prior) / (counts.sum(-1, keepdims=True) + PRIOR_WEIGHT * prior.sum(-1, keepdims=True))
    total_now = total_ctx = 0.0
    images = list_images(score_folder)
    print(f"fitted on {len(fit)} photos of {fit_folder}; bytes of z (ideal code length):")
    print("image  shipped tables  with context")
    for path in images:
        z = z_symbols(rt, path)
        k = context(z)
        s = z - offset[:, None, None]
        ch = np.arange(z.shape[0])[:, None, None]
        now = bits[ch, s].sum() / 8
        ctx = -np.log2(pmf[k, ch, s]).sum() / 8
        total_now, total_ctx = total_now + now, total_ctx + ctx
        print(f"{path.name}  {now:.0f}  {ctx:.0f}")
    n = len(images)
    print(f"mean  {total_now / n:.1f}  {total_ctx / n:.1f}  ({100 * (total_ctx / total_now - 1):+.1f}%)")


if __name__ == "__main__":
    main()
