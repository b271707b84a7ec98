"""The integer-exact scale network (DESIGN.md section 3).

It maps the integer z symbols to the scale-table index of every element of y. Encoder and
decoder must agree on every index bit for bit, on any device and thread count, so at run time
it uses only integers: int8 weights, int64 biases, a per-channel integer divisor with rounding
(floor division), and activations clipped to [0, 255]. The convolutions run on integer-valued
float64 tensors: every partial sum is an integer far below 2**53, so any summation order,
kernel or device gives the same exact result.

At training time the same layers are emulated in float with straight-through rounding
(quantization-aware training), so the network learns under the arithmetic it will run with.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

ACT_MAX = 255  # activations are integers in [0, ACT_MAX]
WEIGHT_MAX = 127  # int8 weights
Z_GAIN = 16  # z symbols are multiplied by this before the first layer (exact)


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


class QATLayer(nn.Module):
    """A conv or transposed conv that trains as it will run: integer weights and divisor."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, transposed: bool):
        super().__init__()
        self.transposed = transposed
        self.stride = stride
        self.k = k
        if transposed:
            layer = nn.ConvTranspose2d(cin, cout, k, stride, k // 2, output_padding=stride - 1)
        else:
            layer = nn.Conv2d(cin, cout, k, stride, k // 2)
        self.weight = layer.weight  # conv: (out, in, k, k); transposed: (in, out, k, k)
        self.bias = layer.bias

    def _per_out(self, t: torch.Tensor) -> torch.Tensor:
        """Reduce/broadcast helper: view a per-output-channel vector against the weight."""
        return t.view(1, -1, 1, 1) if self.transposed else t.view(-1, 1, 1, 1)

    def divisor(self) -> torch.Tensor:
        """Per-output-channel integer divisor s = floor(127 / max|w|), at least 1."""
        w = self.weight.detach().abs()
        wmax = w.amax(dim=(0, 2, 3)) if self.transposed else w.amax(dim=(1, 2, 3))
        return torch.floor(WEIGHT_MAX / wmax.clamp_min(1e-8)).clamp(1, 2**24)

    def _conv(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(a, w, None, self.stride, self.k // 2, self.stride - 1)
        return F.conv2d(a, w, None, self.stride, self.k // 2)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Training emulation: returns floor((W*a + B) / s + 1/2) with straight-through floors."""
        s = self.divisor()
        w = self.weight * self._per_out(s)
        wq = w + (torch.round(w) - w).detach()
        b = self.bias * s
        bq = b + (torch.round(b) - b).detach()
        acc = self._conv(a, wq) + bq.view(1, -1, 1, 1)
        return floor_ste(acc / s.view(1, -1, 1, 1) + 0.5)

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        s = self.divisor()
        w = torch.round(self.weight * self._per_out(s)).clamp(-WEIGHT_MAX, WEIGHT_MAX)
        b = torch.round(self.bias.double() * s.double())
        d = s.to(torch.int64)
        return {
            "weight": w.to(torch.int8),
            "bias": (b.to(torch.int64) + d // 2),  # + s//2 turns floor division into rounding
            "divisor": d,
        }


class ScaleNetQAT(nn.Module):
    """Training-time scale network: z symbols -> (float, straight-through) scale index."""

    def __init__(self, cz: int, ch: int, cy: int, levels: int):
        super().__init__()
        self.levels = levels
        self.l1 = QATLayer(cz, ch, 5, 2, transposed=True)
        self.l2 = QATLayer(ch, ch, 5, 2, transposed=True)
        self.l3 = QATLayer(ch, cy, 3, 1, transposed=False)
        with torch.no_grad():  # start near the middle of the scale table, not saturated
            self.l3.weight.mul_(0.05)
            self.l3.bias.fill_(levels / 3)

    def forward(self, z_sym: torch.Tensor):
        """Returns (index, out_of_range_penalty); index is integer-valued, in [0, levels-1]."""
        a = (z_sym * Z_GAIN).float()
        a = self.l1(a).clamp(0, ACT_MAX)
        a = self.l2(a).clamp(0, ACT_MAX)
        raw = self.l3(a)
        penalty = (F.relu(raw - (self.levels - 1)) + F.relu(-raw)).mean()
        idx = raw + (raw.clamp(0, self.levels - 1) - raw).detach()
        return idx, penalty

    def export(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in ("l1", "l2", "l3"):
            for k, v in getattr(self, name).export().items():
                out[f"{name}.{k}"] = v
        return out


class IntLayer(nn.Module):
    """Run-time integer layer: floor((W*a + B) / D) on exact integers."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, transposed: bool):
        super().__init__()
        self.transposed, self.stride, self.k = transposed, stride, k
        shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(cout, dtype=torch.int64))
        self.register_buffer("divisor", torch.ones(cout, dtype=torch.int64))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """a: integer-valued float64 (B, C, H, W) -> int64 (B, C', H', W')."""
        w = self.weight.to(torch.float64)
        if self.transposed:
            acc = F.conv_transpose2d(a, w, None, self.stride, self.k // 2, self.stride - 1)
        else:
            acc = F.conv2d(a, w, None, self.stride, self.k // 2)
        # Exact already; round() guards against a backend that picks an inexact algorithm
        # (e.g. an FFT convolution) whose error stays far below 0.5.
        acc = torch.round(acc).to(torch.int64) + self.bias.view(1, -1, 1, 1)
        return torch.div(acc, self.divisor.view(1, -1, 1, 1), rounding_mode="floor")


class ScaleNetInt(nn.Module):
    """Run-time scale network: int64 z symbols -> int64 scale index, bit-exact everywhere."""

    def __init__(self, cz: int, ch: int, cy: int, levels: int):
        super().__init__()
        self.levels = levels
        self.l1 = IntLayer(cz, ch, 5, 2, transposed=True)
        self.l2 = IntLayer(ch, ch, 5, 2, transposed=True)
        self.l3 = IntLayer(ch, cy, 3, 1, transposed=False)

    @torch.no_grad()
    def forward(self, z_sym: torch.Tensor) -> torch.Tensor:
        a = (z_sym.to(torch.int64) * Z_GAIN).to(torch.float64)
        a = self.l1(a).clamp(0, ACT_MAX).to(torch.float64)
        a = self.l2(a).clamp(0, ACT_MAX).to(torch.float64)
        return self.l3(a).clamp(0, self.levels - 1)


class ScaleNetRelaxed(nn.Module):
    """A float, differentiable stand-in for a ScaleNetInt, for encoder-side search only.

    Same weights and divisors; each floor division becomes a straight-through floor, so on
    integer z it gives the run-time index (up to float32 rounding of large sums) and a gradient
    with respect to z. The real coder never uses it: the file's indexes come from ScaleNetInt."""

    def __init__(self, net: ScaleNetInt):
        super().__init__()
        self.levels = net.levels
        self.layers = []
        for layer in (net.l1, net.l2, net.l3):
            self.layers.append((layer.weight.float(), layer.bias.float().view(1, -1, 1, 1),
                                layer.divisor.float().view(1, -1, 1, 1), layer.transposed,
                                layer.stride, layer.k))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (1, C, h, w) float (need not be integer) -> float scale index in [0, levels-1]."""
        a = z.float() * Z_GAIN
        for i, (w, b, d, transposed, stride, k) in enumerate(self.layers):
            if transposed:
                acc = F.conv_transpose2d(a, w, None, stride, k // 2, stride - 1)
            else:
                acc = F.conv2d(a, w, None, stride, k // 2)
            a = floor_ste((acc + b) / d)
            a = a.clamp(0, ACT_MAX if i < 2 else self.levels - 1)
        return a
