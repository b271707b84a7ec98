"""BD-rate between two `progcodec eval` runs: python scripts/bd_between.py REF.json TEST.json

Reads the curves (`results`: bpp and psnr-rgb) of two results.json files (CompressAI's schema) and
prints the BD-rate of TEST against REF, PCHIP and cubic, and the BD-PSNR (PCHIP).
"""
import json
import sys

from progcodec.bdrate import bd_quality, bd_rate


def curve(path):
    with open(path) as f:
        results = json.load(f)["results"]
    return results["bpp"], results["psnr-rgb"]


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    ref, test = curve(argv[0]), curve(argv[1])
    print(f"BD-rate {bd_rate(ref, test):+.1f}% (PCHIP) / {bd_rate(ref, test, 'cubic'):+.1f}% (cubic), "
          f"BD-PSNR {bd_quality(ref, test):+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
