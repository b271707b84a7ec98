"""Average the model weights of several training snapshots of one run (step*.pt, checkpoint.pt)
into one checkpoint that `python -m progcodec.export` takes: a cheap test of whether the late
snapshots of a noisy small-batch run sit around a better point than the last one.

    python scripts/average_weights.py runs/v24/step010000.pt runs/v24/step012000.pt \
        runs/v24/checkpoint.pt -o runs/v24-avg.pt

Floating-point tensors are averaged with equal weights; integer tensors and buffers that are not
floats are taken from the last snapshot. All snapshots must share one config.
"""
import argparse
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshots", type=Path, nargs="+")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    ckpts = [torch.load(p, map_location="cpu", weights_only=False) for p in args.snapshots]
    config = ckpts[-1]["config"]
    if any(c["config"] != config for c in ckpts):
        raise SystemExit("error: the snapshots have different configs")
    states = [c["model"] for c in ckpts]
    averaged = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            averaged[name] = torch.stack([s[name].double() for s in states]).mean(0).to(last.dtype)
        else:
            averaged[name] = last
    torch.save({"model": averaged, "step": ckpts[-1]["step"], "config": config}, args.output)
    print(f"{args.output}: mean of {len(states)} snapshots (steps "
          f"{', '.join(str(c['step']) for c in ckpts)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
