"""Encode/decode round trips and any-byte truncation, on the tiny model and the shipped one."""
import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, container
from progcodec.codec import psnr

from conftest import decode_latent as _latent, smooth_image, with_random_order_table


@pytest.mark.parametrize("shape", [(1, 1), (17, 3), (64, 64), (70, 130)])
def test_roundtrip_sizes(tiny, shape):
    img = smooth_image(*shape)
    data = progcodec.encode(img, model=tiny)
    d = progcodec.decode_detailed(data, model=tiny)
    assert d.image.size == (shape[1], shape[0])
    assert d.elements_decoded == d.elements_total
    assert d.bytes_used == len(data)
    assert d.warnings == []


def test_api_accepts_pil_and_array(tiny):
    from PIL import Image
    img = smooth_image(40, 50)
    assert progcodec.encode(img, model=tiny) == progcodec.encode(Image.fromarray(img), model=tiny)
    with pytest.raises(progcodec.CodecError):
        progcodec.encode(np.zeros((4, 4), np.uint8), model=tiny)


@pytest.fixture(scope="module")
def tiny_ordered(tiny):
    return with_random_order_table(tiny, seed=3)


@pytest.mark.parametrize("which", ["scale order", "table order"])
def test_every_cut_decodes_exact_prefix(tiny, tiny_ordered, which):
    """Many random cuts: each decodes, its decoded elements equal the full file's, and the
    number decoded never falls as the cut grows. (Files without refinement bits: cuts into
    those are tests/test_refinement.py's.)"""
    if which == "table order":
        tiny = tiny_ordered
    data = progcodec.encode(smooth_image(512, 640), model=tiny, refine=0, y_block=1024)
    h = container.parse_header(data)
    assert h.version == (1 if which == "scale order" else 4)
    assert h.y_len > 2 * h.y_block, "the file must span several CRC blocks"
    full = _latent(data, tiny)
    base = _latent(data[:h.min_length], tiny)  # nothing of y: all predicted means
    assert base.decoded == 0
    rng = np.random.default_rng(0)
    edges = [h.min_length + k * (h.y_block + 4) + d for k in (1, 2) for d in range(-6, 7)]
    cuts = sorted(set(rng.integers(h.min_length, len(data) + 1, 100).tolist()) | set(edges)
                  | {len(data) - 1})
    prev = -1
    for n in cuts:
        lat = _latent(data[:n], tiny)
        assert lat.decoded >= prev
        prev = lat.decoded
        rt = codec.runtime(tiny, "cpu")
        # the first `decoded` elements in coding order match the full decode; the rest are mu
        mu, idx = rt.hyper(_z(data, tiny))
        order = codec.coding_order(idx, rt.levels, rt.order_rank)
        assert (rt.order_rank is None) == (which == "scale order")
        got, want, fill = (t.flatten()[order] for t in (lat.y_hat, full.y_hat, base.y_hat))
        assert torch.equal(got[:lat.decoded], want[:lat.decoded]), n
        assert torch.equal(got[lat.decoded:], fill[lat.decoded:]), n
    assert full.decoded == full.total
    assert _latent(data[:-5], tiny).decoded < full.total  # a cut into the y stream loses symbols


def _z(data, model):
    from progcodec import entropy
    rt = codec.runtime(model, "cpu")
    p = container.parse(data)
    hz, wz = -(-p.header.height // 64), -(-p.header.width // 64)
    return torch.from_numpy(entropy.decode_z(p.z_bytes, (rt.z_channels, hz, wz), rt.models))[None]


def test_shipped_model_quality_rises_with_bytes(photo):
    """The shipped model on a real photo: PSNR grows with the prefix (small tolerance), and the
    whole file is far better than the predicted-means image."""
    data = progcodec.encode(photo)
    h = container.parse_header(data)
    cuts = np.unique(np.geomspace(h.min_length, len(data), 12).astype(int))
    values = [psnr(np.asarray(progcodec.decode(data, nbytes=int(n))), photo) for n in cuts]
    for a, b in zip(values, values[1:]):
        assert b >= a - 0.2, values
    assert values[-1] > values[0] + 3, values
    assert values[-1] > 24, values


def test_prefix_options_select_bytes(tiny):
    data = progcodec.encode(smooth_image(64, 96), model=tiny)
    h = container.parse_header(data)
    assert progcodec.decode_detailed(data, quality=0, model=tiny).bytes_used == h.min_length
    assert progcodec.decode_detailed(data, quality=1, model=tiny).bytes_used == len(data)
    mid = progcodec.decode_detailed(data, quality=0.5, model=tiny).bytes_used
    assert mid == round(h.min_length * (len(data) / h.min_length) ** 0.5)
    assert progcodec.decode_detailed(data, bpp=0.5 * 8 * len(data) / (64 * 96),
                                     model=tiny).bytes_used == len(data) // 2
    assert progcodec.truncate(data, nbytes=h.min_length + 5) == data[:h.min_length + 5]
    assert progcodec.encode(smooth_image(64, 96), model=tiny, nbytes=h.min_length + 7) == data[:h.min_length + 7]
    with pytest.raises(progcodec.CodecError, match=f"minimum decodable length of {h.min_length}"):
        progcodec.decode(data, nbytes=h.min_length - 1, model=tiny)
