"""BD-rate between two `progcodec eval` runs: python scripts/bd_between.py REF.json TEST.json

Reads the curves of two results.json files (CompressAI's schema) and prints the BD-rate of TEST
against REF, PCHIP and cubic, and the BD-PSNR (PCHIP).
"""
import sys
from pathlib import Path

from progcodec.bdrate import BDError, bd_quality, bd_rate
from progcodec.evaluate import EvalError, load_curve_json


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    try:
        ref, test = ((c.bpp, c.psnr) for c in map(load_curve_json, map(Path, argv)))
        print(f"BD-rate {bd_rate(ref, test):+.1f}% (PCHIP) / {bd_rate(ref, test, 'cubic'):+.1f}% "
              f"(cubic), BD-PSNR {bd_quality(ref, test):+.2f} dB")
    except (EvalError, BDError) as e:
        print(f"bd_between: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
