"""The variance-masked mean-scale hyperprior model (DESIGN.md sections 1-2).

    x --g_a--> y --h_a--> z ; z_sym = round(z)   (coded with a factorized prior, integer tables)
    z_sym --h_mean--> mu (float)   z_sym --scale net (integer-exact)--> scale index of every y
    y elements sent in order of scale index descending; missing ones are filled with mu
    y_hat --g_s--> x_hat     (decoder_side: g_s also sees which elements are missing, and
                              their scale index; see side_features. offset_symbols: received
                              elements enter g_s moved inside their bins; dequantize_offsets)

This module holds the networks and the training-time forward pass (noise likelihoods, masking by
keep-fraction). Real coding lives in ``entropy.py`` and ``codec.py``; tables in ``tables.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
from torch import nn
import torch.nn.functional as F

from .layers import SimplifiedGDN, conv, deconv, FactorizedDensity, lower_bound
from .intnet import ScaleNetQAT, ScaleNetInt

STRIDE = 64  # images are padded to a multiple of this (z has stride 64)
MAX_OFFSET_SYMBOLS = 8  # ModelConfig.offset_symbols: symbols -8..8 get their own offsets at most


@dataclass(frozen=True)
class ModelConfig:
    N: int = 128  # channels of the transforms and of z
    M: int = 192  # channels of y
    H: int = 128  # hidden channels of the hyper networks
    levels: int = 64  # entries of the scale table
    scale_min: float = 0.11
    scale_max: float = 64.0
    # The synthesis also sees, per y element, whether it was received and the scale index of
    # those that were not (side_features): the decoder knows both, so this costs no bits.
    decoder_side: bool = False
    # A second synthesis, g_s_low, for prefixes that carry fewer than this fraction of the y
    # elements (0: none). One network serving every cut trades the short prefixes against the
    # long ones; this one is trained on short prefixes alone, under frozen encoder and hyper
    # networks, so the bitstream and the long prefixes do not change.
    low_synthesis_keep: float = 0.0
    # Residual blocks in g_s (not g_s_low): 1 after its stride-8 GDN, 2 also after its stride-4
    # GDN, 3 also after its stride-2 GDN (the costliest: 4x the pixels of the stride-4 one),
    # 4 and 5 a second block at stride 8, then at stride 4, 6 a third at stride 8
    # (SYNTHESIS_BLOCKS).
    # Each starts as the identity (last conv zero), so trained weights without them load and
    # decode unchanged until the blocks are trained.
    synthesis_blocks: int = 0
    # The same residual blocks in g_s_low (needs low_synthesis_keep): the short prefixes it
    # decodes leave the most for the synthesis to fill in.
    low_synthesis_blocks: int = 0
    # Residual blocks in the analysis g_a (ANALYSIS_BLOCKS): 1 after its stride-8 GDN, 2 also
    # after its stride-4 GDN. Encoder only: the decoder and the bitstream format do not change,
    # and each starts as the identity, so trained weights without them encode unchanged.
    analysis_blocks: int = 0
    # Dequantization offsets for g_s (not g_s_low): a received element enters g_s at
    # mu + s + offset[scale index, s], with s clamped to -K..K (K = offset_symbols; 0: none).
    # A +-1 of a small-scale element is a rare tail event, unlike one of a large-scale
    # element; g_s cannot see the scale index, the decoder can. The table is learned with g_s
    # (v25's moves small-scale +-1 outwards, not to the bin centroids of docs/refinement.md)
    # and starts at zero, so weights without it decode unchanged.
    offset_symbols: int = 0

    def __post_init__(self):
        if not 0.0 <= self.low_synthesis_keep < 1.0:
            raise ValueError(f"low_synthesis_keep {self.low_synthesis_keep} is not in [0, 1)")
        for name in ("synthesis_blocks", "low_synthesis_blocks"):
            if getattr(self, name) not in range(len(SYNTHESIS_BLOCKS) + 1):
                raise ValueError(f"{name} {getattr(self, name)} is not in "
                                 f"0..{len(SYNTHESIS_BLOCKS)}")
        if self.analysis_blocks not in range(len(ANALYSIS_BLOCKS) + 1):
            raise ValueError(f"analysis_blocks {self.analysis_blocks} is not in "
                             f"0..{len(ANALYSIS_BLOCKS)}")
        if not 0 <= self.offset_symbols <= MAX_OFFSET_SYMBOLS:
            raise ValueError(f"offset_symbols {self.offset_symbols} is not in "
                             f"0..{MAX_OFFSET_SYMBOLS}")
        if self.low_synthesis_blocks and not self.low_synthesis_keep:
            raise ValueError("low_synthesis_blocks needs low_synthesis_keep (a g_s_low)")
        if self.synthesis_blocks and self.decoder_side:
            raise ValueError("synthesis_blocks and decoder_side cannot be combined")
        if self.low_synthesis_keep and self.decoder_side:
            raise ValueError("low_synthesis_keep and decoder_side cannot be combined")

    def scale_table(self) -> torch.Tensor:
        """sigma of every scale index, float64: log-spaced from scale_min to scale_max."""
        i = torch.arange(self.levels, dtype=torch.float64)
        ratio = math.log(self.scale_max / self.scale_min) / (self.levels - 1)
        return self.scale_min * torch.exp(i * ratio)

    def to_dict(self) -> dict:
        return asdict(self)


def coding_order(scale_index: torch.Tensor, levels: int,
                 order_rank: torch.Tensor | None = None) -> torch.Tensor:
    """The global element order shared by encoder and decoder (DESIGN.md 3.4).

    scale_index: int64 (..., n) flattened per image in (channel, row, column) order. Without
    `order_rank`: scale index descending. With the model's `order_rank` table (int (M, levels),
    ordering.py): the rank of each element's (channel, scale index) pair ascending. Ties are
    broken by flat position ascending. Sorting integer keys only: no float is involved.
    """
    n = scale_index.shape[-1]
    idx = scale_index.to(torch.int64)
    if order_rank is None:
        key = levels - 1 - idx
    else:
        rank = order_rank.to(device=idx.device, dtype=torch.int64)
        channel = torch.arange(n, device=idx.device) // (n // rank.shape[0])
        key = rank[channel, idx]
    # A stable sort of the key is the sort of key * n + position (ties in position order),
    # without building those int64 products.
    return torch.argsort(key, dim=-1, stable=True)


def coding_rank(scale_index: torch.Tensor, levels: int,
                order_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Each element's position in coding_order, shaped as `scale_index` (one image's
    indexes, any shape, flattened in C,H,W order)."""
    order = coding_order(scale_index.reshape(-1), levels, order_rank)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank.view_as(scale_index)


ORDERS = ("scale", "table", "channel", "raster")


def element_order(scale_index: torch.Tensor, shape: tuple[int, int, int], kind: str,
                  levels: int, order_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Order of the y elements under an ordering rule, for training masks and the ablation.

    scale_index: int64 (..., C*H*W) flattened in (C, H, W) order. "scale" is the codec's
    coding_order without a priority table and "table" with the model's order_rank table: the
    real coder's orders. The fixed orders are the baselines of the ordering ablation: "channel"
    (ProgDTD's tail drop: channel 0 first, whole channels at a time) and "raster" (position by
    position, all channels of a position together).
    """
    if kind == "scale":
        return coding_order(scale_index, levels)
    if kind == "table":
        return coding_order(scale_index, levels, order_rank)
    c, h, w = shape
    n = c * h * w
    dev = scale_index.device
    if kind == "channel":
        order = torch.arange(n, device=dev)
    elif kind == "raster":
        order = torch.arange(n, device=dev).view(c, h * w).t().reshape(-1)
    else:
        raise ValueError(f"unknown order {kind!r}; expected one of {ORDERS}")
    return order.expand(scale_index.shape[:-1] + (n,))


def side_features(received: torch.Tensor, scale_index: torch.Tensor, levels: int) -> torch.Tensor:
    """What the decoder knows about each y element besides its value, as 2M input channels of
    the synthesis: 1 where the element is missing (filled with its mean), and for a missing
    element its scale index scaled to [0, 1] (how uncertain that mean is). Both are 0 for a
    received element, so the whole latent gives zeros and the side layer does not touch it.
    received: bool (B, M, h, w); scale_index: integer-valued (B, M, h, w), exact at the decoder."""
    missing = (~received).float()
    return torch.cat([missing, missing * scale_index.float() / (levels - 1)], dim=1)


class Synthesis(nn.Module):
    """g_s, plus (decoder_side) a zero-initialised layer without bias that adds the side
    features' response to the first layer's, so weights trained without side features start
    unchanged, and the whole latent (side features all 0) decodes as without the layer."""

    def __init__(self, g_s: nn.Sequential, side: nn.Module | None):
        super().__init__()
        self.g_s, self.side = g_s, side

    def forward(self, y_hat: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        """side: side_features of y_hat; None means every element was received."""
        if self.side is None or side is None:
            return self.g_s(y_hat)
        return self.g_s[1:](self.g_s[0](y_hat) + self.side(side))


def gaussian_likelihood(residual: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """P(bin of width 1 around residual) under N(0, sigma), in fp32."""
    residual, sigma = residual.float(), sigma.float()
    v = residual.abs()
    upper = 0.5 * torch.erfc(-(0.5 - v) / (sigma * math.sqrt(2)))
    lower = 0.5 * torch.erfc(-(-0.5 - v) / (sigma * math.sqrt(2)))
    return lower_bound(upper - lower, 1e-9)


# A refined element sits at the centre of the half of its bin: s -/+ 0.25 (format.md 5.1).
REFINE_STEP = 0.25


def lambda_of_keep(q: torch.Tensor, lam_min: float, lam_max: float, q_min: float) -> torch.Tensor:
    """The training objective's lambda for keep-fraction q: log-log from lam_min at q_min to
    lam_max at q = 1 (train.py trains with it; latent_search.py searches with it)."""
    t = (torch.log(q) - math.log(q_min)) / -math.log(q_min)
    return torch.exp(math.log(lam_min) + t.clamp(0, 1) * (math.log(lam_max) - math.log(lam_min)))


def dequantize_offsets(table: torch.Tensor, scale_index: torch.Tensor, symbols: torch.Tensor
                       ) -> torch.Tensor:
    """Offset of each element from table (levels, 2K + 1) (ModelConfig.offset_symbols): row
    scale_index, column symbol clamped to -K..K, plus K. symbols: integer-valued, any dtype."""
    k = (table.shape[1] - 1) // 2
    col = symbols.clamp(-k, k).long() + k
    return table[scale_index, col]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class ResidualBlock(nn.Module):
    """x + conv(leaky_relu(conv(x))), 3x3 convolutions; the second starts at zero, so a new
    block is the identity."""

    def __init__(self, n: int):
        super().__init__()
        self.conv1 = nn.Conv2d(n, n, 3, padding=1)
        self.conv2 = nn.Conv2d(n, n, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x)))


# The residual blocks g_s may carry, in the order synthesis_blocks adds them: name, the layer of
# synthesis_layers they follow, and the stride they run at. Blocks after the same layer run in
# this order. The second ones at strides 8 and 4, and the third at stride 8, came after res2:
# capacity that costs little decode time (a block at stride 4 runs on a quarter of res2's
# pixels, one at stride 8 on a sixteenth).
SYNTHESIS_BLOCKS = (("res8", 1, 8), ("res4", 3, 4), ("res2", 5, 2), ("res8b", 1, 8), ("res4b", 3, 4),
                    ("res8c", 1, 8))
# The same for g_a (analysis_blocks). Its stride-2 block is left out: g_a runs in float64 at
# the encoder, where a 3x3 convolution at half resolution costs 0.66 s per Kodak image.
ANALYSIS_BLOCKS = (("res8", 5, 8), ("res4", 3, 4))
# Parameter prefixes of the blocks, in either synthesis and in the analysis
BLOCK_PARTS = tuple(f"{net}.{name}." for net in ("g_s", "g_s_low") for name, _, _ in SYNTHESIS_BLOCKS)
ANALYSIS_PARTS = tuple(f"g_a.{name}." for name, _, _ in ANALYSIS_BLOCKS)
# The decoder's syntheses: they do not change the symbols the encoder writes (fit_tables --from).
SYNTHESIS_PARTS = ("g_s.", "g_s_low.", "g_s_offset", "g_s_side.")
# Parameter prefixes that --config may add to trained weights (train --init accepts them missing)
ADDABLE_PARTS = ("g_s_side.", "g_s_low.", "g_s_offset") + BLOCK_PARTS + ANALYSIS_PARTS


class LayersWithBlocks(nn.Sequential):
    """Seven transform layers (named 0 to 6, so weights trained without blocks load into it)
    and residual blocks, each run after its layer: the first `blocks` of `specs`
    (SYNTHESIS_BLOCKS or ANALYSIS_BLOCKS)."""

    def __init__(self, layers: list[nn.Module], blocks: int, channels: int,
                 specs: tuple = SYNTHESIS_BLOCKS):
        super().__init__(*layers)
        self.layer_count = len(layers)
        self.after = {}  # layer index -> names of the blocks run after it, in order
        for name, layer, _ in specs[:blocks]:
            self.add_module(name, ResidualBlock(channels))
            self.after.setdefault(layer, []).append(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.layer_count):
            x = self[i](x)
            for name in self.after.get(i, ()):
                x = self._modules[name](x)
        return x


def analysis_layers(c: ModelConfig) -> nn.Sequential:
    """g_a: RGB -> y (M channels, stride 16), with c.analysis_blocks residual blocks."""
    layers = [conv(3, c.N), SimplifiedGDN(c.N), conv(c.N, c.N), SimplifiedGDN(c.N),
              conv(c.N, c.N), SimplifiedGDN(c.N), conv(c.N, c.M)]
    if c.analysis_blocks:
        return LayersWithBlocks(layers, c.analysis_blocks, c.N, ANALYSIS_BLOCKS)
    return nn.Sequential(*layers)


def synthesis_layers(c: ModelConfig, blocks: int = 0) -> nn.Sequential:
    """g_s (and g_s_low): y (M channels, stride 16) -> RGB; `blocks` residual blocks
    (LayersWithBlocks): a model's synthesis_blocks (g_s) or low_synthesis_blocks (g_s_low)."""
    layers = [deconv(c.M, c.N), SimplifiedGDN(c.N, inverse=True),
              deconv(c.N, c.N), SimplifiedGDN(c.N, inverse=True),
              deconv(c.N, c.N), SimplifiedGDN(c.N, inverse=True), deconv(c.N, 3)]
    return LayersWithBlocks(layers, blocks, c.N) if blocks else nn.Sequential(*layers)


def block_margin(blocks: int, base: int, specs: tuple = SYNTHESIS_BLOCKS) -> int:
    """Context pixels for tiles of a synthesis (specs=SYNTHESIS_BLOCKS) or an analysis
    (specs=ANALYSIS_BLOCKS) with `blocks` residual blocks: `base` (tiling.MARGIN, which covers
    a transform without blocks) plus the blocks' reach (two 3x3 convolutions: 2 positions at
    their stride), rounded up to a multiple of 16."""
    extra = sum(2 * stride for _, _, stride in specs[:blocks])
    return base + -(-extra // 16) * 16


class ProgressiveModel(nn.Module):
    """Networks of the codec. `integer_scale=True` builds the run-time (exported) form."""

    def __init__(self, config: ModelConfig = ModelConfig(), integer_scale: bool = False):
        super().__init__()
        c = config
        self.config = c
        self.g_a = analysis_layers(c)
        self.g_s = synthesis_layers(c, c.synthesis_blocks)
        self.g_s_low = synthesis_layers(c, c.low_synthesis_blocks) if c.low_synthesis_keep else None
        self.g_s_side = None
        if c.decoder_side:
            self.g_s_side = deconv(2 * c.M, c.N, bias=False)  # g_s[0] has the bias
            nn.init.zeros_(self.g_s_side.weight)
        self.h_a = nn.Sequential(
            conv(c.M, c.H, 3, 1), nn.LeakyReLU(inplace=True),
            conv(c.H, c.H), nn.LeakyReLU(inplace=True), conv(c.H, c.N))
        self.h_mean = nn.Sequential(
            deconv(c.N, c.H), nn.LeakyReLU(inplace=True),
            deconv(c.H, c.H), nn.LeakyReLU(inplace=True), conv(c.H, c.M, 3, 1))
        if integer_scale:
            self.scale_net = ScaleNetInt(c.N, c.H, c.M, c.levels)
        else:
            self.scale_net = ScaleNetQAT(c.N, c.H, c.M, c.levels)
            self.z_density = FactorizedDensity(c.N)
        # (levels, 2K + 1) table of offset_symbols (dequantize_offsets), or None
        self.register_parameter("g_s_offset", nn.Parameter(
            torch.zeros(c.levels, 2 * c.offset_symbols + 1)) if c.offset_symbols else None)
        self.mask_order = "scale"  # training-time masking rule (ablation only; see element_order)
        self.register_buffer("log_scale_table", torch.log(c.scale_table()).float(),
                             persistent=False)

    # ---- training ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> dict:
        """Training pass. x: (B,3,H,W) in [0,1]; keep: (B,) fraction of y elements kept.
        keep = 1 + f (0 < f <= 1): every element, and a refinement bit for the first f of them
        in coding order, placed as the decoder places them (format.md 5.1).

        Returns the masked reconstruction and per-image bits (kept y elements, one per
        refinement bit, all of z).
        """
        y = self.g_a(x)
        z = self.h_a(y)
        z_lik = self.z_density(z + torch.empty_like(z).uniform_(-0.5, 0.5))
        z_sym = round_ste(z.float())
        mu = self.h_mean(z_sym).float()
        with torch.autocast(x.device.type, enabled=False):
            idx, range_penalty = self.scale_net(z_sym)
        sigma = torch.exp(self.log_scale_table[0] + idx * (
            self.log_scale_table[1] - self.log_scale_table[0]))
        y = y.float()
        noisy = y - mu + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_lik = gaussian_likelihood(noisy, sigma)
        y_hat = round_ste(y - mu) + mu

        b = y.shape[0]
        flat_idx = idx.detach().round().long().reshape(b, -1)
        n = flat_idx.shape[1]
        order = element_order(flat_idx, tuple(y.shape[1:]), self.mask_order, self.config.levels)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n, device=x.device).expand(b, n))
        keep = keep.to(x.device)
        kept = torch.ceil(keep.clamp(max=1.0) * n).long().view(b, 1)
        refined = torch.ceil((keep - 1).clamp(0.0, 1.0) * n).long().view(b, 1)
        mask = (rank < kept).view_as(y)
        halves = (rank < refined).view_as(y)  # base symbol plus a refinement bit
        y_in = torch.where(mask, y_hat, mu)
        side = (side_features(mask, flat_idx.view_as(y), self.config.levels)
                if self.g_s_side is not None else None)
        low = self.uses_low_synthesis(keep)
        y_main = y_in  # what g_s gets: with offsets, received elements move inside their bins
        if self.g_s_offset is not None:
            y_main = y_in + (mask & ~halves) * dequantize_offsets(
                self.g_s_offset, flat_idx.view_as(y), torch.round(y - mu).detach())
        if bool(refined.any()):  # the centre of the half-bin the residual lies in
            r = (y - mu).detach()
            half = torch.where(r - torch.round(r) >= 0, REFINE_STEP, -REFINE_STEP)
            y_main = torch.where(halves, y_main + half, y_main)
        if low is None:
            x_hat = self.synthesis_net()(y_main, side)
        else:  # each image through the synthesis its prefix length selects
            x_low, x_main = self.g_s_low(y_in[low]), self.g_s(y_main[~low])
            x_hat = x_low.new_empty((b, *x_low.shape[1:]))
            x_hat[low], x_hat[~low] = x_low, x_main

        bits_y = -(torch.log2(y_lik) * mask).flatten(1).sum(1) + refined.view(b).float()
        bits_z = -torch.log2(z_lik).flatten(1).sum(1)
        return {"x_hat": x_hat, "bits": bits_y + bits_z, "bits_z": bits_z,
                "range_penalty": range_penalty}

    def uses_low_synthesis(self, keep: torch.Tensor) -> torch.Tensor | None:
        """Which images of a batch go through g_s_low (keep: their fractions of y elements);
        None when none does."""
        if self.g_s_low is None:
            return None
        low = keep < self.config.low_synthesis_keep
        return low if bool(low.any()) else None

    # ---- run time (codec.py uses these) --------------------------------------------------
    def analysis(self, x: torch.Tensor):
        """x (1,3,H,W) in [0,1], H and W multiples of STRIDE -> y (float), z symbols (int64)."""
        y = self.g_a(x)
        z_sym = torch.round(self.h_a(y)).to(torch.int64)
        return y, z_sym

    def hyper(self, z_sym: torch.Tensor, dtype=torch.float32):
        """z symbols -> (mu as `dtype`, scale index int64). The index is bit-exact."""
        mu = self.h_mean(z_sym.to(dtype))
        return mu, self.scale_net(z_sym)

    def synthesis_net(self) -> Synthesis:
        """g_s with its side layer (if any), sharing this model's parameters."""
        return Synthesis(self.g_s, self.g_s_side)

    def float_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters of the float networks (everything but the scale net and z density)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("scale_net.", "z_density."))}
