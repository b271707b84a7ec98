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
    # A running sum, so that only one snapshot (with its optimizer state) is in memory at a time.
    total, config, steps = None, None, []
    for path in args.snapshots:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if config is not None and ckpt["config"] != config:
            raise SystemExit(f"error: {path} has another config than {args.snapshots[0]}")
        config, state = ckpt["config"], ckpt["model"]
        steps.append(ckpt["step"])
        if total is None:
            total = {name: t.double() if t.is_floating_point() else t for name, t in state.items()}
        else:
            for name, t in state.items():
                total[name] = total[name] + t.double() if t.is_floating_point() else t
    averaged = {name: t.div(len(steps)).to(state[name].dtype) if t.is_floating_point() else t
                for name, t in total.items()}
    torch.save({"model": averaged, "step": steps[-1], "config": config}, args.output)
    print(f"{args.output}: mean of {len(steps)} snapshots (steps {', '.join(map(str, steps))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
