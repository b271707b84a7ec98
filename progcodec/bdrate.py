"""Bjøntegaard deltas between two rate-distortion curves (numpy only).

BD-rate: the mean difference of log(rate) between a test curve and a reference curve, taken as
a function of quality over the quality range both curves cover, reported as a percentage of
rate (exp(mean) - 1); negative means the test needs fewer bits for the same quality.
BD-PSNR (BD-quality): the mean quality difference over the common log-rate range.

Two interpolations of each curve:
- "pchip": piecewise cubic Hermite with Fritsch–Carlson monotone slopes (as in the VCEG/JVET
  BD-rate tools and CompressAI's recent versions), integrated exactly piece by piece;
- "cubic": the classic Bjøntegaard (VCEG-M33) least-squares cubic polynomial, integrated exactly.

Curves: points are sorted by rate; a point whose quality is not above every cheaper point's is
dropped (a non-monotone curve cannot be inverted); each curve needs 4 points for "cubic" and 2
for "pchip". Curves whose quality ranges do not overlap raise BDError.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("pchip", "cubic")


class BDError(ValueError):
    """The two curves cannot be compared (too few points, no overlap)."""


def clean_curve(rates, quality) -> tuple[np.ndarray, np.ndarray]:
    """Sort by rate, keep finite positive-rate points with strictly rising quality."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise BDError("rates and qualities must be 1-D of the same length")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))
    r, q = r[order], q[order]
    keep_r, keep_q = [], []
    for ri, qi in zip(r, q):
        if keep_q and (qi <= keep_q[-1] or ri <= keep_r[-1]):
            continue
        keep_r.append(ri)
        keep_q.append(qi)
    return np.array(keep_r), np.array(keep_q)


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch–Carlson monotone derivatives (the same rule as scipy's PchipInterpolator)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0, h1, m0, m1):
        dd = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(dd) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(dd) > abs(3 * m0):
            return 3 * m0
        return dd

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def pchip_integral(x, y, lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] (inside [x0, xn]) of the PCHIP interpolant of (x, y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        s = (y[k + 1] - y[k]) / h
        c = (y[k], d[k], (3 * s - 2 * d[k] - d[k + 1]) / h, (d[k] + d[k + 1] - 2 * s) / h ** 2)
        ta, tb = a - x[k], b - x[k]
        total += sum(ci * (tb ** (i + 1) - ta ** (i + 1)) / (i + 1) for i, ci in enumerate(c))
    return total


def pchip_eval(x, y, t) -> np.ndarray:
    """The PCHIP interpolant of (x, y) at points t (inside [x0, xn])."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    t = np.atleast_1d(np.asarray(t, float))
    d = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    u = (t - x[k]) / h
    h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
    h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _mean_over(x, y, lo, hi, method) -> float:
    if method == "pchip":
        return pchip_integral(x, y, lo, hi) / (hi - lo)
    if method == "cubic":
        p = np.polyint(np.polyfit(x, y, 3))
        return (np.polyval(p, hi) - np.polyval(p, lo)) / (hi - lo)
    raise BDError(f"unknown method {method!r}; use one of {METHODS}")


def _prepare(ref, test, method):
    (r1, q1), (r2, q2) = clean_curve(*ref), clean_curve(*test)
    need = 4 if method == "cubic" else 2
    for name, r in (("reference", r1), ("test", r2)):
        if len(r) < need:
            raise BDError(f"{name} curve has {len(r)} usable points; {method} needs {need}")
    return r1, q1, r2, q2


@dataclass
class Overlap:
    lo: float
    hi: float


def bd_rate(ref, test, method: str = "pchip") -> float:
    """BD-rate of `test` against `ref` in percent; ref and test are (rates, qualities)."""
    r1, q1, r2, q2 = _prepare(ref, test, method)
    lo, hi = max(q1[0], q2[0]), min(q1[-1], q2[-1])
    if hi <= lo:
        raise BDError(f"quality ranges do not overlap: reference {q1[0]:.3f}..{q1[-1]:.3f}, "
                      f"test {q2[0]:.3f}..{q2[-1]:.3f}")
    diff = _mean_over(q2, np.log(r2), lo, hi, method) - _mean_over(q1, np.log(r1), lo, hi, method)
    return float((np.exp(diff) - 1) * 100)


def bd_quality(ref, test, method: str = "pchip") -> float:
    """BD-PSNR (or BD of any quality): mean quality gain of `test` over the common log-rate range."""
    r1, q1, r2, q2 = _prepare(ref, test, method)
    l1, l2 = np.log(r1), np.log(r2)
    lo, hi = max(l1[0], l2[0]), min(l1[-1], l2[-1])
    if hi <= lo:
        raise BDError(f"rate ranges do not overlap: reference {r1[0]:.4g}..{r1[-1]:.4g}, "
                      f"test {r2[0]:.4g}..{r2[-1]:.4g}")
    return float(_mean_over(l2, q2, lo, hi, method) - _mean_over(l1, q1, lo, hi, method))


def overlap(ref, test) -> tuple[float, float, float, float]:
    """(quality lo, quality hi, rate lo, rate hi) of the common quality range; rates are where
    the reference curve (PCHIP) reaches lo and hi."""
    (r1, q1), (r2, q2) = clean_curve(*ref), clean_curve(*test)
    if len(r1) < 2 or len(r2) < 2:
        raise BDError("need at least 2 points per curve")
    lo, hi = max(q1[0], q2[0]), min(q1[-1], q2[-1])
    if hi <= lo:
        raise BDError("quality ranges do not overlap")
    lr = pchip_eval(q1, np.log(r1), [lo, hi])
    return float(lo), float(hi), float(np.exp(lr[0])), float(np.exp(lr[1]))
