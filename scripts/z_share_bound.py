"""What a cheaper header + z could buy, read off one `progcodec eval` run: an optimistic bound.

    python scripts/z_share_bound.py RUN/results.json REFERENCE.json [FRACTIONS...]

For each fraction f (default 0 0.25 0.5 0.75 1), every decoded point of every image is moved
to f x (that file's smallest decodable prefix, header + z) fewer bytes, its PSNR kept: as if
the hyperprior cost that much less and predicted just as well. Prints the mean curve at the
steps every image reaches (plus the whole file) and its BD-rate against REFERENCE. The bound
is optimistic: a z with fewer bits gives the decoder worse means and scales.
"""
import json
import sys
from pathlib import Path

import numpy as np

from progcodec.bdrate import BDError, bd_rate
from progcodec.evaluate import EvalError, load_curve_json


def mean_curve(images: list[dict], f: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Settings every image reaches, with the mean bpp (floor cut by f) and mean PSNR."""
    common = set.intersection(*({p["setting"] for p in im["points"]} for im in images))
    order = [p["setting"] for p in images[0]["points"] if p["setting"] in common]
    bpp = np.zeros(len(order))
    psnr = np.zeros(len(order))
    for im in images:
        pixels = im["width"] * im["height"]
        points = {p["setting"]: p for p in im["points"]}
        for i, s in enumerate(order):
            bpp[i] += 8 * (points[s]["bytes"] - f * im["min_bytes"]) / pixels
            psnr[i] += points[s]["psnr"]
    return order, bpp / len(images), psnr / len(images)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    images = json.loads(Path(argv[0]).read_text())["per_image"]
    fractions = [float(a) for a in argv[2:]] or [0.0, 0.25, 0.5, 0.75, 1.0]
    try:
        ref = load_curve_json(Path(argv[1]))
        floor = np.mean([im["min_bytes"] for im in images])
        print(f"{argv[0]}: {len(images)} images, header + z {floor:.0f} B on average")
        for f in fractions:
            order, bpp, psnr = mean_curve(images, f)
            pts = " ".join(f"{b:.3f}/{p:.2f}" for b, p in zip(bpp, psnr))
            print(f"header + z x {1 - f:.2f}: BD-rate {bd_rate((ref.bpp, ref.psnr), (bpp, psnr)):+.1f}% "
                  f"(PCHIP) / {bd_rate((ref.bpp, ref.psnr), (bpp, psnr), 'cubic'):+.1f}% (cubic) "
                  f"against {Path(argv[1]).name}; bpp/dB {pts}")
    except (EvalError, BDError, KeyError) as e:
        print(f"z_share_bound: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
