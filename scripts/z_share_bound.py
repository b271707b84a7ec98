"""What a cheaper header + z could buy, read off one `progcodec eval` run: an optimistic bound.

    python scripts/z_share_bound.py RUN/results.json REFERENCE.json [FRACTIONS...]

For each fraction f (default 0 0.25 0.5 0.75 1), every decoded point of every image is moved
to f x (that file's smallest decodable prefix, header + z) fewer bytes, its PSNR kept: as if
the hyperprior cost that much less and predicted just as well. Prints the mean curve at the
steps every image reaches (plus the whole file) and its BD-rate against REFERENCE. The bound
is optimistic: a z with fewer bits gives the decoder worse means and scales.
"""
import sys
from pathlib import Path

import numpy as np

from progcodec.bdrate import BDError, bd_rate
from progcodec.evaluate import EvalError, build_curve, load_curve_json


def with_floor_cut(per_image: list[dict], f: float) -> list[dict]:
    """per_image with every point's bpp lowered by f x its file's header + z."""
    return [{**im, "points": [{**p, "bpp": p["bpp"] - 8 * f * im["min_bytes"]
                                                 / (im["width"] * im["height"])}
                              for p in im["points"]]}
            for im in per_image]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    fractions = [float(a) for a in argv[2:]] or [0.0, 0.25, 0.5, 0.75, 1.0]
    try:
        run, ref = load_curve_json(Path(argv[0])), load_curve_json(Path(argv[1]))
        images = run.per_image
        order = [p["setting"] for p in images[0]["points"]]
        print(f"{argv[0]}: {len(images)} images, header + z "
              f"{np.mean([im['min_bytes'] for im in images]):.0f} B on average")
        for f in fractions:
            # the mean curve of `progcodec eval`: steps every image reaches, plus the whole file
            c = build_curve("", "", "", "", with_floor_cut(images, f), order, len(images))
            pts = " ".join(f"{b:.3f}/{p:.2f}" for b, p in zip(c.bpp, c.psnr))
            print(f"header + z x {1 - f:.2f}: BD-rate {bd_rate((ref.bpp, ref.psnr), (c.bpp, c.psnr)):+.1f}% "
                  f"(PCHIP) / {bd_rate((ref.bpp, ref.psnr), (c.bpp, c.psnr), 'cubic'):+.1f}% (cubic) "
                  f"against {Path(argv[1]).name}; bpp/dB {pts}")
    except (EvalError, BDError, KeyError, IndexError) as e:
        print(f"z_share_bound: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
