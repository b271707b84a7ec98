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

A model whose training changed only its syntheses (train --synthesis-keep-min/-max) writes the
same symbols as the model it started from, so that model's fitted tables are its fitted
tables; `--from` copies them, in seconds, after checking that every tensor the symbols depend
on is equal:

    python -m progcodec.fit_tables runs/r1-p0.safetensors runs/r1-fit.safetensors \
        --name progcodec-v27 --from models/progcodec-v26.safetensors
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
from .tables import quantize_pmf
from .train import list_images, split_train_validation
from .weights import (load_weights_bytes, save_training_tensors, save_weights,
                      training_sidecar, training_state_from_weights)


def symbol_histograms(rt, photos: list[Path]) -> np.ndarray:
    """Counts (levels, table width) of the clamped base y symbols the plain encoder writes at
    each scale index on `photos`; column radius + s holds symbol s, as in tables.y_counts."""
    t = rt.models.tables
    hist = np.zeros(tuple(t.y_counts.shape), dtype=np.int64)
    for path in photos:
        with Image.open(path) as im:
            rgb = codec.to_rgb_array(im)
        _, levels, symbols, _ = codec.plain_symbols(rt, rgb)
        for start, end, level in entropy.runs(levels):
            np.add.at(hist[level], symbols[start:end] + int(t.y_radius[level]), 1)
    return hist


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
        if key.startswith(SYNTHESIS_PARTS) or key == "tables.y_counts":
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
    ap.add_argument("--name", required=True, help="model name written into every .pic")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path,
                        help="training photo folder (its validation split is left out)")
    source.add_argument("--from", dest="fitted", type=Path,
                        help="a weight file already fitted to the same encoder (see above): "
                             "copy its y tables")
    ap.add_argument("--count", type=int, default=1000,
                    help="photos of the training split, evenly spaced in name order (all of "
                         "them when it has no more)")
    ap.add_argument("--prior", type=float, default=20.0,
                    help="pseudo-counts of the Gaussian table added to each histogram")
    args = ap.parse_args(argv)
    # a fresh copy, not load_model's cached one, and a deep copy to change: the runtime built
    # on it keeps the tables it measured with
    loaded = load_weights_bytes(args.weights.read_bytes(), args.weights)
    model = copy.deepcopy(loaded.model)
    if args.fitted:
        fitted = load_weights_bytes(args.fitted.read_bytes(), args.fitted)
        model.tables.y_counts = copied_y_counts(model, fitted.model)
        how = f"y tables copied from {args.fitted} ({fitted.name})"
    else:
        train, _ = split_train_validation(list_images(args.images))
        picks = np.linspace(0, len(train) - 1, min(args.count, len(train))).round().astype(int)
        photos = [train[i] for i in np.unique(picks)]
        hist = symbol_histograms(codec.runtime(loaded, "cpu"), photos)
        model.tables.y_counts = fitted_y_counts(model.tables.y_counts, model.tables.y_radius,
                                                hist, args.prior)
        how = f"y tables fitted on {len(photos)} photos, {int(hist.sum())} symbols"
    digest = save_weights(model, args.name, args.output)
    load_weights_bytes(args.output.read_bytes())  # it loads back, strictly
    if training_sidecar(args.weights).is_file():  # what train --init resumes from
        _, state = training_state_from_weights(args.weights)
        save_training_tensors({k: v for k, v in state.items()
                               if k.startswith(("scale_net.", "z_density."))}, args.output, digest)
    print(f"wrote {args.output} (digest {digest.hex()}): {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
