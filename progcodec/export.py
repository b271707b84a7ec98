"""Turn a training checkpoint into a shipped weight file.

    python -m progcodec.export runs/v1/checkpoint.pt models/progcodec-v1.safetensors --name progcodec-v1

The checkpoint is our own training output (trusted, pickled); the weight file it writes is
safetensors: float networks, the integer scale network and the coding tables. Beside it goes
its sidecar `NAME.resume` (weights.training_sidecar): the training-only tensors (z density,
float scale net) that let `train --init NAME.safetensors` resume from it; the codec never
reads that file.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from . import ordering
from .model import ModelConfig, ProgressiveModel
from .tables import CodingTables
from .weights import save_training_tensors, save_weights, training_state_from_weights


def runtime_model_from_trained(trained: ProgressiveModel, order_crops=None,
                               gain_power: float = 1.0) -> ProgressiveModel:
    """Float networks copied; scale net quantized to integers; coding tables computed; with
    order_crops (HxWx3 uint8 crops of training photos), the coding order's priority table,
    its channel gains raised to gain_power (0: every channel equal, i.e. rank by level alone)."""
    runtime = ProgressiveModel(trained.config, integer_scale=True)
    state = trained.float_state_dict()
    state.update({f"scale_net.{k}": v for k, v in trained.scale_net.export().items()})
    runtime.tables = CodingTables.build(trained.z_density, trained.config.scale_table())
    if order_crops is not None:
        values = ordering.level_values(trained.config.scale_table().numpy(),
                                       runtime.tables.y_counts.numpy())
        if gain_power == 0:  # every gain ** 0 is 1: skip the M synthesis passes per crop
            gains = np.ones(trained.config.M)
        else:
            gains = ordering.channel_gains(trained.g_a.float().eval(),
                                           trained.synthesis_net().float().eval(),
                                           order_crops) ** gain_power
        runtime.tables.register_buffer(
            "order_rank", torch.from_numpy(ordering.order_rank(gains, values)))
    state.update({f"tables.{k}": v for k, v in runtime.tables.state_dict().items()})
    runtime.load_state_dict(state, strict=True)
    return runtime.eval()


def load_trained(path: Path) -> ProgressiveModel:
    """The training-time model from a checkpoint.pt or a weight file with training tensors."""
    if path.suffix == ".safetensors":
        config, state = training_state_from_weights(path)
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        config, state = ModelConfig(**ckpt["config"]), ckpt["model"]
    trained = ProgressiveModel(config)
    trained.load_state_dict(state)
    return trained.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path,
                    help="training checkpoint.pt, or a weight file with training tensors")
    ap.add_argument("output", type=Path)
    ap.add_argument("--name", required=True,
                    help="the model's name, stored in its weight file (.pic files name a model "
                         "by digest since format version 4)")
    ap.add_argument("--order-images", type=Path,
                    help="folder of training photos (never Kodak): measure the channel gains "
                         "of the coding order's priority table on centre crops of the first "
                         "--order-count of them (sorted by name); without it, plain scale order")
    ap.add_argument("--order-count", type=int, default=4, help="photos used for the gains")
    ap.add_argument("--order-crop", type=int, default=256, help="side of their centre crops")
    ap.add_argument("--gain-power", type=float, default=1.0,
                    help="raise the channel gains to this power before ranking: 1 as measured, "
                         "0 every channel equal (scale order, still in a table so that the "
                         "refinement pass of format version 3 applies)")
    ap.add_argument("--low-keep", type=float,
                    help="for a model with a synthesis of short prefixes (g_s_low): the fraction "
                         "of y elements below which the decoder uses it, if not the threshold it "
                         "was trained with (e.g. where the two syntheses measure equal: "
                         "scripts/low_synthesis_switch.py)")
    args = ap.parse_args(argv)
    trained = load_trained(args.checkpoint)
    if args.low_keep is not None:
        if trained.g_s_low is None:
            raise SystemExit(f"--low-keep: {args.checkpoint} has no g_s_low")
        trained.config = dataclasses.replace(trained.config, low_synthesis_keep=args.low_keep)
    crops = None
    if args.order_images:
        from .train import list_images
        crops = ordering.sample_crops(list_images(args.order_images), size=args.order_crop, count=args.order_count)
    model = runtime_model_from_trained(trained, crops, args.gain_power)
    extras = {k: v for k, v in trained.state_dict().items()
              if k.startswith(("scale_net.", "z_density."))}
    digest = save_weights(model, args.name, args.output)
    sidecar = save_training_tensors(extras, args.output, digest)
    n = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for k, b in model.named_buffers() if k.startswith("scale_net."))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, {n} parameters, "
          f"digest {digest.hex()}) and its training tensors {sidecar} "
          f"({sidecar.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
