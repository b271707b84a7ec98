"""Ordering ablation: which element order makes the best prefixes?

    python -m progcodec.ablation ../shared/data/kodak                       # shipped model, 3 orders
    python -m progcodec.ablation ../shared/data/kodak scale:runs/a/checkpoint.pt channel:runs/b/checkpoint.pt

Each positional SPEC is ORDER:MODEL (ORDER one of scale, table, channel, raster; MODEL a
.safetensors file, a model name or a training checkpoint.pt; "table" is the order of the model's
priority table, ordering.py). Without specs the default model is measured under every order (an inference-time ablation: the model was trained for the scale order, so the
fixed orders are at a disadvantage; the equal-budget comparison trains one model per order with
`python -m progcodec.train ... --order ORDER` and passes each checkpoint here).

Rates are ideal code lengths from the shipped integer tables (-log2 of each symbol's count / 2^22;
the real range coder is within 0.2% of that, DESIGN.md 4) plus the real header and z stream and the
CRC-block overhead; a prefix of k elements in the given order is reconstructed with the other
elements set to their predicted mean. Prints mean bpp / PSNR-RGB per target and the BD-rate of
every curve against the first one.

`--reuse FILE` adds the curves of an earlier run's --json (measured on the same images) without
measuring them again, so curves from several runs can share one table and one BD reference:

    python -m progcodec.ablation ../shared/data/kodak --reuse runs/a.json --reuse runs/b.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import codec, container, entropy
from .bdrate import BDError, bd_rate
from .codec import psnr
from .evaluate import EvalError, load_curve_json
from .model import ORDERS, ModelConfig, ProgressiveModel, element_order
from .tables import TABLE_TOTAL
from .weights import DEFAULT_MODEL, LoadedModel, load_model

TARGETS_BPP = (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)


def against_curve(curve, names: list[str]) -> tuple[str, tuple]:
    """(name, (bpp, psnr)) of a result curve over exactly these images.

    `progcodec eval`'s own files keep per-image points: the curve is re-averaged over `names`
    (a setting enters when every one of them has it), so --limit compares like with like.
    Other files are used whole, averaged over whatever images they were made from.
    """
    by_file = {p.get("file"): p.get("points", []) for p in curve.per_image}
    pts = []
    if names and all(n in by_file for n in names):
        settings: dict[str, list[dict]] = {}
        try:
            for n in names:
                for pt in by_file[n]:
                    settings.setdefault(pt["setting"], []).append(pt)
            pts = sorted((statistics.mean(float(p["bpp"]) for p in ps),
                          statistics.mean(float(p["psnr"]) for p in ps))
                         for ps in settings.values() if len(ps) == len(names))
        except (KeyError, TypeError, ValueError):   # not eval's per-image schema: use it whole
            pass
    if not pts:
        return curve.name, tuple(zip(*sorted(zip(curve.bpp, curve.psnr))))
    return f"{curve.name} (same {len(names)} images)", tuple(zip(*pts))


def checkpoint_label(path: Path) -> str:
    """runs/abl-scale/checkpoint.pt -> abl-scale; a kept snapshot runs/abl-scale/step004000.pt ->
    abl-scale@4000, so the snapshots of one run stay apart in a table."""
    run = path.parent.name or "checkpoint"
    step = path.stem[4:] if path.stem.startswith("step") else ""
    return f"{run}@{int(step)}" if step.isdigit() else run


def load_any(path_or_name: str) -> LoadedModel:
    """A weight file / model name, or a training checkpoint converted in memory."""
    if path_or_name.endswith(".pt"):
        from .export import runtime_model_from_trained
        state = torch.load(path_or_name, map_location="cpu", weights_only=False)
        trained = ProgressiveModel(ModelConfig(**state["config"]))
        trained.load_state_dict(state["model"])
        return LoadedModel(checkpoint_label(Path(path_or_name)), b"ablation",
                           runtime_model_from_trained(trained), Path(path_or_name))
    return load_model(path_or_name)


@torch.no_grad()
def measure_image(rgb: np.ndarray, loaded: LoadedModel, order_kind: str,
                  targets=TARGETS_BPP) -> list[dict]:
    """(bpp, PSNR) of prefixes of one image under one order, at each target bpp it can reach,
    plus the whole latent."""
    rt = codec.runtime(loaded, "cpu")
    h, w = rgb.shape[:2]
    px = h * w
    y = codec._analysis(rt, rgb)
    z_np = entropy.clamp_z(torch.round(rt.h_a64(y)).to(torch.int64)[0].numpy(), rt.models)
    mu, idx = rt.hyper(torch.from_numpy(z_np)[None])
    idx_np = idx.numpy()
    sym = entropy.clamp_y_symbols(torch.round(y.reshape(-1) - mu).numpy().astype(np.int64),
                                  idx_np, rt.models)
    tables = rt.models.tables
    radius = tables.y_radius.numpy().astype(np.int64)[idx_np]
    counts = tables.y_counts.numpy()[idx_np, sym + radius].astype(np.float64)
    bits = -np.log2(counts / TABLE_TOTAL)

    z_bytes = entropy.encode_z(z_np, rt.models)
    header = container.Header(loaded.name, bytes(8), w, h, len(z_bytes), 0)
    base_bits = 8 * header.min_length
    y_overhead = container.Y_BLOCK / (container.Y_BLOCK - 4)  # CRC-32 per y block

    shape = tuple(y.shape[1:])
    if order_kind == "table" and rt.order_rank is None:
        raise ValueError(f"model {loaded.name} has no order table")
    perm = element_order(idx[None], shape, order_kind, rt.levels, rt.order_rank)[0].numpy()
    cum = np.cumsum(bits[perm]) * y_overhead
    total_bits = base_bits + cum[-1]
    results = []
    budgets = [t * px for t in targets if base_bits < t * px < total_bits] + [total_bits]
    for budget in budgets:
        k = int(np.searchsorted(cum, budget - base_bits, side="right"))
        y_hat = mu.clone()
        keep = torch.from_numpy(perm[:k])
        y_hat[keep] += torch.from_numpy(sym[perm[:k]]).to(torch.float64)
        out = codec._synthesis(rt, y_hat.view(1, *shape).float(), h, w,
                               rt.side(keep, idx, (1, *shape)), received=k)
        used = base_bits + (cum[k - 1] if k else 0.0)
        results.append({"target": budget / px, "bpp": used / px, "psnr": psnr(out, rgb),
                        "elements": k, "whole": budget == total_bits})
    return results


def reused_curves(path: Path, names: list[str], taken: set[str]) -> dict[str, list]:
    """The curves of an earlier `--json`, checked to be of the same images (by name where the
    file lists them, older files by count) and not to repeat a label already in the table."""
    try:
        saved = json.loads(Path(path).read_text())
        curves = {str(k): [tuple(map(float, p)) for p in v] for k, v in saved["curves"].items()}
        count = int(saved["images"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not an ablation --json file ({e})") from None
    if count != len(names):
        raise ValueError(f"{path}: measured on {count} images, not these {len(names)}")
    if "files" in saved and list(saved["files"]) != names:
        raise ValueError(f"{path}: measured on other images than these {len(names)} (names differ)")
    for label in curves:
        if label in taken:
            raise ValueError(f"{path}: curve {label!r} is already in the table")
    return curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path, help="folder of images")
    ap.add_argument("specs", nargs="*", help="ORDER:MODEL pairs (default: the shipped model "
                                             "under every order)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--heldout", action="store_true",
                    help="only the validation images training holds out of this folder")
    ap.add_argument("--against", type=Path, metavar="FILE",
                    help="also give every curve's BD-rate against this CompressAI result file "
                         "(e.g. the jpeg2000.json that `progcodec eval` writes)")
    ap.add_argument("--json", type=Path, help="write the curves here")
    ap.add_argument("--reuse", type=Path, action="append", default=[], metavar="FILE",
                    help="add the curves of an earlier --json of the same images, first, "
                         "without measuring them again (repeatable)")
    args = ap.parse_intermixed_args(argv)  # flags may come before the specs

    if not args.specs and not args.reuse:
        has_table = load_model(DEFAULT_MODEL).model.tables.order_rank is not None
        args.specs = [f"{o}:{DEFAULT_MODEL}" for o in ORDERS if has_table or o != "table"]
    specs = args.specs
    runs = []
    for spec in specs:
        kind, _, model = spec.partition(":")
        if kind not in ORDERS or not model:
            ap.error(f"bad spec {spec!r}: expected ORDER:MODEL with ORDER in {ORDERS}")
        loaded = load_any(model)
        # A checkpoint is named by its run folder (runs/abl-scale/checkpoint.pt -> abl-scale).
        runs.append((f"{kind} ({loaded.name if model.endswith('.pt') else Path(model).name})",
                     kind, loaded))
    from .train import list_images, split_train_validation
    files = list_images(args.images)
    if args.heldout:
        files = split_train_validation(files)[1]
    files = files[:args.limit or None]
    names = [f.name for f in files]  # what --reuse, --against and --json match images by

    against = None
    if args.against:
        try:
            against = load_curve_json(args.against)
        except EvalError as e:
            ap.error(str(e))

    curves = {}
    for path in args.reuse:
        try:
            curves.update(reused_curves(path, names, set(curves)))
        except ValueError as e:
            ap.error(str(e))
    for label, kind, loaded in runs:
        per_target: dict[float, list[dict]] = {}
        whole = []
        for i, f in enumerate(files):
            with Image.open(f) as im:
                rgb = np.asarray(im.convert("RGB"))
            for r in measure_image(rgb, loaded, kind):
                (whole if r["whole"] else per_target.setdefault(r["target"], [])).append(r)
            print(f"{label}: {i + 1}/{len(files)} {f.name}", file=sys.stderr)
        # a target enters the curve only when every image reached it: means over equal sets
        pts = [(statistics.mean(r["bpp"] for r in rs), statistics.mean(r["psnr"] for r in rs))
               for t, rs in sorted(per_target.items()) if len(rs) == len(files)]
        pts.append((statistics.mean(r["bpp"] for r in whole), statistics.mean(r["psnr"] for r in whole)))
        curves[label] = pts

    print(f"{len(files)} images from {args.images}\n")
    labels = list(curves)
    print("| order (model) | " + " | ".join(f"{t:g}" for t in TARGETS_BPP) + " | whole file |")
    print("|---|" + "---|" * (len(TARGETS_BPP) + 1))
    for label in labels:
        row = []
        for t in TARGETS_BPP:
            near = [p for b, p in curves[label][:-1] if abs(b - t) < 0.01 * t + 1e-3]
            row.append(f"{near[0]:.2f}" if near else "-")
        b, p = curves[label][-1]
        print(f"| {label} | " + " | ".join(row) + f" | {b:.3f} bpp / {p:.2f} dB |")
    ref = labels[0]
    print(f"\nBD-rate against {ref} (PSNR, PCHIP over the overlapping range):")
    bd = {}
    for label in labels[1:]:
        try:
            bd[label] = bd_rate(tuple(zip(*curves[ref])), tuple(zip(*curves[label])))
            print(f"- {label}: {bd[label]:+.1f}%")
        except BDError as e:
            print(f"- {label}: not computed ({e})")
    bd_against = {}
    if against is not None:
        name, other_pts = against_curve(against, names)
        print(f"\nBD-rate against {name} ({args.against}; PSNR, PCHIP over the overlapping range):")
        for label in labels:
            try:
                bd_against[label] = bd_rate(other_pts, tuple(zip(*curves[label])))
                print(f"- {label}: {bd_against[label]:+.1f}%")
            except BDError as e:
                print(f"- {label}: not computed ({e})")
    if args.json:
        args.json.write_text(json.dumps({"images": len(files), "files": names,
                                         "reference": ref, "curves": curves,
                                         "bd_rate_percent": bd, "against": str(args.against or ""),
                                         "bd_rate_against_percent": bd_against}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
