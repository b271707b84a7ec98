"""How many y bits finer coding tables could save, measured on held-out photos: tables per
(channel, scale index) instead of per scale index, and a table for the refinement bits.

    python scripts/table_context_entropy.py [--model NAME] [--images DIR] [--count 200] [--prior 20]

Takes --count photos of the training split (train.split_train_validation; never Kodak), evenly
spaced by name, and encodes them with the plain encoder. Tables are fitted on the even-numbered
photos and scored on the odd-numbered ones, so the figures are cross-entropies on photos the
tables did not see (the shipped tables were fitted on the whole training split, these included:
their row is optimistic by that much). Every fitted table is a histogram plus --prior
pseudo-counts in the shape of the shipped table it refines, as progcodec.fit_tables does.
Rows: bits of the base y symbols and of the refinement bits (default refinement fraction), in
bits per element and bytes per scored photo.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from progcodec import codec
from progcodec.model import coding_order
from progcodec.tables import TABLE_TOTAL
from progcodec.train import list_images, split_train_validation
from progcodec.weights import DEFAULT_MODEL

SYMBOL_CLIP = 3  # refinement contexts: base symbol clamped to -3..3


def coded_elements(rt, rgb):
    """(channel, scale index, clamped base symbol, refinement bit or -1) of every y element, in
    coding order, as the plain encoder writes them (codec.plain_symbols plus the channels)."""
    z_np, levels, symbols, residual = codec.plain_symbols(rt, rgb)
    # the order again from z (cheap beside the analysis), for each element's channel
    _, idx = rt.hyper(torch.from_numpy(z_np)[None].to(rt.device))
    order = coding_order(idx, rt.levels, rt.order_rank).cpu().numpy()
    channels = order // (idx.numel() // rt.y_channels)
    n = codec.refine_count(len(symbols), codec.DEFAULT_REFINE)
    bits = np.full(len(symbols), -1, dtype=np.int64)
    bits[:n] = codec.refinement_bits(residual, symbols, n)
    return channels, levels, symbols, bits


def cross_entropy(fit_counts, test_counts, prior_pmf, prior):
    """Bits of test_counts (contexts, width) under fit_counts + prior * prior_pmf per context,
    quantized to TABLE_TOTAL with every entry >= 1 like a shipped table."""
    mass = fit_counts + prior * prior_pmf
    p = np.maximum(np.round(mass / mass.sum(1, keepdims=True) * TABLE_TOTAL), 1) / TABLE_TOTAL
    return float(-(test_counts * np.log2(p / p.sum(1, keepdims=True))).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--images", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--prior", type=float, default=20.0)
    args = ap.parse_args()
    rt = codec.runtime(args.model, "cpu")
    t = rt.models.tables
    levels_n, width = t.y_counts.shape
    radius = t.y_radius.numpy().astype(np.int64)
    m = rt.y_channels
    train, _ = split_train_validation(list_images(args.images))
    picks = np.unique(np.linspace(0, len(train) - 1, min(args.count, len(train))).round().astype(int))
    # [half][channel, level, symbol column]; refinement [half][channel, level, symbol, bit]
    sym = np.zeros((2, m, levels_n, width), dtype=np.int64)
    ref = np.zeros((2, m, levels_n, 2 * SYMBOL_CLIP + 1, 2), dtype=np.int64)
    for i, k in enumerate(picks):
        with Image.open(train[k]) as im:
            rgb = codec.to_rgb_array(im)
        c, lv, s, b = coded_elements(rt, rgb)
        np.add.at(sym[i % 2], (c, lv, s + radius[lv]), 1)
        r = b >= 0
        np.add.at(ref[i % 2], (c[r], lv[r], np.clip(s[r], -SYMBOL_CLIP, SYMBOL_CLIP) + SYMBOL_CLIP, b[r]), 1)
    scored = len(picks) // 2
    fit, test = sym[0], sym[1]
    shipped = t.y_counts.numpy().astype(np.float64)
    shipped_pmf = shipped / shipped.sum(1, keepdims=True)
    n_sym = int(test.sum())
    rows = []
    bits = -(test.sum(0) * np.log2(np.maximum(shipped_pmf, 1e-300))).sum()
    rows.append(("base symbols, shipped tables (per scale index)", bits, n_sym))
    rows.append(("base symbols, refit per scale index on the fit half",
                 cross_entropy(fit.sum(0), test.sum(0), shipped_pmf, args.prior), n_sym))
    for prior in (args.prior, 5 * args.prior, 25 * args.prior):
        per_channel = sum(cross_entropy(fit[c], test[c], shipped_pmf, prior) for c in range(m))
        rows.append((f"base symbols, per (channel, scale index), prior {prior:g}", per_channel, n_sym))
    rf, rt_ = ref[0], ref[1]
    n_ref = int(rt_.sum())
    rows.append(("refinement bits, one bit each (format version 3)", float(n_ref), n_ref))
    half = np.full((1, 2), 0.5)
    by_level = rf.sum(0).reshape(-1, 2)
    rows.append(("refinement bits, per (scale index, symbol)",
                 cross_entropy(by_level, rt_.sum(0).reshape(-1, 2), half, args.prior), n_ref))
    rows.append(("refinement bits, per (channel, scale index, symbol)",
                 cross_entropy(rf.reshape(-1, 2), rt_.reshape(-1, 2), half, args.prior), n_ref))
    print(f"model {args.model}: tables fitted on {len(picks) - scored} photos, scored on {scored} "
          f"({n_sym} base symbols, {n_ref} refinement bits)")
    print("| what | bits per element | bytes per scored photo |")
    print("|---|---|---|")
    for name, b, n in rows:
        print(f"| {name} | {b / n:.4f} | {b / 8 / scored:.0f} |")


if __name__ == "__main__":
    main()
