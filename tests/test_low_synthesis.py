"""The synthesis of short prefixes (ModelConfig.low_synthesis_keep): a second g_s that the
decoder uses when a prefix carries fewer than that fraction of the y elements. The encoder,
the bitstream and the long prefixes must not change; training must route each image through
the network its keep-fraction selects and train g_s_low alone."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load, save as st_save

import progcodec
from progcodec import codec, container, train
from progcodec.export import runtime_model_from_trained
from progcodec.model import ModelConfig, ProgressiveModel
from progcodec.weights import (WeightsError, load_model, load_weights_bytes, save_weights,
                               training_state_from_weights)

from conftest import decode_latent, smooth_image, write_photos
from make_tiny_model import TINY, save_tiny_training_weights, tiny_trained_model

THRESHOLD = 0.5


def low_model() -> ProgressiveModel:
    """The tiny trained model plus a g_s_low that differs from its g_s."""
    base = tiny_trained_model()
    m = ProgressiveModel(dataclasses.replace(TINY, low_synthesis_keep=THRESHOLD))
    missing, unexpected = m.load_state_dict(base.state_dict(), strict=False)
    assert all(k.startswith("g_s_low.") for k in missing) and missing and not unexpected
    m.g_s_low.load_state_dict(base.g_s.state_dict())
    with torch.no_grad():
        g = torch.Generator().manual_seed(11)
        for p in m.g_s_low.parameters():
            p.mul_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return m


def test_config_rejects_bad_thresholds():
    with pytest.raises(ValueError):
        ModelConfig(low_synthesis_keep=1.0)
    with pytest.raises(ValueError):
        ModelConfig(low_synthesis_keep=-0.1)
    with pytest.raises(ValueError):
        ModelConfig(low_synthesis_keep=0.1, decoder_side=True)


def test_training_pass_routes_each_image_by_its_keep_fraction():
    """In one batch, the image below the threshold goes through g_s_low and the other through
    g_s, each as a one-network model would make it."""
    m = low_model()
    base = tiny_trained_model()
    low_as_main = tiny_trained_model()
    low_as_main.g_s.load_state_dict(m.g_s_low.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    keep = torch.tensor([0.6, 0.2])  # the second image is below THRESHOLD
    with torch.no_grad():
        out = m(x, keep)["x_hat"]
        main = base(x, keep)["x_hat"]
        low = low_as_main(x, keep)["x_hat"]
    # (a batch of one and a batch of two may round differently in the last bits)
    assert torch.allclose(out[0], main[0], atol=1e-5)
    assert torch.allclose(out[1], low[1], atol=1e-5)
    assert (main[1] - low[1]).abs().max() > 1e-2  # the two networks do differ


def test_decoder_picks_the_synthesis_by_prefix_length(tmp_path):
    path = tmp_path / "low.safetensors"
    save_weights(runtime_model_from_trained(low_model()), "tiny-low", path)
    loaded = load_model(path)
    base_path = tmp_path / "base.safetensors"
    save_weights(runtime_model_from_trained(tiny_trained_model()), "tiny-low", base_path)
    base = load_model(base_path)
    img = smooth_image(96, 128, seed=4)
    data = progcodec.encode(img, model=loaded, device="cpu")
    # the encoder does not use g_s_low: the same y stream as the model without it
    base_data = progcodec.encode(img, model=base, device="cpu")
    h, hb = container.parse_header(data), container.parse_header(base_data)
    assert data[h.min_length:] == base_data[hb.min_length:]

    rt = codec.runtime(loaded, "cpu")
    short = data[:h.min_length + 40]
    lat = decode_latent(short, loaded)
    assert 0 < lat.decoded < THRESHOLD * lat.total
    out = np.asarray(progcodec.decode(short, model=loaded, device="cpu"))
    with torch.no_grad():
        with_low = codec._synthesis(rt, lat.y_hat, h.height, h.width, received=lat.decoded)
        with_main = codec._synthesis(rt, lat.y_hat, h.height, h.width)
    assert np.array_equal(out, with_low)
    assert not np.array_equal(out, with_main)

    # the whole file (and any prefix past the threshold) decodes as without g_s_low
    whole = np.asarray(progcodec.decode(data, model=loaded, device="cpu"))
    assert np.array_equal(whole, np.asarray(progcodec.decode(base_data, model=base, device="cpu")))
    lat = decode_latent(data, loaded)
    assert lat.decoded == lat.total


def test_training_adds_and_trains_g_s_low_alone(tmp_path):
    """--init from weights without g_s_low plus --config low_synthesis_keep: g_s_low starts as
    a copy of g_s and is the only thing that trains; a keep-fraction band above the threshold
    is refused."""
    data = write_photos(tmp_path / "photos", 4)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    common = [str(data), "--batch", "2", "--patch", "64", "--warmup", "1", "--init", str(init),
              "--config", json.dumps({"low_synthesis_keep": 0.2})]
    assert train.main(common + ["--out", str(tmp_path / "run0"), "--steps", "0"]) == 0
    start = torch.load(tmp_path / "run0" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in start.items():
        if k.startswith("g_s_low."):
            assert torch.equal(v, start["g_s." + k[len("g_s_low."):]])

    assert train.main(common + ["--out", str(tmp_path / "run"), "--steps", "2",
                                "--synthesis-keep-max", "0.2"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["low_synthesis_keep"] == 0.2
    _, init_state = training_state_from_weights(init)
    changed = {k for k, v in ckpt["model"].items()
               if k not in init_state or not torch.equal(v, init_state[k].to(v.dtype))}
    assert changed and all(k.startswith("g_s_low.") for k in changed)
    assert any(not torch.equal(ckpt["model"][k], start[k]) for k in changed)

    with pytest.raises(SystemExit):
        train.main(common + ["--out", str(tmp_path / "run2"), "--steps", "1",
                             "--synthesis-keep-max", "0.5"])


def test_one_synthesis_run_resumes_from_its_checkpoint(tmp_path):
    """Rerunning the command of a --synthesis-keep-max run resumes it: the optimizer saved
    over g_s_low alone loads into the run's optimizer (it once met the whole model's first)."""
    data = write_photos(tmp_path / "photos", 4)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    common = [str(data), "--batch", "2", "--patch", "64", "--warmup", "1", "--init", str(init),
              "--config", json.dumps({"low_synthesis_keep": 0.2}), "--synthesis-keep-max", "0.2",
              "--log-every", "1", "--out", str(tmp_path / "run")]
    assert train.main(common + ["--steps", "1"]) == 0
    assert train.main(common + ["--steps", "2"]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resumed from" in log and "step 2 " in log
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 2


def test_synthesis_keep_min_trains_the_main_synthesis_alone(tmp_path):
    data = write_photos(tmp_path / "photos", 4)
    init = tmp_path / "low.pt"
    torch.save({"model": low_model().state_dict(),
                "config": dataclasses.replace(TINY, low_synthesis_keep=0.2).to_dict()}, init)
    common = [str(data), "--batch", "2", "--patch", "64", "--warmup", "1", "--init", str(init),
              "--steps", "2"]
    assert train.main(common + ["--out", str(tmp_path / "run"), "--synthesis-keep-min", "0.2"]) == 0
    before = torch.load(init, weights_only=False)["model"]
    after = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    changed = {k for k, v in after.items() if not torch.equal(v, before[k].to(v.dtype))}
    assert changed and all(k.startswith("g_s.") for k in changed)
    with pytest.raises(SystemExit):  # below the threshold the prefixes are g_s_low's
        train.main(common + ["--out", str(tmp_path / "run2"), "--synthesis-keep-min", "0.1"])


def test_searched_file_of_a_model_with_g_s_low_decodes(tmp_path):
    path = tmp_path / "low.safetensors"
    save_weights(runtime_model_from_trained(low_model()), "tiny-low", path)
    loaded = load_model(path)
    img = smooth_image(64, 64, seed=6)
    data = progcodec.encode(img, model=loaded, device="cpu", search=2)
    cut = data[:container.parse_header(data).min_length + 30]
    assert np.asarray(progcodec.decode(cut, model=loaded, device="cpu")).shape == (64, 64, 3)


def tiny_weight_file(tmp_path) -> tuple[dict, dict]:
    """The tiny model's weight file, taken apart: its tensors and its metadata. It loads."""
    path = tmp_path / "ok.safetensors"
    save_weights(runtime_model_from_trained(tiny_trained_model()), "tiny", path)
    data = path.read_bytes()
    load_weights_bytes(data)
    with safe_open(path, "pt") as f:
        return st_load(data), f.metadata()


@pytest.mark.parametrize("change", [{"low_synthesis_keep": 2.0}, {"no_such_field": 1}])
def test_weight_file_with_an_unusable_config_is_refused(tmp_path, change):
    tensors, meta = tiny_weight_file(tmp_path)
    meta["config"] = json.dumps(json.loads(meta["config"]) | change)
    with pytest.raises(WeightsError):
        load_weights_bytes(st_save(tensors, metadata=meta))


@pytest.mark.parametrize("damage", ["drop_tables", "drop_a_weight", "extra_tensor", "wrong_shape"])
def test_weight_file_whose_tensors_do_not_fit_its_config_is_refused(tmp_path, damage):
    """A weight file is input too: tensors missing, extra or of the wrong shape for the
    configuration it declares give a WeightsError (a one-line message), not an internal error."""
    tensors, meta = tiny_weight_file(tmp_path)
    if damage == "drop_tables":
        del tensors["tables.y_counts"]
    elif damage == "drop_a_weight":
        del tensors["g_s.0.weight"]
    elif damage == "extra_tensor":
        tensors["g_s.res8.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    else:
        tensors["h_mean.0.weight"] = tensors["h_mean.0.weight"][:, :1].contiguous()
    with pytest.raises(WeightsError) as err:
        load_weights_bytes(st_save(tensors, metadata=meta))
    assert "\n" not in str(err.value)
