"""What the refinement pass (docs/format.md 5.1) buys, and two alternatives, measured in the
latent: prints the tables of docs/refinement.md.

    python scripts/refinement_study.py ../shared/data/kodak --limit 6 --stats-images 60

1. Centroid reconstruction, no extra bits: each received element at mu + s + E[r - s | level, s]
   (the mean offset inside its bin, measured on --stats-images training photos, never the
   evaluated ones) instead of mu + s.
2. One refinement pass over the first F of the elements in coding order, the bin split in two
   (reconstruction s -/+ 1/4, the shipped format) or in three (s - 1/3, s, s + 1/3).
   Bits: the empirical conditional entropy of the refinement symbols given (level, min(|s|, 4)),
   measured on the evaluated images themselves (an optimistic bound; the format codes each
   half-bin bit as exactly 1 bit).
Each element is reconstructed from the encoder's float64 residual; PSNR-RGB of the whole latent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from progcodec import codec, entropy
from progcodec.metrics import psnr
from progcodec.train import list_images, split_train_validation

FRACTIONS = (0.05, 0.1, 0.2, 0.4, 1.0)
S = 8  # centroid offsets for |s| <= S


@torch.no_grad()
def latent(rt, rgb):
    """residual y - mu (float64, flat), clamped symbols, scale index, mu, order, latent shape:
    what codec.encoder_symbols codes, back in flat-position order."""
    h, w = rgb.shape[:2]
    hp, wp = codec._padded_size(h, w)
    shape = (1, rt.y_channels, hp // 16, wp // 16)
    z, levels_in_order, symbols, residual = codec.encoder_symbols(rt, codec._analysis(rt, rgb))
    mu, idx = rt.hyper(torch.from_numpy(z)[None])
    order = codec.coding_order(idx, rt.levels, rt.order_rank)
    o = order.numpy()
    r = np.empty_like(residual)
    s = np.empty_like(symbols)
    r[o] = residual
    s[o] = entropy.clamp_y_symbols(symbols, levels_in_order, rt.models)
    return r, s, idx.numpy(), mu, order, shape


def image_psnr(rt, rgb, mu, offset, shape):
    h, w = rgb.shape[:2]
    y_hat = (mu + torch.from_numpy(offset)).view(shape).float()
    return psnr(codec._synthesis(rt, y_hat, h, w), rgb)


def cond_entropy_bits(cls: np.ndarray, sym: np.ndarray, k: int) -> float:
    key = cls * k + sym
    u, c = np.unique(key, return_counts=True)
    per_class = np.bincount(u // k, weights=c)
    return float(-(c * np.log2(c / per_class[u // k])).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path)
    ap.add_argument("--model", default=codec.DEFAULT_MODEL)
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--stats", type=Path, default=Path("../shared/data/train"),
                    help="training photos for the centroid offsets (validation ones skipped)")
    ap.add_argument("--stats-images", type=int, default=60)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    rt = codec.runtime(args.model, "cpu")

    sums = np.zeros((rt.levels, 2 * S + 1))
    counts = np.zeros((rt.levels, 2 * S + 1))
    train = split_train_validation(list_images(args.stats))[0]
    pick = np.random.default_rng(0).choice(len(train), min(args.stats_images, len(train)), replace=False)
    for i in pick:
        with Image.open(train[i]) as im:
            im = im.convert("RGB")
            if im.width * im.height > 1_000_000:
                im = im.crop((0, 0, min(im.width, 1024), min(im.height, 768)))
            rgb = np.asarray(im)
        r, s, levels, *_ = latent(rt, rgb)
        inside = np.abs(s) <= S
        np.add.at(sums, (levels[inside], s[inside] + S), (r - s)[inside])
        np.add.at(counts, (levels[inside], s[inside] + S), 1)
    centroid = np.where(counts > 50, sums / np.maximum(counts, 1), 0.0)

    rows: dict[str, list] = {}
    for f in list_images(args.images)[:args.limit]:
        with Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB"))
        px = rgb.shape[0] * rgb.shape[1]
        r, s, levels, mu, order, shape = latent(rt, rgb)
        base = image_psnr(rt, rgb, mu, s.astype(np.float64), shape)
        inside = np.abs(s) <= S
        cen = s + np.where(inside, centroid[levels, np.clip(s, -S, S) + S], 0.0)
        rows.setdefault("centroid", []).append((0.0, image_psnr(rt, rgb, mu, cen, shape) - base))
        cls = levels * 5 + np.minimum(np.abs(s), 4)
        d = r - s
        for name, parts in (("halves", 2), ("thirds", 3)):
            sub = np.clip(np.floor((d + 0.5) * parts), 0, parts - 1).astype(np.int64)
            rec = s + (sub + 0.5) / parts - 0.5
            mirrored = np.where(s < 0, parts - 1 - sub, sub)  # pool the signs of s
            for frac in FRACTIONS:
                sel = order[:int(frac * len(order))].numpy()
                offset = s.astype(np.float64)
                offset[sel] = rec[sel]
                bits = cond_entropy_bits(cls[sel], mirrored[sel], parts)
                rows.setdefault(f"{name} {frac:g}", []).append(
                    (bits / px, image_psnr(rt, rgb, mu, offset, shape) - base))
        rows.setdefault("base", []).append((0.0, base))
        print(f"{f.name}", file=sys.stderr)

    n = len(rows["base"])
    print(f"{n} images from {args.images}, model {rt.loaded.name}; whole latent without "
          f"refinement: {np.mean([p for _, p in rows['base']]):.2f} dB\n")
    print("| reconstruction | extra bpp | dB over mu + s | dB per bpp |")
    print("|---|---|---|---|")
    for name, v in rows.items():
        if name == "base":
            continue
        bpp, gain = np.mean([a for a, _ in v]), np.mean([b for _, b in v])
        slope = f"{gain / bpp:.2f}" if bpp > 0 else "-"
        print(f"| {name} | {bpp:.4f} | {gain:+.3f} | {slope} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
