"""Integer probability tables of the entropy coder (DESIGN.md 3.1, 3.5).

They are computed once, at export, and stored in the weight file: loading never recomputes them,
so two machines always code with identical tables. Counts are int32 and sum to TABLE_TOTAL per
row; every symbol of a row's support gets at least 1.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

TABLE_TOTAL = 1 << 22  # sum of the counts of every table row
Y_TAIL_SIGMAS = 10.0  # support of a y table: +-ceil(10 sigma) symbols
Z_SUPPORT = 255  # z symbols are searched for support in [-255, 255]
Z_TAIL_MASS = 1e-9
# Context of a refinement bit (format.md 5.1, version 5): its element's scale index and base
# symbol clamped to -3..3. Beyond +-3 the two halves are nearly equally likely; the channel adds
# nothing (docs/ablation.md, "Finer tables").
REFINE_SYMBOL_CLIP = 3
REFINE_CONTEXTS = 2 * REFINE_SYMBOL_CLIP + 1


def refine_context(symbols: np.ndarray) -> np.ndarray:
    """The refinement table's column (0 .. REFINE_CONTEXTS - 1) for elements of these base symbols."""
    return np.clip(symbols, -REFINE_SYMBOL_CLIP, REFINE_SYMBOL_CLIP) + REFINE_SYMBOL_CLIP


def quantize_pmf(p: np.ndarray, total: int = TABLE_TOTAL) -> np.ndarray:
    """Float pmf -> int counts with sum `total`, each at least 1 (deterministic)."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    counts = np.maximum(1, np.floor(p * (total - len(p))).astype(np.int64))
    counts[np.argmax(counts)] += total - counts.sum()
    assert counts.min() >= 1 and counts.sum() == total
    return counts.astype(np.int32)


def gaussian_pmf(sigma: float, radius: int) -> np.ndarray:
    """P(symbol k), k in [-radius, radius], of N(0, sigma) rounded; tails folded into the ends."""
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    cdf = np.array([0.5 * math.erfc(-(v + 0.5) / (sigma * math.sqrt(2))) for v in k])
    lower = np.concatenate([[0.0], cdf[:-1]])
    cdf[-1] = 1.0
    return cdf - lower


class CodingTables(nn.Module):
    """The shipped tables, as buffers of the run-time model.

    order_rank (optional, int32 (M, levels)): the coding order's priority of every (y channel,
    scale level) pair, 0 first (see ordering.py and model.coding_order). A model without it
    codes in plain scale-index order (progcodec-v1).

    refine_counts (optional, int32 (levels, REFINE_CONTEXTS, 2)): counts of a refinement bit
    being 0 and 1 for each (scale index, clamped base symbol) context, fitted by fit_tables. A
    model with it codes its refinement bits with these and writes format version 5; without it,
    each bit costs one bit (versions 3 and 4)."""

    def __init__(self, z_channels: int, z_width: int, levels: int, y_width: int,
                 y_channels: int = 0, refine_table: bool = False):
        super().__init__()
        # None buffers are absent from the state dict until export or fit_tables sets them
        if y_channels:
            self.register_buffer("order_rank", torch.zeros(y_channels, levels, dtype=torch.int32))
        else:
            self.register_buffer("order_rank", None)
        self.register_buffer("refine_counts", torch.zeros(levels, REFINE_CONTEXTS, 2, dtype=torch.int32)
                             if refine_table else None)
        self.register_buffer("z_counts", torch.zeros(z_channels, z_width, dtype=torch.int32))
        self.register_buffer("z_offset", torch.zeros(z_channels, dtype=torch.int32))
        self.register_buffer("z_size", torch.ones(z_channels, dtype=torch.int32))
        self.register_buffer("y_counts", torch.zeros(levels, y_width, dtype=torch.int32))
        self.register_buffer("y_radius", torch.zeros(levels, dtype=torch.int32))

    @classmethod
    def build(cls, z_density, scale_table: torch.Tensor) -> "CodingTables":
        """Export-time construction from the trained z density and the scale table."""
        support = torch.arange(-Z_SUPPORT, Z_SUPPORT + 1)
        pmf = z_density.pmf_table(support).numpy()  # (C, 2*Z_SUPPORT+1)
        rows, offsets = [], []
        for p in pmf:
            cdf = np.cumsum(p)
            lo = int(np.searchsorted(cdf, Z_TAIL_MASS))
            hi = int(np.searchsorted(cdf, cdf[-1] - Z_TAIL_MASS))
            lo, hi = min(lo, Z_SUPPORT - 1), max(hi, Z_SUPPORT + 1)
            q = p[lo:hi + 1].copy()
            q[0] += p[:lo].sum()
            q[-1] += p[hi + 1:].sum()
            rows.append(quantize_pmf(q))
            offsets.append(lo - Z_SUPPORT)
        sigmas = scale_table.tolist()
        radii = [max(2, math.ceil(Y_TAIL_SIGMAS * s)) for s in sigmas]
        t = cls(len(rows), max(len(r) for r in rows), len(sigmas), 2 * max(radii) + 1)
        for c, (r, off) in enumerate(zip(rows, offsets)):
            t.z_counts[c, :len(r)] = torch.from_numpy(r)
            t.z_offset[c] = off
            t.z_size[c] = len(r)
        for i, (s, rad) in enumerate(zip(sigmas, radii)):
            t.y_counts[i, :2 * rad + 1] = torch.from_numpy(quantize_pmf(gaussian_pmf(s, rad)))
            t.y_radius[i] = rad
        return t

    def z_row(self, c: int) -> tuple[np.ndarray, int]:
        """Counts of channel c's z table and its smallest symbol."""
        n = int(self.z_size[c])
        return self.z_counts[c, :n].numpy(), int(self.z_offset[c])

    def z_bits(self) -> torch.Tensor:
        """-log2 P of every z symbol, float32 (C, width): entry [c, k] is symbol z_offset[c] + k;
        entries past a channel's z_size are copies of its last one (for interpolation)."""
        p = self.z_counts.double().clamp_min(1) / TABLE_TOTAL
        bits = -torch.log2(p)
        col = torch.arange(bits.shape[1]).view(1, -1)
        last = (self.z_size.long() - 1).view(-1, 1)
        return bits.gather(1, torch.minimum(col, last).expand_as(bits)).float()

    def refine_rows(self, levels: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """Counts (n, 2) of bit 0 and bit 1 for refinement bits of elements with these scale
        indexes and (clamped) base symbols; refine_counts must be set."""
        return self.refine_counts.numpy()[levels, refine_context(symbols)]

    def y_row(self, level: int) -> tuple[np.ndarray, int]:
        """Counts of scale level `level` and its radius (symbols -radius..radius)."""
        r = int(self.y_radius[level])
        return self.y_counts[level, :2 * r + 1].numpy(), r
