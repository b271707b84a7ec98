"""Turn a training checkpoint into a shipped weight file.

    python -m progcodec.export runs/v1/checkpoint.pt models/progcodec-v1.safetensors --name progcodec-v1

The checkpoint is our own training output (trusted, pickled); the weight file it writes is
safetensors: float networks, the integer scale network and the coding tables, plus the
training-only tensors (z density, float scale net) that let `train --init` resume from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .model import ModelConfig, ProgressiveModel
from .tables import CodingTables
from .weights import save_weights


def runtime_model_from_trained(trained: ProgressiveModel) -> ProgressiveModel:
    """Float networks copied; scale net quantized to integers; coding tables computed."""
    runtime = ProgressiveModel(trained.config, integer_scale=True)
    state = trained.float_state_dict()
    state.update({f"scale_net.{k}": v for k, v in trained.scale_net.export().items()})
    runtime.tables = CodingTables.build(trained.z_density, trained.config.scale_table())
    state.update({f"tables.{k}": v for k, v in runtime.tables.state_dict().items()})
    runtime.load_state_dict(state, strict=True)
    return runtime.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--name", required=True, help="model name written into every .pic")
    args = ap.parse_args(argv)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    trained = ProgressiveModel(ModelConfig(**state["config"]))
    trained.load_state_dict(state["model"])
    model = runtime_model_from_trained(trained)
    extras = {k: v for k, v in trained.state_dict().items()
              if k.startswith(("scale_net.", "z_density."))}
    digest = save_weights(model, args.name, args.output, train_extras=extras)
    n = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for k, b in model.named_buffers() if k.startswith("scale_net."))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, {n} parameters, "
          f"digest {digest.hex()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
