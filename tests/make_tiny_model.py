"""Regenerate tests/data/tiny.safetensors: a tiny model with weights drawn from numpy's PCG64.

    python tests/make_tiny_model.py

Used by the golden-bitstream test; numpy's generator is stable across versions, so the file is
reproducible. Regenerating it changes the golden hash (tests/test_exactness.py).
"""
from pathlib import Path

import numpy as np
import torch

from progcodec.export import runtime_model_from_trained
from progcodec.model import ModelConfig, ProgressiveModel
from progcodec.weights import save_weights

TINY = ModelConfig(N=8, M=12, H=8)


def save_tiny_training_weights(path: Path) -> Path:
    """The tiny trained model as a weight file with its training tensors (train --init)."""
    base = tiny_trained_model()
    extras = {k: v for k, v in base.state_dict().items() if k.startswith(("scale_net.", "z_density."))}
    save_weights(runtime_model_from_trained(base), "tiny-base", path, train_extras=extras)
    return path


def tiny_trained_model(seed: int = 1234) -> ProgressiveModel:
    m = ProgressiveModel(TINY)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("beta"):
                p.copy_(torch.from_numpy(1 + rng.random(p.shape)))
            elif name.endswith("gamma"):
                p.copy_(torch.from_numpy(0.1 * rng.random(p.shape)))
            elif "z_density" in name:
                continue  # keep the deterministic parts of its init: only biases are random
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.from_numpy(rng.normal(0, 1 / np.sqrt(fan_in), p.shape)))
        for i, b in enumerate(m.z_density.biases):
            b.copy_(torch.from_numpy(rng.random(b.shape) - 0.5))
        m.scale_net.l3.bias.fill_(20.0)
    return m


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / "tiny.safetensors"
    digest = save_weights(runtime_model_from_trained(tiny_trained_model()), "tiny-test", out)
    print(out, out.stat().st_size, digest.hex())
