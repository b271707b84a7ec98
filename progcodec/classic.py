"""Classic codecs measured beside progcodec: JPEG, progressive JPEG, JPEG 2000, WebP.

Every runner takes one RGB image and returns a list of `Point`s measured against it. Single-rate
codecs (JPEG, WebP) are swept over quality settings; progressive ones (progressive JPEG, JPEG
2000) are encoded ONCE per image and cut at byte budgets, like a .pic file.

JPEG 2000 uses OpenJPEG's command line tools (opj_compress / opj_decompress); when they are
missing the codec is reported unavailable, never a crash. The truncation works on the raw
codestream (.j2k): its packets are located through the PLT marker segments the encoder wrote
(-PLT), whole packets are kept while they fit the budget, and a valid codestream is rebuilt
(main header, tile-part header with the kept packets' PLT and a corrected Psot, the packets, EOC).
"""
from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, features

from .metrics import Original

JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
PROGRESSIVE_JPEG_QUALITY = 95
# JPEG 2000: 10 quality layers from 0.05 to 2 bpp, geometric; opj's -r is a compression ratio
# (24 bits per RGB pixel / bpp).
J2K_LAYER_BPP = tuple(0.05 * 40 ** (i / 9) for i in range(10))
J2K_RATIOS = tuple(24 / b for b in J2K_LAYER_BPP)
SUBPROCESS_TIMEOUT = 60


class CodecUnavailable(Exception):
    """The codec's tool or library is missing here (the message says how to get it)."""


@dataclass
class Point:
    """One decoded image: its size in bytes and the quality measured against the original."""
    setting: str          # e.g. "q=50" or "cut 0.300 bpp"
    nbytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encoding_time: float
    decoding_time: float
    extra: dict = field(default_factory=dict)


def measure(setting, nbytes, orig: Original, decoded, t_enc, t_dec, **extra) -> Point:
    p, m = orig.score(decoded)
    return Point(setting, nbytes, 8 * nbytes / orig.pixels, p, m, t_enc, t_dec, extra)


# ---- Pillow codecs -------------------------------------------------------------------------
def _pil_roundtrip(rgb, fmt, **params):
    t0 = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **params)
    t_enc = time.perf_counter() - t0
    data = buf.getvalue()
    t0 = time.perf_counter()
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return data, out, t_enc, time.perf_counter() - t0


def run_jpeg(orig: Original, cuts=None) -> list[Point]:
    """Baseline JPEG (Pillow/libjpeg, 4:2:0, Huffman tables optimized) at JPEG_QUALITIES."""
    pts = []
    for q in JPEG_QUALITIES:
        data, out, te, td = _pil_roundtrip(orig.rgb, "JPEG", quality=q, optimize=True)
        pts.append(measure(f"q={q}", len(data), orig, out, te, td))
    return pts


def run_webp(orig: Original, cuts=None) -> list[Point]:
    """WebP (Pillow/libwebp, lossy, method 4) at WEBP_QUALITIES."""
    if not features.check("webp"):
        raise CodecUnavailable("this Pillow has no WebP support")
    pts = []
    for q in WEBP_QUALITIES:
        data, out, te, td = _pil_roundtrip(orig.rgb, "WEBP", quality=q, method=4)
        pts.append(measure(f"q={q}", len(data), orig, out, te, td))
    return pts


def _decode_truncated_jpeg(data: bytes) -> np.ndarray:
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return np.asarray(im.convert("RGB"))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def run_jpeg_progressive(orig: Original, cuts) -> list[Point]:
    """Progressive JPEG at quality PROGRESSIVE_JPEG_QUALITY, encoded once, cut at every budget
    in `cuts` (bytes) shorter than the file, plus the whole file. A cut Pillow cannot decode is
    left out (its Point is replaced by a note in `extra` of the whole-file point)."""
    t0 = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(orig.rgb).save(buf, format="JPEG", quality=PROGRESSIVE_JPEG_QUALITY,
                              progressive=True, optimize=True)
    t_enc = time.perf_counter() - t0
    data = buf.getvalue()
    pts, dropped = [], []
    for label, n in cuts:
        if n >= len(data):
            continue
        t0 = time.perf_counter()
        try:
            out = _decode_truncated_jpeg(data[:n])
        except Exception:  # noqa: BLE001 - a cut the decoder refuses is dropped, with a note
            dropped.append(label)
            continue
        pts.append(measure(label, n, orig, out, t_enc, time.perf_counter() - t0))
    t0 = time.perf_counter()
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    pts.append(measure("whole file", len(data), orig, out, t_enc, time.perf_counter() - t0,
                       dropped_cuts=dropped))
    return pts


# ---- JPEG 2000 -----------------------------------------------------------------------------
def j2k_tools() -> tuple[str, str]:
    enc, dec = shutil.which("opj_compress"), shutil.which("opj_decompress")
    if not enc or not dec:
        raise CodecUnavailable("OpenJPEG tools opj_compress/opj_decompress not found "
                               "(Debian/Ubuntu: apt install libopenjp2-tools)")
    return enc, dec


class J2KError(ValueError):
    """A codestream this cutter cannot handle."""


SOC, SOT, SOD, EOC, PLT = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9, 0xFF58


@dataclass
class Codestream:
    main_header: bytes          # SOC .. up to the first SOT
    tile_header: bytes          # the tile-part header's markers between SOT and SOD, without PLT
    isot: int
    tpsot: int
    tnsot: int
    packets: list[int]          # packet lengths (bytes), in codestream order
    body: bytes                 # the packet data of the tile-part


def _read_plt(seg: bytes) -> list[int]:
    """Packet lengths of one PLT segment body (after Lplt): Zplt, then 7-bit groups, MSB first,
    high bit set on every byte but the last of a length."""
    out, v = [], 0
    for byte in seg[1:]:
        v = (v << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(v)
            v = 0
    if v:
        raise J2KError("PLT segment ends inside a packet length")
    return out


def _write_plt(lengths: list[int]) -> bytes:
    """PLT marker segments for these packet lengths (a new segment when one would pass 65535)."""
    segs, cur, z = [], bytearray(), 0
    for n in lengths:
        groups = [n & 0x7F]
        n >>= 7
        while n:
            groups.append(0x80 | (n & 0x7F))
            n >>= 7
        enc = bytes(reversed(groups))
        if len(cur) + len(enc) + 3 > 65535:
            segs.append(struct.pack(">HHB", PLT, len(cur) + 3, z) + cur)
            cur, z = bytearray(), z + 1
        cur += enc
    if cur or not segs:
        segs.append(struct.pack(">HHB", PLT, len(cur) + 3, z) + cur)
    return b"".join(segs)


def parse_codestream(data: bytes) -> Codestream:
    """Split a single-tile, single-tile-part J2K codestream written with PLT markers."""
    if len(data) < 4 or struct.unpack(">H", data[:2])[0] != SOC:
        raise J2KError("not a JPEG 2000 codestream (no SOC)")
    pos = 2
    while True:  # main header
        if pos + 4 > len(data):
            raise J2KError("main header truncated")
        marker, length = struct.unpack(">HH", data[pos:pos + 4])
        if marker == SOT:
            break
        if marker >> 8 != 0xFF or length < 2:
            raise J2KError(f"bad marker 0x{marker:04X} at {pos}")
        pos += 2 + length
    main_header = data[:pos]
    sot = pos
    _, lsot, isot, psot, tpsot, tnsot = struct.unpack(">HHHIBB", data[pos:pos + 12])
    if lsot != 10:
        raise J2KError("bad SOT length")
    pos += 12
    tile_header, packets = bytearray(), []
    while True:
        marker = struct.unpack(">H", data[pos:pos + 2])[0]
        if marker == SOD:
            pos += 2
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == PLT:
            packets += _read_plt(data[pos + 4:pos + 2 + length])
        else:
            tile_header += data[pos:pos + 2 + length]
        pos += 2 + length
    end = sot + psot if psot else len(data) - 2
    if end > len(data):
        raise J2KError("tile-part longer than the codestream")
    if data[end:end + 2] != b"\xff\xd9":
        raise J2KError("more than one tile-part (or no EOC after the first): not supported")
    if not packets:
        raise J2KError("no PLT marker: encode with opj_compress -PLT")
    body = data[pos:end]
    if sum(packets) != len(body):
        raise J2KError(f"PLT packet lengths sum to {sum(packets)}, tile-part data has {len(body)}")
    return Codestream(main_header, bytes(tile_header), isot, tpsot, tnsot, packets, body)


def _assemble(cs: Codestream, k: int) -> bytes:
    kept = cs.packets[:k]
    nbody = sum(kept)
    plt = _write_plt(kept)
    psot = 12 + len(cs.tile_header) + len(plt) + 2 + nbody
    sot = struct.pack(">HHHIBB", SOT, 10, cs.isot, psot, cs.tpsot, cs.tnsot)
    return (cs.main_header + sot + cs.tile_header + plt + struct.pack(">H", SOD)
            + cs.body[:nbody] + struct.pack(">H", EOC))


def cut_codestream(data: bytes, budget: int) -> tuple[bytes, int]:
    """The longest valid codestream of whole packets (and rebuilt headers) of at most `budget`
    bytes, and the number of packets it keeps. J2KError if not even the headers fit."""
    cs = parse_codestream(data)
    lo, hi = 0, len(cs.packets)  # size grows with k: binary search the largest k that fits
    if len(_assemble(cs, 0)) > budget:
        raise J2KError(f"budget of {budget} bytes is below the codestream's headers")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_assemble(cs, mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return _assemble(cs, lo), lo


def _run(cmd, tmp):
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).decode(errors="replace").strip().splitlines()
        raise J2KError(f"{Path(cmd[0]).name} failed: {msg[-1] if msg else r.returncode}")


def j2k_encode(rgb, tmp: Path) -> bytes:
    enc, _ = j2k_tools()
    Image.fromarray(rgb).save(tmp / "in.ppm")
    _run([enc, "-i", "in.ppm", "-o", "full.j2k", "-PLT", "-I",
          "-r", ",".join(f"{r:.4g}" for r in J2K_RATIOS)], tmp)
    return (tmp / "full.j2k").read_bytes()


def j2k_decode(data: bytes, tmp: Path) -> np.ndarray:
    _, dec = j2k_tools()
    (tmp / "cut.j2k").write_bytes(data)
    out = tmp / "cut.ppm"
    out.unlink(missing_ok=True)
    _run([dec, "-i", "cut.j2k", "-o", "cut.ppm"], tmp)
    return np.asarray(Image.open(out).convert("RGB"))


def run_jpeg2000(orig: Original, cuts) -> list[Point]:
    """OpenJPEG, irreversible 9/7 wavelet (-I), otherwise default settings (LRCP progression,
    64x64 code-blocks, 6 resolutions, RGB->YCC), 10 layers at J2K_LAYER_BPP; one
    stream per image, cut at every budget in `cuts` (whole packets only) and decoded, plus the
    whole stream. bpp counts the bytes of the written cut (headers and EOC included, at most the
    budget)."""
    j2k_tools()
    pts = []
    with tempfile.TemporaryDirectory(prefix="progcodec-j2k-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        data = j2k_encode(orig.rgb, tmp)
        t_enc = time.perf_counter() - t0
        headers = len(_assemble(parse_codestream(data), 0))
        for label, n in cuts:
            if n >= len(data) or n < headers:  # past the file, or not even its headers
                continue
            cut, k = cut_codestream(data, n)
            t0 = time.perf_counter()
            out = j2k_decode(cut, tmp)
            pts.append(measure(label, len(cut), orig, out, t_enc, time.perf_counter() - t0,
                               budget=n, packets=k))
        t0 = time.perf_counter()
        out = j2k_decode(data, tmp)
        pts.append(measure("whole file", len(data), orig, out, t_enc, time.perf_counter() - t0))
    return pts


RUNNERS = {"jpeg": run_jpeg, "jpeg-progressive": run_jpeg_progressive,
           "jpeg2000": run_jpeg2000, "webp": run_webp}
LABELS = {"jpeg": "JPEG (Pillow, q sweep)",
          "jpeg-progressive": f"progressive JPEG q={PROGRESSIVE_JPEG_QUALITY}, truncated",
          "jpeg2000": "JPEG 2000 (OpenJPEG 9/7, 10 layers), truncated",
          "webp": "WebP (Pillow, q sweep)"}
DESCRIPTIONS = {
    "jpeg": "Baseline JPEG, Pillow/libjpeg, 4:2:0, optimized Huffman tables, qualities "
            + ", ".join(map(str, JPEG_QUALITIES)) + ".",
    "jpeg-progressive": f"Progressive JPEG, Pillow/libjpeg, quality {PROGRESSIVE_JPEG_QUALITY}, "
                        "4:2:0: one file per image, cut at the ladder's byte counts, decoded "
                        "with Pillow's LOAD_TRUNCATED_IMAGES; plus the whole file.",
    "jpeg2000": "JPEG 2000, OpenJPEG opj_compress -I (irreversible 9/7) -PLT, LRCP, 10 quality "
                "layers at " + ", ".join(f"{b:.3g}" for b in J2K_LAYER_BPP) + " bpp (-r "
                + ",".join(f"{r:.4g}" for r in J2K_RATIOS) + "): one codestream per image, cut "
                "at the ladder's byte counts keeping whole packets (PLT), decoded with "
                "opj_decompress; bpp counts the bytes of the written cut (at most the budget); "
                "plus the whole stream.",
    "webp": "WebP, Pillow/libwebp, lossy, method 4, qualities "
            + ", ".join(map(str, WEBP_QUALITIES)) + ".",
}
PROGRESSIVE = {"jpeg-progressive", "jpeg2000"}


def check_available(name: str) -> None:
    """CodecUnavailable if this codec cannot run here."""
    if name == "jpeg2000":
        j2k_tools()
    elif name == "webp" and not features.check("webp"):
        raise CodecUnavailable("this Pillow has no WebP support")
