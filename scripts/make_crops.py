"""Pack the training photos small enough to upload for a GPU burst: one random square crop of
each training image (the validation images that progcodec.train holds out are skipped), saved
as WebP. The device tool carries at most 64 MiB per call, model and code included, so the
whole 206 MB folder cannot travel; crops a little larger than the training patch keep random
offsets for progcodec.train.

    python scripts/make_crops.py ../shared/data/train .gpudata --size 288 --quality 95
"""
import argparse
import random
from pathlib import Path

from PIL import Image

from progcodec.train import list_images, split_train_validation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=288, help="side of the square crop")
    ap.add_argument("--quality", type=int, default=95, help="WebP quality")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    files, _ = split_train_validation(list_images(args.data))
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            s = min(args.size, im.width, im.height)
            x, y = rng.randrange(im.width - s + 1), rng.randrange(im.height - s + 1)
            dst = args.out / (f.stem + ".webp")
            im.crop((x, y, x + s, y + s)).save(dst, format="WEBP", quality=args.quality, method=6)
            total += dst.stat().st_size
    print(f"{len(files)} crops, {total / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
