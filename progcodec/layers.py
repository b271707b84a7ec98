"""Neural-network building blocks of the model (float parts only).

The integer-exact scale network lives in ``intnet.py``; the entropy coding in ``entropy.py``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows when it pushes x back above the bound."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)


class SimplifiedGDN(nn.Module):
    """y = x / (beta + gamma * |x|) per pixel (Johnston et al. 2019); inverse=True multiplies.

    Cheaper than the square-root GDN and trains as well; beta and gamma stay non-negative.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = lower_bound(self.beta, 1e-4)
        gamma = lower_bound(self.gamma, 0.0)
        norm = F.conv2d(x.abs(), gamma.to(x.dtype), beta.to(x.dtype))
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2, bias: bool = True) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2,
                              output_padding=stride - 1, bias=bias)


class FactorizedDensity(nn.Module):
    """Per-channel learned density of z (Ballé et al. 2018, 'factorized prior').

    Used only at training time and at export, where it is turned into integer tables
    (``tables.py``); coding never evaluates it.
    """

    def __init__(self, channels: int, filters=(3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = float(torch.log(torch.expm1(torch.tensor(1 / scale / dims[i + 1]))))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) -> logits of the CDF, (C, 1, N)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Probability of the unit bin around each value of z (B, C, H, W), in fp32."""
        with torch.autocast(z.device.type, enabled=False):
            return self._likelihood(z)

    def _likelihood(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        v = z.float().permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        # Evaluate on the side of the median where the sigmoid is not saturated.
        sign = -torch.sign(lower + upper).detach()
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        p = lower_bound(p, 1e-9)
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def pmf_table(self, support: torch.Tensor) -> torch.Tensor:
        """Probabilities of integer symbols `support` (N,) for every channel: (C, N), float64."""
        c = self.matrices[0].shape[0]
        v = support.to(torch.float64).view(1, 1, -1).expand(c, 1, -1)
        with torch.autocast("cpu", enabled=False):
            model64 = {k: p.double() for k, p in self.named_parameters()}
            x_lo, x_hi = v - 0.5, v + 0.5
            outs = []
            for x in (x_lo, x_hi):
                for i in range(len(self.matrices)):
                    x = torch.matmul(F.softplus(model64[f"matrices.{i}"]), x) + model64[f"biases.{i}"]
                    if i < len(self.factors):
                        x = x + torch.tanh(model64[f"factors.{i}"]) * torch.tanh(x)
                outs.append(x)
            lo, hi = outs
            sign = -torch.sign(lo + hi)
            p = (torch.sigmoid(sign * hi) - torch.sigmoid(sign * lo)).abs()
        return p.view(c, -1)
