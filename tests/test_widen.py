"""Widening the latent of trained weights (widen.py, train --config '{"M": ...}'): the wider
model computes what the narrow one did, its new elements cost nothing, and training starts
from it."""
import dataclasses
import json

import pytest
import torch

from progcodec import train
from progcodec.model import ProgressiveModel
from progcodec.widen import widen_latent

from conftest import write_photos
from make_tiny_model import TINY, save_tiny_training_weights, tiny_trained_model

WIDE = dataclasses.replace(TINY, M=TINY.M + 8)


def wide_model(seed: int = 5) -> ProgressiveModel:
    m = ProgressiveModel(WIDE)
    m.load_state_dict(widen_latent(tiny_trained_model().state_dict(), TINY.M, WIDE.M, seed))
    return m.eval()


@torch.no_grad()
def test_wider_latent_computes_the_same_image():
    narrow, wide = tiny_trained_model().eval(), wide_model()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    y_n, z_n = narrow.analysis(x)
    y_w, z_w = wide.analysis(x)
    assert torch.equal(z_n, z_w)  # the hyper-analysis ignores the new channels
    assert torch.equal(y_n, y_w[:, :TINY.M])
    new = y_w[:, TINY.M:]
    assert 0 < new.abs().max() < 0.5  # small, not zero (else they would never train)
    mu_n, idx_n = narrow.h_mean(z_n.float()), narrow.scale_net(z_n.float())[0]
    mu_w, idx_w = wide.h_mean(z_w.float()), wide.scale_net(z_w.float())[0]
    assert torch.equal(mu_w[:, :TINY.M], mu_n) and not mu_w[:, TINY.M:].any()
    assert torch.equal(idx_w[:, :TINY.M], idx_n)
    y_hat = torch.round(y_w - mu_w) + mu_w
    assert not y_hat[:, TINY.M:].any()  # the new elements round to their mean: symbol 0
    assert torch.allclose(wide.g_s(y_hat), narrow.g_s(y_hat[:, :TINY.M]), atol=1e-5)
    # the check can fail: random new synthesis weights change the image
    wide.g_s[0].weight[TINY.M:].normal_()
    assert not torch.allclose(wide.g_s(y_hat + 1), narrow.g_s(y_hat[:, :TINY.M] + 1), atol=1e-3)


def test_widen_refuses_to_narrow_or_misread():
    state = tiny_trained_model().state_dict()
    with pytest.raises(ValueError, match="narrow"):
        widen_latent(state, TINY.M, TINY.M - 1)
    with pytest.raises(ValueError, match="channels"):
        widen_latent(state, TINY.M + 1, TINY.M + 8)


def test_training_widens_initial_weights(tmp_path):
    data = write_photos(tmp_path / "photos", 3)
    init = save_tiny_training_weights(tmp_path / "base.safetensors")
    assert train.main([str(data), "--out", str(tmp_path / "run"), "--batch", "2", "--patch", "64",
                       "--warmup", "1", "--steps", "6", "--init", str(init),
                       "--config", json.dumps({"M": WIDE.M})]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["M"] == WIDE.M
    assert ckpt["model"]["g_s.0.weight"].shape[0] == WIDE.M
    # the new means started at zero and trained: the rate of the new elements reaches them in
    # the batches with q = 1 (the new elements come last in the order); the synthesis weights
    # follow once the new elements are non-zero
    assert 0 < ckpt["model"]["h_mean.4.weight"][TINY.M:].abs().max() < 1e-2
    # the old channels were loaded, not drawn afresh
    delta = (ckpt["model"]["g_a.0.weight"] - tiny_trained_model().state_dict()["g_a.0.weight"]).abs().max()
    assert 0 < delta < 1e-2
