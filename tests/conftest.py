from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progcodec.weights import load_model

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny():
    """Tiny model with fixed (numpy-seeded) weights: fast, and stable for golden hashes."""
    return load_model(DATA / "tiny.safetensors")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 160x96 crop of a real photo (Kodak kodim23), uint8 HxWx3."""
    return np.asarray(Image.open(DATA / "kodim23_crop.png").convert("RGB"))


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic image with structure (gradients, a disc, noise), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    g = 255 * xx / max(1, w - 1)
    b = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2, 220.0, 40.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
