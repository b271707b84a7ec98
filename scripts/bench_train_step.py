"""Training-step throughput on this machine: `python scripts/bench_train_step.py --threads 2
[--compile]`. Times progcodec.train's own step (`train_step`: forward, loss, backward, gradient
clipping, Adam; bf16 autocast, channels_last, CPU) for the default architecture on a random
batch. Prints steps/s after 3 warm-up steps, so that torch.compile's first steps are left out
(and printed apart). A benchmark, not a test: it asserts nothing."""
from __future__ import annotations

import argparse
import time

import torch

from progcodec.model import ModelConfig, ProgressiveModel
from progcodec.train import train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps after 3 warm-up steps")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ProgressiveModel(ModelConfig()).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    forward = torch.compile(model) if args.compile else model
    x = torch.rand(args.batch, 3, args.patch, args.patch).contiguous(memory_format=torch.channels_last)
    keep = torch.linspace(0.05, 1.0, args.batch)

    def step() -> None:
        train_step(forward, opt, x, keep, lam_min=0.0015, lam_max=0.025, q_min=0.005)

    t = time.time()
    for _ in range(3):
        step()
    warm = time.time() - t
    t = time.time()
    for _ in range(args.steps):
        step()
    rate = args.steps / (time.time() - t)
    print(f"{'compiled' if args.compile else 'eager'}: threads {args.threads}, batch {args.batch} "
          f"x {args.patch} px: {rate:.2f} steps/s (first 3 steps {warm:.1f} s)")


if __name__ == "__main__":
    main()
