import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progcodec import codec
from progcodec.fuzz import structured_image
from progcodec.tables import REFINE_CONTEXTS, quantize_pmf
from progcodec.weights import LoadedModel, load_model

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


def write_photos(folder: Path, count: int) -> Path:
    """A folder of `count` small structured PNGs, for training runs in tests."""
    folder.mkdir()
    for i in range(count):
        Image.fromarray(smooth_image(80, 96, seed=i)).save(folder / f"p{i}.png")
    return folder


def with_random_order_table(loaded: LoadedModel, seed: int) -> LoadedModel:
    """A copy of a model with a random coding-order priority table (ordering.py): it writes
    format versions 2 and 3 instead of 1."""
    m = copy.deepcopy(loaded.model)
    c = m.config
    rank = np.random.default_rng(seed).permutation(c.M * c.levels).reshape(c.M, c.levels)
    m.tables.register_buffer("order_rank", torch.from_numpy(rank.astype(np.int32)))
    return LoadedModel("tiny-ordered", b"ordered!", m)


def with_random_refine_table(loaded: LoadedModel, seed: int) -> LoadedModel:
    """A copy of a model with an order table, given a refinement table of random counts
    (tables.refine_counts): it writes format version 5."""
    m = copy.deepcopy(loaded.model)
    rng = np.random.default_rng(seed)
    shape = (m.config.levels, REFINE_CONTEXTS)
    rows = [quantize_pmf(np.array([p, 1 - p])) for p in rng.uniform(0.05, 0.95, shape).ravel()]
    m.tables.register_buffer("refine_counts", torch.from_numpy(np.stack(rows).reshape(*shape, 2)))
    return LoadedModel(loaded.name + "-refine-table", b"refine!!", m)


@torch.no_grad()
def decode_latent(data: bytes, model):
    """The decoder's latent for a (prefix of a) file, before synthesis (codec._Latent)."""
    return codec._decode_latent(data, codec.runtime(model, "cpu"), strict=False)
