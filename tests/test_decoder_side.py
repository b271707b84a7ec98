"""The synthesis side input (ModelConfig.decoder_side): which y elements are missing, and their
scale index, fed to g_s. It must start as a no-op on weights trained without it,
reach the decoder exactly as the prefix defines it, and go through the tiled synthesis."""
import dataclasses
import json

import numpy as np
import torch

import progcodec
from progcodec import codec, container, train
from progcodec.export import runtime_model_from_trained
from progcodec.model import ProgressiveModel, side_features
from progcodec.weights import LoadedModel, load_model, save_weights, training_state_from_weights

from conftest import decode_latent, smooth_image, write_photos
from make_tiny_model import TINY, save_tiny_training_weights, tiny_trained_model


def side_model(side_scale: float) -> ProgressiveModel:
    """The tiny trained model plus a side layer with random weights times side_scale."""
    base = tiny_trained_model()
    m = ProgressiveModel(dataclasses.replace(TINY, decoder_side=True))
    missing, unexpected = m.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["g_s_side.weight"] and not unexpected
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        m.g_s_side.weight.copy_(side_scale * torch.randn(m.g_s_side.weight.shape, generator=g))
    return m


def test_side_layer_starts_as_a_no_op():
    """Zero side weights reproduce the model without them; random ones change the output (so
    the first check can fail)."""
    base = tiny_trained_model()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    keep = torch.tensor([0.1, 0.6])
    outs = []
    for m in (base, side_model(0.0), side_model(0.3)):
        torch.manual_seed(3)  # the same training noise for each
        outs.append(m(x, keep)["x_hat"])
    assert torch.equal(outs[0], outs[1])
    assert (outs[0] - outs[2]).abs().max() > 1e-3


def test_decoder_gets_the_side_input_of_its_prefix(tmp_path):
    path = tmp_path / "side.safetensors"
    save_weights(runtime_model_from_trained(side_model(0.3)), "tiny-side", path)
    loaded = load_model(path)
    img = smooth_image(96, 128, seed=4)
    data = progcodec.encode(img, model=loaded, device="cpu")
    h = container.parse_header(data)
    cut = data[:h.min_length + 60]
    lat = decode_latent(cut, loaded)
    assert 0 < lat.decoded < lat.total
    rt = codec.runtime(loaded, "cpu")
    m = rt.y_channels
    missing = lat.side[:, :m].bool()
    assert int((~missing).sum()) == lat.decoded
    z = decode_latent(data, loaded)  # the whole file: nothing missing, side input all 0
    assert not bool(z.side.any())
    # missing elements carry their scale index / (levels - 1); received ones 0
    scale_part = lat.side[:, m:]
    assert bool((scale_part[~missing] == 0).all())
    assert bool((scale_part[missing] > 0).any())
    # the decoded pixels are the synthesis with that side input, not with "all received"
    out = np.asarray(progcodec.decode(cut, model=loaded, device="cpu"))
    with torch.no_grad():
        expect = codec._synthesis(rt, lat.y_hat, h.height, h.width, lat.side)
        blind = codec._synthesis(rt, lat.y_hat, h.height, h.width, None)
    assert np.array_equal(out, expect)
    assert not np.array_equal(out, blind)


def test_side_input_goes_through_tiles(tmp_path, monkeypatch):
    from progcodec import tiling
    path = tmp_path / "side.safetensors"
    save_weights(runtime_model_from_trained(side_model(0.3)), "tiny-side", path)
    loaded = load_model(path)
    img = smooth_image(130, 200, seed=5)
    data = progcodec.encode(img, model=loaded, device="cpu")
    cut = data[:container.parse_header(data).min_length + 80]
    whole = np.asarray(progcodec.decode(cut, model=loaded, device="cpu")).astype(int)
    monkeypatch.setattr(tiling, "SYNTHESIS_TILE", 64)
    monkeypatch.setattr(tiling, "UNTILED_MAX", 0)
    tiled = np.asarray(progcodec.decode(cut, model=loaded, device="cpu")).astype(int)
    assert np.abs(tiled - whole).max() <= 2  # float32 rounding only


def test_side_features_values():
    received = torch.tensor([True, False, False]).view(1, 3, 1, 1)
    idx = torch.tensor([5, 9, 0]).view(1, 3, 1, 1)
    f = side_features(received, idx, levels=10)
    assert f.flatten().tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_training_adds_a_side_layer_to_weights_without_one(tmp_path):
    """--init from a weight file without a side layer plus --config decoder_side: the side
    layer starts at zero and trains (with its own learning-rate multiplier); the rest of the
    weights are loaded; resuming keeps both parameter groups."""
    data = write_photos(tmp_path / "photos", 4)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    common = [str(data), "--out", str(tmp_path / "run"), "--batch", "2", "--patch", "64",
              "--warmup", "1", "--init", str(init), "--config", json.dumps({"decoder_side": True}),
              "--side-lr-mult", "10"]
    assert train.main(common + ["--steps", "2"]) == 0
    assert train.main(common + ["--steps", "3"]) == 0  # resumes with the two groups
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and ckpt["config"]["decoder_side"] is True
    assert ckpt["model"]["g_s_side.weight"].abs().max() > 0
    assert [g["lr_mult"] for g in ckpt["optimizer"]["param_groups"]] == [1.0, 10.0]
    _, init_state = training_state_from_weights(init)
    # the encoder's first layer moved from the loaded weights, not from a fresh init
    delta = (ckpt["model"]["g_a.0.weight"] - init_state["g_a.0.weight"]).abs().max()
    assert 0 < delta < 1e-2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "new: ['g_s_side.weight']" in log
