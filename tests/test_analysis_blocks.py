"""Residual blocks in the analysis g_a (ModelConfig.analysis_blocks) and the encoder-only
training stage that trains them (train --train-encoder): added to trained weights they start
as the identity, the stage leaves every network the decoder runs untouched, export writes the
training tensors to a sidecar that --init finds, and tiles of g_a get the context they need."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import progcodec
from progcodec import codec, tiling, train
from progcodec.export import main as export_main
from progcodec.model import (ANALYSIS_BLOCKS, ANALYSIS_PARTS, ModelConfig, ProgressiveModel,
                             block_margin)
from progcodec.weights import (WeightsError, load_model, save_weights, training_sidecar,
                               training_state_from_weights)

from conftest import smooth_image, write_photos
from make_tiny_model import TINY, save_tiny_training_weights, tiny_trained_model
from progcodec.export import runtime_model_from_trained


def analysis_blocks_model(blocks: int = 2, seed: int = 7) -> ProgressiveModel:
    """The tiny trained model with residual blocks in g_a, their zero convolutions drawn."""
    m = ProgressiveModel(dataclasses.replace(TINY, analysis_blocks=blocks))
    missing, unexpected = m.load_state_dict(tiny_trained_model().state_dict(), strict=False)
    assert missing and not unexpected and all(k.startswith(ANALYSIS_PARTS) for k in missing)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.g_a.named_parameters():
            if name.startswith("res"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return m


def test_config_rejects_bad_analysis_block_counts():
    for bad in (-1, len(ANALYSIS_BLOCKS) + 1):
        with pytest.raises(ValueError):
            ModelConfig(analysis_blocks=bad)


def test_new_analysis_blocks_are_the_identity_and_drawn_ones_are_not():
    base = tiny_trained_model()
    fresh = ProgressiveModel(dataclasses.replace(TINY, analysis_blocks=2))
    fresh.load_state_dict(base.state_dict(), strict=False)
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(fresh.g_a(x), base.g_a(x))
        assert (analysis_blocks_model().g_a(x) - base.g_a(x)).abs().max() > 1e-2


def test_analysis_margin_covers_the_blocks_reach():
    assert block_margin(0, 32, ANALYSIS_BLOCKS) == 32
    assert block_margin(1, 32, ANALYSIS_BLOCKS) == 48  # res8: 16 px
    assert block_margin(2, 32, ANALYSIS_BLOCKS) == 64  # and res4: 24 px


def test_tiled_analysis_with_blocks_matches_the_whole_image(tmp_path, monkeypatch):
    """With forced 64 px tiles, the model's analysis margin gives the whole-image y, and the
    plain margin does not: the blocks see 24 px further."""
    path = tmp_path / "a.safetensors"
    save_weights(runtime_model_from_trained(analysis_blocks_model()), "tiny-analysis", path)
    rt = codec.runtime(load_model(path), "cpu")
    assert rt.analysis_margin == 64
    rgb = np.asarray(smooth_image(192, 256, seed=4))
    with torch.no_grad():
        whole = codec._analysis(rt, rgb)
        monkeypatch.setattr(tiling, "ANALYSIS_TILE", 64)
        monkeypatch.setattr(tiling, "UNTILED_MAX", 0)
        tiled = codec._analysis(rt, rgb)
        monkeypatch.setattr(rt, "analysis_margin", tiling.MARGIN)  # that of a g_a without blocks
        short = codec._analysis(rt, rgb)
    assert (tiled - whole).abs().max() < 1e-9
    assert (short - whole).abs().max() > 1e-6


def test_encoder_stage_trains_the_encoder_alone_and_exports_a_sidecar(tmp_path):
    """train --train-encoder with new g_a blocks: only g_a and h_a move; the exported weight
    file holds no training tensors, its sidecar does, and --init resumes from the pair; a
    file encoded with the new encoder decodes through the model's unchanged decoder."""
    data = write_photos(tmp_path / "photos", 4)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    common = [str(data), "--batch", "2", "--patch", "64", "--threads", "1", "--warmup", "1",
              "--lr", "1e-2", "--precision", "fp32", "--init", str(init)]
    assert train.main(common + ["--out", str(tmp_path / "run"), "--steps", "3", "--train-encoder",
                                "--config", json.dumps({"analysis_blocks": 2})]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["analysis_blocks"] == 2
    _, before = training_state_from_weights(init)
    after = ckpt["model"]
    moved = {k for k in before if not torch.equal(before[k], after[k].float())}
    assert moved and all(k.startswith(("g_a.", "h_a.")) for k in moved)
    assert any(not torch.equal(after[k], torch.zeros_like(after[k]))
               for k in after if k.startswith("g_a.res") and "conv2" in k)

    out = tmp_path / "e.safetensors"
    assert export_main([str(tmp_path / "run" / "checkpoint.pt"), str(out), "--name", "tiny-e"]) == 0
    assert training_sidecar(out).name == "e.resume" and training_sidecar(out).is_file()
    assert b"train." not in out.read_bytes()[:4096]
    config, state = training_state_from_weights(out)
    assert config.analysis_blocks == 2
    assert all(torch.equal(state[k], after[k].half().float())
               for k in after if k.startswith(("z_density.", "scale_net.")))
    assert train.main(common[:-1] + [str(out), "--out", str(tmp_path / "run2"), "--steps", "1",
                                     "--train-encoder"]) == 0

    loaded = load_model(out)
    img = smooth_image(64, 96, seed=5)
    back = np.asarray(progcodec.decode(progcodec.encode(img, model=loaded, device="cpu"),
                                       model=loaded, device="cpu"))
    assert back.shape == (64, 96, 3)


def test_a_sidecar_of_another_weight_file_is_refused(tmp_path):
    data = write_photos(tmp_path / "photos", 2)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    ckpt_dir = tmp_path / "run"
    assert train.main([str(data), "--out", str(ckpt_dir), "--batch", "2", "--patch", "64",
                       "--threads", "1", "--steps", "1", "--precision", "fp32",
                       "--init", str(init)]) == 0
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert export_main([str(ckpt_dir / "checkpoint.pt"), str(a), "--name", "tiny-a"]) == 0
    assert export_main([str(ckpt_dir / "checkpoint.pt"), str(b), "--name", "tiny-b"]) == 0
    training_sidecar(a).write_bytes(training_sidecar(b).read_bytes())
    with pytest.raises(WeightsError, match="another weight file"):
        training_state_from_weights(a)
    training_sidecar(a).unlink()
    with pytest.raises(WeightsError, match="no training tensors"):
        training_state_from_weights(a)


def test_encoder_stage_refuses_decoder_stage_options(tmp_path):
    data = write_photos(tmp_path / "photos", 2)
    with pytest.raises(SystemExit, match="--train-encoder"):
        train.main([str(data), "--out", str(tmp_path / "run"), "--batch", "2", "--patch", "64",
                    "--steps", "1", "--train-encoder", "--finetune-decoder"])
