"""Residual blocks in g_s and g_s_low (ModelConfig.synthesis_blocks, low_synthesis_blocks):
added to trained weights they start as the identity, --init accepts weights without them,
export keeps them, and tiles of each synthesis get the context their wider reach needs."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, container, tiling, train
from progcodec.export import runtime_model_from_trained
from progcodec.model import BLOCK_PARTS, ModelConfig, ProgressiveModel, block_margin
from progcodec.weights import load_model, save_weights

from conftest import decode_latent, smooth_image, write_photos
from make_tiny_model import TINY, save_tiny_training_weights, tiny_trained_model


def blocks_model(blocks: int = 2, seed: int = 5, low_blocks: int = 0) -> ProgressiveModel:
    """The tiny trained model with residual blocks in g_s, their zero convolutions drawn; with
    low_blocks, also a g_s_low for keep-fractions below 0.5 (a copy of g_s without its blocks)
    with that many blocks, drawn."""
    base = tiny_trained_model()
    config = dataclasses.replace(TINY, synthesis_blocks=blocks)
    if low_blocks:
        config = dataclasses.replace(config, low_synthesis_keep=0.5, low_synthesis_blocks=low_blocks)
    m = ProgressiveModel(config)
    missing, unexpected = m.load_state_dict(base.state_dict(), strict=False)
    assert missing and not unexpected
    assert all(k.startswith(BLOCK_PARTS + ("g_s_low.",)) for k in missing)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if low_blocks:
            m.g_s_low.load_state_dict(base.g_s.state_dict(), strict=False)
        for net in (m.g_s, m.g_s_low) if low_blocks else (m.g_s,):
            for name, p in net.named_parameters():
                if name.startswith("res"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return m


def test_config_rejects_bad_block_counts():
    for bad in (-1, 7):
        with pytest.raises(ValueError):
            ModelConfig(synthesis_blocks=bad)
    with pytest.raises(ValueError):
        ModelConfig(synthesis_blocks=1, decoder_side=True)
    for bad in (-1, 7):
        with pytest.raises(ValueError):
            ModelConfig(low_synthesis_keep=0.1, low_synthesis_blocks=bad)
    with pytest.raises(ValueError):  # blocks for a g_s_low the model does not have
        ModelConfig(low_synthesis_blocks=1)


def test_new_blocks_are_the_identity_and_drawn_ones_are_not():
    base = tiny_trained_model()
    fresh = ProgressiveModel(dataclasses.replace(TINY, synthesis_blocks=2))
    fresh.load_state_dict(base.state_dict(), strict=False)
    y = torch.randn(1, TINY.M, 5, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(fresh.g_s(y), base.g_s(y))
        assert (blocks_model().g_s(y) - base.g_s(y)).abs().max() > 1e-2


def test_margin_grows_with_the_blocks():
    assert block_margin(0, 32) == 32
    assert block_margin(1, 32) == 48
    assert block_margin(2, 32) == 64
    assert block_margin(3, 32) == 64  # 16 + 8 + 4 = 28 px of reach: still one 32 px step
    assert block_margin(5, 32) == 96  # and res8b, res4b: 28 + 16 + 8 = 52 px
    assert block_margin(6, 32) == 112  # and res8c: 52 + 16 = 68 px


def test_blocks_after_the_same_layer_run_in_their_listed_order():
    """The decoder's output depends on the order of res8/res8b/res8c and res4/res4b (format.md 7):
    g_s must equal the layers and blocks applied by hand in that order."""
    g_s = blocks_model(6, seed=8).g_s
    y = torch.randn(1, TINY.M, 4, 6, generator=torch.Generator().manual_seed(4))

    def by_hand(steps):  # layer indices and block names
        x = y
        for step in steps:
            x = g_s[step](x) if isinstance(step, int) else getattr(g_s, step)(x)
        return x

    order = [0, 1, "res8", "res8b", "res8c", 2, 3, "res4", "res4b", 4, 5, "res2", 6]
    with torch.no_grad():
        expected = by_hand(order)
        assert torch.equal(g_s(y), expected)
        swapped = by_hand([0, 1, "res8", "res8c", "res8b"] + order[5:])
        assert (swapped - expected).abs().max() > 1e-4


@pytest.mark.parametrize("blocks", [2, 3, 6])
def test_export_keeps_the_blocks_and_tiles_get_their_context(tmp_path, monkeypatch, blocks):
    """A weight file with blocks decodes through them; with forced 64 px tiles, the model's
    synthesis margin gives the whole-image output, and the plain margin does not."""
    m = blocks_model(blocks)
    path = tmp_path / "blocks.safetensors"
    save_weights(runtime_model_from_trained(m), "tiny-blocks", path)
    loaded = load_model(path)
    img = smooth_image(160, 224, seed=3)
    data = progcodec.encode(img, model=loaded, device="cpu")
    h = container.parse_header(data)
    lat = decode_latent(data, loaded)
    assert sorted(k for k in loaded.model.state_dict() if ".res" in k) == sorted(
        "g_s." + k for k in m.g_s.state_dict() if k.startswith("res"))
    with torch.no_grad():  # (the weight file rounds the float weights: its own g_s)
        direct = loaded.model.g_s.float()(lat.y_hat).clamp(0, 1)[0, :, :h.height, :h.width]
    direct = (direct * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    whole = np.asarray(progcodec.decode(data, model=loaded, device="cpu"))
    assert np.abs(whole.astype(int) - direct).max() <= 1

    rt = codec.runtime(loaded, "cpu")
    assert rt.synthesis_margin == block_margin(blocks, tiling.MARGIN)
    monkeypatch.setattr(tiling, "SYNTHESIS_TILE", 64)
    monkeypatch.setattr(tiling, "UNTILED_MAX", 0)
    with torch.no_grad():
        tiled = codec._synthesis(rt, lat.y_hat, h.height, h.width)
        assert np.abs(tiled.astype(int) - whole).max() <= 1
        monkeypatch.setattr(rt, "synthesis_margin", tiling.MARGIN)
        short = codec._synthesis(rt, lat.y_hat, h.height, h.width)
    assert np.abs(short.astype(int) - whole).max() > 1


def test_training_adds_blocks_to_weights_without_them(tmp_path):
    """--init from weights without blocks plus --config synthesis_blocks: the run starts from
    the same g_s output, and a g_s-only stage trains the blocks."""
    data = write_photos(tmp_path / "photos", 4)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    common = [str(data), "--batch", "2", "--patch", "64", "--warmup", "1", "--init", str(init),
              "--config", json.dumps({"synthesis_blocks": 2, "low_synthesis_keep": 0.2})]
    assert train.main(common + ["--out", str(tmp_path / "run"), "--steps", "2",
                                "--synthesis-keep-min", "0.2"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["synthesis_blocks"] == 2
    assert ckpt["model"]["g_s.res4.conv2.weight"].abs().max() > 0  # trained away from zero


def test_short_prefixes_decode_through_the_blocks_of_g_s_low(tmp_path, monkeypatch):
    """A prefix below low_synthesis_keep decodes through g_s_low and its blocks; with forced
    64 px tiles, g_s_low's own margin gives the whole-image output, the plain one does not."""
    m = blocks_model(blocks=0, low_blocks=2)
    path = tmp_path / "low-blocks.safetensors"
    save_weights(runtime_model_from_trained(m), "tiny-low-blocks", path)
    loaded = load_model(path)
    assert loaded.model.config.low_synthesis_blocks == 2
    height, width = 192, 256  # multiples of 64: no padding
    total = height // 16 * (width // 16) * TINY.M
    received = total // 10  # a short prefix: g_s_low's
    rt = codec.runtime(loaded, "cpu")
    assert rt.synthesis_for(received, total) is rt.g_s_low
    assert (rt.synthesis_margin, rt.low_synthesis_margin) == (tiling.MARGIN, 64)
    y = torch.randn(1, TINY.M, height // 16, width // 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = codec._synthesis(rt, y, height, width, received=received)
        direct = loaded.model.g_s_low.float()(y).clamp(0, 1)[0]
        direct = (direct * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.abs(whole.astype(int) - direct).max() <= 1
        monkeypatch.setattr(tiling, "SYNTHESIS_TILE", 64)
        monkeypatch.setattr(tiling, "UNTILED_MAX", 0)
        tiled = codec._synthesis(rt, y, height, width, received=received)
        assert np.abs(tiled.astype(int) - whole).max() <= 1
        monkeypatch.setattr(rt, "low_synthesis_margin", tiling.MARGIN)
        short = codec._synthesis(rt, y, height, width, received=received)
    assert np.abs(short.astype(int) - whole).max() > 1


def test_training_adds_blocks_to_g_s_low_and_keeps_its_weights(tmp_path):
    """--init from weights with a g_s_low plus --config low_synthesis_blocks: g_s_low keeps its
    own trained layers (it is not copied again from g_s), its new blocks start as the
    identity, and a --synthesis-keep-max stage trains them."""
    data = write_photos(tmp_path / "photos", 4)
    low = blocks_model(blocks=0, low_blocks=1)
    with torch.no_grad():  # a g_s_low trained apart from g_s
        for p in low.g_s_low.parameters():
            p.mul_(1.1)
    low_config = dataclasses.replace(low.config, low_synthesis_blocks=0)
    init = tmp_path / "low.pt"
    torch.save({"model": {k: v for k, v in low.state_dict().items() if ".res" not in k},
                "config": low_config.to_dict()}, init)
    common = [str(data), "--batch", "2", "--patch", "64", "--warmup", "1", "--init", str(init),
              "--config", json.dumps({"low_synthesis_blocks": 2})]
    assert train.main(common + ["--out", str(tmp_path / "run0"), "--steps", "0"]) == 0
    start = torch.load(tmp_path / "run0" / "checkpoint.pt", weights_only=False)["model"]
    before = low.state_dict()
    for k in ("g_s_low.0.weight", "g_s_low.6.weight"):
        assert torch.equal(start[k], before[k]) and not torch.equal(start[k], before["g_s." + k[8:]])
    assert start["g_s_low.res4.conv2.weight"].abs().max() == 0

    assert train.main(common + ["--out", str(tmp_path / "run"), "--steps", "2",
                                "--synthesis-keep-max", "0.5"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["low_synthesis_blocks"] == 2
    assert ckpt["model"]["g_s_low.res4.conv2.weight"].abs().max() > 0
    assert torch.equal(ckpt["model"]["g_s.0.weight"], before["g_s.0.weight"])
