"""Encoder-side latent search: move y, for one image, to a better rate-distortion point.

The analysis network g_a predicts y in one pass; it was trained to do well on average, not on
this image (the "amortization gap"). With z, and so the means, scale indexes and coding order,
held fixed, the encoder can descend on y itself against the training objective of every
truncation at once:

    sum over keep-fractions q of  bits(q) / pixels + lambda(q) * 255^2 * MSE(q)

where the first q of the elements in coding order are received (mu + round(y - mu)) and the rest
are filled with mu, as the decoder does. Rounding is replaced by a soft rounding that sharpens
step by step, so the search can move elements across bin boundaries. The decoder
is untouched: any y gives a valid file, so this changes only which symbols the encoder writes.
The descent runs in float32 (bf16 autocast on the synthesis), so its result may differ across
machines and thread counts; the file it produces decodes identically everywhere (DESIGN.md 3).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from .model import dequantize_offsets, gaussian_likelihood, lambda_of_keep

# The keep-fractions whose reconstructions the objective scores, and the lambdas of training
# (progcodec-v12's card: lambda log-log from 0.0015 at q = 0.005 to 0.025 at q = 1). On the
# first 4 Kodak images, (0.15, 1) did as well as 5 or 7 fractions from 0.01 up, in less time:
# the gain is in the upper half of the curve (docs/latent-search.md).
KEEP_FRACTIONS = (0.15, 1.0)
LAMBDA_MIN, LAMBDA_MAX, Q_MIN = 0.0015, 0.025, 0.005
LR = 0.05  # Adam step on y, in quantization bins, decayed linearly to 0
ALPHA_START, ALPHA_END = 2.0, 16.0  # soft-rounding sharpness, raised geometrically


def frozen_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of a network with no parameter gradients (only y is searched)."""
    net = copy.deepcopy(net).float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def soft_round(r: torch.Tensor, alpha: float) -> torch.Tensor:
    """A differentiable rounding that tends to round() as alpha grows (Agustsson & Theis,
    "Universally quantized neural compression", 2020). Annealed, it lets the search move
    elements across bin boundaries; straight-through rounding barely moved the objective in a
    first probe (docs/latent-search.md)."""
    m = torch.floor(r) + 0.5
    return m + torch.tanh(alpha * (r - m)) / (2 * math.tanh(alpha / 2))


def with_offsets(sym: torch.Tensor, offsets: tuple[torch.Tensor, torch.Tensor] | None
                 ) -> torch.Tensor:
    """Symbols (soft or hard) as g_s gets them: moved by the dequantization table at (scale
    index, nearest integer symbol) when offsets = (table, scale index) is given. The move is a
    constant of each bin: the gradient passes through the symbol alone."""
    if offsets is None:
        return sym
    table, idx = offsets
    return sym + dequantize_offsets(table, idx, torch.round(sym.detach())).to(sym.dtype)


def search_latent(g_s: torch.nn.Module, x: torch.Tensor, y0: torch.Tensor, mu: torch.Tensor,
                  sigma: torch.Tensor, rank: torch.Tensor, steps: int, *, n_total: int,
                  pixels: int, free: tuple[int, int, int, int], scored: tuple[int, int, int, int],
                  refined: int = 0, lr: float = LR, keep_fractions=KEEP_FRACTIONS,
                  bf16: bool = True, offsets: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> torch.Tensor:
    """y after `steps` Adam steps on the objective with soft rounding sharpened along the way
    (alpha from ALPHA_START to ALPHA_END); y0 where the hard-rounded result is not better.

    Works on a crop: x (1,3,16h,16w) pixels in [0,1] and y0, mu, sigma, rank (1,M,h,w) of the
    same region (rank: each element's position in the whole image's coding order, of n_total
    elements). Only the latents in `free` (row0, row1, col0, col1) move and count bits; only
    the pixels in `scored` (same form) count distortion; bits and squared errors are divided
    by the whole image's `pixels`, so crops optimise parts of one objective. refined: the
    first `refined` elements in coding order carry a refinement bit (format.md 5.1), so the
    whole file (q = 1) has them at the centre of their half-bin. offsets: (g_s's dequantization
    table, scale index (1,M,h,w) of the crop) for a model with one (model.offset_symbols).
    Returns float64."""
    mu32, sigma32 = mu.float(), sigma.float()
    masks = torch.stack([(rank < math.ceil(q * n_total))[0] for q in keep_fractions])
    lams = lambda_of_keep(torch.tensor(keep_fractions, dtype=torch.float64), LAMBDA_MIN,
                          LAMBDA_MAX, Q_MIN).float().to(x.device)
    movable = torch.zeros_like(y0, dtype=torch.bool)
    movable[:, :, free[0]:free[1], free[2]:free[3]] = True
    counted = masks & movable[0]
    target = x[:, :, scored[0]:scored[1], scored[2]:scored[3]].float()
    cl = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format

    whole = torch.tensor([q >= 1 for q in keep_fractions], device=x.device).view(-1, 1, 1, 1)
    half_bins = whole & (rank < refined)[0]  # reconstructed from a refinement bit

    def objective(sym: torch.Tensor, sym_refined: torch.Tensor, autocast: bool) -> torch.Tensor:
        bits = -torch.log2(gaussian_likelihood(sym, sigma32))[0]  # (M,h,w)
        value = torch.where(half_bins, sym_refined[0], with_offsets(sym, offsets)[0])
        y_in = torch.where(masks, mu32[0] + value, mu32[0]).contiguous(memory_format=cl)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            x_hat = g_s(y_in)
        x_hat = x_hat.float()[:, :, scored[0]:scored[1], scored[2]:scored[3]]
        mse = ((x_hat - target) ** 2).flatten(1).sum(1) / (3 * pixels)
        bpp = (bits * counted).flatten(1).sum(1) / pixels
        return (bpp + lams * 255**2 * mse).sum()

    y0 = y0.detach()
    y = y0.float().clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    for step in range(steps):
        alpha = ALPHA_START * (ALPHA_END / ALPHA_START) ** (step / steps)
        for group in opt.param_groups:  # linear decay: large moves first, then settle
            group["lr"] = lr * (1 - step / steps)
        r = y - mu32
        loss = objective(soft_round(r, alpha), (soft_round(2 * r - 0.5, alpha) + 0.5) / 2, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        y.grad.mul_(movable)  # latents outside `free` are context only
        opt.step()
    with torch.no_grad():  # keep the search only if it helps the real (hard-rounded) objective
        def hard(r):  # the base symbol, and the refined value s -/+ 1/4 (codec.refinement_bits)
            return torch.round(r), (torch.floor(2 * r) + 0.5) / 2
        before = objective(*hard(y0.float() - mu32), False)
        after = objective(*hard(y.detach() - mu32), False)
    return y.detach().to(y0.dtype) if after < before else y0


# ---- joint search of y and z ---------------------------------------------------------------
# With z free, the means, scales and order move too, so short prefixes (mostly means) can gain;
# they need low keep-fractions in the objective.
JOINT_KEEP_FRACTIONS = (0.01, 0.04, 0.15, 1.0)
Z_WEIGHT = 2.0  # factor on the bits of z in the objective: z is paid by every prefix (docs/latent-search.md)
Z_LR = 0.3  # Adam step on z, in z symbols (0.15: a little worse, 0.5: much worse; docs/latent-search.md)


def z_bits(z: torch.Tensor, table: torch.Tensor, offset: torch.Tensor, size: torch.Tensor
           ) -> torch.Tensor:
    """Bits of z (1, C, h, w) under the coder's z tables (CodingTables.z_bits, z_offset,
    z_size), interpolated linearly between integers so that they have a gradient; exact on
    integer z within each channel's support (z outside it counts as the nearest end)."""
    c = z.shape[1]
    k = z[0].float() - offset.view(c, 1, 1).float()
    k = torch.minimum(k.clamp_min(0), (size.view(c, 1, 1) - 1).float())
    k0 = torch.floor(k.detach())
    frac = k - k0
    k0 = k0.long().view(c, -1)
    k1 = (k0 + 1).clamp(max=table.shape[1] - 1)
    b0, b1 = table.gather(1, k0).view_as(frac), table.gather(1, k1).view_as(frac)
    return (b0 * (1 - frac) + b1 * frac).sum()


def search_latent_and_hyper(g_s: torch.nn.Module, h_mean: torch.nn.Module,
                            scale_net: torch.nn.Module, hyper_exact, x: torch.Tensor,
                            y0: torch.Tensor, z0: torch.Tensor, steps: int, *,
                            z_table: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                            log_sigma: tuple[float, float], rank_of, n_total: int, pixels: int,
                            scored: tuple[int, int, int, int],
                            free_z: tuple[int, int, int, int] | None = None,
                            context: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                            refined: int = 0, lr: float = LR, z_lr: float = Z_LR,
                            z_weight: float = Z_WEIGHT, keep_fractions=JOINT_KEEP_FRACTIONS,
                            bf16: bool = True, offsets: torch.Tensor | None = None,
                            low_synthesis: tuple[torch.nn.Module, Callable[[int], bool]] | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, z) after `steps` Adam steps on both against the objective of search_latent, with
    the bits of z (times z_weight) added to every truncation; (y0, z0) where the real
    (hard-rounded, integer scale net) result is not better.

    g_s, h_mean: frozen float32 networks; scale_net: intnet.ScaleNetRelaxed; hyper_exact: the
    run-time map from integer z (1,C,h,w) to (mu float32, scale index int64), both (1,M,4h,4w);
    z_table: (CodingTables.z_bits(), z_offset, z_size); log_sigma: (log sigma of index 0,
    log step between indexes); x (1,3,64h,64w) in [0,1]; y0 float (1,M,4h,4w); z0 int64
    symbols within the tables' support; rank_of: integer scale indexes (1,M,4h,4w) -> each
    element's position in the whole image's coding order (of n_total elements).

    On a crop of a large image: only z in `free_z` (rows0, rows1, cols0, cols1, in z units)
    and y above it move, and only their bits count; `context` = (mu, scale index, trusted):
    the whole image's fixed values on the crop, used where `trusted` (bool (4h,4w)) is False,
    as the crop's own hyper networks see zeros past its edge; y bits count wherever trusted,
    as z moves their means. Bits and squared errors (on the pixels in `scored`) are divided
    by the whole image's `pixels`. offsets: g_s's dequantization table, for a model with one.
    low_synthesis: (g_s_low, decodes_low) for a model with a synthesis of short prefixes:
    the keep-fractions whose element count k has decodes_low(k) (the decoder's own rule) are
    scored with it, without offsets, as the decoder reconstructs them. Returns y (float64) and z (int64)."""
    lams = lambda_of_keep(torch.tensor(keep_fractions, dtype=torch.float64), LAMBDA_MIN,
                          LAMBDA_MAX, Q_MIN).float().to(x.device)
    whole = torch.tensor([q >= 1 for q in keep_fractions], device=x.device).view(-1, 1, 1, 1)
    target = x[:, :, scored[0]:scored[1], scored[2]:scored[3]].float()
    cl = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
    kept = [math.ceil(q * n_total) for q in keep_fractions]
    # which truncations the decoder reconstructs with g_s_low (codec._Runtime.synthesis_for)
    low = torch.tensor([low_synthesis is not None and low_synthesis[1](k) for k in kept],
                       device=x.device)
    fz = free_z or (0, z0.shape[2], 0, z0.shape[3])
    z_free = torch.zeros_like(z0, dtype=torch.bool)
    z_free[:, :, fz[0]:fz[1], fz[2]:fz[3]] = True
    y_free = torch.zeros_like(y0, dtype=torch.bool)
    y_free[:, :, 4 * fz[0]:4 * fz[1], 4 * fz[2]:4 * fz[3]] = True
    y_counted = y_free[0] if context is None else context[2].expand_as(y0[0])

    def synthesize(y_in):  # each truncation by the synthesis that the decoder runs for it
        if not low.any():
            return g_s(y_in)
        if low.all():
            return low_synthesis[0](y_in)
        order = torch.cat([(~low).nonzero()[:, 0], low.nonzero()[:, 0]])
        return torch.cat([g_s(y_in[~low]), low_synthesis[0](y_in[low])])[torch.argsort(order)]

    def objective(mu, idx, z_value, y, rounding, autocast):
        if context is not None:  # the whole image's values where the crop's are not right
            mu = torch.where(context[2], mu, context[0])
            idx = torch.where(context[2], idx, context[1].to(idx.dtype))
        rank = rank_of(idx.detach().round().long())[0]
        masks = torch.stack([rank < k for k in kept])
        sigma = torch.exp(log_sigma[0] + idx * log_sigma[1])
        sym, sym_refined = rounding(y - mu)
        bits = -torch.log2(gaussian_likelihood(sym, sigma))[0]
        value = torch.where(whole & (rank < refined), sym_refined[0],
                            with_offsets(sym, None if offsets is None else
                                         (offsets, idx.detach().round().long()))[0])
        value = torch.where(low.view(-1, 1, 1, 1), sym[0], value)  # g_s_low: no offsets
        y_in = torch.where(masks, mu[0] + value, mu[0]).contiguous(memory_format=cl)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            x_hat = synthesize(y_in)
        x_hat = x_hat.float()[:, :, scored[0]:scored[1], scored[2]:scored[3]]
        mse = ((x_hat - target) ** 2).flatten(1).sum(1) / (3 * pixels)
        bits_z = z_weight * z_bits(z_value[:, :, fz[0]:fz[1], fz[2]:fz[3]], *z_table)
        bpp = (bits * (masks & y_counted)).flatten(1).sum(1) / pixels + bits_z / pixels
        return (bpp + lams * 255**2 * mse).sum()

    def hard_objective(y, z_int):
        mu, idx = hyper_exact(z_int)
        def hard(r):
            return torch.round(r), (torch.floor(2 * r) + 0.5) / 2
        return objective(mu.float(), idx.float(), z_int, y.float(), hard, False)

    y = y0.float().clone().requires_grad_(True)
    z = z0.float().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [y], "lr": lr}, {"params": [z], "lr": z_lr}])
    base_lr = [lr, z_lr]
    for step in range(steps):
        alpha = ALPHA_START * (ALPHA_END / ALPHA_START) ** (step / steps)
        for group, lr0 in zip(opt.param_groups, base_lr):
            group["lr"] = lr0 * (1 - step / steps)
        zq = soft_round(z, alpha)
        mu = h_mean(zq).float()
        idx = scale_net(zq)

        def soft(r):
            return soft_round(r, alpha), (soft_round(2 * r - 0.5, alpha) + 0.5) / 2
        loss = objective(mu, idx, zq, y, soft, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        y.grad.mul_(y_free)  # latents outside the free region are context only
        z.grad.mul_(z_free)
        opt.step()
    with torch.no_grad():
        _, offset, size = z_table  # clamped to each channel's support, as entropy.clamp_z
        lo = offset.view(1, -1, 1, 1).long()
        z_new = torch.round(z.detach()).long().clamp(lo, lo + size.view(1, -1, 1, 1).long() - 1)
        z_new = torch.where(z_free, z_new, z0)
        before = hard_objective(y0, z0)
        after = hard_objective(y.detach(), z_new)
    if after < before:
        return y.detach().to(y0.dtype), z_new
    return y0, z0
