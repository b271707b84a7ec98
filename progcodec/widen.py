"""Widen the latent of trained weights (M -> M'), keeping what the network computes.

Training-time only (train.py --init W --config '{"M": 320}'). The new y channels start out
silent: the synthesis and the hyper-analysis read them with zero weights, their mean is 0 and
the scale net gives them the smallest scale index, so the model decodes as before and the new
elements cost about nothing. The analysis writes them with small random weights, so their
values are not all zero and the zero synthesis weights get a gradient (two zero ends would
never move).
"""
from __future__ import annotations

import torch

# tensor name -> dimension of the y channels; how the new slice starts
_WIDENED = {
    "g_a.6.weight": (0, "small"),        # analysis writes y: small random
    "g_a.6.bias": (0, "zero"),
    "g_s.0.weight": (0, "zero"),         # synthesis reads y (transposed conv: in, out, k, k)
    "h_a.0.weight": (1, "zero"),         # hyper-analysis reads y
    "h_mean.4.weight": (0, "zero"),      # mean of the new elements: 0
    "h_mean.4.bias": (0, "zero"),
    "scale_net.l3.weight": (0, "small"),  # scale index about 0: the smallest scale
    "scale_net.l3.bias": (0, "zero"),
}
SMALL = 0.05  # new random weights: this fraction of the existing weights' standard deviation


def widen_latent(state: dict[str, torch.Tensor], old_m: int, new_m: int,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """A copy of a training state dict with M = new_m latent channels instead of old_m."""
    if new_m < old_m:
        raise ValueError(f"cannot narrow the latent from {old_m} to {new_m} channels")
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, (dim, how) in _WIDENED.items():
        t = state[name]
        if t.shape[dim] != old_m:
            raise ValueError(f"{name}: expected {old_m} channels in dimension {dim}, got {tuple(t.shape)}")
        shape = list(t.shape)
        shape[dim] = new_m - old_m
        if how == "zero":
            extra = torch.zeros(shape, dtype=t.dtype)
        else:
            extra = (torch.randn(shape, generator=gen, dtype=torch.float32)
                     * SMALL * t.float().std()).to(t.dtype)
        out[name] = torch.cat([t, extra.to(t.device)], dim=dim)
    return out
