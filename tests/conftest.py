from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progcodec.fuzz import structured_image
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


# a deterministic image with structure (gradients, a disc, noise): the fuzzer's seed image
smooth_image = structured_image
