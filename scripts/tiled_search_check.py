"""The tiled joint search against the whole-image one, on one image, for docs/latent-search.md.

    python scripts/tiled_search_check.py IMAGE TILE STEPS

Encodes IMAGE plainly, with the search of y alone, with the joint search on the whole image,
and with the joint search forced onto TILE-pixel tiles (codec.SEARCH_UNTILED_MAX = 0); prints
each encode's seconds and the PSNR-RGB of every file's prefix at equal byte counts: the
shortest prefix all four can decode (+30 bytes), 0.1, 0.2 and 0.5 bpp, and the plain file's
length.
"""
import sys
import time

import numpy as np
from PIL import Image

from progcodec import codec, container

img = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
tile, steps = int(sys.argv[2]), int(sys.argv[3])
pixels = img.shape[0] * img.shape[1]


def timed(**options):
    t = time.perf_counter()
    data = codec.encode(img, **options)
    return data, time.perf_counter() - t


files = {"plain": timed(), "y alone": timed(search=steps, search_z=False),
         "joint, whole image": timed(search=steps)}
codec.SEARCH_UNTILED_MAX, codec.SEARCH_TILE = 0, tile
files[f"joint, {tile} px tiles"] = timed(search=steps)

shortest = max(container.parse_header(d).min_length for d, _ in files.values()) + 30
cuts = [shortest] + [int(b * pixels / 8) for b in (0.1, 0.2, 0.5)] + [len(files["plain"][0])]
print("| file | encode (s) | bytes | z bytes | " + " | ".join(f"{n} B" for n in cuts) + " |")
print("|---|---|---|---|" + "---|" * len(cuts))
for name, (data, seconds) in files.items():
    psnrs = [codec.psnr(img, np.asarray(codec.decode(data[:n]))) for n in cuts]
    print(f"| {name} | {seconds:.1f} | {len(data)} | {container.parse_header(data).z_len} | "
          + " | ".join(f"{p:.2f}" for p in psnrs) + " |")
