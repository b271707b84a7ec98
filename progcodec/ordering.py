"""The coding order's priority table, computed once at export (DESIGN.md 3.4, docs/format.md 3).

A prefix should hold the elements that buy the most quality per bit. For an element of scale
level l, sending it instead of its mean removes D_l = E[r^2] - E[(r - round r)^2] of latent
squared error (r ~ N(0, sigma_l)) and costs R_l bits (the entropy of table row l). How much
latent error shows in the image depends on the channel: g_c is the mean squared change of the
synthesis output per unit change of channel c. Priority(c, l) = g_c * D_l / R_l; the table stores
the rank of every (channel, level) pair by priority, descending (0 first), as integers, so that
encoder and decoder sort the same integer keys on every machine. Without a table, the order is
scale level descending: the same ranking with every g_c equal.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .tables import TABLE_TOTAL


def level_values(scale_table: np.ndarray, y_counts: np.ndarray) -> np.ndarray:
    """D_l / R_l of every scale level, float64 (levels,)."""
    out = []
    for level, sigma in enumerate(scale_table):
        r = np.linspace(-12 * sigma - 1, 12 * sigma + 1, 400001)
        density = np.exp(-0.5 * (r / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        weight = density * (r[1] - r[0])
        gain = float(np.sum(weight * (r ** 2 - (r - np.round(r)) ** 2)))
        p = y_counts[level][y_counts[level] > 0].astype(np.float64) / TABLE_TOTAL
        bits = float(-(p * np.log2(p)).sum())
        out.append(max(gain, 0.0) / max(bits, 1e-9))
    return np.array(out)


@torch.no_grad()
def channel_gains(g_a: torch.nn.Module, g_s: torch.nn.Module, crops: list[np.ndarray]) -> np.ndarray:
    """g_c: mean squared output change per unit change of y channel c, averaged over crops
    (HxWx3 uint8, sides multiples of 16), normalised to mean 1. float64 (M,)."""
    total = None
    for crop in crops:
        x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 255
        y = g_a(x)
        base = g_s(y)
        gains = []
        for c in range(y.shape[1]):
            y[:, c] += 1.0
            gains.append(float(((g_s(y) - base) ** 2).mean()))
            y[:, c] -= 1.0
        total = np.array(gains) if total is None else total + np.array(gains)
    return total / total.mean()


def order_rank(gains: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int32 (M, levels): rank of every (channel, level) pair by gains[c] * values[l],
    descending; equal priorities keep (channel, level) order, lower level later."""
    m, levels = len(gains), len(values)
    priority = np.outer(gains, values)
    # lexsort: last key is primary. Ties: channel ascending, then level descending.
    pairs = np.lexsort((-np.tile(np.arange(levels), m), np.repeat(np.arange(m), levels),
                        -priority.ravel()))
    rank = np.empty(m * levels, dtype=np.int64)
    rank[pairs] = np.arange(m * levels)
    return rank.reshape(m, levels).astype(np.int32)


def sample_crops(paths, size: int = 256, count: int = 4) -> list[np.ndarray]:
    """Centre crops (size x size) of the first `count` images at least that large."""
    from PIL import Image
    crops = []
    for p in paths:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
        h, w = rgb.shape[:2]
        if h >= size and w >= size:
            top, left = (h - size) // 2, (w - size) // 2
            crops.append(rgb[top:top + size, left:left + size])
        if len(crops) == count:
            break
    if not crops:
        raise ValueError(f"no image of at least {size}x{size} pixels to measure channel gains")
    return crops
