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

import torch

from .model import gaussian_likelihood, lambda_of_keep

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


def search_latent(g_s: torch.nn.Module, x: torch.Tensor, y0: torch.Tensor, mu: torch.Tensor,
                  sigma: torch.Tensor, rank: torch.Tensor, steps: int, *, n_total: int,
                  pixels: int, free: tuple[int, int, int, int], scored: tuple[int, int, int, int],
                  refined: int = 0, lr: float = LR, keep_fractions=KEEP_FRACTIONS,
                  bf16: bool = True) -> torch.Tensor:
    """y after `steps` Adam steps on the objective with soft rounding sharpened along the way
    (alpha from ALPHA_START to ALPHA_END); y0 where the hard-rounded result is not better.

    Works on a crop: x (1,3,16h,16w) pixels in [0,1] and y0, mu, sigma, rank (1,M,h,w) of the
    same region (rank: each element's position in the whole image's coding order, of n_total
    elements). Only the latents in `free` (row0, row1, col0, col1) move and count bits; only
    the pixels in `scored` (same form) count distortion; bits and squared errors are divided
    by the whole image's `pixels`, so crops optimise parts of one objective. refined: the
    first `refined` elements in coding order carry a refinement bit (format.md 5.1), so the
    whole file (q = 1) has them at the centre of their half-bin. Returns float64."""
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
        value = torch.where(half_bins, sym_refined[0], sym[0])
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
