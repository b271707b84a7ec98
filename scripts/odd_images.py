"""Odd input images through the CLI: prints a markdown table (input -> result).

    python scripts/odd_images.py [--model tests/data/tiny.safetensors]

Each case is written to a temporary folder, encoded and (when encoding succeeds) decoded with
`python -m progcodec`; the table shows exit codes, the decoded size next to the size the image
is displayed at, and the one line of any error or warning. tests/test_odd_images.py runs the
same cases in process.
"""
from __future__ import annotations

import argparse
import io
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.safetensors"


def _pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], -1)
    return np.clip(img + rng.integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)


def _png16_rgb(path: Path, h: int, w: int) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    v = (_pattern(h, w).astype(np.uint16) * 257).astype(">u2")
    raw = b"".join(b"\0" + v[r].tobytes() for r in range(h))

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A small PNG whose header claims w x h (a decompression bomb's shape)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _exif_rotated(path: Path) -> None:
    """Stored 64x40, EXIF orientation 6 (rotate 90 cw to display): displayed 40x64."""
    im = Image.fromarray(_pattern(40, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif.tobytes(), quality=90)


def _rgba(path: Path) -> None:
    a = np.zeros((32, 48, 4), np.uint8)
    a[..., :3] = _pattern(32, 48)
    a[..., 3] = np.where(np.arange(48) < 24, 255, 0)[None, :]  # right half transparent
    Image.fromarray(a, "RGBA").save(path)


def _palette_transparent(path: Path) -> None:
    im = Image.fromarray(_pattern(30, 50)).quantize(16)
    im.info["transparency"] = 0
    im.save(path, transparency=0)


# (name, file name, writer(path) or None, expected: size displayed or an error substring)
CASES = [
    ("RGB 64x48 (reference)", "rgb.png", lambda p: Image.fromarray(_pattern(48, 64)).save(p), (64, 48)),
    ("grayscale L", "gray.png", lambda p: Image.fromarray(_pattern(48, 64)[..., 0]).save(p), (64, 48)),
    ("grayscale+alpha LA", "la.png",
     lambda p: Image.fromarray(_pattern(48, 64)[..., :2].copy(), "LA").save(p), (64, 48)),
    ("RGBA, half transparent", "rgba.png", _rgba, (48, 32)),
    ("palette P", "p.png", lambda p: Image.fromarray(_pattern(30, 50)).quantize(16).save(p), (50, 30)),
    ("palette P with transparency", "pt.png", _palette_transparent, (50, 30)),
    ("16-bit grayscale PNG (I;16)", "g16.png",
     lambda p: Image.fromarray((_pattern(48, 64)[..., 0].astype(np.uint16) * 257)).save(p), (64, 48)),
    ("16-bit RGB PNG", "rgb16.png", lambda p: _png16_rgb(p, 48, 64), (64, 48)),
    ("CMYK JPEG", "cmyk.jpg", lambda p: Image.fromarray(_pattern(48, 64)).convert("CMYK").save(p), (64, 48)),
    ("JPEG, EXIF orientation 6 (stored 64x40)", "rot6.jpg", _exif_rotated, (40, 64)),
    ("1x1", "one.png", lambda p: Image.fromarray(_pattern(1, 1)).save(p), (1, 1)),
    ("17x3001", "tall.png", lambda p: Image.fromarray(_pattern(3001, 17)).save(p), (17, 3001)),
    ("3001x17", "wide.png", lambda p: Image.fromarray(_pattern(17, 3001)).save(p), (3001, 17)),
    ("PNG header claiming 9000x8000 (72 Mpx)", "bomb.png", lambda p: _png_header_only(p, 9000, 8000),
     "exceeds the limit"),
    ("empty file .png", "empty.png", lambda p: p.write_bytes(b""), "empty file"),
    ("text file named .png", "text.png", lambda p: p.write_text("hello, not an image\n"),
     "not a readable image"),
    ("missing path", "missing.png", None, "No such file"),
    ("a directory", "adir", lambda p: p.mkdir(), "Is a directory"),
]


def run_case(name, fname, writer, expected, folder: Path, invoke, model: str) -> dict:
    """invoke(args) -> (exit status, stderr). Returns the row's fields."""
    src = folder / fname
    if writer is not None:
        writer(src)
    shown = None
    if isinstance(expected, tuple):
        from PIL import ImageOps
        shown = ImageOps.exif_transpose(Image.open(src)).size
    pic, out = folder / (fname + ".pic"), folder / (fname + ".decoded.png")
    rc, err = invoke(["encode", str(src), "-o", str(pic), "--model", model, "--quiet"])
    err = err.replace(f"{folder}/", "")
    row = {"name": name, "mode": Image.open(src).mode if shown else "-", "encode_rc": rc,
           "encode_err": err.strip(), "decode_rc": None, "decoded": None, "shown": shown}
    if rc == 0:
        rc2, err2 = invoke(["decode", str(pic), "-o", str(out), "--model", model, "--quiet"])
        row["decode_rc"], row["decode_err"] = rc2, err2.replace(f"{folder}/", "").strip()
        if rc2 == 0:
            row["decoded"] = Image.open(out).size
    return row


def _cell(row) -> str:
    if row["encode_rc"] != 0:
        return f"exit {row['encode_rc']}: `{row['encode_err']}`"
    if row["decode_rc"] != 0:
        return f"encoded; decode exit {row['decode_rc']}: `{row['decode_err']}`"
    w, h = row["decoded"]
    ok = "=" if row["decoded"] == row["shown"] else "!="
    note = f"; `{row['encode_err']}`" if row["encode_err"] else ""
    return f"exit 0/0, decoded {w}x{h} {ok} displayed {row['shown'][0]}x{row['shown'][1]}{note}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(TINY) if TINY.exists() else "progcodec-v1")
    a = ap.parse_args()

    def invoke(args):
        r = subprocess.run([sys.executable, "-m", "progcodec", *args], capture_output=True, cwd=ROOT)
        return r.returncode, r.stderr.decode()

    print("| input | Pillow mode | result (encode/decode exit status, sizes, message) |")
    print("|---|---|---|")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            row = run_case(*case, Path(tmp), invoke, a.model)
            expected = case[3]
            good = (row["decoded"] == expected) if isinstance(expected, tuple) else (
                row["encode_rc"] == 1 and expected in row["encode_err"]
                and len(row["encode_err"].splitlines()) == 1)
            bad += not good
            print(f"| {row['name']} | {row['mode']} | {_cell(row)}{'' if good else ' **UNEXPECTED**'} |",
                  flush=True)
    print(f"\nmodel: {Path(a.model).name}; {len(CASES) - bad}/{len(CASES)} as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
