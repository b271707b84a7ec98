"""Fit a weight file's y coding tables to the symbols its encoder writes on training photos.

    python -m progcodec.fit_tables models/progcodec-v25.safetensors runs/v26.safetensors \
        --name progcodec-v26 --images ../shared/data/train --count 1299

The export builds every y table (one per scale index) from the Gaussian that the training
objective assumes. The residuals the encoder writes at one scale index are not exactly
Gaussian, so each table is replaced by the histogram of the (clamped) base symbols that the
plain encoder writes at that index on `--count` training photos (the training split only:
train.split_train_validation; never Kodak), plus `--prior` pseudo-counts spread as the
Gaussian table, so that rare indexes keep their Gaussian shape and no symbol gets zero
probability. The networks, the z tables, the order table and the format do not change; only
the y counts, and so the name and digest. The tables are integers in the weight file, so
encoder and decoder still agree bit for bit (DESIGN.md). The training sidecar
(weights.training_sidecar) is copied, re-stamped with the new digest. docs/ablation.md has
the measured effect.

`--refine-table` also fits a table for the refinement bits on the `--images` photos: counts of
each bit value per (scale index, base symbol clamped to -3..3), plus `--prior` pseudo-counts
split evenly. The model then codes its refinement bits with it and writes format version 5
(format.md 5.1); without it each bit costs one bit. With `--from`, `--images` photos fit only
this table.

A model whose training changed only its syntheses (train --synthesis-keep-min/-max) writes the
same symbols as the model it started from, so that model's fitted tables are its fitted
tables; `--from` copies them, in seconds, after checking that every tensor the symbols depend
on is equal:

    python -m progcodec.fit_tables runs/r1-p0.safetensors runs/r1-fit.safetensors \
        --name progcodec-v27 --from models/progcodec-v26.safetensors

The refinement table is copied too when the `--from` model has one and `--refine-table` is not
given.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import codec, entropy
from .model import SYNTHESIS_PARTS
from .tables import REFINE_CONTEXTS, quantize_pmf, refine_context
from .train import list_images, split_train_validation
from .weights import (load_weights_bytes, save_training_tensors, save_weights,
                      training_sidecar, training_state_from_weights)


def symbol_histograms(rt, photos: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """What the plain encoder writes on `photos`, counted:
    - (levels, table width): the clamped base y symbols at each scale index; column radius + s
      holds symbol s, as in tables.y_counts;
    - (levels, REFINE_CONTEXTS, 2): the refinement bits (codec.DEFAULT_REFINE of the elements)
      by context (scale index, tables.refine_context of the base symbol) and value, as in
      tables.refine_counts."""
    t = rt.models.tables
    hist = np.zeros(tuple(t.y_counts.shape), dtype=np.int64)
    refine_hist = np.zeros((hist.shape[0], REFINE_CONTEXTS, 2), dtype=np.int64)
    for path in photos:
        with Image.open(path) as im:
            rgb = codec.to_rgb_array(im)
        _, levels, symbols, residual = codec.plain_symbols(rt, rgb)
        for start, end, level in entropy.runs(levels):
            np.add.at(hist[level], symbols[start:end] + int(t.y_radius[level]), 1)
        n = codec.refine_count(len(symbols), codec.DEFAULT_REFINE)
        np.add.at(refine_hist, (levels[:n], refine_context(symbols[:n]),
                                codec.refinement_bits(residual, symbols, n)), 1)
    return hist, refine_hist


def fitted_refine_counts(refine_hist: np.ndarray, prior: float) -> torch.Tensor:
    """The refinement table: each context's two counts plus prior / 2 pseudo-counts each,
    quantized as every table is (sum TABLE_TOTAL, both >= 1)."""
    rows = refine_hist.reshape(-1, 2) + prior / 2
    out = np.stack([quantize_pmf(r) for r in rows]).reshape(refine_hist.shape)
    return torch.from_numpy(out)


def fitted_y_counts(y_counts: torch.Tensor, y_radius: torch.Tensor, hist: np.ndarray,
                    prior: float) -> torch.Tensor:
    """Each level's table: its histogram plus `prior` pseudo-counts in the shape of its current
    (Gaussian) table, quantized as every table is (sum TABLE_TOTAL, every symbol >= 1)."""
    out = y_counts.clone()
    for level in range(y_counts.shape[0]):
        width = 2 * int(y_radius[level]) + 1
        current = y_counts[level, :width].numpy().astype(np.float64)
        mass = hist[level, :width] + prior * current / current.sum()
        out[level, :width] = torch.from_numpy(quantize_pmf(mass))
    return out


def copied_y_counts(model, fitted) -> torch.Tensor:
    """fitted's y tables, for a model that writes the same symbols: every tensor but the
    syntheses' and the y tables is equal. Raises SystemExit naming the first that is not."""
    ours, theirs = model.state_dict(), fitted.state_dict()
    for key in sorted(ours.keys() | theirs.keys()):
        if key.startswith(SYNTHESIS_PARTS) or key in ("tables.y_counts", "tables.refine_counts"):
            continue
        if key not in ours or key not in theirs or not torch.equal(ours[key], theirs[key]):
            raise SystemExit(f"--from: {key} differs, so the two models may write different "
                             f"symbols; fit the tables on photos instead (--images)")
    return theirs["tables.y_counts"].clone()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path, help="the weight file whose tables are fitted")
    ap.add_argument("output", type=Path)
    ap.add_argument("--name", required=True, help="the new model's name, stored in its weight file")
    ap.add_argument("--images", type=Path,
                    help="training photo folder (its validation split is left out): fit the y "
                         "tables on it, unless --from, and the refinement table with --refine-table")
    ap.add_argument("--from", dest="fitted", type=Path,
                    help="a weight file already fitted to the same encoder (see above): copy "
                         "its y tables instead of fitting them on --images")
    ap.add_argument("--refine-table", action="store_true",
                    help="also fit a table for the refinement bits on --images (the model then "
                         "writes format version 5)")
    ap.add_argument("--count", type=int, default=1000,
                    help="photos of the training split, evenly spaced in name order (all of "
                         "them when it has no more)")
    ap.add_argument("--prior", type=float, default=20.0,
                    help="pseudo-counts added to each histogram: in the shape of the Gaussian "
                         "table (y tables), split evenly (refinement table)")
    args = ap.parse_args(argv)
    if args.images is None and (args.fitted is None or args.refine_table):
        ap.error("--images is needed, unless --from copies every table")
    if args.images is not None and args.fitted is not None and not args.refine_table:
        ap.error("with --from, --images photos fit only the refinement table: add --refine-table")
    # a fresh copy, not load_model's cached one, and a deep copy to change: the runtime built
    # on it keeps the tables it measured with
    loaded = load_weights_bytes(args.weights.read_bytes(), args.weights)
    if args.refine_table and loaded.model.tables.order_rank is None:
        raise SystemExit(f"--refine-table: {args.weights} has no order table, so its files have "
                         f"no refinement bits")
    model = copy.deepcopy(loaded.model)
    how = []
    if args.fitted:
        fitted = load_weights_bytes(args.fitted.read_bytes(), args.fitted)
        model.tables.y_counts = copied_y_counts(model, fitted.model)
        how.append(f"y tables copied from {args.fitted} ({fitted.name})")
        if fitted.model.tables.refine_counts is not None and not args.refine_table:
            model.tables.register_buffer("refine_counts", fitted.model.tables.refine_counts.clone())
            how.append("refinement table copied")
    if args.images:
        train, _ = split_train_validation(list_images(args.images))
        picks = np.linspace(0, len(train) - 1, min(args.count, len(train))).round().astype(int)
        photos = [train[i] for i in np.unique(picks)]
        # the symbols the tables are fitted to do not depend on the tables
        hist, refine_hist = symbol_histograms(codec.runtime(loaded, "cpu"), photos)
        if not args.fitted:
            model.tables.y_counts = fitted_y_counts(model.tables.y_counts, model.tables.y_radius,
                                                    hist, args.prior)
            how.append(f"y tables fitted on {len(photos)} photos, {int(hist.sum())} symbols")
        if args.refine_table:
            model.tables.register_buffer("refine_counts", fitted_refine_counts(refine_hist, args.prior))
            how.append(f"refinement table fitted on {len(photos)} photos, "
                       f"{int(refine_hist.sum())} bits")
    digest = save_weights(model, args.name, args.output)
    load_weights_bytes(args.output.read_bytes())  # it loads back, strictly
    if training_sidecar(args.weights).is_file():  # what train --init resumes from
        _, state = training_state_from_weights(args.weights)
        save_training_tensors({k: v for k, v in state.items()
                               if k.startswith(("scale_net.", "z_density."))}, args.output, digest)
    print(f"wrote {args.output} (digest {digest.hex()}): {'; '.join(how)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
