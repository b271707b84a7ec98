"""Encode and decode images: the Python API under the CLI.

    data = progcodec.encode(image)               # bytes of a .pic file
    img  = progcodec.decode(data, quality=0.4)   # PIL image from a prefix of it

Exactness (DESIGN.md 3): the scale index and the order come from the integer network; the
encoder runs its analysis and mean networks in float64, so the symbols (and bytes) it writes
do not depend on thread count or kernel choice; the decoder's synthesis runs in float32.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from . import container, entropy, latent_search, tiling
from .metrics import psnr  # noqa: F401  (public: progcodec.codec.psnr)
from .container import FormatError, Header
from .intnet import ScaleNetRelaxed
from .model import (ANALYSIS_BLOCKS, REFINE_STEP, STRIDE, Synthesis, coding_order, coding_rank,
                    side_features, block_margin, dequantize_offsets)
from .weights import (DEFAULT_MODEL, LoadedModel, WeightsError, load_model, load_shipped_model,
                      shipped_model_for_digest)


class CodecError(Exception):
    """Bad input for the codec (one line for the user)."""


# ---- model and device handling ---------------------------------------------------------------
def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CodecError("--device cuda: no CUDA device available")
    return torch.device(device)


class _Runtime:
    """A loaded model prepared for coding on one device (cached)."""

    def __init__(self, loaded: LoadedModel, device: torch.device):
        m = loaded.model
        self.loaded = loaded
        self.device = device
        self.models = entropy.Models(m.tables)
        self.levels = m.config.levels
        self.order_rank = m.tables.order_rank  # None: plain scale order (progcodec-v1)
        # Version 1: plain scale order. A model with an order table writes version 4 (the
        # compact header) and reads versions 2 and 3 (the files it wrote before version 4); one
        # with a refinement table too (fit_tables --refine-table) writes and reads version 5.
        if self.order_rank is None:
            self.versions = (container.VERSION,)
        elif m.tables.refine_counts is not None:
            self.versions = (container.VERSION_REFINE_TABLE,)
        else:
            self.versions = (container.VERSION_ORDER_TABLE, container.VERSION_REFINED,
                             container.VERSION_COMPACT)
        self.z_channels, self.y_channels = m.config.N, m.config.M
        # float64 copies: encoder analysis and the (cheap, low-resolution) mean network
        self.g_a64 = copy.deepcopy(m.g_a).double().to(device).eval()
        self.h_a64 = copy.deepcopy(m.h_a).double().to(device).eval()
        self.h_mean64 = copy.deepcopy(m.h_mean).double().to(device).eval()
        self.scale_net = copy.deepcopy(m.scale_net).to(device)
        self.g_s = copy.deepcopy(m.synthesis_net()).float().to(device).eval()
        # the synthesis of short prefixes (model.ModelConfig.low_synthesis_keep), or None
        self.low_keep = m.config.low_synthesis_keep
        self.g_s_low = (None if m.g_s_low is None else
                        Synthesis(copy.deepcopy(m.g_s_low), None).float().to(device).eval())
        if device.type == "cpu":
            self.g_s = self.g_s.to(memory_format=torch.channels_last)
            if self.g_s_low is not None:
                self.g_s_low = self.g_s_low.to(memory_format=torch.channels_last)
        # g_s's dequantization offsets (model.ModelConfig.offset_symbols), float64, or None
        self.offsets = (None if m.g_s_offset is None else
                        m.g_s_offset.detach().to(device, torch.float64))
        self.scale_table = m.config.scale_table().to(device)  # sigma of each scale index
        # context pixels for tiles of g_s, g_s_low and g_a: residual blocks (if any) reach further
        self.synthesis_margin = block_margin(m.config.synthesis_blocks, tiling.MARGIN)
        self.low_synthesis_margin = block_margin(m.config.low_synthesis_blocks, tiling.MARGIN)
        self.analysis_margin = block_margin(m.config.analysis_blocks, tiling.MARGIN, ANALYSIS_BLOCKS)
        self._g_s_search = None
        self._g_s_low_search = None
        self._hyper_search = None

    @property
    def g_s_search(self):
        """The synthesis for latent search, without parameter gradients (built on first use)."""
        if self._g_s_search is None:
            self._g_s_search = latent_search.frozen_copy(self.g_s.g_s)
        return self._g_s_search

    def low_synthesis_search(self, n_total: int):
        """(g_s_low without parameter gradients, and whether the decoder runs it for a prefix
        of k of the n_total elements: synthesis_for's rule) for the joint search, or None for a
        model without g_s_low."""
        if self.g_s_low is None or not SEARCH_SCORES_G_S_LOW:
            return None
        if self._g_s_low_search is None:
            self._g_s_low_search = latent_search.frozen_copy(self.g_s_low.g_s)
        return self._g_s_low_search, lambda k: self.synthesis_for(k, n_total) is self.g_s_low

    @property
    def hyper_search(self):
        """(h_mean, relaxed scale net, z bit table) for the joint search of y and z, float32
        and without parameter gradients (built on first use)."""
        if self._hyper_search is None:
            t = self.loaded.model.tables
            self._hyper_search = (latent_search.frozen_copy(self.h_mean64),
                                  ScaleNetRelaxed(self.scale_net),
                                  (t.z_bits().to(self.device), t.z_offset.to(self.device),
                                   t.z_size.to(self.device)))
        return self._hyper_search

    def hyper(self, z_sym: torch.Tensor):
        """z symbols (1,C,h,w) -> mu float64 and scale index int64, flattened in C,H,W order."""
        mu = self.h_mean64(z_sym.to(torch.float64))
        idx = self.scale_net(z_sym)
        return mu.reshape(-1), idx.reshape(-1)

    def synthesis_for(self, received: int | None, total: int):
        """The synthesis for a prefix with `received` of `total` y elements (None: all): g_s_low
        below the model's low_synthesis_keep, else g_s. Integers and one float product: the
        same choice on every machine."""
        if self.g_s_low is not None and received is not None and received < self.low_keep * total:
            return self.g_s_low
        return self.g_s

    def side(self, sent: torch.Tensor, idx: torch.Tensor, shape) -> torch.Tensor | None:
        """The synthesis side input (model.side_features) for a model that has one, else None.
        sent: flat indices of the received elements; idx: int64 scale indices flattened in
        C,H,W order; shape: (1, M, h, w)."""
        if self.g_s.side is None:
            return None  # models without a side layer pay nothing for it
        received = torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device)
        received[sent] = True
        return side_features(received.view(shape), idx.view(shape), self.levels)


_runtimes: dict[tuple, _Runtime] = {}


def runtime_for_file(h: Header, model: str | LoadedModel | None, device: str) -> _Runtime:
    """The runtime that decodes a file with header h: `model` when given, else the shipped
    model the header names (by name, or by digest alone from version 4), so files of earlier
    default models still decode after the default changes."""
    return runtime(load_shipped_model(_file_model_name(h)) if model is None else model, device)


def _file_model_name(h: Header) -> str:
    """The shipped model a header names: its name, or (versions 4, 5) the one with its digest."""
    return h.model_name or shipped_model_for_digest(h.model_digest)


def runtime(model: str | LoadedModel = DEFAULT_MODEL, device: str = "auto") -> _Runtime:
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    dev = pick_device(device)
    key = (id(loaded), str(dev))
    if key not in _runtimes:
        _runtimes[key] = _Runtime(loaded, dev)
    return _runtimes[key]


# ---- images -----------------------------------------------------------------------------------
def check_image_size(width: int, height: int) -> None:
    """Refuse sizes the codec cannot hold, before any pixel is decoded or allocated."""
    if width < 1 or height < 1:
        raise CodecError("empty image")
    if width > container.MAX_SIDE or height > container.MAX_SIDE or width * height > container.MAX_PIXELS:
        raise CodecError(f"image of {width}x{height} pixels exceeds the limit of "
                         f"{container.MAX_SIDE} per side and {container.MAX_PIXELS} pixels")


def has_alpha(image: Image.Image) -> bool:
    """Whether the image has transparency (an alpha band or a transparent palette entry/colour)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def is_transparent(image: Image.Image) -> bool:
    """Whether some pixel is not fully opaque (what compositing on white changes)."""
    if "A" in image.getbands():
        return image.getchannel("A").getextrema()[0] < 255
    return "transparency" in image.info


def to_rgb_array(image) -> np.ndarray:
    """A PIL image or an HxWx3 uint8 array -> HxWx3 uint8 array.

    EXIF orientation is applied (the result is the image as displayed); transparency is
    composited on white; 16-bit and 32-bit integer images are scaled to 8 bits, not clipped."""
    if isinstance(image, Image.Image):
        check_image_size(*image.size)
        image = ImageOps.exif_transpose(image)
        if has_alpha(image) and image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(image).astype(np.int64)
            scale = 257 if arr.max(initial=0) > 255 or image.mode.startswith("I;16") else 1
            gray = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
            return np.repeat(gray[:, :, None], 3, axis=2)
        if image.mode == "F":
            raise CodecError("floating-point images are not supported")
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise CodecError(f"expected an HxWx3 uint8 array, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def _pad(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % STRIDE, (-w) % STRIDE
    if ph or pw:  # replicate the border: no artificial edge for the transform to code
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def _padded_pixels(rgb: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, Hp, Wp) in [0, 1] of `dtype` on `device`, padded by _pad."""
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).to(device)
    return _pad(x.permute(2, 0, 1)[None].to(dtype) / 255)


# ---- prefix selection -------------------------------------------------------------------------
def prefix_length(min_len: int, total: int, width: int, height: int, *, quality=None,
                  nbytes=None, bpp=None) -> int:
    """Bytes to keep for one of --quality/--bytes/--bpp (at most one given; none: all).

    quality Q in [0, 1] maps geometrically: min_len * (total / min_len) ** Q, so 0 is the
    smallest decodable prefix, 1 the whole file, and equal steps of Q are equal ratios of bytes.
    """
    for name, v in (("quality", quality), ("bpp", bpp)):
        if v is not None and not math.isfinite(v):
            raise CodecError(f"{name} must be a finite number, got {v}")
    given = [v is not None for v in (quality, nbytes, bpp)]
    if sum(given) > 1:
        raise CodecError("give at most one of quality, bytes, bpp")
    if quality is not None:
        if not 0.0 <= quality <= 1.0:
            raise CodecError(f"quality must be in [0, 1], got {quality}")
        n = int(round(min_len * (total / min_len) ** quality))
    elif nbytes is not None:
        n = int(nbytes)
    elif bpp is not None:
        if bpp <= 0:
            raise CodecError(f"bpp must be positive, got {bpp}")
        n = int(min(math.floor(bpp * width * height / 8), total))
    else:
        return total
    if n < min_len:
        raise CodecError(f"{n} bytes is below this file's minimum decodable length of {min_len} bytes")
    return min(n, total)


# ---- transforms, tiled on large images (tiling.py) ------------------------------------------
def _padded_size(height: int, width: int) -> tuple[int, int]:
    return height + (-height) % STRIDE, width + (-width) % STRIDE


def _analysis(rt: _Runtime, rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> y (1, M, Hp/16, Wp/16) float64; g_a runs tile by tile on large images,
    converting only one tile at a time to float64."""
    h, w = rgb.shape[:2]
    hp, wp = _padded_size(h, w)
    grid = tiling.tiles(hp, wp, tiling.ANALYSIS_TILE, margin=rt.analysis_margin)
    if len(grid) == 1:  # the whole image, exactly as the untiled encoder always did
        return rt.g_a64(_padded_pixels(rgb, rt.device, torch.float64))
    y = None
    for t in grid:
        # rows/columns past the image repeat its last one: the replicate padding of _pad
        rows = np.minimum(np.arange(t.cy0, t.cy1), h - 1)
        cols = np.minimum(np.arange(t.cx0, t.cx1), w - 1)
        patch = torch.from_numpy(np.ascontiguousarray(rgb[rows][:, cols])).to(rt.device)
        yt = rt.g_a64((patch.permute(2, 0, 1)[None].to(torch.float64) / 255).contiguous())
        if y is None:
            y = torch.empty((1, yt.shape[1], hp // 16, wp // 16), dtype=yt.dtype, device=yt.device)
        s = t.scaled(16)
        y[:, :, s.y0:s.y1, s.x0:s.x1] = yt[:, :, s.y0 - s.cy0:s.y1 - s.cy0, s.x0 - s.cx0:s.x1 - s.cx0]
        del yt, patch
    return y


def _synthesis(rt: _Runtime, y_hat: torch.Tensor, height: int, width: int,
               side: torch.Tensor | None = None, received: int | None = None) -> np.ndarray:
    """y_hat (1, M, Hp/16, Wp/16) float32 -> HxWx3 uint8; g_s runs on overlapping latent tiles
    on large images, so only y_hat and the output image are full-size. side: the synthesis side
    input of a decoder_side model (_Runtime.side; None: every element received). received: how
    many y elements the prefix carried (None: all), which picks the synthesis network."""
    g_s = rt.synthesis_for(received, y_hat.numel())
    grid = tiling.tiles(16 * y_hat.shape[2], 16 * y_hat.shape[3], tiling.SYNTHESIS_TILE,
                        margin=rt.synthesis_margin if g_s is rt.g_s else rt.low_synthesis_margin)
    cl = torch.channels_last if rt.device.type == "cpu" else torch.contiguous_format
    if len(grid) == 1:
        y_hat = y_hat.contiguous(memory_format=cl)
        side = None if side is None else side.contiguous(memory_format=cl)
        x_hat = g_s(y_hat, side).clamp_(0, 1)[0, :, :height, :width]
        return (x_hat * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = np.empty((height, width, 3), dtype=np.uint8)
    for t in grid:
        if t.y0 >= height or t.x0 >= width:
            continue  # only padding
        s = t.scaled(16)
        yt = y_hat[:, :, s.cy0:s.cy1, s.cx0:s.cx1].contiguous(memory_format=cl)
        st = None if side is None else side[:, :, s.cy0:s.cy1, s.cx0:s.cx1].contiguous(memory_format=cl)
        xt = g_s(yt, st).clamp_(0, 1)
        y1, x1 = min(t.y1, height), min(t.x1, width)
        xt = xt[0, :, t.y0 - t.cy0:y1 - t.cy0, t.x0 - t.cx0:x1 - t.cx0]
        out[t.y0:y1, t.x0:x1] = (xt * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        del xt, yt
    return out


# ---- encode ---------------------------------------------------------------------------------
# Latent search works on whole images up to this many (padded) pixels (Kodak: 393,216), else
# on tiles of SEARCH_TILE pixels, so its memory stays bounded.
SEARCH_TILE = 512
SEARCH_UNTILED_MAX = 1 << 19
# The joint search scores the keep-fractions that g_s_low decodes with g_s_low, as the decoder
# reconstructs them (False: with g_s, as before 2026-12-07; docs/latent-search.md).
SEARCH_SCORES_G_S_LOW = True


def _search(rt: _Runtime, rgb: np.ndarray, y: torch.Tensor, z_np: np.ndarray, steps: int,
            refined: int = 0) -> torch.Tensor:
    """y after `steps` of latent search (latent_search.py) with z, so means, scales and order,
    held fixed, for a file whose first `refined` elements get a refinement bit. Large images
    are searched tile by tile (tiling.py geometry): each tile's latents move, scored on its own
    pixels, with a margin of fixed latents around it, so the memory stays bounded. The search
    scores the synthesis without a side input (decoder_side models decode prefixes with one:
    for them it is an approximation; no shipped model has one)."""
    with torch.no_grad():
        mu, idx = rt.hyper(torch.from_numpy(z_np)[None].to(rt.device))
        mu, rank = mu.view_as(y), coding_rank(idx, rt.levels, rt.order_rank).view_as(y)
        sigma, idx = rt.scale_table[idx].view_as(y), idx.view_as(y)
        x = _padded_pixels(rgb, rt.device, torch.float32)
    h, w = rgb.shape[:2]
    y = y.clone()
    for t in tiling.tiles(x.shape[2], x.shape[3], SEARCH_TILE, untiled_max=SEARCH_UNTILED_MAX):
        if t.y0 >= h or t.x0 >= w:
            continue  # only padding
        c = t.scaled(16)
        crop = (slice(None), slice(None), slice(c.cy0, c.cy1), slice(c.cx0, c.cx1))
        free = (c.y0 - c.cy0, c.y1 - c.cy0, c.x0 - c.cx0, c.x1 - c.cx0)
        scored = (t.y0 - t.cy0, min(t.y1, h) - t.cy0, t.x0 - t.cx0, min(t.x1, w) - t.cx0)
        with torch.enable_grad():
            y[crop] = latent_search.search_latent(
                rt.g_s_search, x[:, :, t.cy0:t.cy1, t.cx0:t.cx1], y[crop], mu[crop], sigma[crop],
                rank[crop], steps, n_total=y.numel(), pixels=h * w, free=free, scored=scored,
                refined=refined, offsets=None if rt.offsets is None else (rt.offsets, idx[crop]))
    return y


# The joint search of y and z on large images: tiles of SEARCH_TILE pixels with JOINT_MARGIN
# pixels (2 z positions) of context; the crop's own means and scales are trusted up to
# JOINT_TRUST latents (1 z position) past the tile, where its hyper networks still see real z.
JOINT_MARGIN = 128
JOINT_TRUST = 4


def _search_joint(rt: _Runtime, rgb: np.ndarray, y: torch.Tensor, z_np: np.ndarray, steps: int,
                  refined: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(y, z symbols) after `steps` of joint search of y and z (latent_search.py). Images of
    more than SEARCH_UNTILED_MAX padded pixels are searched tile by tile, in raster order: each
    tile's z and y move against the objective of its own pixels and bits (and those of the
    latents around it whose means its z moves), in the whole image's coding order, which is
    re-ranked at every step; the whole image's means and scales are updated after each tile."""
    h, w = rgb.shape[:2]
    with torch.no_grad():
        x = _padded_pixels(rgb, rt.device, torch.float32)
    h_mean, scale_net, z_table = rt.hyper_search
    log_table = torch.log(rt.scale_table)
    options = dict(z_table=z_table, log_sigma=(float(log_table[0]),
                                               float(log_table[1] - log_table[0])),
                   n_total=y.numel(), pixels=h * w, refined=refined, offsets=rt.offsets,
                   low_synthesis=rt.low_synthesis_search(y.numel()))

    def exact(z_int):  # the run-time means and scale indexes of (a crop of) z
        mu, idx = rt.hyper(z_int)
        shape = (1, rt.y_channels, 4 * z_int.shape[2], 4 * z_int.shape[3])
        return mu.view(shape).float(), idx.view(shape)

    def rank_whole(idx):
        return coding_rank(idx, rt.levels, rt.order_rank)
    z = torch.from_numpy(z_np)[None].to(rt.device)
    grid = tiling.tiles(x.shape[2], x.shape[3], SEARCH_TILE, margin=JOINT_MARGIN,
                        untiled_max=SEARCH_UNTILED_MAX)
    if len(grid) == 1:
        with torch.enable_grad():
            y, z = latent_search.search_latent_and_hyper(
                rt.g_s_search, h_mean, scale_net, exact, x, y, z, steps, rank_of=rank_whole,
                scored=(0, h, 0, w), **options)
        return y, z[0].cpu().numpy()
    y = y.clone()
    with torch.no_grad():
        mu_all, idx_all = exact(z)
    for t in grid:
        if t.y0 >= h or t.x0 >= w:
            continue  # only padding
        c, cz = t.scaled(16), t.scaled(64)
        ycrop = (slice(None), slice(None), slice(c.cy0, c.cy1), slice(c.cx0, c.cx1))
        zcrop = (slice(None), slice(None), slice(cz.cy0, cz.cy1), slice(cz.cx0, cz.cx1))
        trusted = torch.zeros((c.cy1 - c.cy0, c.cx1 - c.cx0), dtype=torch.bool, device=y.device)
        trusted[max(0, c.y0 - JOINT_TRUST - c.cy0):c.y1 + JOINT_TRUST - c.cy0,
                max(0, c.x0 - JOINT_TRUST - c.cx0):c.x1 + JOINT_TRUST - c.cx0] = True
        edge = 16 * (JOINT_TRUST - 2)  # pixels past the tile whose latents are all trusted
        scored = (max(0, t.y0 - edge) - t.cy0, min(t.y1 + edge, h) - t.cy0,
                  max(0, t.x0 - edge) - t.cx0, min(t.x1 + edge, w) - t.cx0)

        def rank_of(idx_crop, ycrop=ycrop, trusted=trusted):
            idx = idx_all.clone()
            idx[ycrop] = torch.where(trusted, idx_crop, idx_all[ycrop])
            return rank_whole(idx)[ycrop]
        with torch.enable_grad():
            y_t, z_t = latent_search.search_latent_and_hyper(
                rt.g_s_search, h_mean, scale_net, exact, x[:, :, t.cy0:t.cy1, t.cx0:t.cx1],
                y[ycrop], z[zcrop], steps, rank_of=rank_of, scored=scored,
                free_z=(cz.y0 - cz.cy0, cz.y1 - cz.cy0, cz.x0 - cz.cx0, cz.x1 - cz.cx0),
                context=(mu_all[ycrop], idx_all[ycrop], trusted), **options)
        y[ycrop], z[zcrop] = y_t, z_t
        with torch.no_grad():
            mu_all, idx_all = exact(z)
    return y, z[0].cpu().numpy()


# Fraction of the y elements, first in coding order, that get a refinement bit (format.md 5.1)
# when the model has an order table. Chosen on Kodak and the validation photos: docs/refinement.md.
DEFAULT_REFINE = 0.4


@torch.no_grad()
def encoder_z(rt: _Runtime, y: torch.Tensor) -> np.ndarray:
    """The clamped z symbols of latent y."""
    return entropy.clamp_z(torch.round(rt.h_a64(y)).to(torch.int64)[0].cpu().numpy(), rt.models)


@torch.no_grad()
def encoder_symbols(rt: _Runtime, y: torch.Tensor, z_np: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the encoder codes for latent y: the clamped z symbols (z_np when given, else those
    of y), then the scale level, the (not yet clamped) residual symbol and the residual y - mu
    (float64) of every y element, all in coding order."""
    if z_np is None:
        z_np = encoder_z(rt, y)
    mu, idx = rt.hyper(torch.from_numpy(z_np)[None].to(rt.device))
    order = coding_order(idx, rt.levels, rt.order_rank)
    levels_in_order = idx[order].cpu().numpy()
    residual = (y.reshape(-1) - mu)[order].cpu().numpy()
    symbols = np.round(residual).astype(np.int64)  # half to even, as torch.round
    return z_np, levels_in_order, symbols, residual


def plain_symbols(rt: _Runtime, rgb: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the plain encoder (no search) codes for an HxWx3 uint8 image: encoder_symbols of
    its latent, with the residual symbols clamped to their tables as encode() writes them."""
    z_np, levels_in_order, symbols, residual = encoder_symbols(rt, _analysis(rt, rgb))
    return (z_np, levels_in_order, entropy.clamp_y_symbols(symbols, levels_in_order, rt.models),
            residual)


def refine_count(n: int, fraction: float) -> int:
    return int(math.floor(fraction * n + 0.5))


def refinement_bits(residual: np.ndarray, symbols: np.ndarray, count: int) -> np.ndarray:
    """One bit for each of the first `count` elements in coding order: 1 when the residual lies
    in the upper half of its (clamped) symbol's bin."""
    return (residual[:count] - symbols[:count] >= 0).astype(np.int64)


@torch.no_grad()
def encode(image, *, model: str | LoadedModel = DEFAULT_MODEL, device: str = "auto",
           quality=None, nbytes=None, bpp=None, refine: float | None = None,
           search: int = 0, search_z: bool = True, y_block: int = container.Y_BLOCK) -> bytes:
    """Encode an image (PIL image or HxWx3 uint8 array) into .pic bytes.

    quality/nbytes/bpp keep only a prefix of the file (see prefix_length). refine: fraction of
    the y elements that get a refinement bit after all base symbols (default DEFAULT_REFINE for
    a model with an order table; 0: none). y_block: y bytes per CRC block (format.md 2: a power
    of two from 256 to 65536 for a model with an order table; small blocks are for tests).
    search: steps of encoder-side latent search (latent_search.py): a smaller file of better
    quality for about one synthesis pass and its gradient per step; 0 (default): none.
    search_z: the search moves z too (_search_joint)."""
    rt = runtime(model, device)
    if search < 0:
        raise CodecError(f"search steps must be >= 0, got {search}")
    if refine is None:
        refine = DEFAULT_REFINE if rt.order_rank is not None else 0.0
    if not 0.0 <= refine <= 1.0:  # also rejects NaN
        raise CodecError(f"refine must be in [0, 1], got {refine}")
    if refine > 0 and rt.order_rank is None:
        raise CodecError(f"model {rt.loaded.name} has no order table: it writes format "
                         f"version 1, which has no refinement bits (use refine 0)")
    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    check_image_size(w, h)
    y = _analysis(rt, rgb)
    z_np = encoder_z(rt, y)
    if search and search_z:
        y, z_np = _search_joint(rt, rgb, y, z_np, search, refine_count(y.numel(), refine))
    elif search:
        y = _search(rt, rgb, y, z_np, search, refine_count(y.numel(), refine))
    z_np, levels_in_order, symbols, residual = encoder_symbols(rt, y, z_np)
    symbols = entropy.clamp_y_symbols(symbols, levels_in_order, rt.models)
    refined = refine_count(len(symbols), refine)
    if refined:
        symbols = np.concatenate([symbols, refinement_bits(residual, symbols, refined)])
        levels_in_order = np.concatenate([levels_in_order, np.full(refined, entropy.REFINE)])
    z_bytes = entropy.encode_z(z_np, rt.models)
    y_bytes = entropy.encode_y(symbols, levels_in_order, rt.models)
    header = Header(rt.loaded.name, rt.loaded.digest, w, h, len(z_bytes), len(y_bytes),
                    y_block, rt.versions[-1], refined)
    data = container.pack(header, z_bytes, y_bytes)
    keep = prefix_length(header.min_length, len(data), w, h, quality=quality, nbytes=nbytes, bpp=bpp)
    return data[:keep]


# ---- decode ---------------------------------------------------------------------------------
@dataclass
class Decoded:
    image: Image.Image
    bytes_used: int
    elements_decoded: int
    elements_total: int
    warnings: list[str] = field(default_factory=list)
    refinements_decoded: int = 0  # refinement bits decoded (format.md 5.1)
    refinements_total: int = 0


def _check_model(h: Header, rt: _Runtime) -> None:
    if h.model_name not in (None, rt.loaded.name) or h.model_digest != rt.loaded.digest:
        # no lookup of a version 4 or 5 file's model here: a forged digest would have every shipped
        # weight file read and hashed
        digest = h.model_digest.hex()
        made_by = f"model {h.model_name} ({digest})" if h.model_name else f"the model with digest {digest}"
        raise CodecError(f"file was encoded with {made_by}; "
                         f"loaded model is {rt.loaded.name} ({rt.loaded.digest.hex()})")
    if h.version not in rt.versions:
        raise FormatError(f"format version {h.version} does not match model {rt.loaded.name}, "
                          f"which reads version{'s' * (len(rt.versions) > 1)} "
                          f"{', '.join(map(str, rt.versions))}")


@dataclass
class _Latent:
    header: Header
    y_hat: torch.Tensor  # (1, M, H/16, W/16) float32, missing elements filled with mu
    side: torch.Tensor | None  # synthesis side input (decoder_side models), else None
    decoded: int
    total: int
    bytes_used: int
    warnings: list[str]
    refined: int = 0  # refinement bits decoded


def _decode_latent(data: bytes, rt: _Runtime, strict: bool, **prefix) -> _Latent:
    h = container.parse_header(data, rt.z_channels, rt.y_channels)
    _check_model(h, rt)
    keep = prefix_length(h.min_length, len(data), h.width, h.height, **prefix)
    p = container.parse(data[:keep], rt.z_channels, rt.y_channels)
    if p.corrupt and strict:
        raise FormatError(p.warnings[0])
    hz, wz = -(-h.height // STRIDE), -(-h.width // STRIDE)
    try:
        z_sym = entropy.decode_z(p.z_bytes, (rt.z_channels, hz, wz), rt.models)
        z_sym = torch.from_numpy(z_sym)[None].to(rt.device)
        mu, idx = rt.hyper(z_sym)
        order = coding_order(idx, rt.levels, rt.order_rank)
        n = len(order)
        levels_in_order = idx[order].cpu().numpy()
        if h.refined:
            levels_in_order = np.concatenate([levels_in_order, np.full(h.refined, entropy.REFINE)])
        symbols, k = entropy.decode_y(p.y_bytes, levels_in_order, rt.models, complete=p.y_complete)
    except entropy.StreamError as e:
        raise FormatError(str(e)) from None
    base, refined = min(k, n), max(k - n, 0)
    y_hat = mu.clone()
    y_hat[order[:base]] += torch.from_numpy(symbols[:base]).to(rt.device, torch.float64)
    if refined:  # float64 additions, like the base symbols': they move the reconstruction only
        halves = torch.from_numpy(symbols[n:n + refined] * 2 - 1).to(rt.device, torch.float64)
        y_hat[order[:refined]] += REFINE_STEP * halves
    if rt.offsets is not None and rt.synthesis_for(base, n) is rt.g_s:
        # received elements without a refinement bit move inside their bins (g_s only); a
        # refined element's half-bin already places it
        moved = order[refined:base]
        y_hat[moved] += dequantize_offsets(
            rt.offsets, idx[moved], torch.from_numpy(symbols[refined:base]).to(rt.device))
    shape = (1, rt.y_channels, 4 * hz, 4 * wz)
    return _Latent(h, y_hat.view(shape).float(), rt.side(order[:base], idx, shape), base, n, keep,
                   p.warnings, refined)


@torch.no_grad()
def decode_detailed(data: bytes, *, quality=None, nbytes=None, bpp=None,
                    model: str | LoadedModel | None = None, device: str = "auto",
                    strict: bool = False) -> Decoded:
    """Decode with a report: bytes used, y elements decoded out of all, warnings. model=None:
    the shipped model named in the file."""
    rt = runtime_for_file(container.parse_header(data), model, device)
    lat = _decode_latent(data, rt, strict, quality=quality, nbytes=nbytes, bpp=bpp)
    rgb = _synthesis(rt, lat.y_hat, lat.header.height, lat.header.width, lat.side, lat.decoded)
    return Decoded(Image.fromarray(rgb, "RGB"), lat.bytes_used, lat.decoded, lat.total, lat.warnings,
                   lat.refined, lat.header.refined)


def decode(data: bytes, quality=None, nbytes=None, bpp=None, **options) -> Image.Image:
    """Decode .pic bytes (any prefix of at least the minimum length) into a PIL RGB image."""
    return decode_detailed(data, quality=quality, nbytes=nbytes, bpp=bpp, **options).image


def truncate(data: bytes, *, quality=None, nbytes=None, bpp=None) -> bytes:
    """A shorter valid .pic: the chosen prefix (no model needed)."""
    h = container.parse_header(data)
    h.require_decodable(len(data))
    return data[:prefix_length(h.min_length, len(data), h.width, h.height,
                               quality=quality, nbytes=nbytes, bpp=bpp)]


@torch.no_grad()
def info(data: bytes, *, model: str | LoadedModel | None = None, device: str = "cpu") -> dict:
    """What a file holds, and how many y elements this prefix decodes."""
    h = container.parse_header(data)
    try:
        name = _file_model_name(h)
    except WeightsError:  # a version 4 or 5 file of a model that is not shipped
        name = None
    out = {"format_version": h.version, "model": name, "model_digest": h.model_digest.hex(),
           "width": h.width, "height": h.height, "file_bytes": len(data),
           "complete_file_bytes": h.full_length, "bpp": 8 * len(data) / (h.width * h.height),
           "min_decodable_bytes": h.min_length, "refinements_total": h.refined}
    try:
        rt = runtime_for_file(h, model, device)
    except WeightsError as e:  # the header fields need no model; element counts do
        out.update(elements_total=None, elements_decodable=None, refinements_decodable=None,
                   warnings=[str(e)])
        return out
    lat = _decode_latent(data, rt, strict=False)  # corrupt or too short: FormatError
    out.update(elements_total=lat.total, elements_decodable=lat.decoded,
               refinements_decodable=lat.refined, warnings=lat.warnings)
    return out
