"""The ladder picture: one .pic file decoded at several prefixes, side by side, each tile
labelled with its bytes, bpp and (given the original) PSNR-RGB. Pillow only."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import codec
from .metrics import psnr

GAP = 8          # pixels between tiles
LABEL_H = 38     # label strip under each tile: two lines
DEFAULT_TILES = 6


def parse_cuts(spec: str, width: int, height: int, total: int) -> list[int]:
    """'600,1200,0.25bpp,full' -> byte counts: integers are bytes, 'Xbpp' is floor(X x pixels
    / 8) bytes, 'full' the whole file. ValueError on anything else."""
    out = []
    for item in spec.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item in ("full", "all"):
            out.append(total)
        elif item.endswith("bpp"):
            b = float(item[:-3])
            if not (b > 0 and np.isfinite(b)):
                raise ValueError(f"cut {item!r}: bpp must be a positive number")
            out.append(int(b * width * height // 8))
        else:
            n = int(item)
            if n < 1:
                raise ValueError(f"cut {item!r}: bytes must be positive")
            out.append(n)
    if not out:
        raise ValueError("no cuts given")
    return out


def default_cuts(min_len: int, total: int, tiles: int = DEFAULT_TILES) -> list[int]:
    """`tiles` prefixes from the minimum to the whole file, equal ratios of bytes apart."""
    cuts = sorted({int(round(min_len * (total / min_len) ** (i / (tiles - 1)))) for i in range(tiles)})
    return [min(max(c, min_len), total) for c in cuts]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def ladder(data: bytes, cuts: list[int] | None = None, original=None, *, model=None,
           device: str = "auto") -> Image.Image:
    """Decode `data` at each cut (bytes; default: default_cuts) and lay the images out left to
    right, each above a label. original (PIL image or array) adds PSNR-RGB to the labels."""
    min_len = len(codec.truncate(data, quality=0))
    cuts = cuts or default_cuts(min_len, len(data))
    ref = codec.to_rgb_array(original) if original is not None else None
    tiles = []
    for n in cuts:
        d = codec.decode_detailed(data, nbytes=min(n, len(data)), model=model, device=device)
        tiles.append(d)
    w, h = tiles[0].image.size
    if ref is not None and ref.shape[:2] != (h, w):
        raise codec.CodecError(f"original is {ref.shape[1]}x{ref.shape[0]}, the file {w}x{h}")
    canvas = Image.new("RGB", (len(tiles) * w + (len(tiles) - 1) * GAP, h + LABEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    for i, d in enumerate(tiles):
        x = i * (w + GAP)
        canvas.paste(d.image, (x, 0))
        label = f"{d.bytes_used} B, {8 * d.bytes_used / (w * h):.3f} bpp"
        if ref is not None:
            label += f"\nPSNR {psnr(ref, np.asarray(d.image)):.2f} dB"
        draw.multiline_text((x + 3, h + 2), label, fill="black", font=font, spacing=2)
    return canvas


def ladder_png(data: bytes, cuts=None, original=None, **options) -> bytes:
    buf = io.BytesIO()
    ladder(data, cuts, original, **options).save(buf, format="PNG")
    return buf.getvalue()
