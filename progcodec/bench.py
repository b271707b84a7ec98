"""Benchmark a model on a folder of images: quality at byte cuts, JPEG at the same rate, speed,
and bitstream exactness across thread counts and oneDNN. Prints Markdown; --json writes figures.

    python -m progcodec.bench ../shared/data/kodak --exactness --json out.json

For every image: one encode; decodes of prefixes at fractions of the file (--cuts, percent);
PSNR-RGB (8-bit, peak 255). JPEG: Pillow (4:2:0, optimize) at every quality 1..100; its PSNR at
our whole-file bpp is interpolated per image in log-bpp (not extrapolated: images whose bpp is
outside JPEG's range are reported).
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import codec, container
from .codec import psnr
from .weights import DEFAULT_MODEL, load_model

DEFAULT_CUTS = (2, 5, 10, 20, 30, 50, 75, 100)


def jpeg_curve(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, PSNR) of Pillow JPEG at qualities 1..100."""
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    rates, quals = [], []
    for q in range(1, 101):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q, optimize=True)
        rates.append(8 * buf.tell() / (h * w))
        quals.append(psnr(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), rgb))
    return np.array(rates), np.array(quals)


def interp_at(rate: float, rates: np.ndarray, values: np.ndarray) -> float | None:
    order = np.argsort(rates)
    r, v = np.log(rates[order]), values[order]
    if not r[0] <= np.log(rate) <= r[-1]:
        return None
    return float(np.interp(np.log(rate), r, v))


def encode_under(rgb, model, threads: int, onednn: bool) -> bytes:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.backends.mkldnn.flags(enabled=onednn):
            return codec.encode(rgb, model=model, device="cpu")
    finally:
        torch.set_num_threads(old)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path, help="folder of images (PNG/JPEG)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or .safetensors path")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--cuts", default=",".join(map(str, DEFAULT_CUTS)),
                    help="prefix lengths in percent of each file")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--files", default="", help="comma-separated file names to use (default: all)")
    ap.add_argument("--heldout", action="store_true",
                    help="use only the validation images that training holds out of this folder "
                         "(every 50th by name, see progcodec.train)")
    ap.add_argument("--no-jpeg", action="store_true", help="skip the JPEG comparison")
    ap.add_argument("--exactness", action="store_true",
                    help="also encode with 1 vs 2 threads and oneDNN on vs off; count differing bytes")
    ap.add_argument("--json", type=Path, help="write all figures (per image too) here")
    args = ap.parse_args(argv)

    loaded = load_model(args.model)
    cuts = [float(c) for c in args.cuts.split(",")]
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if args.heldout:
        from .train import list_images, split_train_validation
        files = split_train_validation(list_images(args.images))[1]
    if args.files:
        wanted = set(args.files.split(","))
        files = [f for f in files if f.name in wanted]
    if args.limit:
        files = files[:args.limit]
    if not files:
        print(f"no images in {args.images}", file=sys.stderr)
        return 1
    codec.runtime(loaded, args.device)  # load once, outside the timings

    per_image = []
    for i, f in enumerate(files):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        px = rgb.shape[0] * rgb.shape[1]
        t0 = time.perf_counter()
        data = codec.encode(rgb, model=loaded, device=args.device)
        t_enc = time.perf_counter() - t0
        h = container.parse_header(data)
        rec = {"file": f.name, "pixels": px, "bytes": len(data), "min_bytes": h.min_length,
               "encode_s": t_enc, "cuts": []}
        for c in cuts:
            n = max(h.min_length, int(round(len(data) * c / 100)))
            t0 = time.perf_counter()
            d = codec.decode_detailed(data[:n], model=loaded, device=args.device)
            t_dec = time.perf_counter() - t0
            rec["cuts"].append({"percent": c, "bytes": n, "bpp": 8 * n / px,
                                "psnr": psnr(np.asarray(d.image), rgb), "decode_s": t_dec,
                                "elements": d.elements_decoded, "elements_total": d.elements_total})
        rec["decode_s"] = rec["cuts"][-1]["decode_s"]
        if not args.no_jpeg:
            rates, quals = jpeg_curve(rgb)
            rec["jpeg_psnr_at_full_bpp"] = interp_at(rec["cuts"][-1]["bpp"], rates, quals)
        if args.exactness:
            variants = {"threads=1": (1, True), "threads=2": (2, True), "oneDNN off": (2, False)}
            ref = None
            rec["differing_bytes"] = {}
            for name, (t, o) in variants.items():
                b = encode_under(rgb, loaded, t, o)
                if ref is None:
                    ref = b
                diff = sum(x != y for x, y in zip(b, ref)) + abs(len(b) - len(ref))
                rec["differing_bytes"][name] = diff
            rec["differing_bytes"]["default vs threads=1"] = sum(
                x != y for x, y in zip(data, ref)) + abs(len(data) - len(ref))
        per_image.append(rec)
        last = rec["cuts"][-1]
        print(f"[{i + 1}/{len(files)}] {f.name}: {len(data)} bytes, {last['bpp']:.3f} bpp, "
              f"{last['psnr']:.2f} dB, enc {t_enc:.2f} s, dec {rec['decode_s']:.2f} s", file=sys.stderr)

    print(f"model {loaded.name} ({loaded.digest.hex()}), {len(files)} images from {args.images}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}\n")
    print("| cut (% of file) | mean bytes | mean bpp | mean PSNR-RGB (dB) | elements decoded |")
    print("|---|---|---|---|---|")
    summary = {"model": loaded.name, "digest": loaded.digest.hex(), "images": len(files), "cuts": []}
    for j, c in enumerate(cuts):
        rows = [r["cuts"][j] for r in per_image]
        s = {"percent": c, "bytes": statistics.mean(r["bytes"] for r in rows),
             "bpp": statistics.mean(r["bpp"] for r in rows),
             "psnr": statistics.mean(r["psnr"] for r in rows),
             "elements_fraction": statistics.mean(r["elements"] / r["elements_total"] for r in rows)}
        summary["cuts"].append(s)
        print(f"| {c:g} | {s['bytes']:.0f} | {s['bpp']:.4f} | {s['psnr']:.2f} | {100 * s['elements_fraction']:.1f}% |")
    mins = [r["min_bytes"] for r in per_image]
    min_bpp = statistics.mean(8 * r["min_bytes"] / r["pixels"] for r in per_image)
    summary["min_bpp"] = min_bpp
    print(f"\nminimum decodable prefix (header + z): mean "
          f"{statistics.mean(r['min_bytes'] for r in per_image):.0f} bytes, {min_bpp:.4f} bpp")
    enc_med = statistics.median(r["encode_s"] for r in per_image)
    dec_med = statistics.median(r["decode_s"] for r in per_image)
    summary.update(encode_median_s=enc_med, decode_median_s=dec_med)
    print(f"median seconds per image: encode {enc_med:.2f}, decode (whole file) {dec_med:.2f}")
    if not args.no_jpeg:
        pairs = [(r["cuts"][-1]["psnr"], r["jpeg_psnr_at_full_bpp"]) for r in per_image
                 if r["jpeg_psnr_at_full_bpp"] is not None]
        if pairs:
            gain = statistics.mean(a - b for a, b in pairs)
            summary["jpeg_gain_db_at_full_bpp"] = gain
            print(f"whole file vs Pillow JPEG at the same bpp: {gain:+.2f} dB mean over "
                  f"{len(pairs)} images (ours {statistics.mean(a for a, _ in pairs):.2f} dB, "
                  f"JPEG {statistics.mean(b for _, b in pairs):.2f} dB)")
        if len(pairs) < len(per_image):
            print(f"({len(per_image) - len(pairs)} images outside JPEG's rate range: not compared)")
    if args.exactness:
        totals = {}
        for r in per_image:
            for k, v in r["differing_bytes"].items():
                totals[k] = totals.get(k, 0) + v
        summary["differing_bytes"] = totals
        print("differing bytes over all files vs threads=1 (oneDNN on): "
              + ", ".join(f"{k}: {v}" for k, v in totals.items()))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "images": per_image}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
