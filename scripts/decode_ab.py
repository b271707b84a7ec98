"""Decode times of two models' files of the same images, alternating in one process, so that
both see the same machine: a check that a model change did not change decoding work.

    python scripts/decode_ab.py MODEL_A MODEL_B IMAGE... [--rounds 4] [--bpp 0.4]

Each image is encoded once with each model; then, for every round, each model decodes each of
its files whole and cut at --bpp. Prints the median and the slowest decode per model.
"""
import argparse
import statistics
import time

from PIL import Image

from progcodec import codec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--bpp", type=float, default=0.4, help="the cut decoded beside the whole file")
    args = ap.parse_args()
    images = [Image.open(p).convert("RGB") for p in args.images]
    models = (args.model_a, args.model_b)
    files = {m: [codec.encode(im, model=m) for im in images] for m in models}
    for m in models:  # first decode of a process builds the runtime: not timed
        codec.decode(files[m][0], model=m)
    times = {m: [] for m in models}
    for _ in range(args.rounds):
        for m in models:
            for im, data in zip(images, files[m]):
                for n in (len(data), int(args.bpp * im.width * im.height / 8)):
                    start = time.perf_counter()
                    codec.decode(data[:n], model=m)
                    times[m].append(time.perf_counter() - start)
    for m in models:
        print(f"{m}: median decode {statistics.median(times[m]):.3f} s, slowest "
              f"{max(times[m]):.3f} s over {len(times[m])} decodes; file sizes "
              f"{[len(d) for d in files[m]]}")


if __name__ == "__main__":
    main()
