"""Time decode_y on a y stream cut inside its refinement run, with and without a refinement table.

    python scripts/cut_decode_time.py [MODEL ...]     # default: progcodec-v29 progcodec-v30

A Kodak-sized stream of random symbols (294,912 base symbols in 64 runs, then 117,965
refinement bits, as in a 768x512 file with refine 0.4) coded with each model's tables, decoded
complete and cut 1,000 to 200,000 bytes before its end: seconds (best of 3) and the symbols
kept. A model with a refinement table (format version 5) codes the bits with it.
"""
import sys
import time

import numpy as np

from progcodec import entropy
from progcodec.weights import load_model


def best_of(f, times=3):
    """(the fastest of `times` calls of f, in seconds; f's result)"""
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        result = f()
        out.append(time.perf_counter() - t0)
    return min(out), result


def main(names):
    rng = np.random.default_rng(0)
    n, r = 294912, 117965
    levels = np.sort(rng.integers(0, 64, n))[::-1].copy()
    raw = rng.integers(-3, 4, n)
    bits = rng.integers(0, 2, r)
    for name in names:
        models = entropy.Models(load_model(name).model.tables)
        symbols = np.concatenate([entropy.clamp_y_symbols(raw, levels, models), bits])
        levels_all = np.concatenate([levels, np.full(r, entropy.REFINE)])
        data = entropy.encode_y(symbols, levels_all, models)
        t, _ = best_of(lambda: entropy.decode_y(data, levels_all, models, complete=True))
        print(f"{name}: {len(data)} bytes; complete {t:.3f} s")
        for cut in (1000, 5000, 20000, 100000, 200000):
            part = data[:len(data) - cut]
            t, (_, kept) = best_of(lambda: entropy.decode_y(part, levels_all, models, complete=False))
            print(f"  cut {cut:>6} bytes before the end: {t:.3f} s, {kept} symbols kept")


if __name__ == "__main__":
    main(sys.argv[1:] or ["progcodec-v29", "progcodec-v30"])
