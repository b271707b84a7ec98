"""How many bits a table for the refinement bits (format.md 5.1) could save: their empirical
entropy given (scale index, base symbol clamped to -3..3), against the one bit each costs.

    python scripts/refinement_entropy.py [--model NAME] [--images DIR] [--count 40]

Encodes the first --count photos of the training split (train.split_train_validation, sorted by
name) with the plain encoder and the default refinement fraction. The entropy is measured on the
same bits it is estimated from, so it is a bound on what such a table could save, not a result.
"""
import argparse
import collections
import math
from pathlib import Path

import numpy as np
from PIL import Image

from progcodec import codec
from progcodec.train import list_images, split_train_validation
from progcodec.weights import DEFAULT_MODEL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--images", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--count", type=int, default=40)
    args = ap.parse_args()
    rt = codec.runtime(args.model, "cpu")
    counts = collections.Counter()
    for path in split_train_validation(list_images(args.images))[0][:args.count]:
        with Image.open(path) as im:
            rgb = codec.to_rgb_array(im)
        _, levels, symbols, residual = codec.plain_symbols(rt, rgb)
        n = codec.refine_count(len(symbols), codec.DEFAULT_REFINE)
        bits = codec.refinement_bits(residual, symbols, n)
        for key in zip(levels[:n].tolist(), np.clip(symbols[:n], -3, 3).tolist(), bits.tolist()):
            counts[key] += 1
    total = sum(counts.values())
    h = 0.0
    for level, s in {k[:2] for k in counts}:
        a, b = counts[(level, s, 0)], counts[(level, s, 1)]
        h -= sum(c * math.log2(c / (a + b)) for c in (a, b) if c)
    print(f"{args.count} photos, {total} refinement bits: {h / total:.4f} bit each given "
          f"(scale index, symbol); {(total - h) / 8 / args.count:.0f} bytes per photo fewer")
    for s in range(-3, 4):
        a = sum(v for k, v in counts.items() if k[1] == s and k[2] == 0)
        b = sum(v for k, v in counts.items() if k[1] == s and k[2] == 1)
        if a + b:
            print(f"  symbol {s:+d}{'+' if abs(s) == 3 else ' '}: {a + b} bits, {b / (a + b):.3f} of them 1")


if __name__ == "__main__":
    main()
