"""progcodec eval with a dead-zone rounding of the y residuals in the plain encoder, for
docs/ablation.md ("y tables fitted to the encoder's symbols"):

    python scripts/deadzone_study.py DELTA eval ARGS...

Each residual r = y - mu is coded as sign(r) * floor(|r| + 0.5 - DELTA) instead of round(r):
DELTA of a bin more is rounded towards the mean (DELTA 0 is plain rounding, up to ties). The
decoder is unchanged. The rest is a progcodec command line, e.g.
`eval ../shared/data/kodak -o runs/dz-k8-0.1 --limit 8 --quiet`.
"""
import sys

import numpy as np

from progcodec import cli, codec

delta = float(sys.argv[1])
rounded_symbols = codec.encoder_symbols


def dead_zone_symbols(rt, y, z_np=None):
    z, levels, _, residual = rounded_symbols(rt, y, z_np)
    symbols = (np.sign(residual) * np.floor(np.abs(residual) + 0.5 - delta)).astype(np.int64)
    return z, levels, symbols, residual


codec.encoder_symbols = dead_zone_symbols
sys.argv = ["progcodec"] + sys.argv[2:]
cli.main()
