"""`progcodec eval`: rate-distortion evaluation of a model on a folder of images, beside classic
codecs and published curves. Uses only progcodec's public codec API.

For every image: ONE encode; decodes of prefixes at the ladder LADDER_BPP (a step is used when
its byte count floor(bpp x pixels / 8) is at least the file's minimum decodable prefix and
shorter than the whole file) and of the whole file. bpp = 8 x bytes decoded / pixels.

Averaging (CompressAI's convention: mean bpp and mean quality over images, per setting):
- a ladder step's mean is taken over the images whose file reaches it (the number is recorded);
- the curve used for the plot and BD-rates keeps only the steps that EVERY image reaches, then
  the whole-file point (its own mean over all images), so every point of a curve averages the
  same images; steps reached by only some images are in the table and the JSON, marked.
Classic progressive codecs (progressive JPEG, JPEG 2000) are cut at the same byte counts and
averaged the same way; swept codecs (JPEG, WebP) are averaged per quality setting.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import bdrate, classic, codec
from .metrics import Original

LADDER_BPP = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"}
OURS = "progcodec"
WHOLE = "whole file"
PLOT_MAX_BPP = 2.2


class EvalError(Exception):
    """Bad arguments or data for an evaluation (one line for the user)."""


@dataclass
class Curve:
    """One rate-distortion curve in CompressAI's result schema, plus how it was obtained."""
    key: str                      # short id: progcodec, jpeg, jpeg2000, or an anchor file stem
    name: str
    description: str
    kind: str                     # "ours", "measured" or "anchor"
    bpp: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ms_ssim: list[float] = field(default_factory=list)
    encoding_time: list[float] = field(default_factory=list)
    decoding_time: list[float] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)       # table rows (setting, images, means)
    per_image: list[dict] = field(default_factory=list)
    median_encode_s: float | None = None
    median_decode_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def results(self) -> dict:
        out = {"bpp": self.bpp, "psnr-rgb": self.psnr}
        if self.ms_ssim:
            out["ms-ssim"] = self.ms_ssim
        if self.encoding_time:
            out["encoding_time"] = self.encoding_time
            out["decoding_time"] = self.decoding_time
        return out

    def to_json(self) -> dict:
        """CompressAI's schema (name, description, results) and our extra fields."""
        return {"name": self.name, "description": self.description, "results": self.results(),
                "steps": self.steps, "median_encode_s": self.median_encode_s,
                "median_decode_s": self.median_decode_s, "notes": self.notes,
                "per_image": self.per_image}


def load_curve_json(path: Path) -> Curve:
    """A curve from a JSON file in CompressAI's result schema ('ms-ssim' or 'ms-ssim-rgb')."""
    try:
        d = json.loads(Path(path).read_text())
        r = d["results"]
        bpp, psnr = [float(v) for v in r["bpp"]], [float(v) for v in r["psnr-rgb"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{path}: not a CompressAI result file ({type(e).__name__}: {e})") from None
    if len(bpp) != len(psnr) or not bpp:
        raise EvalError(f"{path}: bpp and psnr-rgb lists differ in length or are empty")
    ms = r.get("ms-ssim", r.get("ms-ssim-rgb", []))
    ms = [float(v) for v in ms] if len(ms) == len(bpp) else []
    name = str(d.get("name") or Path(path).stem)
    per_image = d.get("per_image")    # present in files `progcodec eval` wrote
    per_image = per_image if isinstance(per_image, list) and all(
        isinstance(p, dict) for p in per_image) else []
    return Curve(Path(path).stem, name, str(d.get("description", "")), "anchor", bpp, psnr, ms,
                 per_image=per_image)


def load_anchors(directory: Path) -> list[Curve]:
    d = Path(directory)
    if not d.is_dir():
        raise EvalError(f"--anchors {directory}: not a directory")
    files = sorted(d.glob("*.json"))
    if not files:
        raise EvalError(f"--anchors {directory}: no *.json files")
    return [load_curve_json(f) for f in files]


def list_images(directory: Path, limit: int = 0) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise EvalError(f"{directory}: not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit:
        files = files[:limit]
    if not files:
        raise EvalError(f"{directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def ladder_cuts(pixels: int) -> list[tuple[str, int]]:
    """(label, bytes) of every ladder step for an image of this many pixels."""
    return [(f"{b:g} bpp", int(math.floor(b * pixels / 8))) for b in LADDER_BPP]


def describe_device(device: str) -> str:
    import torch
    dev = codec.pick_device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


# ---- measuring -------------------------------------------------------------------------------
def measure_ours(orig: Original, loaded, device: str, refine: float | None = None,
                 search: int = 0, search_z: bool = True) -> dict:
    """One encode, decodes at every ladder step the file reaches and of the whole file."""
    t0 = time.perf_counter()
    data = codec.encode(orig.rgb, model=loaded, device=device, refine=refine, search=search,
                        search_z=search_z)
    t_enc = time.perf_counter() - t0
    min_len = len(codec.truncate(data, quality=0))  # the smallest decodable prefix
    points = []
    cuts = [(label, n) for label, n in ladder_cuts(orig.pixels) if min_len <= n < len(data)]
    for label, n in cuts + [(WHOLE, len(data))]:
        t0 = time.perf_counter()
        d = codec.decode_detailed(data[:n], model=loaded, device=device)
        t_dec = time.perf_counter() - t0
        p, m = orig.score(np.asarray(d.image))
        points.append({"setting": label, "bytes": d.bytes_used, "bpp": 8 * d.bytes_used / orig.pixels,
                       "psnr": p, "ms_ssim": m, "encoding_time": t_enc, "decoding_time": t_dec,
                       "elements_decoded": d.elements_decoded, "elements_total": d.elements_total,
                       "refinements_decoded": d.refinements_decoded})
    return {"bytes": len(data), "min_bytes": min_len, "encode_s": t_enc,
            "decode_s": points[-1]["decoding_time"], "points": points}


def measure_classic(name: str, orig: Original) -> dict:
    t0 = time.perf_counter()
    pts = classic.RUNNERS[name](orig, ladder_cuts(orig.pixels))
    wall = time.perf_counter() - t0
    points = [{"setting": p.setting, "bytes": p.nbytes, "bpp": p.bpp, "psnr": p.psnr,
               "ms_ssim": p.ms_ssim, "encoding_time": p.encoding_time,
               "decoding_time": p.decoding_time, **p.extra} for p in pts]
    return {"points": points, "seconds": wall,
            "encode_s": statistics.mean(p.encoding_time for p in pts),
            "decode_s": statistics.mean(p.decoding_time for p in pts)}


def _mean_steps(per_image: list[dict], order: list[str], n_images: int) -> list[dict]:
    steps = []
    for setting in order:
        rows = [p for r in per_image for p in r["points"] if p["setting"] == setting]
        if not rows:
            continue
        steps.append({"setting": setting, "images": len(rows), "complete": len(rows) == n_images,
                      **{k: statistics.mean(p[k] for p in rows)
                         for k in ("bpp", "psnr", "ms_ssim", "encoding_time", "decoding_time")}})
    return steps


def build_curve(key, name, description, kind, per_image, order, n_images) -> Curve:
    steps = _mean_steps(per_image, order, n_images)
    c = Curve(key, name, description, kind, steps=steps, per_image=per_image)
    for s in steps:
        if s["complete"]:
            c.bpp.append(s["bpp"])
            c.psnr.append(s["psnr"])
            c.ms_ssim.append(s["ms_ssim"])
            c.encoding_time.append(s["encoding_time"])
            c.decoding_time.append(s["decoding_time"])
    if per_image:
        c.median_encode_s = statistics.median(r["encode_s"] for r in per_image)
        c.median_decode_s = statistics.median(r["decode_s"] for r in per_image)
    return c


# ---- BD-rate table -----------------------------------------------------------------------------
def pick_reference(curves: list[Curve], reference: str | None) -> Curve:
    """--reference: a curve key or name (case-insensitive); default: our truncated JPEG 2000
    when measured, else the JPEG 2000 anchor, else JPEG measured here, else the first curve."""
    if reference:
        want = reference.lower()
        for c in curves:
            if want in (c.key.lower(), c.name.lower()):
                return c
        raise EvalError(f"--reference {reference}: no such curve; have "
                        + ", ".join(c.key for c in curves))
    for key in ("jpeg2000",):
        for c in curves:
            if c.key == key and c.kind == "measured":
                return c
    for c in curves:
        if c.kind == "anchor" and "jpeg2000" in c.name.lower().replace(" ", ""):
            return c
    for c in curves:
        if c.key == "jpeg" and c.kind == "measured":
            return c
    return curves[0]


def bd_table(curves: list[Curve], ref: Curve) -> list[dict]:
    rows = []
    for c in curves:
        if c is ref:
            continue
        row = {"curve": c.name, "key": c.key}
        try:
            lo, hi, rlo, rhi = bdrate.overlap((ref.bpp, ref.psnr), (c.bpp, c.psnr))
            row.update(psnr_range=[lo, hi], ref_bpp_range=[rlo, rhi])
        except bdrate.BDError as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        for method in bdrate.METHODS:
            for what, fn in (("bd_rate", bdrate.bd_rate), ("bd_psnr", bdrate.bd_quality)):
                try:
                    row[f"{what}_{method}"] = fn((ref.bpp, ref.psnr), (c.bpp, c.psnr), method)
                except bdrate.BDError as e:
                    row[f"{what}_{method}"] = None
                    row.setdefault("error", str(e))
        rows.append(row)
    return rows


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    curves: list[Curve]
    reference: Curve
    bd: list[dict]
    meta: dict
    notes: list[str]


def run(dataset: Path, *, model=None, device: str = "auto", against=(), anchors: Path | None = None,
        reference: str | None = None, limit: int = 0, command: str = "", refine: float | None = None,
        search: int = 0, search_z: bool = True,
        on_image: Callable[[str], None] | None = None,
        note: Callable[[str], None] | None = None) -> EvalResult:
    """Measure everything; no files written (see write_outputs)."""
    notes: list[str] = []

    def add_note(msg):
        notes.append(msg)
        if note:
            note(msg)

    for name in against:
        if name not in classic.RUNNERS:
            raise EvalError(f"unknown codec {name!r}; choose from {', '.join(classic.RUNNERS)}")
    files = list_images(dataset, limit)
    anchor_curves = load_anchors(anchors) if anchors else []
    ref_file = None
    if reference and reference.lower().endswith(".json"):
        ref_file = load_curve_json(Path(reference))
        ref_file.kind = "anchor"
    loaded = codec.load_model(model) if model is not None else codec.load_model()
    codec.encode(np.zeros((64, 64, 3), np.uint8), model=loaded, device=device)  # warm, untimed
    available = []
    for name in against:
        try:
            classic.check_available(name)
            available.append(name)
        except classic.CodecUnavailable as e:
            add_note(f"{name} skipped: {e}")
    ours, theirs = [], {name: [] for name in available}
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    for f in files:
        try:
            with Image.open(f) as im:
                rgb = codec.to_rgb_array(im)
        except (OSError, codec.CodecError) as e:
            raise EvalError(f"{f}: {e}") from None
        orig = Original(rgb)
        rec = measure_ours(orig, loaded, device, refine, search, search_z)
        ours.append({"file": f.name, "width": orig.width, "height": orig.height, **rec})
        for name in list(theirs):
            try:
                r = measure_classic(name, orig)
            except (classic.J2KError, OSError, classic.subprocess.SubprocessError) as e:
                add_note(f"{name} failed on {f.name}, dropped from the run: {e}")
                del theirs[name]
                continue
            dropped = [d for p in r["points"] for d in p.get("dropped_cuts", [])]
            if dropped:
                add_note(f"{name}: cuts of {f.name} that did not decode, left out: {', '.join(dropped)}")
            theirs[name].append({"file": f.name, **r})
        if on_image:
            on_image(f.name)
    wall = time.perf_counter() - t_start

    n = len(files)
    order = [label for label, _ in ladder_cuts(1)] + [WHOLE]
    curves = [build_curve(OURS, f"{loaded.name} (one file, truncated)",
                          f"progcodec {loaded.name}: one encode per image, decoded at prefixes "
                          f"of {', '.join(f'{b:g}' for b in LADDER_BPP)} bpp and the whole file",
                          "ours", ours, order, n)]
    for name, per_image in theirs.items():
        if name in classic.PROGRESSIVE:
            steps = order
        else:
            steps = [p["setting"] for p in per_image[0]["points"]] if per_image else []
        curves.append(build_curve(name, classic.LABELS[name], classic.DESCRIPTIONS[name],
                                  "measured", per_image, steps, n))
    curves += anchor_curves
    if ref_file:
        curves.append(ref_file)
    ref = ref_file or pick_reference(curves, reference)
    meta = {"command": command, "dataset": str(dataset), "images": n,
            "model": loaded.name, "model_digest": loaded.digest.hex(),
            "device": describe_device(device), "seconds": wall, "cpu_count": os.cpu_count(),
            "load_average_at_start": load_start,
            "against": list(against), "measured": list(theirs), "anchors": str(anchors or ""),
            "ladder_bpp": list(LADDER_BPP), "reference": ref.name,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return EvalResult(curves, ref, bd_table(curves, ref), meta, notes)


# ---- outputs ---------------------------------------------------------------------------------
def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def markdown(res: EvalResult) -> str:
    m = res.meta
    ref = res.reference
    lines = [f"# progcodec results: {Path(m['dataset']).name}", "",
             f"Produced by `{m['command']}` on {m['date_utc']}." if m["command"] else
             f"Produced on {m['date_utc']}.", "",
             f"- model: `{m['model']}` (weights digest `{m['model_digest']}`)",
             f"- images: {m['images']} from `{m['dataset']}`",
             f"- device: {m['device']}; whole run {m['seconds']:.0f} s"
             + (f" (1-minute load average {m['load_average_at_start']:.1f} on {m['cpu_count']} "
                "CPUs when it started)" if m.get("load_average_at_start") is not None else ""),
             "- PSNR-RGB: 8-bit, peak 255, MSE over all pixels and channels, averaged over images "
             "per point; MS-SSIM: 5 scales, 11x11 Gaussian (sigma 1.5), per RGB channel, averaged "
             "(as pytorch_msssim / CompressAI).",
             "- bpp = 8 x bytes decoded / pixels. progcodec and the truncated classics decode "
             "prefixes of ONE file per image at the ladder "
             f"{', '.join(f'{b:g}' for b in LADDER_BPP)} bpp (a step is used where the file is "
             "long enough) and the whole file. A step's mean is over the images that reach it "
             "(column 'images'); the curves (plot, BD-rates) keep only the steps every image "
             "reaches, plus the whole-file point.",
             "- JPEG 2000 cuts keep whole packets only (located through the PLT markers), so "
             "their bpp, counted on the bytes of the written codestream, is at or below the "
             "step's budget.", ""]
    if m.get("plot"):
        lines += [f"![PSNR-RGB and MS-SSIM against bpp]({m['plot']})", ""]
    for c in res.curves:
        if c.kind == "anchor":
            continue
        lines += [f"## {c.name}", "", c.description, "",
                  "| setting | images | bpp | PSNR-RGB (dB) | MS-SSIM |", "|---|---|---|---|---|"]
        for s in c.steps:
            mark = "" if s["complete"] else " *"
            lines.append(f"| {s['setting']}{mark} | {s['images']} | {s['bpp']:.4f} | "
                         f"{s['psnr']:.2f} | {s['ms_ssim']:.4f} |")
        if any(not s["complete"] for s in c.steps):
            lines.append("\n\\* reached by only some images: in the table, not in the curve.")
        for n in c.notes:
            lines.append(f"\nNote: {n}")
        lines.append("")
    lines += [f"## BD-rate against {ref.name}", "",
              "Negative BD-rate: fewer bits than the reference for the same PSNR-RGB. Both "
              "interpolations of log-rate over PSNR: PCHIP (piecewise cubic Hermite, exact "
              "integral) and the classic Bjøntegaard cubic fit; BD-PSNR (PCHIP) over the common "
              "log-rate range. The overlap is the common PSNR range; bpp range: where the "
              "reference reaches its ends.", "",
              "| curve | BD-rate PCHIP | BD-rate cubic | BD-PSNR (dB) | PSNR overlap (dB) | bpp range (reference) |",
              "|---|---|---|---|---|---|"]
    for r in res.bd:
        if "psnr_range" not in r:
            lines.append(f"| {r['curve']} | – | – | – | none | {r.get('error', '')} |")
            continue
        lines.append(f"| {r['curve']} | {_f(r.get('bd_rate_pchip'), '+.1f')}% | "
                     f"{_f(r.get('bd_rate_cubic'), '+.1f')}% | {_f(r.get('bd_psnr_pchip'), '+.2f')} | "
                     f"{r['psnr_range'][0]:.2f}–{r['psnr_range'][1]:.2f} | "
                     f"{r['ref_bpp_range'][0]:.3f}–{r['ref_bpp_range'][1]:.3f} |")
    lines += ["", "## Time per image (median over images)", "",
              f"Device: {m['device']}. progcodec: its one encode, and the decode of the whole "
              "file; classic codecs: mean over their settings (a truncated codec's encode is its "
              "one encode). No time includes the metrics.", "",
              "| codec | encode (s) | decode (s) |", "|---|---|---|"]
    for c in res.curves:
        if c.median_encode_s is not None:
            lines.append(f"| {c.name} | {c.median_encode_s:.3f} | {c.median_decode_s:.3f} |")
    anchors = [c for c in res.curves if c.kind == "anchor"]
    if anchors:
        lines += ["", "Published curves (not measured here): "
                  + ", ".join(f"{c.name} (`{c.key}.json`)" for c in anchors) + "."]
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines) + "\n"


def plot_png(res: EvalResult) -> bytes:
    """The RD plot (PSNR and MS-SSIM against bpp). ImportError without matplotlib."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    anchors = [c for c in res.curves if c.kind == "anchor"]
    anchor_colors = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(anchors))))
    for c in res.curves:
        if not c.bpp:
            continue
        style = {"ours": dict(lw=2.5, marker="o", ms=4, color="black", zorder=5),
                 "measured": dict(lw=1.5, marker=".", ms=5),
                 "anchor": dict(lw=1, ls="--", alpha=0.8)}[c.kind]
        if c.kind == "anchor":
            style["color"] = anchor_colors[anchors.index(c)]
        sel = [i for i, b in enumerate(c.bpp) if b <= PLOT_MAX_BPP * 1.2]
        axes[0].plot([c.bpp[i] for i in sel], [c.psnr[i] for i in sel], label=c.name, **style)
        if c.ms_ssim:
            axes[1].plot([c.bpp[i] for i in sel], [c.ms_ssim[i] for i in sel], label=c.name, **style)
    title = f"{Path(res.meta['dataset']).name}, {res.meta['images']} images"
    for ax, ylabel in ((axes[0], "PSNR-RGB (dB)"), (axes[1], "MS-SSIM (RGB)")):
        ax.set_xlim(0, PLOT_MAX_BPP)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.set_title(title)
    axes[1].set_ylim(0.8, 1.0)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(res: EvalResult, out_dir: Path, write: Callable[[str, bytes], None],
                  note: Callable[[str], None] | None = None) -> list[str]:
    """results.json (ours, CompressAI schema, with run metadata and the BD table),
    <codec>.json per measured codec, results.md and rd.png; returns the paths written."""
    out = Path(out_dir)
    written = []

    def put(name, data: bytes):
        write(str(out / name), data)
        written.append(str(out / name))

    try:
        png = plot_png(res)
        res.meta["plot"] = "rd.png"
    except ImportError:
        png = None
        msg = "matplotlib is not installed: no rd.png (pip install 'progcodec[eval]' for the plot)"
        res.notes.append(msg)
        if note:
            note(msg)
    for c in res.curves:
        if c.kind == "anchor":
            continue
        d = c.to_json()
        if c.kind == "ours":
            d["run"] = {**res.meta, "notes": res.notes, "bd_rate": {"reference": res.reference.name,
                                                                    "rows": res.bd}}
        put("results.json" if c.kind == "ours" else f"{c.key}.json",
            (json.dumps(d, indent=1) + "\n").encode())
    put("results.md", markdown(res).encode())
    if png is not None:
        put("rd.png", png)
    return written
