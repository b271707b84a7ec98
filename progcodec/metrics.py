"""Image quality metrics for evaluation: PSNR-RGB and MS-SSIM, computed as CompressAI reports them.

- PSNR-RGB: 8-bit images, peak 255, MSE over all pixels and all three channels.
- MS-SSIM: Wang, Simoncelli & Bovik (2003), 5 scales, 11x11 Gaussian window (sigma 1.5, applied
  separably, 'valid' borders), K1 = 0.01, K2 = 0.03, weights (0.0448, 0.2856, 0.3001, 0.2363,
  0.1333), 2x2 average pooling between scales (zero-padded on odd sides, as in pytorch_msssim),
  computed per RGB channel on 0..255 values and averaged over the channels. This is what
  pytorch_msssim.ms_ssim (used by CompressAI's eval_model) computes. A side shorter than the
  window at some scale is not filtered along that side (pytorch_msssim does the same).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE, WIN_SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _as_float(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {a.shape}")
    return a.astype(np.float64)


def mse(a, b) -> float:
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean((a - b) ** 2))


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR-RGB in dB (inf for identical images)."""
    m = mse(a, b)
    return float("inf") if m == 0 else 10 * math.log10(peak * peak / m)


def _gauss_window() -> torch.Tensor:
    x = torch.arange(WIN_SIZE, dtype=torch.float64) - WIN_SIZE // 2
    g = torch.exp(-(x ** 2) / (2 * WIN_SIGMA ** 2))
    return (g / g.sum()).float()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian, 'valid' borders, per channel; skips a side shorter than the window.

    Written as 11 shifted multiply-adds per side: several times faster on CPU than torch's
    grouped convolution for this kernel shape."""
    taps = [float(v) for v in g]
    if x.shape[2] >= WIN_SIZE:
        n = x.shape[2] - WIN_SIZE + 1
        out = x[:, :, 0:n] * taps[0]
        for i in range(1, WIN_SIZE):
            out.add_(x[:, :, i:i + n], alpha=taps[i])
        x = out
    if x.shape[3] >= WIN_SIZE:
        n = x.shape[3] - WIN_SIZE + 1
        out = x[:, :, :, 0:n] * taps[0]
        for i in range(1, WIN_SIZE):
            out.add_(x[:, :, :, i:i + n], alpha=taps[i])
        x = out
    return x


@contextlib.contextmanager
def _one_thread():
    """These small memory-bound ops run fastest on one thread; with more, OpenMP's waiting
    makes them up to 20x slower on a busy machine (measured: 0.065 s vs 1.2 s per call)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _pyramid(x: torch.Tensor) -> list[torch.Tensor]:
    """The (centred) image at each scale: 2x2 average pooling. pytorch_msssim pools with
    padding=(H % 2, W % 2), i.e. one row/column of zeros on both sides of an odd side, zeros
    counted in the average; here zero is -0.5 (the centring), so the padding is explicit."""
    out = [x]
    for _ in range(len(MS_SSIM_WEIGHTS) - 1):
        ph, pw = x.shape[2] % 2, x.shape[3] % 2
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), value=-0.5)
        x = F.avg_pool2d(x, kernel_size=2)
        out.append(x)
    return out


def _to_tensor(a, data_range: float) -> torch.Tensor:
    """float32 in [-0.5, 0.5]: centred, so that E[x^2] - E[x]^2 loses less to cancellation
    (variances do not change with the shift; the luminance term adds it back)."""
    return torch.from_numpy(_as_float(a) / data_range - 0.5).float().permute(2, 0, 1)[None]


class MSSSIM:
    """MS-SSIM against one fixed reference image; the reference's filtered statistics are
    computed once and reused for every image compared with it (an evaluation compares dozens of
    decodes with each original)."""

    def __init__(self, reference, data_range: float = 255.0):
        self.shape = np.asarray(reference).shape
        self.data_range = data_range
        self.g = _gauss_window()
        self.ref = []
        with torch.no_grad(), _one_thread():
            for x in _pyramid(_to_tensor(reference, data_range)):
                mx, exx = _filter(torch.cat([x, x * x], dim=1), self.g).chunk(2, dim=1)
                self.ref.append((x, mx, exx - mx * mx))

    def __call__(self, image) -> float:
        with torch.no_grad(), _one_thread():
            return self._score(image)

    def _score(self, image) -> float:
        if np.asarray(image).shape != self.shape:
            raise ValueError(f"image shapes differ: {self.shape} vs {np.asarray(image).shape}")
        c1, c2 = K1 ** 2, K2 ** 2
        vals = []
        for i, (y, (x, mx, sxx)) in enumerate(zip(_pyramid(_to_tensor(image, self.data_range)), self.ref)):
            my, eyy, exy = _filter(torch.cat([y, y * y, x * y], dim=1), self.g).chunk(3, dim=1)
            syy, sxy = eyy - my * my, exy - mx * my
            cs_map = (2 * sxy + c2) / (sxx + syy + c2)
            if i < len(MS_SSIM_WEIGHTS) - 1:
                vals.append(torch.relu(cs_map.flatten(2).mean(-1, dtype=torch.float64)))
            else:
                ux, uy = mx + 0.5, my + 0.5  # the means in 0..1
                ssim_map = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs_map
                vals.append(torch.relu(ssim_map.flatten(2).mean(-1, dtype=torch.float64)))
        w = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
        per_channel = torch.prod(torch.stack(vals, 0) ** w.view(-1, 1, 1), dim=0)
        return float(per_channel.mean())


def ms_ssim(a, b, data_range: float = 255.0) -> float:
    """MS-SSIM of two HxWx3 images on 0..data_range, averaged over the RGB channels.

    Computed in float32 on values scaled to 0..1 (as CompressAI's eval_model passes them to
    pytorch_msssim with data_range=1), centred on 0 for the variances (see _to_tensor)."""
    return MSSSIM(a, data_range)(b)


class Original:
    """An original image and its precomputed MS-SSIM statistics: score decoded images against it."""

    def __init__(self, rgb):
        self.rgb = np.asarray(rgb)
        self.height, self.width = self.rgb.shape[:2]
        self.pixels = self.width * self.height
        self._ms_ssim = MSSSIM(self.rgb)

    def score(self, decoded) -> tuple[float, float]:
        """(PSNR-RGB dB, MS-SSIM) of a decoded image."""
        decoded = np.asarray(decoded)
        return psnr(self.rgb, decoded), self._ms_ssim(decoded)
